#!/usr/bin/env bash
# mesh_bench.sh: membership figures of issue 4, measured with real llmesh
# processes in network namespaces (needs root; never run by CI).
#
#   (a) detection after kill -9 in a 5-node mesh: first observer to stop
#       showing the node alive, first "suspect", all four showing dead/left/gone
#   (b) removal after SIGTERM in a 5-node mesh: first and all four observers
#       not showing it alive, all four showing left/dead/gone
#   (c) false removals during a netem soak: 5 nodes, every uplink
#       "delay 50ms 20ms loss 10%"; every node's /api/status polled every second;
#       any live node shown as anything but alive counts
#   (d) time to form a full mesh of 10 nodes (first start until every node lists
#       9 alive peers; nodes 2..10 are started at once with node 1's token)
#
# usage: bench/mesh_bench.sh [--runs N] [--soak-seconds N] [--only abcd] [--netem SPEC]
#   --runs N          repetitions of (a), (b), (d); the median is printed (default 3)
#   --soak-seconds N  length of (c) (default 300)
#   --only LETTERS    run only these parts, e.g. --only ab
#   --netem SPEC      also impair every uplink in (a), (b), (d) (default: none)
# Environment: LLMESH_BINARY (default build/llmesh), NETNS_NETEM=tc|nfqueue.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
export LLMESH_SOURCE_DIR=${LLMESH_SOURCE_DIR:-$(cd "$HERE/.." && pwd)}
export LLMESH_BINARY=${LLMESH_BINARY:-$LLMESH_SOURCE_DIR/build/llmesh}
. "$LLMESH_SOURCE_DIR/tests/integration/common.bash"
. "$LLMESH_SOURCE_DIR/tests/integration/netns.bash"

RUNS=3 SOAK=300 ONLY=abcd NETEM=""
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) RUNS=$2; shift 2 ;;
    --soak-seconds) SOAK=$2; shift 2 ;;
    --only) ONLY=$2; shift 2 ;;
    --netem) NETEM=$2; shift 2 ;;
    -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
    *) echo "unknown option $1"; exit 2 ;;
  esac
done
[ -x "$LLMESH" ] || { echo "no llmesh binary at $LLMESH (make build, or set LLMESH_BINARY)"; exit 2; }

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }
median() { # median of the arguments; "-" are ignored; "-" if none
  printf '%s\n' "$@" | grep -v '^-$' | sort -g | awk '{ v[NR] = $1 } END {
    if (NR == 0) { print "-"; exit }
    if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

netns_init
for i in $(seq 10); do netns_add_host "h$i"; done
if [ -n "$NETEM" ]; then for i in $(seq 10); do netns_netem "h$i" "$NETEM"; done; fi
echo "llmesh: $LLMESH (built $(date -r "$LLMESH" "+%F %T")); runs: $RUNS; netem for a/b/d: ${NETEM:-none}${NETEM:+ ($NETNS_NETEM_BACKEND)}"

RUN=0
# mesh N : fresh identities on h1..hN, h2..hN join h1 at once; waits 120 s at
# most for every node to list N-1 alive peers; sets FORM to the seconds it took
# ("-" and status 1 if it did not). Not in a subshell: it sets hI_PID.
FORM=-
mesh() {
  local n=$1 i t0
  RUN=$((RUN + 1)); NETNS_HOME_SUFFIX="-r$RUN"
  t0=$(now)
  netns_start_node h1 serve --threads 1
  for i in $(seq 2 "$n"); do netns_launch_node "h$i" serve --join "$h1_TOKEN" --threads 1; done
  for i in $(seq 2 "$n"); do netns_wait_token "h$i"; done
  local deadline=$(( $(date +%s) + 120 ))
  while [ "$(date +%s)" -lt "$deadline" ]; do
    local ok=1
    for i in $(seq "$n"); do [ "$(netns_alive_count "h$i" 2>/dev/null)" = $((n - 1)) ] || { ok=0; break; }; done
    [ $ok = 1 ] && { FORM=$(since "$t0"); return 0; }
    sleep 0.1
  done
  FORM=-
  return 1
}
stop_all() {
  local i p
  for i in $(seq 10); do
    eval "p=\${h${i}_PID:-}"
    [ -n "$p" ] && netns_stop_node "h$i" KILL
    eval "h${i}_PID="
  done
}

# watch_down VICTIM_ID T0 LIMIT : polls h1..h4 until all show the victim
# dead/left/gone (or LIMIT s). Prints "first_not_alive first_suspect all_not_alive all_gone"
# (seconds since T0, "-" when never seen) and the states seen.
watch_down() {
  local id=$1 t0=$2 limit=$3 h s el
  local -A notalive=() gone=()
  local first_na=- first_sus=- all_na=- all_gone=- seen=""
  while :; do
    el=$(since "$t0")
    awk -v e="$el" -v l="$limit" 'BEGIN { exit !(e > l) }' && break
    for h in h1 h2 h3 h4; do
      s=$(netns_peer_state "$h" "$id")
      el=$(since "$t0")
      case " $seen " in *" $s "*) ;; *) seen="$seen $s" ;; esac
      if [ "$s" != alive ]; then
        [ -z "${notalive[$h]:-}" ] && notalive[$h]=$el
        [ "$first_na" = - ] && first_na=$el
      fi
      [ "$s" = suspect ] && [ "$first_sus" = - ] && first_sus=$el
      case "$s" in dead|left|expired|gone) [ -z "${gone[$h]:-}" ] && gone[$h]=$el ;; esac
    done
    [ "$all_na" = - ] && [ ${#notalive[@]} -eq 4 ] && all_na=$el
    [ ${#gone[@]} -eq 4 ] && { all_gone=$el; break; }
    sleep 0.1
  done
  echo "$first_na $first_sus $all_na $all_gone |$seen"
}

part_kill() { # part_kill SIGNAL LABEL
  local sig=$1 label=$2 r f1=() f2=() f3=() f4=()
  echo "== ($label) 5 nodes, kill -$sig of h5; observers h1..h4"
  for r in $(seq "$RUNS"); do
    mesh 5 || { echo "run $r: no full mesh within 120 s"; stop_all; continue; }
    local form=$FORM
    local id; id=$(netns_node_id h5)
    local t0; t0=$(now); kill -"$sig" "$h5_PID"
    local out; out=$(watch_down "$id" "$t0" 120)
    local a b c d; read -r a b c d _ <<<"$out"
    echo "run $r (mesh formed in $form s): first not alive $a s, first suspect $b s, all not alive $c s, all dead/left/gone $d s; states seen:${out#*|}"
    f1+=("$a"); f2+=("$b"); f3+=("$c"); f4+=("$d")
    stop_all
  done
  echo "($label) median of $RUNS: first not alive $(median "${f1[@]}") s, first suspect $(median "${f2[@]}") s, all not alive $(median "${f3[@]}") s, all dead/left/gone $(median "${f4[@]}") s"
}

part_soak() {
  echo "== (c) soak: 5 nodes, every uplink 'delay 50ms 20ms loss 10%', $SOAK s, every node polled every second"
  local i
  for i in $(seq 5); do netns_netem "h$i" "delay 50ms 20ms loss 10%"; done
  echo "netem backend: $NETNS_NETEM_BACKEND"
  mesh 5 || { echo "(c) no full mesh within 120 s under netem"; stop_all; return; }
  local form=$FORM
  echo "mesh of 5 formed under netem in $form s"
  local -A ids=()
  for i in $(seq 5); do ids[h$i]=$(netns_node_id "h$i"); done
  local -A down=()
  local obs=0 events=0 polls=0 t0 end
  t0=$(date +%s); end=$((t0 + SOAK))
  while [ "$(date +%s)" -lt "$end" ]; do
    local tick; tick=$(now)
    for i in $(seq 5); do
      local j; j=$(netns_status "h$i") || { echo "h$i did not answer at $(( $(date +%s) - t0 )) s"; continue; }
      polls=$((polls + 1))
      local k
      for k in $(seq 5); do
        [ "$k" = "$i" ] && continue
        local s; s=$(jq -r --arg id "${ids[h$k]}" '[.peers[] | select(.id == $id) | .state] | .[0] // "gone"' <<<"$j")
        if [ "$s" != alive ]; then
          obs=$((obs + 1))
          if [ -z "${down[h$i-h$k]:-}" ]; then
            events=$((events + 1))
            echo "  at $(( $(date +%s) - t0 )) s: h$i shows h$k as $s"
          fi
          down[h$i-h$k]=1
        else
          unset "down[h$i-h$k]"
        fi
      done
    done
    local rest; rest=$(awk -v a="$tick" -v b="$(now)" 'BEGIN { r = 1 - (b - a); print (r > 0 ? r : 0) }')
    sleep "$rest"
  done
  echo "(c) false removals in $SOAK s: $events (alive -> not-alive transitions over 20 observer/peer pairs; $obs non-alive observations in $polls status polls)"
  stop_all
  for i in $(seq 5); do
    ip -n "$(netns_ns "h$i")" qdisc del dev eth0 root 2>/dev/null
    ip netns exec "$(netns_ns "h$i")" iptables -t mangle -F POSTROUTING 2>/dev/null
    local p; eval "p=\${NETNS_NFQ_h$i:-}"; [ -n "$p" ] && kill "$p" 2>/dev/null; eval "NETNS_NFQ_h$i="
  done
  if [ -n "$NETEM" ]; then for i in $(seq 5); do netns_netem "h$i" "$NETEM"; done; fi
}

part_form() {
  echo "== (d) full mesh of 10 nodes (h2..h10 join h1 at once)"
  local r f=()
  for r in $(seq "$RUNS"); do
    mesh 10; local t=$FORM
    echo "run $r: $t s"
    f+=("$t")
    stop_all
  done
  echo "(d) median of $RUNS: full mesh of 10 in $(median "${f[@]}") s"
}

case "$ONLY" in *a*) part_kill KILL a ;; esac
case "$ONLY" in *b*) part_kill TERM b ;; esac
case "$ONLY" in *c*) part_soak ;; esac
case "$ONLY" in *d*) part_form ;; esac
