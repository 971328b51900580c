#!/bin/sh
# anthropic_bench.sh: the cost of rewriting a streamed chat answer into
# Anthropic's events, per chunk (bench/anthropic_bench.c).
# Usage: bench/anthropic_bench.sh [BUILD_DIR] [RUNS] [CHUNKS]   (release build, no sanitizers)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
src=$(dirname "$here")
build=${1:-$src/build}
cmake --build "$build" --target llmesh_core >/dev/null
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# shellcheck disable=SC2046
cc -std=gnu17 -O2 -g -Wall -Wextra -Wno-unused-parameter -I"$src/src" \
    "$here/anthropic_bench.c" "$build/libllmesh_core.a" -o "$tmp/anthropic_bench" \
    $(pkg-config --cflags --libs libngtcp2 libngtcp2_crypto_gnutls gnutls libevent libevent_pthreads \
      libpcre2-8 libcjson libcurl) -lpthread -lm
"$tmp/anthropic_bench" "${2:-7}" "${3:-20000}"
