#!/usr/bin/env bash
# quantize.sh: `llmesh quantize` on the demo model. Each output loads with our
# reader and its held-out perplexity (F32: 71.1475) stays within a band per
# type: Q6_K and Q5_K_M +-0.5%, Q4_K_M +-1%, Q4_0 +-2% (measured +0.12%,
# +0.01%, +0.07%, +0.47%; bands about 4x), Q3_K_M +-6% and Q2_K_S +-13%
# (measured +2.6% and +6.6%; about 2x; see docs/engine.md). Also: input
# of other types is dequantized first (Q8_0 -> Q4_K_M), the file_type key is
# set, and bad arguments give one clear line.
set -u
source "$(dirname "$0")/common.bash"

F32="$SRC/tests/models/kjv-llama-6.3M-f32.gguf"
TEXT="$SRC/models/kjv-heldout.txt"
F32_PPL=71.1475
ppl_of() { "$LLMESH" perplexity --model "$1" --file "$TEXT" --threads 2 2>/dev/null | sed -n 's/^perplexity: //p'; }
within() { awk -v a="$1" -v b="$F32_PPL" -v band="$2" 'BEGIN { d = (a - b) / b; exit !(d <= band && d >= -band) }'; }

for spec in Q6_K:0.005 Q5_K_M:0.005 Q4_K_M:0.01 Q4_0:0.02 Q3_K_M:0.06 Q2_K_S:0.13; do
  type=${spec%%:*} band=${spec#*:}
  "$LLMESH" quantize "$F32" "$T/$type.gguf" "$type" --threads 2 2>"$T/q-$type.log" || die "quantize $type"
  p=$(ppl_of "$T/$type.gguf")
  echo "$type: perplexity $p ($(stat -c %s "$T/$type.gguf") bytes)"
  check "$type perplexity within $band of F32" within "$p" "$band"
done

"$LLMESH" quantize "$DEMO_MODEL" "$T/from-q8.gguf" Q4_K_M --threads 2 2>/dev/null || die "requantize Q8_0"
p=$(ppl_of "$T/from-q8.gguf")
echo "Q8_0 -> Q4_K_M: perplexity $p"
check "requantized from Q8_0 within 1.5% of F32" within "$p" 0.015

out=$("$LLMESH" quantize "$F32" "$T/x.gguf" Q9_K 2>&1); rc=$?
check "unknown type refused" test $rc -ne 0
check "message lists the types" grep -q Q4_K_M <<<"$out"
out=$("$LLMESH" quantize /nonexistent.gguf "$T/x.gguf" Q4_0 2>&1); rc=$?
check "missing input refused" test $rc -ne 0
check "message names the file" grep -q /nonexistent.gguf <<<"$out"
check "no partial output left" test ! -e "$T/x.gguf" -a ! -e "$T/x.gguf.tmp"
finish
