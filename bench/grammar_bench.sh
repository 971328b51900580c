#!/bin/sh
# grammar_bench.sh: the per-token cost of constrained output's mask on a
# real 200k-token vocabulary (OpenAI's o200k_base, from the js-tiktoken npm
# package installed into bench/grammar/node_modules). Prints bench/grammar_bench.c's table.
# Usage: bench/grammar_bench.sh [BUILD_DIR] [REPS]   (release build, no sanitizers)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
src=$(dirname "$here")
build=${1:-$src/build}
reps=${2:-21}
cmake --build "$build" --target llmesh_core >/dev/null
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
[ -d "$here/grammar/node_modules/js-tiktoken" ] || (cd "$here/grammar" && npm install --no-audit --no-fund >/dev/null)
node "$here/grammar/dump_vocab.mjs" "$tmp/vocab.txt" >/dev/null
# shellcheck disable=SC2046
cc -std=gnu17 -O2 -g -Wall -Wextra -Wno-unused-parameter -I"$src/src" \
    "$here/grammar_bench.c" "$build/libllmesh_core.a" -o "$tmp/grammar_bench" \
    $(pkg-config --cflags --libs libcjson) -lpthread -lm
"$tmp/grammar_bench" "$tmp/vocab.txt" "$reps"
