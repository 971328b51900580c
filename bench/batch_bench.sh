#!/usr/bin/env bash
# batch_bench.sh: many users at once (issue 10, item 7). By hand, never in CI.
#
#   bench/batch_bench.sh [--shape qwen2.5-0.5b] [--type Q4_0] [--streams 1,2,4,8] [--tg 64]
#                        [--threads 2] [--dir DIR]
#
# Model: make_models' shape-SHAPE-q8_0 (the real widths and vocabulary,
# random weights), quantized by `llmesh quantize` to TYPE.
# llmesh: a node with --parallel 8 (solo), then the same model forced into
# a 2-stage split on one machine (two processes); for each stream count,
# bench/batch_client.py sends that many streamed greedy completions at once,
# each with its own prompt, TG tokens each: aggregate tok/s, p50/p99 time to
# first token and gaps between tokens. llama.cpp: bench/batch_llamacpp.mjs,
# the same counts of sequences in one context (node-llama-cpp batches them).
# Prints a table; raw JSON rows in DIR/batch.jsonl.
set -euo pipefail
SHAPE=qwen2.5-0.5b
TYPE=Q4_0
STREAMS=1,2,4,8
TG=64
THREADS=2
DIR=""
while [ $# -gt 0 ]; do
  [ $# -ge 2 ] || { echo "usage: $0 [--shape S] [--type T] [--streams 1,2,4,8] [--tg N] [--threads N] [--dir DIR]" >&2; exit 2; }
  case "$1" in
    --shape) SHAPE=$2 ;; --type) TYPE=$2 ;; --streams) STREAMS=$2 ;; --tg) TG=$2 ;;
    --threads) THREADS=$2 ;; --dir) DIR=$2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift 2
done
HERE=$(cd "$(dirname "$0")" && pwd)
SRC=$(dirname "$HERE")
export LLMESH_BINARY=${LLMESH_BINARY:-$SRC/build/llmesh} LLMESH_SOURCE_DIR=$SRC
[ -n "$DIR" ] || { DIR=$(mktemp -d /tmp/llmesh-batch-XXXXXX); RM_DIR=1; }
mkdir -p "$DIR"
OUT=$DIR/batch.jsonl
: >"$OUT"
# start_node, wait_for and the cleanup of processes come from the tests' helpers.
. "$SRC/tests/integration/common.bash"
[ -z "${RM_DIR:-}" ] || trap 'cleanup; rm -rf "$DIR"' EXIT
"$SRC/tests/e2e/reference/install.sh" >"$DIR/install.log" 2>&1 || { cat "$DIR/install.log"; exit 1; }

base="$DIR/shape-$SHAPE-q8_0.gguf"
[ -f "$base" ] || "$(dirname "$LLMESH_BINARY")/make_models" model "shape-$SHAPE-q8_0" "$base"
MODEL="$DIR/shape-$SHAPE-$TYPE.gguf"
[ "$TYPE" = Q8_0 ] && MODEL=$base
[ -f "$MODEL" ] || "$LLMESH" quantize "$base" "$MODEL" "$TYPE" --threads 2 >"$DIR/quantize.log"
MODEL_ID=$(basename "$MODEL" .gguf)
IFS=, read -r -a streams <<<"$STREAMS"
max_streams=$(printf '%s\n' "${streams[@]}" | sort -n | tail -1)

run_llmesh() { # run_llmesh SETUP API
  "$LLMESH" run --model "$MODEL" --prompt "warm up" -n 2 --threads "$THREADS" >/dev/null 2>&1 || true
  for n in "${streams[@]}"; do
    # warm the node with as many streams, so that every lane timed has served once
    # (with one warming stream, the 4-stream TTFT p50 took seconds on a loaded machine);
    # the timed prompts (16 token ids each, as llama.cpp's) have a salt of their own,
    # so none is in a lane's cache and every one is evaluated, as llama.cpp's are (at
    # 1b87be7 and before they were the warm-up's 62-token texts, cached when placement
    # found their lanes: 1 run in 3)
    python3 "$HERE/batch_client.py" "$2" "$MODEL_ID" "$n" 4 $((1000 + n)) >/dev/null
    python3 "$HERE/batch_client.py" "$2" "$MODEL_ID" "$n" "$TG" "$n" |
      jq -c --arg s "$1" --arg c "$(git -C "$SRC" rev-parse --short HEAD)" '. + {program: "llmesh", setup: $s, commit: $c}' >>"$OUT"
  done
}

echo "[$(date +%T)] llmesh solo" >&2
start_node SOLO serve --model "$MODEL" --threads "$THREADS" --parallel "$max_streams" --queue 0
run_llmesh solo "$SOLO_API"
kill "$SOLO_PID"; wait "$SOLO_PID" 2>/dev/null || true

echo "[$(date +%T)] llmesh 2-stage split" >&2
start_node P0 serve --model "$MODEL" --threads "$THREADS" --parallel "$max_streams" --split 2
start_node P1 serve --join "$P0_TOKEN" --threads "$THREADS"
ready() { curl -sf "$P0_CONSOLE/api/status" | jq -e --arg m "$MODEL_ID" '[.plans[] | select(.model == $m)][0] | .state == "ready"'; }
wait_for 300 ready || { echo "the split never got ready" >&2; exit 1; }
run_llmesh split2 "$P0_API"
kill "$P0_PID" "$P1_PID"; wait "$P0_PID" "$P1_PID" 2>/dev/null || true

echo "[$(date +%T)] llama.cpp" >&2
node "$HERE/batch_llamacpp.mjs" --model "$MODEL" --streams "$STREAMS" --tg "$TG" --threads "$THREADS" |
  jq -c '. + {setup: "solo"}' >>"$OUT"

echo "commit $(git -C "$SRC" rev-parse --short HEAD), $(date -u +%Y-%m-%dT%H:%MZ), $MODEL_ID, $THREADS threads, TG $TG," \
  "load average $(cut -d' ' -f1-3 /proc/loadavg), $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)"
jq -r -s '
  (map(select(.program == "llmesh" and .setup == "solo" and .streams == 1))[0].agg_tok_s) as $one
  | "| program | setup | streams | aggregate tok/s | vs 1 stream | TTFT p50 / p99 ms | inter-token p50 / p99 ms |",
    "|---|---|---|---|---|---|---|",
    (.[] | "| \(.program) | \(.setup) | \(.streams) | \(.agg_tok_s) | \((.agg_tok_s / $one * 100 | round) / 100)x | \(.ttft_ms_p50) / \(.ttft_ms_p99) | \(.itl_ms_p50) / \(.itl_ms_p99) |")
' "$OUT"
echo "raw rows: $OUT"
# the cleanup on exit kills every node started, most already stopped above: under
# set -e the first failed kill would make a finished run exit 1
set +e
