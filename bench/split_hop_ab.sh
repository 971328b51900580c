#!/usr/bin/env bash
# split_hop_ab.sh: the software cost of a pipeline hop, two llmesh binaries
# compared request by request (issue 8 item 9: per-hop overhead <= 100 us).
# By hand, never in CI.
#
#   bench/split_hop_ab.sh --a BINARY --b BINARY [--model PATH|bench] [--tokens 64]
#                         [--rounds 10] [--threads 1]
#
# Starts two 2-stage splits on loopback at once, one per binary (a
# coordinator with --split 2 --parallel 1 and a stage node each), and sends
# one streamed greedy completion (bench/split_client.py) to A, then to B, then
# A again, ROUNDS times: a change in the machine's load hits both alike. Per
# request, from the nodes' own counters read before and after it:
#   - hop: the ring's round trip as stage 0 measures it (hidden states queued
#     by the lane to final states taken in by its loop), less stage 1's
#     compute, halved (two hops per round trip), in us;
#   - CPU ms per token of each process (user + system, /proc) and of the
#     coordinator's loop thread alone (the main thread);
#   - decode tok/s.
# Prints every request and the medians per binary, with the load average.
# The bare link (bench/udp_link.c: a datagram to a process asleep in recv())
# is measured once per round at the same gap, for the hop's share below us.
# Model: the demo model by default (tiny compute: the hop is most of a
# token's time), `bench` for make_models' bench-qwen2.5-0.5b-q8_0 (a stage
# computes ~10 ms per token), or any GGUF path.
set -euo pipefail
A="" B="" MODEL="" TOKENS=64 ROUNDS=10 THREADS=1
while [ $# -gt 0 ]; do
  [ $# -ge 2 ] || { echo "usage: $0 --a BIN --b BIN [--model PATH|bench] [--tokens N] [--rounds N] [--threads N]" >&2; exit 2; }
  case "$1" in
    --a) A=$2 ;; --b) B=$2 ;; --model) MODEL=$2 ;; --tokens) TOKENS=$2 ;; --rounds) ROUNDS=$2 ;;
    --threads) THREADS=$2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift 2
done
[ -x "$A" ] && [ -x "$B" ] || { echo "--a and --b must be llmesh binaries" >&2; exit 2; }
HERE=$(cd "$(dirname "$0")" && pwd)
SRC=$(dirname "$HERE")
export LLMESH_SOURCE_DIR=$SRC LLMESH_BINARY=$A
# start_node, wait_for and the cleanup of processes come from the tests' helpers.
. "$SRC/tests/integration/common.bash"
if [ "$MODEL" = bench ]; then
  MODEL=$T/bench-qwen2.5-0.5b-q8_0.gguf
  "$SRC/build/make_models" model bench-qwen2.5-0.5b-q8_0 "$MODEL" >/dev/null
fi
[ -n "$MODEL" ] || MODEL=$SRC/models/kjv-llama-6.3M-q8_0.gguf
MODEL_ID=$(basename "$MODEL" .gguf)
cc -std=gnu17 -O2 -o "$T/udp_link" "$HERE/udp_link.c"
for _ in $(seq 12); do echo -n "And the word of the LORD came unto him, saying, Arise, go to the city. "; done >"$T/prompt.txt"

ticks() { awk '{print $14 + $15}' "$1"; }
snapshot() { # snapshot X: the counters and CPU times of pair X, one line
  local c="C$1" s="S$1"
  local cc="${c}_CONSOLE" sc="${s}_CONSOLE" cp="${c}_PID" sp="${s}_PID"
  local plan stage
  plan=$(curl -sf "${!cc}/api/status" | jq -c --arg m "$MODEL_ID" '[.plans[] | select(.model == $m)][0].counters')
  stage=$(curl -sf "${!sc}/api/status" | jq -c '.stages[0]')
  echo "$(jq -r '"\(.round_trips) \(.round_trip_ms * .round_trips)"' <<<"$plan") $(jq -r .compute_ms <<<"$stage")" \
    "$(ticks "/proc/${!cp}/stat") $(ticks "/proc/${!sp}/stat") $(ticks "/proc/${!cp}/task/${!cp}/stat")"
}

for X in A B; do
  LLMESH=$([ $X = A ] && echo "$A" || echo "$B")
  start_node "C$X" serve --model "$MODEL" --threads "$THREADS" --parallel 1 --split 2
  tv="C${X}_TOKEN"
  start_node "S$X" serve --join "${!tv}" --threads "$THREADS"
done
for X in A B; do
  cv="C${X}_CONSOLE"
  wait_for 300 split_ready "${!cv}" "$MODEL_ID" 2 || die "pair $X: no 2-stage plan"
  av="C${X}_API"
  python3 "$HERE/split_client.py" "${!av}" "$MODEL_ID" "$T/prompt.txt" 8 >/dev/null
done
echo "A=$A"
echo "B=$B"
echo "model $MODEL_ID, $TOKENS tokens, $THREADS thread(s) per node, $ROUNDS rounds, $(date -u +%Y-%m-%dT%H:%MZ)," \
  "load average $(cut -d' ' -f1-3 /proc/loadavg)"
hz=$(getconf CLK_TCK)
declare -A hop tps cpu0 cpu1 loop
links=""
for r in $(seq 1 "$ROUNDS"); do
  for X in A B; do
    av="C${X}_API"
    before=$(snapshot $X)
    row=$(python3 "$HERE/split_client.py" "${!av}" "$MODEL_ID" "$T/prompt.txt" "$TOKENS")
    after=$(snapshot $X)
    n=$(jq -r .tokens <<<"$row")
    line=$(awk -v a="$before" -v b="$after" -v n="$n" -v hz="$hz" 'BEGIN {
      split(a, x, " "); split(b, y, " ");
      rt = y[1] - x[1]; ring = (y[2] - x[2]) - (y[3] - x[3]);
      printf "%.0f %.1f %.1f %.2f", (rt > 0 ? ring / rt / 2 * 1000 : 0),
        (y[4] - x[4]) * 1000 / hz / n, (y[5] - x[5]) * 1000 / hz / n, (y[6] - x[6]) * 1000 / hz / n }')
    read -r h c0 c1 lp <<<"$line"
    t=$(jq -r .decode_tok_s <<<"$row")
    echo "round $r $X: hop $h us, decode $t tok/s, CPU ms/token coordinator $c0 (loop thread $lp), stage $c1"
    hop[$X]+="$h "; tps[$X]+="$t "; cpu0[$X]+="$c0 "; cpu1[$X]+="$c1 "; loop[$X]+="$lp "
  done
  gap=$(awk -v t="$t" 'BEGIN {printf "%d", (t > 0 ? 1e6 / t / 2 : 10000)}')
  links+="$("$T/udp_link" --gap-us "$gap" --count 50 | awk '{print $2}') "
done
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
for X in A B; do
  echo "median $X: hop $(median <<<"${hop[$X]}") us, decode $(median <<<"${tps[$X]}") tok/s," \
    "CPU ms/token coordinator $(median <<<"${cpu0[$X]}") (loop thread $(median <<<"${loop[$X]}")), stage $(median <<<"${cpu1[$X]}")"
done
echo "bare link (udp_link, one way, median of the rounds' medians): $(median <<<"$links") us"
echo "load average at the end $(cut -d' ' -f1-3 /proc/loadavg)"
