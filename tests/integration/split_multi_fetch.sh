#!/usr/bin/env bash
# A stage fetches its layers from two holders at once (issue "Split a model
# across nodes", item 4; issue "Models people name", item 5: several peers
# share the work), and one of them dies halfway:
#  1. A serves a 2-layer model (make_models qwen2.5-0.5b-q8_0: stage 1's
#     layer is ~16 MB, 16 chunks) with --split 2; B (no file) runs stage 1
#     and fetches its layer from A into its cache. Both stop.
#  2. A2 serves a copy of the file with --split 2; B comes back on its home
#     with too little memory for a stage: it only holds the part. Both serve
#     chunks slowly (LLMESH_DEBUG_CHUNK_SERVE_DELAY_MS), so the fetch takes a
#     few seconds. C joins with memory, runs stage 1 and fetches the layer
#     from A2 and B at once: both served bytes (the servers' counters and
#     C's per-source tally), every chunk verified, C's part is byte for byte
#     B's (sha256), the answer equals `llmesh run`.
#  3. C leaves; D joins with an empty home and fetches the layer again from
#     both; once B has sent D some chunks, B is killed -9. D gets the rest
#     from A2 (B's chunks go to it), its part is byte for byte B's, and the
#     answer equals `llmesh run`.
set -u
. "$(dirname "$0")/common.bash"

MODEL_ID=qwen2.5-0.5b-q8_0
MODEL="$T/$MODEL_ID.gguf"
"$(dirname "$LLMESH")/make_models" model "$MODEL_ID" "$MODEL" >/dev/null || die "make_models"
PROMPT="In the beginning"
body=$(jq -n --arg m "$MODEL_ID" --arg p "$PROMPT" '{model: $m, prompt: $p, max_tokens: 8, temperature: 0}')
"$LLMESH" run --model "$MODEL" --prompt "$PROMPT" --temp 0 -n 8 >"$T/expected" 2>"$T/run.log" \
  || die "llmesh run: $(cat "$T/run.log")"
status() { curl -sf "$1/api/status"; }
stage1() { status "$1" | jq -c --arg m "$MODEL_ID" '[.plans[] | select(.model == $m)][0].stages[1]'; }
answer() { curl -sf "$1/completions" -d "$body" | jq -j '.choices[0].text'; }
part_of() { ls "$T/$1"/cache/parts/*.gguf 2>/dev/null | head -1; }
export LLMESH_DEBUG_CHUNK_SERVE_DELAY_MS=0

# ---- 1. B gets the part from A ---------------------------------------------------------------
mkdir -p "$T/a1" "$T/a2"
cp "$MODEL" "$T/a1/"
start_node A serve --model "$T/a1/$MODEL_ID.gguf" --split 2 --threads 1 --max-memory 1G
start_node B serve --join "$A_TOKEN" --threads 1 --max-memory 1G
wait_for 90 split_ready "$A_CONSOLE" "$MODEL_ID" 2 || die "no 2-stage plan on A and B: $(stage1 "$A_CONSOLE")"
B_ID=$(status "$B_CONSOLE" | jq -r .node_id)
B_PART=$(part_of B)
check "B holds stage 1's part in its cache" test -s "$B_PART"
kill -TERM "$A_PID" "$B_PID"
wait "$A_PID" "$B_PID" 2>/dev/null
PART_SHA=$(sha256sum "$B_PART" | cut -d' ' -f1)

# ---- 2. C gets it from A2 and B at once ---------------------------------------------------------
cp "$MODEL" "$T/a2/"
LLMESH_DEBUG_CHUNK_SERVE_DELAY_MS=250 start_node A2 serve --model "$T/a2/$MODEL_ID.gguf" --split 2 --threads 1 \
  --max-memory 1G
A2_ID=$(status "$A2_CONSOLE" | jq -r .node_id)
LLMESH_DEBUG_CHUNK_SERVE_DELAY_MS=250 start_node B serve --join "$A2_TOKEN" --threads 1 --max-memory 1M --home "$T/B"
B_PID_2=$B_PID
b_holds() { grep -q "cached part served to peers" "$T/B.log"; }
wait_for 30 b_holds || die "B does not serve its cached part"
planning() { status "$A2_CONSOLE" | jq -e --arg m "$MODEL_ID" '[.plans[] | select(.model == $m)][0].state == "planning"'; }
wait_for 30 planning || die "A2's plan does not wait for a node"
start_node C serve --join "$A2_TOKEN" --threads 1 --max-memory 1G
wait_for 90 split_ready "$A2_CONSOLE" "$MODEL_ID" 2 || die "no 2-stage plan on A2 and C: $(stage1 "$A2_CONSOLE")"
C_ID=$(status "$C_CONSOLE" | jq -r .node_id)
plan=$(stage1 "$A2_CONSOLE")
total=$(jq .total_bytes <<<"$plan")
check "stage 1 runs on C, its layer fetched" \
  jq -e --arg c "$C_ID" '.node == $c and .total_bytes > 0 and .fetched_bytes == .total_bytes' <<<"$plan"
from=$(status "$C_CONSOLE" | jq -c .weights.counters.fetched_from)
echo "C fetched from: $from (of $total bytes)"
check "C got chunks from A2" jq -e --arg p "$A2_ID" '[.[] | select(.peer == $p and .bytes > 0)] | length == 1' <<<"$from"
check "C got chunks from B" jq -e --arg p "$B_ID" '[.[] | select(.peer == $p and .bytes > 0)] | length == 1' <<<"$from"
check "the two add up to the part, each byte once" jq -e --argjson t "$total" 'map(.bytes) | add == $t' <<<"$from"
check "A2 served weight bytes" bash -c "curl -sf '$A2_CONSOLE/api/status' | jq -e '.counters.weights_served_bytes > 0'"
check "B served weight bytes" bash -c "curl -sf '$B_CONSOLE/api/status' | jq -e '.counters.weights_served_bytes > 0'"
check "every chunk C received verified" \
  bash -c "curl -sf '$C_CONSOLE/api/status' | jq -e '.weights.counters.bad_chunks == 0'"
check "C's part is byte for byte B's" test "$(sha256sum "$(part_of C)" | cut -d' ' -f1)" = "$PART_SHA"
answer "$A2_API" >"$T/got2"
check "the answer equals llmesh run" cmp "$T/expected" "$T/got2"

# ---- 3. D gets it from A2 and B; B is killed -9 halfway ------------------------------------------
kill -TERM "$C_PID"
wait "$C_PID" 2>/dev/null
wait_for 30 planning || die "A2 does not plan again after C left"
start_node D serve --join "$A2_TOKEN" --threads 1 --max-memory 1G
from_b() {
  status "$D_CONSOLE" | jq -e --arg p "$B_ID" '[.weights.fetches[].sources[] | select(.peer == $p and .bytes > 0)] | length == 1'
}
wait_for 60 from_b || die "D got nothing from B: $(status "$D_CONSOLE" | jq -c .weights.fetches)"
before=$(status "$D_CONSOLE" | jq -c '.weights.fetches[0]')
echo "D before the kill: $before"
kill -9 "$B_PID_2"
check "D was not done when B died" jq -e '.done_bytes < .total_bytes' <<<"$before"
wait_for 90 split_ready "$A2_CONSOLE" "$MODEL_ID" 2 || die "no 2-stage plan on A2 and D: $(stage1 "$A2_CONSOLE")"
D_ID=$(status "$D_CONSOLE" | jq -r .node_id)
check "stage 1 runs on D, its layer fetched" \
  bash -c "jq -e --arg d '$D_ID' '.node == \$d and .fetched_bytes == .total_bytes' <<<'$(stage1 "$A2_CONSOLE")'"
from=$(status "$D_CONSOLE" | jq -c .weights.counters.fetched_from)
echo "D fetched from: $from (of $total bytes)"
check "D got chunks from B before it died and the rest from A2" \
  jq -e --arg a "$A2_ID" --arg b "$B_ID" --argjson t "$total" \
  '([.[] | select(.peer == $b)][0].bytes > 0) and ([.[] | select(.peer == $a)][0].bytes > 0) and (map(.bytes) | add == $t)' \
  <<<"$from"
check "D's part is byte for byte B's" test "$(sha256sum "$(part_of D)" | cut -d' ' -f1)" = "$PART_SHA"
answer "$A2_API" >"$T/got3"
check "the answer equals llmesh run" cmp "$T/expected" "$T/got3"
finish
