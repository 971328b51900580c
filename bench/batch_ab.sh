#!/usr/bin/env bash
# batch_ab.sh: one solo node under 1 and N concurrent streams, two llmesh
# binaries compared in one run (issue 10: what a change to the batch step
# buys end to end). By hand, never in CI.
#
#   bench/batch_ab.sh --a BINARY --b BINARY --model PATH [--streams 1,4] [--tg 64]
#                     [--threads 2] [--parallel 4] [--rounds 3]
#
# For each round, A then B (alternating, so that a change in the machine's
# load hits both): `llmesh serve --threads T --parallel P --queue 0` on
# loopback, warmed with P streams of 4 tokens, then for each stream count
# bench/batch_client.py sends that many streamed greedy completions at once
# (TG tokens each, prompts never cached). Prints every run and, per binary
# and stream count, the median CPU time of the node per generated token
# (user + system from /proc: on a loaded machine the figure that holds; with
# T > 1 it includes the pool's idle spinning) and the median aggregate tok/s
# (wall: meaningful on a quiet machine only).
set -euo pipefail
A="" B="" MODEL="" STREAMS=1,4 TG=64 THREADS=2 PARALLEL=4 ROUNDS=3
while [ $# -gt 0 ]; do
  [ $# -ge 2 ] || { echo "usage: $0 --a BIN --b BIN --model PATH [--streams 1,4] [--tg N] [--threads N] [--parallel N] [--rounds N]" >&2; exit 2; }
  case "$1" in
    --a) A=$2 ;; --b) B=$2 ;; --model) MODEL=$2 ;; --streams) STREAMS=$2 ;; --tg) TG=$2 ;;
    --threads) THREADS=$2 ;; --parallel) PARALLEL=$2 ;; --rounds) ROUNDS=$2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift 2
done
[ -x "$A" ] && [ -x "$B" ] && [ -f "$MODEL" ] || { echo "--a and --b must be llmesh binaries, --model a GGUF file" >&2; exit 2; }
HERE=$(cd "$(dirname "$0")" && pwd)
SRC=$(dirname "$HERE")
export LLMESH_SOURCE_DIR=$SRC LLMESH_BINARY=$A
MODEL_ID=$(basename "$MODEL" .gguf)
IFS=, read -r -a counts <<<"$STREAMS"
# start_node and the cleanup of processes come from the tests' helpers.
. "$SRC/tests/integration/common.bash"

declare -A tok cpu
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
run_one() { # run_one LABEL BINARY ROUND
  LLMESH=$2
  local n="N$3$1"
  start_node "$n" serve --model "$MODEL" --threads "$THREADS" --parallel "$PARALLEL" --queue 0
  local api_var="${n}_API" pid_var="${n}_PID"
  python3 "$HERE/batch_client.py" "${!api_var}" "$MODEL_ID" "$PARALLEL" 4 $((1000 + $3)) >/dev/null
  for s in "${counts[@]}"; do
    local row cpu0 cpu1 cpu_ms
    cpu0=$(cpu_ticks "${!pid_var}")
    row=$(python3 "$HERE/batch_client.py" "${!api_var}" "$MODEL_ID" "$s" "$TG" $((100 * $3 + s)))
    cpu1=$(cpu_ticks "${!pid_var}")
    cpu_ms=$(awk -v a="$cpu0" -v b="$cpu1" -v hz="$(getconf CLK_TCK)" -v t="$(jq -r .tokens <<<"$row")" \
      'BEGIN {printf "%.2f", (b - a) * 1000 / hz / t}')
    echo "round $3 $1 streams $s: cpu_ms_per_token $cpu_ms $row"
    cpu[$1,$s]+="$cpu_ms "
    tok[$1,$s]+="$(jq -r .agg_tok_s <<<"$row") "
  done
  kill "${!pid_var}"
  wait "${!pid_var}" 2>/dev/null || true
}
echo "A=$A B=$B model $MODEL_ID, streams $STREAMS, TG $TG, --threads $THREADS --parallel $PARALLEL, $ROUNDS rounds," \
  "$(date -u +%Y-%m-%dT%H:%MZ), load average $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq 1 "$ROUNDS"); do
  run_one A "$A" "$r"
  run_one B "$B" "$r"
done
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
echo "| binary | streams | CPU ms per token (median) | aggregate tok/s (median) |"
echo "|---|---|---|---|"
for l in A B; do
  for s in "${counts[@]}"; do
    echo "| $l | $s | $(median <<<"${cpu[$l,$s]}") | $(median <<<"${tok[$l,$s]}") |"
  done
done
echo "load average at the end $(cut -d' ' -f1-3 /proc/loadavg)"
set +e
