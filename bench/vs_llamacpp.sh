#!/usr/bin/env bash
# vs_llamacpp.sh: llmesh's engine against llama.cpp on the same files, same
# machine, same run (issue 9, item 6). By hand, never in CI.
#
#   bench/vs_llamacpp.sh [--shapes qwen2.5-0.5b,llama-3.2-1b] [--types F16,Q8_0,Q4_0,Q4_K_M,Q6_K]
#                        [--threads 1,2] [--pp 128] [--tg 64] [--reps 3] [--dir DIR] [--out FILE]
#
# Models: make_models' shape-SHAPE-q8_0 (every layer and the real vocabulary
# of the model, random weights), and the other types written from it by
# `llmesh quantize`; llama.cpp reads the very same files.
# llmesh: `llmesh bench --json` (prefill: --pp random ids in one pass;
# decode: --tg single-token steps with full logits; both from an empty cache).
# llama.cpp: node-llama-cpp 3.22.1's prebuilt CPU build (the reference tests'
# one, tests/e2e/reference/install.sh), the same tests timed by llama.cpp's
# own counters (bench/vs_llamacpp.mjs: "prompt eval time" for prefill, "eval
# time" for decode). Both: median of --reps after a warm-up.
# Bound: bench/membw.c's read bandwidth (best of 10 reads of 1 GiB) at each
# thread count, probed at the start and at the end of the run (the better
# one is used); a decode step reads every weight byte once, so the bound is
# bandwidth / decode_bytes tok/s.
# Prints the ratio table (decode, prefill, % of the bound); raw JSON rows go
# to --out (default DIR/results.jsonl). Models are kept in --dir (default: a
# temporary directory, removed at the end) and reused by the next run.
# A quick run: --shapes qwen2.5-0.5b --types Q8_0,Q4_0 --threads 1 --reps 1 (~2 min).
# --ab OLD_BINARY also measures another llmesh build (e.g. the commit before a
# kernel change) on each file right after this one, and prints new / old
# ratios: on a shared machine only ratios measured side by side mean much.
set -euo pipefail
SHAPES=qwen2.5-0.5b,llama-3.2-1b
TYPES=F16,Q8_0,Q4_0,Q4_K_M,Q6_K
THREADS=1,2
PP=128
TG=64
REPS=3
DIR=""
OUT=""
usage() {
  echo "usage: $0 [--shapes qwen2.5-0.5b,llama-3.2-1b] [--types F16,Q8_0,Q4_0,Q4_K_M,Q6_K] [--threads 1,2]" >&2
  echo "       [--pp 128] [--tg 64] [--reps 3] [--dir DIR] [--out FILE] [--ab OLD_LLMESH]" >&2
  exit 2
}
while [ $# -gt 0 ]; do
  [ $# -ge 2 ] || usage
  case "$1" in
    --shapes) SHAPES=$2 ;;
    --types) TYPES=$2 ;;
    --threads) THREADS=$2 ;;
    --pp) PP=$2 ;;
    --tg) TG=$2 ;;
    --reps) REPS=$2 ;;
    --dir) DIR=$2 ;;
    --out) OUT=$2 ;;
    --ab) OLD=$2 ;;
    *) usage ;;
  esac
  shift 2
done
HERE=$(cd "$(dirname "$0")" && pwd)
SRC=${LLMESH_SOURCE_DIR:-$(dirname "$HERE")}
BUILD=${LLMESH_BUILD:-$SRC/build}
LLMESH=${LLMESH_BINARY:-$BUILD/llmesh}
MAKE_MODELS=$BUILD/make_models
if [ -z "$DIR" ]; then
  DIR=$(mktemp -d /tmp/llmesh-vs-XXXXXX)
  trap 'rm -rf "$DIR"' EXIT
fi
mkdir -p "$DIR"
OUT=${OUT:-$DIR/results.jsonl}
: >"$OUT"

[ -n "${LLMESH_BINARY:-}" ] || cmake --build "$BUILD" --target llmesh make_models >/dev/null
"$SRC/tests/e2e/reference/install.sh" >"$DIR/install.log" 2>&1 || { cat "$DIR/install.log"; exit 1; }
cc -std=gnu17 -O2 -mavx2 -Wall -Wextra -o "$DIR/membw" "$HERE/membw.c" -lpthread

log() { echo "[$(date +%H:%M:%S)] $*" >&2; }
# The probe's rows carry the load average: the figures mean little on a busy machine.
probe() {
  "$DIR/membw" --threads "$THREADS" 2>/dev/null |
    jq -c --arg load "$(cut -d' ' -f1-3 /proc/loadavg)" '. + {probe: "membw", loadavg: $load}' >>"$OUT"
}

log "memory bandwidth probe (start)"
probe
IFS=, read -r -a shapes <<<"$SHAPES"
IFS=, read -r -a types <<<"$TYPES"
for shape in "${shapes[@]}"; do
  base="$DIR/shape-$shape-q8_0.gguf"
  if [ ! -f "$base" ]; then
    log "make_models shape-$shape-q8_0"
    "$MAKE_MODELS" model "shape-$shape-q8_0" "$base.tmp" && mv "$base.tmp" "$base"
  fi
  for type in "${types[@]}"; do
    file="$DIR/shape-$shape-$type.gguf"
    [ "$type" = Q8_0 ] && file=$base
    if [ ! -f "$file" ]; then
      log "quantize $shape to $type"
      "$LLMESH" quantize "$base" "$file.tmp" "$type" --threads 2 >>"$DIR/quantize.log" 2>&1 && mv "$file.tmp" "$file"
    fi
    log "$shape $type: llmesh"
    "$LLMESH" bench --model "$file" --pp "$PP" --tg "$TG" --threads "$THREADS" --reps "$REPS" --json |
      jq -c --arg s "$shape" --arg t "$type" '. + {program: "llmesh", shape: $s, type_asked: $t}' >>"$OUT"
    if [ -n "${OLD:-}" ]; then
      log "$shape $type: llmesh (old: $OLD)"
      "$OLD" bench --model "$file" --pp "$PP" --tg "$TG" --threads "$THREADS" --reps "$REPS" --json |
        jq -c --arg s "$shape" --arg t "$type" '. + {program: "llmesh-old", shape: $s, type_asked: $t}' >>"$OUT"
    fi
    log "$shape $type: llama.cpp"
    node "$HERE/vs_llamacpp.mjs" --model "$file" --pp "$PP" --tg "$TG" --threads "$THREADS" --reps "$REPS" |
      jq -c --arg s "$shape" --arg t "$type" '. + {shape: $s, type_asked: $t}' >>"$OUT"
  done
done
log "memory bandwidth probe (end)"
probe

# The table, from the JSON rows alone.
echo "commit $(git -C "$SRC" rev-parse --short HEAD 2>/dev/null || echo unknown), $(date -u +%Y-%m-%dT%H:%MZ)," \
  "$(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1), $(nproc) CPUs"
jq -r -s '
  def r1: (. * 10 | round) / 10;
  def r2: (. * 100 | round) / 100;
  (map(select(.probe)) | group_by(.threads) | map({key: (.[0].threads | tostring), value: (map(.read_gb_s) | max)})
   | from_entries) as $bw
  | (map(select(.program == "llmesh"))) as $ours
  | (map(select(.program == "llama.cpp"))) as $theirs
  | (map(select(.probe) | .loadavg) | unique) as $loads
  | "load average (1, 5, 15 min) at the probes: \($loads | join("; "))",
    "memory read bandwidth (bench/membw.c, best of start and end): "
    + ([$bw | to_entries[] | "\(.key) thread(s) \(.value) GB/s"] | join(", ")),
    "",
    "| model (shape of) | type | threads | decode llmesh / llama.cpp tok/s | prefill llmesh / llama.cpp tok/s | decode bound tok/s | % of bound llmesh / llama.cpp |",
    "|---|---|---|---|---|---|---|",
    ($ours[] as $a
     | ($theirs | map(select(.shape == $a.shape and .type_asked == $a.type_asked and .threads == $a.threads)) | .[0]) as $b
     | ($bw[$a.threads | tostring] * 1e9 / $a.decode_bytes) as $bound
     | "| \($a.shape) | \($a.type_asked) | \($a.threads) | "
       + "\($a.tg_tok_s | r1) / \($b.tg_tok_s // 0 | r1) = \(if $b then ($a.tg_tok_s / $b.tg_tok_s | r2) else "-" end)x | "
       + "\($a.pp_tok_s | r1) / \($b.pp_tok_s // 0 | r1) = \(if $b then ($a.pp_tok_s / $b.pp_tok_s | r2) else "-" end)x | "
       + "\($bound | r1) | "
       + "\($a.tg_tok_s / $bound * 100 | round)% / \(if $b then ($b.tg_tok_s / $bound * 100 | round | tostring) + "%" else "-" end) |"),
    (map(select(.program == "llmesh-old")) as $old
     | if ($old | length) == 0 then empty else
       "",
       "| model (shape of) | type | threads | decode new / old tok/s | prefill new / old tok/s |",
       "|---|---|---|---|---|",
       ($ours[] as $a
        | ($old | map(select(.shape == $a.shape and .type_asked == $a.type_asked and .threads == $a.threads)) | .[0]) as $o
        | select($o)
        | "| \($a.shape) | \($a.type_asked) | \($a.threads) | "
          + "\($a.tg_tok_s | r1) / \($o.tg_tok_s | r1) = \($a.tg_tok_s / $o.tg_tok_s | r2)x | "
          + "\($a.pp_tok_s | r1) / \($o.pp_tok_s | r1) = \($a.pp_tok_s / $o.pp_tok_s | r2)x |")
       end)
' "$OUT"
echo
echo "raw rows: $OUT"
