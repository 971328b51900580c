#!/usr/bin/env bash
# clients_bench.sh: what passive clients (`llmesh client`, docs/mesh.md
# "Passive clients") cost the members, measured with real llmesh processes
# (never run by make test or CI). Three members: H1 and H2 serve the demo model
# with --threads 1, S is a standby; clients join through S.
#
#   (1) members' cost of idle clients: over a window of --seconds, each
#       member's CPU time (utime+stime, /proc/PID/stat), its traffic (bytes and
#       packets on its interface; network-namespace mode only), and its
#       routes_served / streams_accepted counters; once with 0 clients, then
#       with N idle clients: clients that never sent a request, plus up to
#       2 x --cold of them that sent one and then stayed idle > 60 s (their
#       connection to the host is closed by then, unless the host is also
#       where they pull the routing table from)
#   (2) request latency: --requests short greedy completions (max_tokens 1)
#       through a client whose connection to its host is warm, and the same
#       straight to that host's API (interleaved); then, after the window, the
#       first request of up to --cold of those idle clients whose status shows
#       no connection to their host (cold: the QUIC handshake is in it)
#   (3) time for a fresh client to have its routing table: from its start to
#       routes_age_ms non-null in its /api/status (every one of the N clients,
#       started one after the other)
#
# usage: bench/clients_bench.sh [--clients N] [--seconds S] [--requests R]
#                               [--cold K] [--runs N] [--loopback]
#   --clients N   idle clients in (1) and (3) (default 50)
#   --seconds S   length of each window of (1) (default 60)
#   --requests R  requests each way in (2) (default 50)
#   --cold K      clients used for the cold requests of (2) (default 10)
#   --runs N      repeat everything with fresh nodes; medians over runs (default 1)
#   --loopback    every process on 127.0.0.1 (no root needed; traffic not measured).
#                 Default as root: each member in its own network namespace and
#                 the clients in a fourth one, on one bridge (tests/integration/netns.bash),
#                 so that each member's interface counters are its own traffic.
# Environment: LLMESH_BINARY (default build/llmesh); CLIENTS_BENCH_IDLE_WAIT (seconds of
# idleness before the second window, default 65; shorter only to try the script).
# Default run: about 4.5 minutes.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
export LLMESH_SOURCE_DIR=${LLMESH_SOURCE_DIR:-$(cd "$HERE/.." && pwd)}
export LLMESH_BINARY=${LLMESH_BINARY:-$LLMESH_SOURCE_DIR/build/llmesh}
. "$LLMESH_SOURCE_DIR/tests/integration/common.bash"

N=50 SECONDS_W=60 REQUESTS=50 COLD=10 RUNS=1 LOOPBACK=0
while [ $# -gt 0 ]; do
  case "$1" in
    --clients) N=$2; shift 2 ;;
    --seconds) SECONDS_W=$2; shift 2 ;;
    --requests) REQUESTS=$2; shift 2 ;;
    --cold) COLD=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    --loopback) LOOPBACK=1; shift ;;
    -h|--help) sed -n '2,37p' "$0"; exit 0 ;;
    *) echo "unknown option $1"; exit 2 ;;
  esac
done
[ -x "$LLMESH" ] || { echo "no llmesh binary at $LLMESH (make build, or set LLMESH_BINARY)"; exit 2; }
[ -f "$DEMO_MODEL" ] || { echo "no demo model at $DEMO_MODEL"; exit 2; }
for v in "$N" "$SECONDS_W" "$REQUESTS" "$COLD" "$RUNS"; do
  [[ "$v" =~ ^[0-9]+$ ]] && [ "$v" -ge 1 ] || { echo "counts must be positive integers (got '$v')"; exit 2; }
done
[ "$COLD" -lt "$N" ] || { echo "--cold must be below --clients"; exit 2; }
MODEL_ID=kjv-llama-6.3M-q8_0
IDLE_WAIT=${CLIENTS_BENCH_IDLE_WAIT:-65}   # > MESH_CLIENT_IDLE_MS (60 s) plus a probe tick
HZ=$(getconf CLK_TCK)
BODY=$(jq -cn --arg m "$MODEL_ID" '{model: $m, prompt: "In the beginning", max_tokens: 1, temperature: 0}')

# Where processes run. netns mode: members in namespaces m1, m2, ms, clients in cl.
if [ "$LOOPBACK" = 0 ] && [ "$(id -u)" -eq 0 ] && command -v ip >/dev/null && command -v nft >/dev/null; then
  . "$LLMESH_SOURCE_DIR/tests/integration/netns.bash"
  netns_init
  for h in m1 m2 ms cl; do netns_add_host "$h"; done
  WHERE_H1=m1 WHERE_H2=m2 WHERE_S=ms WHERE_C=cl
  MODE="network namespaces (members 10.77.0.1-3, clients 10.77.0.4, one bridge)"
else
  LOOPBACK=1
  WHERE_H1="" WHERE_H2="" WHERE_S="" WHERE_C=""
  MODE="loopback (traffic not measured)"
fi

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.3f", b - a }'; }
# stats KIND VALUES... : KIND = median | p90 | max | n, over the numbers ("-" ignored)
stats() {
  local kind=$1; shift
  printf '%s\n' "$@" | grep -Ev '^(-|)$' | sort -g | awk -v k="$kind" '{ v[NR] = $1 } END {
    if (k == "n") { print NR; exit }
    if (NR == 0) { print "-"; exit }
    if (k == "max") { print v[NR]; exit }
    if (k == "p90") { i = int(NR * 0.9 + 0.999999); if (i < 1) i = 1; print v[i]; exit }
    if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
fmt() { # fmt PRINTF_FORMAT VALUE: "-" stays "-"
  [ "$2" = - ] && { echo -; return; }
  awk -v f="$1" -v x="$2" 'BEGIN { printf f, x }'
}

# launch NAME WHERE serve|client ARGS... : llmesh in namespace WHERE ("" = here),
# mesh on its address with a free port, API and console on free loopback ports.
RUN_PIDS=()
launch() {
  local name=$1 where=$2 cmd=$3; shift 3
  local listen=127.0.0.1:0 pre=()
  if [ -n "$where" ]; then
    eval "listen=\$${where}_IP:0"
    pre=(ip netns exec "$(netns_ns "$where")")
  fi
  "${pre[@]}" "$LLMESH" "$cmd" --home "$T/r$RUN-$name" --listen "$listen" --port 0 --console 0 "$@" \
      >"$T/$name.out" 2>"$T/$name.log" &
  local pid=$!   # ip netns exec execs llmesh: this is llmesh's pid
  disown "$pid"
  PIDS+=("$pid"); RUN_PIDS+=("$pid")
  eval "${name}_PID=$pid ${name}_WHERE=$where"
}
# ready NAME : NAME printed its console address (sets NAME_API, NAME_CONSOLE, NAME_TOKEN)
ready() {
  local name=$1
  grep -q '^token: ' "$T/$name.out" 2>/dev/null || return 1
  eval "${name}_API=$(sed -n 's/^api: //p' "$T/$name.out")"
  eval "${name}_CONSOLE=$(sed -n 's/^console: //p' "$T/$name.out")"
  eval "${name}_TOKEN=$(sed -n 's/^token: //p' "$T/$name.out")"
}
wait_ready() {
  local name=$1 pid; eval "pid=\$${name}_PID"
  for _ in $(seq 600); do
    ready "$name" && return 0
    kill -0 "$pid" 2>/dev/null || die "$name exited early"
    sleep 0.1
  done
  die "$name printed no token within 60 s"
}
# ncurl NAME CURL_ARGS... : curl run where NAME runs (its loopback)
ncurl() {
  local name=$1 where; shift
  eval "where=\$${name}_WHERE"
  if [ -n "$where" ]; then ip netns exec "$(netns_ns "$where")" curl -s --max-time 30 "$@"
  else curl -s --max-time 30 "$@"; fi
}
status() { local c; eval "c=\$${1}_CONSOLE"; ncurl "$1" "$c/api/status"; }
counter() { status "$1" | jq -r ".counters.$2"; }
cpu_ms() { awk -v hz="$HZ" '{ sub(/.*\) /, ""); printf "%d\n", ($12 + $13) * 1000 / hz }' "/proc/$1/stat" 2>/dev/null || echo 0; }
# traffic NAME : "rx_bytes tx_bytes rx_packets tx_packets" of NAME's interface
traffic() {
  local where; eval "where=\$${1}_WHERE"
  [ -n "$where" ] || { echo "0 0 0 0"; return; }
  ip -n "$(netns_ns "$where")" -s -j link show dev eth0 |
    jq -r '.[0].stats64 | "\(.rx.bytes) \(.tx.bytes) \(.rx.packets) \(.tx.packets)"'
}
# request NAME : one completion through NAME's API; prints "HTTP_CODE SECONDS"
request() {
  local a; eval "a=\$${1}_API"
  ncurl "$1" -o /dev/null -w '%{http_code} %{time_total}\n' "$a/completions" -d "$BODY"
}

stop_run() {
  local p
  for p in "${RUN_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for p in "${RUN_PIDS[@]}"; do
    for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null
  done
  RUN_PIDS=()
}

MEMBERS=(H1 H2 S)
# snap TAG : members' cpu, traffic and counters now; clients' total cpu
declare -A SNAP=()
snap() {
  local tag=$1 m j i total=0
  SNAP[$tag,t]=$(now)
  for m in "${MEMBERS[@]}"; do
    local p; eval "p=\$${m}_PID"
    SNAP[$tag,$m,cpu]=$(cpu_ms "$p")
    read -r SNAP[$tag,$m,rxb] SNAP[$tag,$m,txb] SNAP[$tag,$m,rxp] SNAP[$tag,$m,txp] <<<"$(traffic "$m")"
    j=$(status "$m")
    SNAP[$tag,$m,routes]=$(jq -r .counters.routes_served <<<"$j")
    SNAP[$tag,$m,streams]=$(jq -r .counters.streams_accepted <<<"$j")
    SNAP[$tag,$m,conns]=$(jq -r .clients_connected <<<"$j")
    SNAP[$tag,$m,peers]=$(jq -r '.peers | length' <<<"$j")
  done
  for i in $(seq "$NCLIENTS"); do local p; eval "p=\$C${i}_PID"; total=$((total + $(cpu_ms "$p"))); done
  SNAP[$tag,ccpu]=$total
}
# window LABEL : snap, sleep --seconds, snap; prints per member figures per
# minute and sets W_<LABEL>_<figure> (means/sums over members)
window() {
  local label=$1 m
  snap "$label-a"; sleep "$SECONDS_W"; snap "$label-b"
  local el; el=$(awk -v a="${SNAP[$label-a,t]}" -v b="${SNAP[$label-b,t]}" 'BEGIN { print b - a }')
  local pm; pm=$(awk -v e="$el" 'BEGIN { print 60 / e }')
  local cpu_sum=0 b_sum=0 p_sum=0 r_sum=0 s_sum=0 c_end=0 split=""
  for m in "${MEMBERS[@]}"; do
    local d_cpu=$(( SNAP[$label-b,$m,cpu] - SNAP[$label-a,$m,cpu] ))
    local d_b=$(( SNAP[$label-b,$m,rxb] + SNAP[$label-b,$m,txb] - SNAP[$label-a,$m,rxb] - SNAP[$label-a,$m,txb] ))
    local d_p=$(( SNAP[$label-b,$m,rxp] + SNAP[$label-b,$m,txp] - SNAP[$label-a,$m,rxp] - SNAP[$label-a,$m,txp] ))
    local d_r=$(( SNAP[$label-b,$m,routes] - SNAP[$label-a,$m,routes] ))
    local d_s=$(( SNAP[$label-b,$m,streams] - SNAP[$label-a,$m,streams] ))
    split="$split $m $(awk -v r="$d_r" -v pm="$pm" 'BEGIN { printf "%.0f", r * pm }')"
    cpu_sum=$((cpu_sum + d_cpu)); b_sum=$((b_sum + d_b)); p_sum=$((p_sum + d_p))
    r_sum=$((r_sum + d_r)); s_sum=$((s_sum + d_s)); c_end=$((c_end + SNAP[$label-b,$m,conns]))
    awk -v m="$m" -v pm="$pm" -v c="$d_cpu" -v b="$d_b" -v p="$d_p" -v r="$d_r" -v s="$d_s" \
        -v ca="${SNAP[$label-a,$m,conns]}" -v cb="${SNAP[$label-b,$m,conns]}" -v lb="$LOOPBACK" -v pe="${SNAP[$label-b,$m,peers]}" \
      'BEGIN { printf "  %-2s cpu %6.0f ms/min", m, c * pm
               if (lb == 0) printf ", traffic %8.0f B/min %6.0f pkt/min", b * pm, p * pm
               printf ", routes_served %5.1f/min, streams_accepted %5.1f/min, clients_connected %s -> %s, peers listed %s\n", r * pm, s * pm, ca, cb, pe }'
  done
  local cc=$(( SNAP[$label-b,ccpu] - SNAP[$label-a,ccpu] ))
  eval "W_${label}_cpu=$(awk -v x="$cpu_sum" -v pm="$pm" 'BEGIN { printf "%.1f", x * pm / 3 }')"
  eval "W_${label}_bytes=$(awk -v x="$b_sum" -v pm="$pm" -v lb="$LOOPBACK" 'BEGIN { if (lb) print "-"; else printf "%.0f", x * pm }')"
  eval "W_${label}_pkts=$(awk -v x="$p_sum" -v pm="$pm" -v lb="$LOOPBACK" 'BEGIN { if (lb) print "-"; else printf "%.0f", x * pm }')"
  eval "W_${label}_routes=$(awk -v x="$r_sum" -v pm="$pm" 'BEGIN { printf "%.1f", x * pm }')"
  eval "W_${label}_streams=$(awk -v x="$s_sum" -v pm="$pm" 'BEGIN { printf "%.1f", x * pm }')"
  eval "W_${label}_conns=$c_end"
  eval "W_${label}_split='${split# }'"
  eval "W_${label}_ccpu=$(awk -v x="$cc" -v pm="$pm" 'BEGIN { printf "%.0f", x * pm }')"
  printf '  window %.1f s; all members: cpu %s ms/min per member (mean of 3)' "$el" "$(eval echo "\$W_${label}_cpu")"
  [ "$LOOPBACK" = 0 ] && printf ', traffic %s B/min (sum of the 3 interfaces, rx+tx)' "$(eval echo "\$W_${label}_bytes")"
  printf ', routes_served %s/min; %d clients used %s ms/min of cpu together\n' "$(eval echo "\$W_${label}_routes")" "$NCLIENTS" "$(eval echo "\$W_${label}_ccpu")"
}

# Results over runs
R_CPU0=() R_CPUN=() R_B0=() R_BN=() R_P0=() R_PN=() R_R0=() R_RN=() R_S0=() R_SN=() R_C0=() R_CN=() R_CCPU=()
R_WARM_MED=() R_WARM_P90=() R_DIR_MED=() R_DIR_P90=() R_COLD_MED=() R_COLD_P90=() R_COLD_N=()
R_SPLIT=() R_TAB_MED=() R_TAB_P90=() R_TAB_MAX=() FAILED_REQ=0 STILL_LINKED=0

one_run() {
  local i c
  NCLIENTS=0
  echo "== run $RUN of $RUNS"
  launch H1 "$WHERE_H1" serve --model "$DEMO_MODEL" --threads 1; wait_ready H1
  launch H2 "$WHERE_H2" serve --model "$DEMO_MODEL" --threads 1 --join "$H1_TOKEN"
  launch S "$WHERE_S" serve --join "$H1_TOKEN"
  wait_ready H2; wait_ready S
  H1_ID=$(status H1 | jq -r .node_id); H2_ID=$(status H2 | jq -r .node_id)
  members_full() {
    local m
    for m in H1 H2 S; do status "$m" | jq -e '[.peers[] | select(.state == "alive")] | length == 2' >/dev/null || return 1; done
  }
  wait_for 30 members_full || die "the three members do not see each other"
  sleep 10   # past the joins' gossip

  echo "(1) $SECONDS_W s window, 0 clients"
  window zero

  echo "(3) starting $N clients one after the other (join through S); time to a routing table each"
  local tab=()
  for i in $(seq "$N"); do
    local t0; t0=$(now)
    launch "C$i" "$WHERE_C" client --join "$S_TOKEN"
    NCLIENTS=$i
    local got=-
    for _ in $(seq 1500); do   # 30 s at most
      if ready "C$i" && [ "$(status "C$i" | jq -r '.routes_age_ms // "null"')" != null ]; then got=$(since "$t0"); break; fi
      eval "kill -0 \$C${i}_PID" 2>/dev/null || die "C$i exited early"
      sleep 0.02
    done
    [ "$got" = - ] && echo "  C$i: no routing table within 30 s"
    tab+=("$got")
  done
  R_TAB_MED+=("$(stats median "${tab[@]}")"); R_TAB_P90+=("$(stats p90 "${tab[@]}")"); R_TAB_MAX+=("$(stats max "${tab[@]}")")
  echo "  start -> routes_age_ms non-null: median $(stats median "${tab[@]}") s, p90 $(stats p90 "${tab[@]}") s, max $(stats max "${tab[@]}") s ($(stats n "${tab[@]}") of $N)"

  echo "(2) $REQUESTS requests through C1 (warm) and straight to its host, interleaved"
  local a1 a2 out host
  a1=$(counter H1 requests); a2=$(counter H2 requests)
  out=$(request C1); [ "${out%% *}" = 200 ] || die "C1's first request failed: $out"
  if [ "$(counter H1 requests)" -gt "$a1" ]; then host=H1; else host=H2; fi
  [ "$(counter "$host" requests)" -gt "$([ "$host" = H1 ] && echo "$a1" || echo "$a2")" ] || die "neither host counted C1's request"
  local warm=() direct=()
  for i in $(seq "$REQUESTS"); do
    out=$(request C1); if [ "${out%% *}" = 200 ]; then warm+=("${out#* }"); else FAILED_REQ=$((FAILED_REQ + 1)); fi
    out=$(request "$host"); if [ "${out%% *}" = 200 ]; then direct+=("${out#* }"); else FAILED_REQ=$((FAILED_REQ + 1)); fi
  done
  ms() { awk -v x="$1" 'BEGIN { if (x == "-") print "-"; else printf "%.2f", x * 1000 }'; }
  R_WARM_MED+=("$(ms "$(stats median "${warm[@]}")")"); R_WARM_P90+=("$(ms "$(stats p90 "${warm[@]}")")")
  R_DIR_MED+=("$(ms "$(stats median "${direct[@]}")")"); R_DIR_P90+=("$(ms "$(stats p90 "${direct[@]}")")")
  echo "  C1's host is $host; through C1: median ${R_WARM_MED[-1]} ms, p90 ${R_WARM_P90[-1]} ms; straight to $host: median ${R_DIR_MED[-1]} ms, p90 ${R_DIR_P90[-1]} ms"

  # Twice --cold clients send one request each: those whose host is also
  # their routing-table source keep a connection to it (see README), so only
  # the others can give a cold first request later.
  local last=$(( 2 * COLD + 1 )); [ "$last" -le "$N" ] || last=$N
  echo "  one request through each of C2..C$last (to be cold later), then $IDLE_WAIT s with no request"
  declare -gA HOST_OF=()
  for i in $(seq 2 "$last"); do
    a1=$(counter H1 requests)
    out=$(request "C$i"); [ "${out%% *}" = 200 ] || { FAILED_REQ=$((FAILED_REQ + 1)); continue; }
    if [ "$(counter H1 requests)" -gt "$a1" ]; then HOST_OF[C$i]=$H1_ID; else HOST_OF[C$i]=$H2_ID; fi
  done
  sleep "$IDLE_WAIT"

  echo "(1) $SECONDS_W s window, $N idle clients"
  window n

  echo "(2) first request of up to $COLD of C2..C$last, idle $((IDLE_WAIT + SECONDS_W)) s or more"
  local cold=() linked_t=()
  for i in $(seq 2 "$last"); do
    [ -n "${HOST_OF[C$i]:-}" ] || continue
    [ "${#cold[@]}" -lt "$COLD" ] || break
    # Still connected to its host? (a peer entry has "link" only while connected)
    local linked; linked=$(status "C$i" | jq --arg h "${HOST_OF[C$i]}" '[.peers[] | select(.id == $h and has("link"))] | length')
    out=$(request "C$i")
    if [ "${out%% *}" != 200 ]; then FAILED_REQ=$((FAILED_REQ + 1)); continue; fi
    if [ "$linked" = 0 ]; then cold+=("${out#* }"); else linked_t+=("${out#* }"); fi
  done
  STILL_LINKED=$((STILL_LINKED + ${#linked_t[@]}))
  [ "${#linked_t[@]}" -gt 0 ] && echo "  ${#linked_t[@]} of them were still connected to their host (as when it is also their routing-table source): median $(ms "$(stats median "${linked_t[@]}")") ms, not counted as cold"
  R_COLD_MED+=("$(ms "$(stats median "${cold[@]}")")"); R_COLD_P90+=("$(ms "$(stats p90 "${cold[@]}")")"); R_COLD_N+=("$(stats n "${cold[@]}")")
  echo "  cold: median ${R_COLD_MED[-1]} ms, p90 ${R_COLD_P90[-1]} ms over ${R_COLD_N[-1]} clients"

  R_CPU0+=("$W_zero_cpu"); R_CPUN+=("$W_n_cpu"); R_B0+=("$W_zero_bytes"); R_BN+=("$W_n_bytes")
  R_P0+=("$W_zero_pkts"); R_PN+=("$W_n_pkts"); R_R0+=("$W_zero_routes"); R_RN+=("$W_n_routes")
  R_S0+=("$W_zero_streams"); R_SN+=("$W_n_streams"); R_C0+=("$W_zero_conns"); R_CN+=("$W_n_conns"); R_CCPU+=("$W_n_ccpu"); R_SPLIT+=("$W_n_split")
  stop_run
}

echo "llmesh: $LLMESH (built $(date -r "$LLMESH" "+%F %T")); mode: $MODE"
echo "clients: $N, window: $SECONDS_W s, requests: $REQUESTS each way, cold clients: $COLD, runs: $RUNS"
for RUN in $(seq "$RUNS"); do one_run; done

# Summary: medians over runs.
md() { stats median "$@"; }
per_client() { # per_client ZERO N [SCALE]: (N - ZERO) * SCALE / clients
  awk -v a="$1" -v b="$2" -v s="${3:-1}" -v n="$N" 'BEGIN { if (a == "-" || b == "-") print "-"; else printf "%.2f", (b - a) * s / n }'
}
cpu0=$(md "${R_CPU0[@]}") cpun=$(md "${R_CPUN[@]}")
b0=$(md "${R_B0[@]}") bn=$(md "${R_BN[@]}") p0=$(md "${R_P0[@]}") pn=$(md "${R_PN[@]}")
r0=$(md "${R_R0[@]}") rn=$(md "${R_RN[@]}") s0=$(md "${R_S0[@]}") sn=$(md "${R_SN[@]}")
echo
echo "== summary (median of $RUNS run(s); mode: $MODE)"
printf '| %-58s | %12s | %12s | %14s |\n' "(1) members, per minute" "0 clients" "$N clients" "per client"
printf '|%s|%s|%s|%s|\n' "$(printf -- '-%.0s' $(seq 60))" "$(printf -- '-%.0s' $(seq 14))" "$(printf -- '-%.0s' $(seq 14))" "$(printf -- '-%.0s' $(seq 16))"
printf '| %-58s | %12s | %12s | %14s |\n' "cpu ms per member (mean of 3)" "$(fmt %.0f "$cpu0")" "$(fmt %.0f "$cpun")" "$(per_client "$cpu0" "$cpun")"
printf '| %-58s | %12s | %12s | %14s |\n' "cpu ms, 3 members together" "$(fmt %.0f "$(awk -v x="$cpu0" 'BEGIN { print x * 3 }')")" "$(fmt %.0f "$(awk -v x="$cpun" 'BEGIN { print x * 3 }')")" "$(per_client "$cpu0" "$cpun" 3)"
printf '| %-58s | %12s | %12s | %14s |\n' "traffic bytes, 3 interfaces rx+tx" "$b0" "$bn" "$(per_client "$b0" "$bn")"
printf '| %-58s | %12s | %12s | %14s |\n' "packets, 3 interfaces rx+tx" "$p0" "$pn" "$(per_client "$p0" "$pn")"
printf '| %-58s | %12s | %12s | %14s |\n' "routes_served, 3 members" "$r0" "$rn" "$(per_client "$r0" "$rn")"
printf '| %-58s | %12s | %12s | %14s |\n' "streams_accepted, 3 members" "$s0" "$sn" "$(per_client "$s0" "$sn")"
printf '| %-58s | %12s | %12s | %14s |\n' "clients_connected at the window's end, 3 members" "$(md "${R_C0[@]}")" "$(md "${R_CN[@]}")" ""
printf '| %-58s | %12s | %12s | %14s |\n' "cpu ms of the $N clients together" "" "$(md "${R_CCPU[@]}")" ""
echo
printf '| %-58s | %12s | %12s |\n' "(2) completion, max_tokens 1" "median ms" "p90 ms"
printf '|%s|%s|%s|\n' "$(printf -- '-%.0s' $(seq 60))" "$(printf -- '-%.0s' $(seq 14))" "$(printf -- '-%.0s' $(seq 14))"
printf '| %-58s | %12s | %12s |\n' "straight to the host's API ($REQUESTS)" "$(md "${R_DIR_MED[@]}")" "$(md "${R_DIR_P90[@]}")"
printf '| %-58s | %12s | %12s |\n' "through a client, warm connection ($REQUESTS)" "$(md "${R_WARM_MED[@]}")" "$(md "${R_WARM_P90[@]}")"
printf '| %-58s | %12s | %12s |\n' "through a client, first after > 60 s idle ($(md "${R_COLD_N[@]}") clients)" "$(md "${R_COLD_MED[@]}")" "$(md "${R_COLD_P90[@]}")"
echo
printf '| %-58s | %12s | %12s | %12s |\n' "(3) client start -> routing table" "median s" "p90 s" "max s"
printf '|%s|%s|%s|%s|\n' "$(printf -- '-%.0s' $(seq 60))" "$(printf -- '-%.0s' $(seq 14))" "$(printf -- '-%.0s' $(seq 14))" "$(printf -- '-%.0s' $(seq 14))"
printf '| %-58s | %12s | %12s | %12s |\n' "$N clients started one after the other" "$(md "${R_TAB_MED[@]}")" "$(md "${R_TAB_P90[@]}")" "$(md "${R_TAB_MAX[@]}")"
echo
echo "routes_served per minute by member with $N clients, each run: $(printf '[%s] ' "${R_SPLIT[@]}")"
echo "failed requests: $FAILED_REQ; idle clients still connected to their host at their first request (not cold): $STILL_LINKED"
