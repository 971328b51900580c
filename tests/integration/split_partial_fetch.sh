#!/usr/bin/env bash
# A stage fetches its layers from a node that holds only those layers (issue
# "Split a model across nodes", item 4: weights move once):
#  1. A serves the demo model with --split 2; B (no model file) fetches the
#     layers of stage 1 from A into its cache. The answer equals
#     `llmesh run`. Both stop.
#  2. A2 serves the same model (a copy of the file) with --split 2; B comes
#     back on its home with too little memory to run a stage, so its record
#     only says which part it holds. A2's file is then removed (A2 runs
#     stage 0 from its mapping, but can serve no weights). C joins with
#     memory: it becomes stage 1 and fetches exactly those layers from B's
#     cached part, every chunk verified. The answer equals `llmesh run`;
#     B served weight bytes, A2 none.
set -u
. "$(dirname "$0")/common.bash"

PROMPT="And Jesus said unto them,"
ID=$(basename "$DEMO_MODEL" .gguf)
status() { curl -sf "$1/api/status"; }
stage1() { status "$1" | jq -c --arg m "$ID" '[.plans[] | select(.model == $m)][0].stages[1]'; }
body=$(jq -n --arg m "$ID" --arg p "$PROMPT" '{model: $m, prompt: $p, max_tokens: 40, temperature: 0}')
"$LLMESH" run --model "$DEMO_MODEL" --prompt "$PROMPT" --temp 0 -n 40 >"$T/expected" 2>"$T/run.log" \
  || die "llmesh run: $(cat "$T/run.log")"

# ---- 1. B fetches stage 1's layers from A -------------------------------------
mkdir -p "$T/a1" "$T/a2"
cp "$DEMO_MODEL" "$T/a1/"
start_node A serve --model "$T/a1/$ID.gguf" --split 2 --threads 1 --max-memory 1G
start_node B serve --join "$A_TOKEN" --threads 1 --max-memory 1G
wait_for 90 split_ready "$A_CONSOLE" "$ID" 2 || die "no 2-stage plan on A and B: $(stage1 "$A_CONSOLE")"
B_ID=$(status "$B_CONSOLE" | jq -r .node_id)
first_plan=$(stage1 "$A_CONSOLE")
check "stage 1 runs on B, which fetched its layers from A" \
  jq -e --arg b "$B_ID" '.node == $b and .total_bytes > 0 and .fetched_bytes == .total_bytes' <<<"$first_plan"
curl -sf "$A_API/completions" -d "$body" | jq -j '.choices[0].text' >"$T/got1"
check "the split answer equals llmesh run" cmp "$T/expected" "$T/got1"
layers=$(jq -c .layers <<<"$first_plan")
check "B lists the part it holds: layers $layers, not the head" bash -c "curl -sf '$B_CONSOLE/api/status' |
  jq -e --argjson l '$layers' '[.weights.parts[] | select(.first == \$l[0] and .end == \$l[1] and (.head | not))] | length == 1'"
kill -TERM "$A_PID" "$B_PID"
wait "$A_PID" "$B_PID" 2>/dev/null

# ---- 2. C fetches them from B's cache, A2 having no file to serve -----------
cp "$DEMO_MODEL" "$T/a2/"
start_node A2 serve --model "$T/a2/$ID.gguf" --split 2 --threads 1 --max-memory 1G
start_node B serve --join "$A2_TOKEN" --threads 1 --max-memory 1M --home "$T/B"
planning() { status "$A2_CONSOLE" | jq -e --arg m "$ID" '[.plans[] | select(.model == $m)][0].state == "planning"'; }
check "with B short of memory, A2's plan waits for a node" wait_for 30 planning
b_holds() {
  status "$A2_CONSOLE" >/dev/null && grep -q "cached part served to peers" "$T/B.log"
}
check "B, back on its home, serves its cached part" wait_for 30 b_holds
rm "$T/a2/$ID.gguf"
start_node C serve --join "$A2_TOKEN" --threads 1 --max-memory 1G
wait_for 90 split_ready "$A2_CONSOLE" "$ID" 2 || die "no 2-stage plan on A2 and C: $(stage1 "$A2_CONSOLE")"
C_ID=$(status "$C_CONSOLE" | jq -r .node_id)
second_plan=$(stage1 "$A2_CONSOLE")
check "stage 1 runs on C, over the same layers $layers, fetched" \
  jq -e --arg c "$C_ID" --argjson l "$layers" \
  '.node == $c and .layers == $l and .total_bytes > 0 and .fetched_bytes == .total_bytes' <<<"$second_plan"
check "C asked B for them" grep -q "asking ${B_ID:0:12}, which holds it" "$T/C.log"
check "B served them from its cached part" grep -q "from the cached part" "$T/B.log"
check "B served weight bytes" bash -c "curl -sf '$B_CONSOLE/api/status' | jq -e '.counters.weights_served_bytes > 0'"
check "A2 (its file removed) served none" \
  bash -c "curl -sf '$A2_CONSOLE/api/status' | jq -e '.counters.weights_served_bytes == 0'"
check "every chunk C received verified" \
  bash -c "curl -sf '$C_CONSOLE/api/status' | jq -e '.weights.counters.bad_chunks == 0 and .weights.counters.fetched_bytes > 0'"
curl -sf "$A2_API/completions" -d "$body" | jq -j '.choices[0].text' >"$T/got2"
check "the answer with weights from B's cache equals llmesh run" cmp "$T/expected" "$T/got2"
sbody=$(jq -n --arg m "$ID" --arg p "$PROMPT" '{model: $m, prompt: $p, max_tokens: 40, temperature: 0, stream: true}')
curl -sfN "$A2_API/completions" -d "$sbody" | grep '^data: {' | sed 's/^data: //' | jq -j '.choices[0].text' >"$T/got3"
check "... and streamed" cmp "$T/expected" "$T/got3"
check "C holds the part now too, and says so" bash -c "curl -sf '$C_CONSOLE/api/status' |
  jq -e --argjson l '$layers' '[.weights.parts[] | select(.first == \$l[0] and .end == \$l[1])] | length == 1'"

finish
