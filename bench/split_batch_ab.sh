#!/usr/bin/env bash
# split_batch_ab.sh: a 2-stage split under concurrent streams, two llmesh
# binaries compared in one run (issue 10 item 6: do a split's lanes share
# their FORWARDs). By hand, never in CI.
#
#   bench/split_batch_ab.sh --a BINARY --b BINARY [--model PATH] [--streams 4] [--tg 64]
#                           [--threads 1] [--rounds 3]
#
# For each round, A then B (alternating, so that a change in the machine's
# load hits both): a coordinator with --split 2 --parallel STREAMS and a
# stage node, both on loopback; bench/batch_client.py sends STREAMS
# streamed greedy completions at once (TG tokens each) after one warm-up
# request; the pair is stopped. Prints every run and, per binary, the median
# aggregate tok/s and the median CPU time (user + system of both processes)
# per token, with the coordinator's counters (pieces per FORWARD). Model: by default the demo model (tiny: the load of
# a shared machine hurts it least); any GGUF with --model.
set -euo pipefail
A="" B="" MODEL="" STREAMS=4 TG=64 THREADS=1 ROUNDS=3
while [ $# -gt 0 ]; do
  [ $# -ge 2 ] || { echo "usage: $0 --a BIN --b BIN [--model PATH] [--streams N] [--tg N] [--threads N] [--rounds N]" >&2; exit 2; }
  case "$1" in
    --a) A=$2 ;; --b) B=$2 ;; --model) MODEL=$2 ;; --streams) STREAMS=$2 ;; --tg) TG=$2 ;;
    --threads) THREADS=$2 ;; --rounds) ROUNDS=$2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift 2
done
[ -x "$A" ] && [ -x "$B" ] || { echo "--a and --b must be llmesh binaries" >&2; exit 2; }
HERE=$(cd "$(dirname "$0")" && pwd)
SRC=$(dirname "$HERE")
export LLMESH_SOURCE_DIR=$SRC LLMESH_BINARY=$A
[ -n "$MODEL" ] || MODEL=$SRC/models/kjv-llama-6.3M-q8_0.gguf
MODEL_ID=$(basename "$MODEL" .gguf)
# start_node, wait_for and the cleanup of processes come from the tests' helpers.
. "$SRC/tests/integration/common.bash"

declare -A tok cpu
# CPU time (user + system, clock ticks) of the given processes, summed: less
# sensitive to a loaded machine than wall time.
cpu_ticks() { for p in "$@"; do awk '{print $14 + $15}' "/proc/$p/stat"; done | awk '{s += $1} END {print s}'; }
run_one() { # run_one LABEL BINARY ROUND
  LLMESH=$2
  start_node "C$3$1" serve --model "$MODEL" --threads "$THREADS" --parallel "$STREAMS" --split 2 --queue 0
  local c="C$3$1"
  local api_var="${c}_API" console_var="${c}_CONSOLE" token_var="${c}_TOKEN" pid_var="${c}_PID"
  start_node "S$3$1" serve --join "${!token_var}" --threads "$THREADS"
  local s_pid_var="S$3${1}_PID"
  ready() { curl -sf "${!console_var}/api/status" | jq -e --arg m "$MODEL_ID" '[.plans[] | select(.model == $m)][0] | .state == "ready"'; }
  wait_for 300 ready || { echo "the split never got ready" >&2; exit 1; }
  python3 "$HERE/batch_client.py" "${!api_var}" "$MODEL_ID" 1 4 >/dev/null
  local row cpu0 cpu1
  cpu0=$(cpu_ticks "${!pid_var}" "${!s_pid_var}")
  row=$(python3 "$HERE/batch_client.py" "${!api_var}" "$MODEL_ID" "$STREAMS" "$TG")
  cpu1=$(cpu_ticks "${!pid_var}" "${!s_pid_var}")
  local cpu_ms
  cpu_ms=$(awk -v a="$cpu0" -v b="$cpu1" -v hz="$(getconf CLK_TCK)" -v t="$(jq -r .tokens <<<"$row")" \
    'BEGIN {printf "%.1f", (b - a) * 1000 / hz / t}')
  row=$(jq -c --argjson c "$cpu_ms" '. + {cpu_ms_per_token: $c}' <<<"$row")
  cpu[$1]+="$cpu_ms "
  local counters
  counters=$(curl -sf "${!console_var}/api/status" | jq -c --arg m "$MODEL_ID" \
    '[.plans[] | select(.model == $m)][0].counters | {frames_sent, pieces_sent}')
  echo "round $3 $1: $row $counters"
  tok[$1]+="$(jq -r .agg_tok_s <<<"$row") "
  kill "${!pid_var}" "${!s_pid_var}"
  wait "${!pid_var}" "${!s_pid_var}" 2>/dev/null || true
}
echo "A=$A B=$B model $MODEL_ID, $STREAMS streams, TG $TG, $THREADS thread(s) per node, $ROUNDS rounds," \
  "$(date -u +%Y-%m-%dT%H:%MZ), load average $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq 1 "$ROUNDS"); do
  run_one A "$A" "$r"
  run_one B "$B" "$r"
done
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
a=$(median <<<"${tok[A]}") b=$(median <<<"${tok[B]}")
echo "median aggregate tok/s: A $a, B $b (B/A $(awk -v a="$a" -v b="$b" 'BEGIN {printf "%.2f", b / a}')x)"
ca=$(median <<<"${cpu[A]}") cb=$(median <<<"${cpu[B]}")
echo "median CPU ms per token (both processes): A $ca, B $cb (B/A $(awk -v a="$ca" -v b="$cb" 'BEGIN {printf "%.2f", b / a}')x)"
echo "load average at the end $(cut -d' ' -f1-3 /proc/loadavg)"
