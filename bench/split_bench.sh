#!/usr/bin/env bash
# split_bench.sh: what a pipeline split costs (issue "Split a model across
# nodes", point 9). By hand, never in CI; needs root for the namespace part.
#
#   sudo bench/split_bench.sh [--runs N] [--tokens N] [--only loop|netns] [--delays "1 5 20"]
#
# Model: make_models' bench-qwen2.5-0.5b-q8_0 (Qwen2.5-0.5B widths, 24
# layers, Q8_0), a ~100-token prompt, greedy, N tokens, streamed and timed by
# bench/split_client.py. Every figure is the median of --runs (default 5).
#  - loopback: solo with 1 and 2 threads; 2 and 3 stages (--split) with 1
#    thread per stage (so 2 stages use the same 2 threads as solo at 2);
#  - namespaces: 2 and 3 stages with every node's uplink delayed by D ms one
#    way (tc netem, or the nfqueue stand-in), for each D of --delays.
# Printed per case: time to first token, decode tok/s of one stream, the
# aggregate decode rate with as many streams at once as stages (each on its
# own lane: stages work on different requests at the same time), ratios to
# solo at the same total threads (solo at 2 threads: 2 streams at once),
# hidden-state bytes on the wire per position (the coordinator's and every
# stage's counters, payload only), and the software cost per hop: the ring's
# round trip as stage 0 measures it, less the other stages' compute (their
# counters), per hop, less what the link itself takes (loopback: a bare UDP
# datagram to a process asleep in recv(), bench/udp_link.c, with the same
# idle time; namespaces: the delay), and the cruder (time per token - solo
# time per token at 1 thread - link) / hops.
# On a machine shared with other work, `sudo nice -n -15 bench/split_bench.sh`
# keeps the nodes (which inherit it) on the cores. Not chrt -f: under a
# real-time policy a computing lane never yields to the loop thread, and
# tokens reach the client in bursts.
# Fetch throughput on a rate-limited link: bench/weights_bench.sh --link 1gbit.
set -u
RUNS=5
TOKENS=64
ONLY=""
DELAYS="1 5 20"
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) RUNS=$2; shift 2 ;;
    --tokens) TOKENS=$2; shift 2 ;;
    --only) ONLY=$2; shift 2 ;;
    --delays) DELAYS=$2; shift 2 ;;
    *) echo "usage: $0 [--runs N] [--tokens N] [--only loop|netns] [--delays \"1 5 20\"]"; exit 2 ;;
  esac
done
HERE=$(cd "$(dirname "$0")" && pwd)
export LLMESH_SOURCE_DIR=${LLMESH_SOURCE_DIR:-$(dirname "$HERE")}
export LLMESH_BINARY=${LLMESH_BINARY:-$LLMESH_SOURCE_DIR/build/llmesh}
# The tests' helpers: start_node, wait_for, the netns topology and cleanup.
. "$LLMESH_SOURCE_DIR/tests/integration/common.bash"
MODEL_ID=bench-qwen2.5-0.5b-q8_0
MODEL="$T/$MODEL_ID.gguf"
"$(dirname "$LLMESH")/make_models" model "$MODEL_ID" "$MODEL" || die "make_models"
CLIENT="python3 $HERE/split_client.py"
cc -std=gnu17 -O2 -o "$T/udp_link" "$HERE/udp_link.c" || die "udp_link"
for _ in $(seq 12); do echo -n "And the word of the LORD came unto him, saying, Arise, go to the city. "; done >"$T/prompt.txt"

median() { sort -g | awk '{a[NR] = $1} END { if (NR == 0) print "nan"; else if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

# measure NAME API_URL CONSOLE_URL [CURL_PREFIX...]: runs the client RUNS
# times after one warm-up, prints the medians and sets M_TPOT (ms per token).
measure() {
  local name=$1 api=$2 console=$3; shift 3
  local pre=("$@")
  "${pre[@]}" $CLIENT "$api" "$MODEL_ID" "$T/prompt.txt" 8 >/dev/null
  local before after
  sleep 1.5 # the stages' STATS reach stage 0 once a second
  before=$("${pre[@]}" curl -sf "$console/api/status")
  : >"$T/runs.jsonl"
  for _ in $(seq "$RUNS"); do "${pre[@]}" $CLIENT "$api" "$MODEL_ID" "$T/prompt.txt" "$TOKENS" >>"$T/runs.jsonl"; done
  sleep 1.5
  after=$("${pre[@]}" curl -sf "$console/api/status")
  local ttft tps tokens
  ttft=$(jq -r .ttft_ms "$T/runs.jsonl" | median)
  tps=$(jq -r .decode_tok_s "$T/runs.jsonl" | median)
  tokens=$(jq -s 'map(.tokens) | add' "$T/runs.jsonl")
  # Hidden-state bytes: what stage 0 sent plus what every stage sent on.
  local wire
  wire=$(jq -n --argjson a "$before" --argjson b "$after" --arg m "$MODEL_ID" '
    def plan(s): [s.plans[] | select(.model == $m)][0];
    def bytes(s): (plan(s).counters.bytes_sent // 0) + ([plan(s).stages[1:][]?.counters.bytes_out // 0] | add // 0);
    bytes($b) - bytes($a)')
  # Every position (prompt and generated) crosses every hop once.
  local per_token positions
  positions=$(jq -s 'map(.tokens + .prompt_tokens) | add' "$T/runs.jsonl")
  per_token=$(awk -v w="$wire" -v n="$positions" 'BEGIN { printf "%.0f", (n > 0 ? w / n : 0) }')
  M_TPOT=$(awk -v t="$tps" 'BEGIN { printf "%.3f", (t > 0 ? 1000 / t : 0) }')
  # The ring's round trip as stage 0 measures it (hidden states out, final
  # ones back) less the other stages' compute, per exchange, from the
  # counters of these same runs: the network and software cost of the ring.
  M_RING=$(jq -n --argjson a "$before" --argjson b "$after" --arg m "$MODEL_ID" '
    def plan(s): [s.plans[] | select(.model == $m)][0];
    def rt(s): (plan(s).counters.round_trips // 0);
    def rtms(s): (plan(s).counters.round_trip_ms // 0) * rt(s);
    def comp(s): [plan(s).stages[1:][]?.counters.compute_ms // 0] | add // 0;
    if rt($b) > rt($a) then (((rtms($b) - rtms($a)) - (comp($b) - comp($a))) / (rt($b) - rt($a))) else 0 end')
  printf "%-28s ttft %7.1f ms   decode %7.2f tok/s (%6.2f ms/token)   wire %6s B/position   ring %.3f ms\n" \
    "$name" "$ttft" "$tps" "$M_TPOT" "$per_token" "$M_RING"
  echo "$name $ttft $tps $M_TPOT $per_token" >>"$T/results.txt"
}

# measure_parallel NAME K API_URL [PREFIX...]: K streams at once (after one
# warm-up round), RUNS times; prints the median aggregate decode rate (all
# tokens over the wall time of the round) and sets M_AGG.
measure_parallel() {
  local name=$1 k=$2 api=$3; shift 3
  local pre=("$@") r i
  : >"$T/agg.txt"
  for r in $(seq 0 "$RUNS"); do
    local t0 t1 pids=()
    t0=$(date +%s.%N)
    for i in $(seq "$k"); do
      "${pre[@]}" $CLIENT "$api" "$MODEL_ID" "$T/prompt.txt" "$TOKENS" >"$T/par$i.json" &
      pids+=($!)
    done
    wait "${pids[@]}"
    t1=$(date +%s.%N)
    [ "$r" = 0 ] && continue # warm-up
    jq -s --arg a "$t0" --arg b "$t1" 'map(.tokens) | add / (($b | tonumber) - ($a | tonumber))' "$T"/par*.json >>"$T/agg.txt"
  done
  M_AGG=$(median <"$T/agg.txt")
  printf "%-28s %d streams at once: %7.2f tok/s in all\n" "$name" "$k" "$M_AGG"
  echo "$name parallel$k $M_AGG" >>"$T/results.txt"
  rm -f "$T"/par*.json
}

plan_ready() { curl -sf "$1/api/status" | jq -e --arg m "$MODEL_ID" --argjson n "$2" \
  '[.plans[] | select(.model == $m)][0] | .state == "ready" and (.stages | length) == $n' >/dev/null; }

stop_all() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
  PIDS=()
}

echo "split_bench: $(date -u +%Y-%m-%dT%H:%MZ), commit $(git -C "$LLMESH_SOURCE_DIR" rev-parse --short HEAD 2>/dev/null), $RUNS runs, $TOKENS tokens"

if [ "$ONLY" != netns ]; then
  echo "== loopback"
  for threads in 1 2; do
    start_node SOLO serve --model "$MODEL" --threads "$threads" --parallel 3
    measure "solo, $threads thread(s)" "$SOLO_API" "$SOLO_CONSOLE"
    eval "SOLO$threads=$M_TPOT"
    measure_parallel "solo, $threads thread(s)" 2 "$SOLO_API"
    eval "SOLOAGG$threads=$M_AGG"
    stop_all
  done
  for k in 2 3; do
    start_node P0 serve --model "$MODEL" --threads 1 --parallel 3 --split "$k"
    for i in $(seq 1 $((k - 1))); do start_node "P$i" serve --join "$P0_TOKEN" --threads 1; done
    wait_for 120 plan_ready "$P0_CONSOLE" "$k" || die "no $k-stage plan"
    measure "$k stages, 1 thread each" "$P0_API" "$P0_CONSOLE"
    # The link: a bare datagram to a process that slept through the others' compute.
    link=$("$T/udp_link" --gap-us "$(awk -v t="$M_TPOT" -v k="$k" 'BEGIN { printf "%d", t * 1000 / k }')" --count 100 | awk '{print $2}')
    hop=$(awk -v t="$M_TPOT" -v s="$SOLO1" -v k="$k" -v l="$link" 'BEGIN { printf "%.0f", (t - s) / k * 1000 - l }')
    ring_hop=$(awk -v r="$M_RING" -v k="$k" 'BEGIN { printf "%.0f", r / k * 1000 }')
    soft_hop=$(awk -v h="$ring_hop" -v l="$link" 'BEGIN { printf "%.0f", h - l }')
    ratio=$(awk -v t="$M_TPOT" -v s="$SOLO2" 'BEGIN { printf "%.2f", s / t }')
    echo "    per hop: ${ring_hop} us from the ring's counters, of which the bare link ${link} us: software ${soft_hop} us; (time per token less solo at 1 thread) per hop less the link: ${hop} us"
    echo "    one stream vs solo at 2 threads: ${ratio}x"
    measure_parallel "$k stages, 1 thread each" "$k" "$P0_API"
    echo "    $k streams at once vs solo at 2 threads with 2 at once: $(awk -v a="$M_AGG" -v s="$SOLOAGG2" 'BEGIN { printf "%.2f", a / s }')x"
    stop_all
  done
  # Two stages that each use both cores: they take turns on one stream, so
  # this is solo's hardware split in two, as two machines would each use all
  # of theirs.
  start_node P0 serve --model "$MODEL" --threads 2 --parallel 3 --split 2
  start_node P1 serve --join "$P0_TOKEN" --threads 2
  wait_for 120 plan_ready "$P0_CONSOLE" 2 || die "no 2-stage plan"
  measure "2 stages, 2 threads each" "$P0_API" "$P0_CONSOLE"
  echo "    one stream vs solo at 2 threads: $(awk -v t="$M_TPOT" -v s="$SOLO2" 'BEGIN { printf "%.2f", s / t }')x"
  stop_all
  # A VM's speed can move with its host within minutes: solo at 1 thread
  # once more, so a reader sees whether the ratios above compare like runs.
  start_node SOLO serve --model "$MODEL" --threads 1 --parallel 3
  measure "solo, 1 thread (again)" "$SOLO_API" "$SOLO_CONSOLE"
  echo "    drift: $(awk -v a="$M_TPOT" -v b="$SOLO1" 'BEGIN { printf "%+.0f%%", (a / b - 1) * 100 }') time per token against the first solo run"
  stop_all
fi

if [ "$ONLY" != loop ]; then
  . "$LLMESH_SOURCE_DIR/tests/integration/netns.bash"
  netns_init
  [ -n "${SOLO1:-}" ] || {
    netns_add_host q0
    netns_start_node q0 serve --model "$MODEL" --threads 1 --parallel 1
    measure "solo, 1 thread (netns)" http://127.0.0.1:9337/v1 http://127.0.0.1:3131 ip netns exec "$(netns_ns q0)"
    SOLO1=$M_TPOT
    netns_stop_node q0
  }
  n=0
  for d in $DELAYS; do
    for k in 2 3; do
      n=$((n + 1))
      names=()
      for i in $(seq 0 $((k - 1))); do names+=("d${n}s$i"); netns_add_host "d${n}s$i"; done
      for h in "${names[@]}"; do netns_netem "$h" "delay ${d}ms"; done
      netns_start_node "${names[0]}" serve --model "$MODEL" --threads 1 --parallel 3 --split "$k"
      tok=$(eval echo "\$${names[0]}_TOKEN")
      for h in "${names[@]:1}"; do netns_start_node "$h" serve --join "$tok" --threads 1; done
      in0=(ip netns exec "$(netns_ns "${names[0]}")")
      ok=0
      for _ in $(seq 600); do
        "${in0[@]}" curl -sf http://127.0.0.1:3131/api/status | jq -e --arg m "$MODEL_ID" --argjson n "$k" \
          '[.plans[] | select(.model == $m)][0] | .state == "ready" and (.stages | length) == $n' >/dev/null && { ok=1; break; }
        sleep 0.2
      done
      [ "$ok" = 1 ] || die "no $k-stage plan at ${d} ms"
      measure "$k stages, ${d} ms one way ($NETNS_NETEM_BACKEND)" http://127.0.0.1:9337/v1 http://127.0.0.1:3131 "${in0[@]}"
      rtt=$("${in0[@]}" curl -sf http://127.0.0.1:3131/api/status | jq --arg m "$MODEL_ID" '[.plans[] | select(.model == $m)][0].counters.round_trip_ms')
      hop=$(awk -v t="$M_TPOT" -v s="$SOLO1" -v k="$k" -v d="$d" 'BEGIN { printf "%.3f", (t - s - k * d) / k }')
      ring_hop=$(awk -v r="$M_RING" -v k="$k" -v d="$d" 'BEGIN { printf "%.0f", (r - k * d) / k * 1000 }')
      echo "    ring ${k} x ${d} ms; round trip ${rtt} ms; per hop beyond the delay: ${ring_hop} us (counters), ${hop} ms (time per token less solo)"
      measure_parallel "$k stages, ${d} ms" "$k" http://127.0.0.1:9337/v1 "${in0[@]}"
      for h in "${names[@]}"; do
        netns_stop_node "$h"
        # The nfqueue stand-in is a Python process per namespace that burns
        # CPU: end it before the next case, or it slows every later figure.
        nfq=$(eval echo "\${NETNS_NFQ_${h}:-}"); [ -n "$nfq" ] && kill "$nfq" 2>/dev/null
      done
    done
  done
fi
echo "figures: $T/results.txt"
