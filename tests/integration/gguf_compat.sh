#!/usr/bin/env bash
# gguf_compat.sh: files written by `llmesh quantize` are valid GGUF for an
# independent reader: llama.cpp (node-llama-cpp 3.22.1, prebuilt CPU binary,
# installed from the npm registry into tests/e2e/node_modules) loads each,
# its perplexity on models/kjv-heldout.txt agrees with ours within 1% (both
# keep an F16 KV cache, llama.cpp also rounds q and the attention weights to
# F16, and it rounds Q8_K activations differently: measured differences are
# <= 0.1%). Greedy continuations are printed, not compared:
# those rounding differences flip near-ties (Q5_K_M diverges at token 3).
# node and npm come from scripts/deps.sh and the package from the npm
# registry; if either is missing the test fails (it never skips quietly).
# Our own reader's checks are in quantize.sh and test_quants.
set -u
source "$(dirname "$0")/common.bash"

E2E="$SRC/tests/e2e"
command -v node >/dev/null && command -v npm >/dev/null || die "node and npm are needed (scripts/deps.sh installs them)"
if [ ! -d "$E2E/node_modules/node-llama-cpp" ]; then
  # Only the linux-x64 CPU build: the optional CUDA/Vulkan packages are ~600 MB.
  # `npm install` with the committed lock, not `npm ci`: node-llama-cpp lists
  # platform packages the registry does not have for this version, which npm
  # cannot record in the lock, and `npm ci` then refuses the lock.
  (cd "$E2E" && npm install --omit=optional --ignore-scripts --no-audit --no-fund >"$T/npm.log" 2>&1) \
    || die "npm install in tests/e2e failed: $(tail -n 5 "$T/npm.log")"
fi

F32="$SRC/tests/models/kjv-llama-6.3M-f32.gguf"
TEXT="$SRC/models/kjv-heldout.txt"
for type in Q4_0 Q5_1 Q3_K Q4_K_M Q5_K_M Q6_K Q2_K_S Q3_K_S Q3_K_M Q3_K_L; do
  out="$T/demo-$type.gguf"
  "$LLMESH" quantize "$F32" "$out" "$type" --threads 2 2>"$T/quantize-$type.log" || die "quantize $type"
  ours=$("$LLMESH" perplexity --model "$out" --file "$TEXT" --threads 2 2>/dev/null | sed -n 's/^perplexity: //p')
  ours_run=$("$LLMESH" run --model "$out" --prompt "In the beginning" --temp 0 -n 8 2>/dev/null)
  theirs=$(cd "$E2E" && node gguf_compat.mjs "$out" "$TEXT" 2>"$T/node-$type.log")
  if [ -z "$theirs" ]; then fail "$type: llama.cpp could not load the file ($(tail -n 2 "$T/node-$type.log"))"; continue; fi
  ppl=$(echo "$theirs" | jq -r .perplexity)
  greedy=$(echo "$theirs" | jq -r .greedy)
  echo "$type: llmesh $ours, llama.cpp $ppl; greedy llmesh '$ours_run', llama.cpp '$greedy'"
  check "$type: perplexity within 1% of llama.cpp's" \
    awk -v a="$ours" -v b="$ppl" 'BEGIN { d = (a - b) / b; exit !(d < 0.01 && d > -0.01) }'
done
finish
