#!/usr/bin/env bash
# bench.sh: `llmesh bench` on the demo model with tiny --pp/--tg: one JSON
# object per thread count, with the fields bench/vs_llamacpp.sh reads, every
# figure a positive number (never a timing threshold: the machine is shared);
# the table form; bad arguments give one clear line and exit 2.
set -u
source "$(dirname "$0")/common.bash"

out=$("$LLMESH" bench --model "$DEMO_MODEL" --pp 8 --tg 4 --threads 1,2 --reps 2 --json 2>"$T/bench.log")
rc=$?
echo "$out"
check "bench --json exits 0" test $rc -eq 0
check "one line per thread count" test "$(wc -l <<<"$out")" -eq 2
check "every line is a JSON object" jq -e -s 'length == 2 and all(type == "object")' <<<"$out"
check "threads are 1 then 2" jq -e -s 'map(.threads) == [1, 2]' <<<"$out"
check "figures are positive numbers" jq -e -s \
  'all(.pp_tok_s, .tg_tok_s, .pp_ms, .tg_ms, .file_bytes, .params, .decode_bytes | type == "number" and . > 0)' <<<"$out"
check "model, arch, type, pp, tg, reps as asked" jq -e -s \
  'all(.model == "kjv-llama-6.3M-q8_0" and .arch == "llama" and .type == "Q8_0" and .pp == 8 and .tg == 4 and .reps == 2)' <<<"$out"
check "decode_bytes below the file size" jq -e -s 'all(.decode_bytes < .file_bytes)' <<<"$out"
check "file_bytes is the file's size" jq -e -s --argjson n "$(stat -c %s "$DEMO_MODEL")" 'all(.file_bytes == $n)' <<<"$out"

out=$("$LLMESH" bench --model "$DEMO_MODEL" --pp 0 --tg 3 --threads 1 --reps 1 --json)
check "--pp 0 skips prefill (null), decode measured" jq -e '.pp_tok_s == null and .tg_tok_s > 0' <<<"$out"

out=$("$LLMESH" bench --model "$DEMO_MODEL" --pp 4 --tg 2 --threads 1 --reps 1)
echo "$out"
check "table has a header and a row for 1 thread" grep -qE '^\| 1 \| [0-9.]+ \| [0-9.]+ \|' <<<"$out"

# refuse CMD EXPECTED-IN-MESSAGE ARGS...: exit 2 and one line naming the problem.
refuse() {
  local what=$1 want=$2; shift 2
  local msg rc
  msg=$("$LLMESH" bench "$@" 2>&1 >/dev/null); rc=$?
  check "$what: exit $rc, '$msg'" test $rc -ne 0 -a "$(wc -l <<<"$msg")" -eq 1
  check "$what: message names $want" grep -qF -- "$want" <<<"$msg"
}
refuse "no model" "--model" --pp 4
refuse "bad thread list" "--threads" --model "$DEMO_MODEL" --threads 1,x
refuse "empty thread count" "--threads" --model "$DEMO_MODEL" --threads 1,,2
refuse "zero threads" "--threads" --model "$DEMO_MODEL" --threads 0
refuse "negative pp" "--pp" --model "$DEMO_MODEL" --pp -1
refuse "nothing to measure" "--pp and --tg" --model "$DEMO_MODEL" --pp 0 --tg 0
refuse "zero reps" "--reps" --model "$DEMO_MODEL" --reps 0
refuse "unknown option" "--bogus" --model "$DEMO_MODEL" --bogus
refuse "missing file" "/nonexistent.gguf" --model /nonexistent.gguf
refuse "past the context" "context" --model "$DEMO_MODEL" --pp 1000000
finish
