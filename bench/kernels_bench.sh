#!/bin/sh
# kernels_bench.sh: per-type matvec speed (bench/kernels_bench.c) and
# `llmesh run` generation speed of the demo model quantized to each type,
# median of RUNS runs, with the ratio to F32 from the same run.
# Usage: bench/kernels_bench.sh [BUILD_DIR] [RUNS]   (release build, no sanitizers)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
src=$(dirname "$here")
build=${1:-$src/build}
runs=${2:-5}
cmake --build "$build" --target llmesh_core llmesh >/dev/null
out="$build/kernels_bench"
# shellcheck disable=SC2046
cc -std=gnu17 -O2 -g -Wall -Wextra -Wno-unused-parameter -I"$src/src" \
    "$here/kernels_bench.c" "$build/libllmesh_core.a" -o "$out" \
    $(pkg-config --cflags --libs libngtcp2 libngtcp2_crypto_gnutls gnutls libevent libcjson libpcre2-8) \
    -lpthread -lm
"$out" --runs "$runs"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
f32="$src/tests/models/kjv-llama-6.3M-f32.gguf"
echo
echo "llmesh run, demo model, -n 200, 1 thread, generation tok/s (median of $runs)"
f32_tps=""
for type in F32 F16 Q8_0 Q4_0 Q4_1 Q5_0 Q5_1 Q2_K Q3_K Q4_K Q5_K Q6_K Q4_K_M Q5_K_M; do
  "$build/llmesh" quantize "$f32" "$tmp/m.gguf" "$type" --threads 2 2>/dev/null
  tps=$(for r in $(seq "$runs"); do
          "$build/llmesh" run --model "$tmp/m.gguf" --prompt "In the beginning" --temp 0 -n 200 \
            --threads 1 --stats 2>&1 >/dev/null | grep -o '[0-9.]* tokens/s' | tail -1 | cut -d' ' -f1
        done | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')
  [ -z "$f32_tps" ] && f32_tps=$tps
  awk -v t="$type" -v a="$tps" -v b="$f32_tps" 'BEGIN { printf "%-7s %8.0f tok/s  %5.2fx\n", t, a, a / b }'
done
