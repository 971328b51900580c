#!/usr/bin/env bash
# split_machines_bench.sh: a split's batching on two "machines" (issue 8 item
# 3 with issue 10's streams). By hand, never in CI; needs root (namespaces).
#
#   sudo bench/split_machines_bench.sh [--model PATH] [--streams 1,2,4,8] [--tg 64]
#                                      [--rounds 3] [--dir DIR]
#
# On one machine a 2-stage split's stages share its cores, so a split cannot
# show what pipelining gives. Here each "machine" is a network namespace
# whose llmesh is pinned to a core of its own (taskset; the threads a node
# starts later inherit the pin), and the stages talk over a veth pair:
#   - one machine: solo, --threads 1, pinned to core 0;
#   - two machines: a coordinator (--split 2, --threads 1) pinned to core 0
#     and a stage node (--threads 1) pinned to core 1, each in its namespace;
#   - the same two cores as one machine: solo, --threads 2, unpinned.
# For each stream count, bench/batch_client.py sends that many streamed
# greedy completions at once (TG tokens each), after a warm-up with as many;
# the median over ROUNDS of the aggregate tok/s, and of the CPU time (user +
# system) of the nodes per token. Every node has --parallel of the largest
# count. The machine's other work shares the cores: the load average is
# printed; run under `nice -n -15` on a shared machine.
# Model: by default make_models' shape-qwen2.5-0.5b-q8_0 quantized to Q4_0,
# batch_bench.sh's model.
set -u
MODEL="" STREAMS=1,2,4,8 TG=64 ROUNDS=3 DIR=""
while [ $# -gt 0 ]; do
  [ $# -ge 2 ] || { echo "usage: $0 [--model PATH] [--streams 1,2,4,8] [--tg N] [--rounds N] [--dir DIR]" >&2; exit 2; }
  case "$1" in
    --model) MODEL=$2 ;; --streams) STREAMS=$2 ;; --tg) TG=$2 ;; --rounds) ROUNDS=$2 ;; --dir) DIR=$2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift 2
done
[ "$(nproc)" -ge 2 ] || { echo "needs 2 CPUs" >&2; exit 2; }
HERE=$(cd "$(dirname "$0")" && pwd)
SRC=$(dirname "$HERE")
export LLMESH_BINARY=${LLMESH_BINARY:-$SRC/build/llmesh} LLMESH_SOURCE_DIR=$SRC
. "$SRC/tests/integration/common.bash"
. "$SRC/tests/integration/netns.bash"
netns_init
[ -n "$DIR" ] || DIR=$T
mkdir -p "$DIR"
if [ -z "$MODEL" ]; then
  base="$DIR/shape-qwen2.5-0.5b-q8_0.gguf"
  [ -f "$base" ] || "$(dirname "$LLMESH")/make_models" model shape-qwen2.5-0.5b-q8_0 "$base"
  MODEL="$DIR/shape-qwen2.5-0.5b-Q4_0.gguf"
  [ -f "$MODEL" ] || "$LLMESH" quantize "$base" "$MODEL" Q4_0 --threads 2 >"$DIR/quantize.log"
fi
MODEL_ID=$(basename "$MODEL" .gguf)
IFS=, read -r -a streams <<<"$STREAMS"
max_streams=$(printf '%s\n' "${streams[@]}" | sort -n | tail -1)
REAL=$LLMESH
for c in 0 1; do printf '#!/bin/sh\nexec taskset -c %s %s "$@"\n' "$c" "$REAL" >"$T/llmesh-core$c"; chmod +x "$T/llmesh-core$c"; done

netns_add_host m0
netns_add_host m1
cpu_ticks() { for p in "$@"; do awk '{print $14 + $15}' "/proc/$p/stat"; done | awk '{s += $1} END {print s}'; }
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
declare -A AGG CPU
# measure SETUP PIDS...: every stream count, ROUNDS times, against m0's API.
measure() {
  local setup=$1; shift
  local n r row t0 t1 tok
  for n in "${streams[@]}"; do
    netns_exec m0 python3 "$HERE/batch_client.py" http://127.0.0.1:9337/v1 "$MODEL_ID" "$n" 4 >/dev/null
    local aggs="" cpus=""
    for r in $(seq "$ROUNDS"); do
      t0=$(cpu_ticks "$@")
      row=$(netns_exec m0 python3 "$HERE/batch_client.py" http://127.0.0.1:9337/v1 "$MODEL_ID" "$n" "$TG") || die "batch_client: $row"
      t1=$(cpu_ticks "$@")
      tok=$(jq -r .tokens <<<"$row")
      aggs+="$(jq -r .agg_tok_s <<<"$row") "
      cpus+="$(awk -v a="$t0" -v b="$t1" -v hz="$(getconf CLK_TCK)" -v t="$tok" 'BEGIN {printf "%.1f", (b - a) * 1000 / hz / t}') "
      echo "$setup, $n streams, round $r: $row" >&2
    done
    AGG[$setup,$n]=$(median <<<"$aggs")
    CPU[$setup,$n]=$(median <<<"$cpus")
  done
}

echo "[$(date +%T)] one machine (1 core)" >&2
LLMESH=$T/llmesh-core0 netns_start_node m0 serve --model "$MODEL" --threads 1 --parallel "$max_streams"
measure one "$m0_PID"
netns_stop_node m0

echo "[$(date +%T)] two machines (1 core each), a 2-stage split" >&2
NETNS_HOME_SUFFIX=split LLMESH=$T/llmesh-core0 netns_start_node m0 serve --model "$MODEL" --threads 1 \
  --parallel "$max_streams" --split 2
LLMESH=$T/llmesh-core1 netns_start_node m1 serve --join "$m0_TOKEN" --threads 1
ready() { netns_status m0 | jq -e --arg m "$MODEL_ID" '[.plans[] | select(.model == $m)][0] | .state == "ready" and (.stages | length) == 2'; }
wait_for 300 ready || die "the split never got ready"
measure split "$m0_PID" "$m1_PID"
counters=$(netns_status m0 | jq -c --arg m "$MODEL_ID" '[.plans[] | select(.model == $m)][0].counters')
netns_stop_node m0
netns_stop_node m1

echo "[$(date +%T)] the two cores as one machine" >&2
NETNS_HOME_SUFFIX=two netns_start_node m0 serve --model "$MODEL" --threads 2 --parallel "$max_streams"
measure two "$m0_PID"
netns_stop_node m0

echo "commit $(git -C "$SRC" rev-parse --short HEAD), $(date -u +%Y-%m-%dT%H:%MZ), $MODEL_ID, TG $TG, median of $ROUNDS," \
  "load average $(cut -d' ' -f1-3 /proc/loadavg), $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)"
echo "split's counters at stage 0: $counters"
echo "| streams | one machine, 1 core: tok/s (CPU ms/token) | two machines, 1 core each, split: tok/s (CPU ms/token) | split / one machine | 2 cores as one machine: tok/s | split / 2 cores |"
echo "|---|---|---|---|---|---|"
for n in "${streams[@]}"; do
  awk -v n="$n" -v o="${AGG[one,$n]}" -v oc="${CPU[one,$n]}" -v s="${AGG[split,$n]}" -v sc="${CPU[split,$n]}" -v t="${AGG[two,$n]}" \
    'BEGIN { printf "| %d | %.1f (%.1f) | %.1f (%.1f) | %.2fx | %.1f | %.2fx |\n", n, o, oc, s, sc, s / o, t, s / t }'
done
