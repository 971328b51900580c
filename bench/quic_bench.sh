#!/bin/sh
# quic_bench.sh: builds bench/quic_bench.c against a build tree's
# libllmesh_core.a (with the key helpers it shares with the unit tests,
# tests/unit/testkeys.c) and runs it (two processes over loopback).
# Usage: bench/quic_bench.sh [BUILD_DIR] [quic_bench args...]
#   BUILD_DIR defaults to ./build; args e.g. --runs 7 --mb 200 --pings 2000 --size 16384
# The figures in docs/quic.md come from this script on a release build
# (cmake -DCMAKE_BUILD_TYPE=RelWithDebInfo, no sanitizers).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
src=$(dirname "$here")
build=${1:-$src/build}
[ $# -gt 0 ] && shift
cmake --build "$build" --target llmesh_core >/dev/null
out="$build/quic_bench"
# shellcheck disable=SC2046
cc -std=gnu17 -O2 -g -Wall -Wextra -Wno-unused-parameter -I"$src/src" -I"$src/tests/unit" \
    "$here/quic_bench.c" "$src/tests/unit/testkeys.c" "$build/libllmesh_core.a" -o "$out" \
    $(pkg-config --cflags --libs libngtcp2 libngtcp2_crypto_gnutls gnutls libevent libcjson libpcre2-8) \
    -lpthread -lm
exec "$out" "$@"
