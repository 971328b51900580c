#!/bin/sh
# step_bench.sh: builds bench/step_bench.c against a release build and runs
# it with the given arguments (see step_bench.c: what a decode step of B
# sequences costs in CPU time, without the server).
# Usage: bench/step_bench.sh --model PATH [--widths 1,2,4,8] [--steps N] [--prompt N] [--runs N] [--threads N] [--phases 1]
set -eu
here=$(cd "$(dirname "$0")" && pwd)
src=$(dirname "$here")
build=${BUILD_DIR:-$src/build}
cmake --build "$build" --target llmesh_core >/dev/null
out="$build/step_bench"
# shellcheck disable=SC2046
cc -std=gnu17 -O2 -g -Wall -Wextra -Wno-unused-parameter -I"$src/src" \
    "$here/step_bench.c" "$build/libllmesh_core.a" -o "$out" \
    $(pkg-config --cflags --libs libngtcp2 libngtcp2_crypto_gnutls gnutls libevent libcjson libpcre2-8) \
    -lpthread -lm
exec "$out" "$@"
