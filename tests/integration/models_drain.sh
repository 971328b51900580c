#!/usr/bin/env bash
# Drain before unload (issue 11): POST /api/models/unload on a model with
# requests in flight answers 202 "draining": the model leaves the node's
# record at once, new requests for it go to another host (or get 503 with
# the reason when there is none), the ones in flight finish, and then it is
# unloaded (its memory given back). Requests still running at the drain
# deadline end with an error event. Generation is slowed with the test knob
# LLMESH_DEBUG_TOKEN_DELAY_MS so that a request is surely in flight.
set -u
. "$(dirname "$0")/common.bash"
MODEL_ID=kjv-llama-6.3M-q8_0

stream_body() { jq -n --arg m "$MODEL_ID" --argjson n "$1" '{model: $m, prompt: "In the beginning", max_tokens: $n, stream: true, temperature: 0}'; }
body=$(jq -n --arg m "$MODEL_ID" '{model: $m, prompt: "In the beginning", max_tokens: 4, temperature: 0}')
first_chunk() { grep -q '^data: {' "$1"; }
unload() { curl -s -o "$T/unload.json" -w '%{http_code}' "$1/api/models/unload" -d "$2"; }
served_by() { curl -sf "$1/api/status" | jq -e --arg m "$MODEL_ID" '.models | index($m)'; }
gone() { curl -sf "$1/api/status" | jq -e '.node_id as $me | .models == [] and ([.plans[] | select(.coordinator == $me)] == []) and .memory_used == 0'; }
b_sequences() { curl -sf "$B_CONSOLE/api/status" | jq '[.lanes[].batch_sequences] | add // 0'; }
peer_serves() { curl -sf "$1/api/status" | jq -e --arg m "$MODEL_ID" '[.peers[] | select(.state == "alive") | .models | index($m)] | any'; }

LLMESH_DEBUG_TOKEN_DELAY_MS=100 start_node A serve --model "$DEMO_MODEL" --threads 1
LLMESH_DEBUG_TOKEN_DELAY_MS=100 start_node B serve --model "$DEMO_MODEL" --threads 1 --join "$A_TOKEN"
wait_for 30 peer_serves "$A_CONSOLE" || die "A does not see B serving $MODEL_ID"

# ---- 1. in flight finishes, new requests go to the other host -------------------------------
curl -sN "$A_API/completions" -d "$(stream_body 40)" >"$T/long.txt" &
c1=$!
wait_for 20 first_chunk "$T/long.txt" || die "no first chunk from A"
check "unload of a bad drain_s: 400" test "$(unload "$A_CONSOLE" "{\"model\": \"$MODEL_ID\", \"drain_s\": -1}")" = 400
check "unload with a request in flight: 202" test "$(unload "$A_CONSOLE" "{\"model\": \"$MODEL_ID\"}")" = 202
check "it says draining" jq -e '.state == "draining" and .drain_s == 30' "$T/unload.json"
check "a second unload while it drains: 409" test "$(unload "$A_CONSOLE" "{\"model\": \"$MODEL_ID\"}")" = 409
check "A no longer lists the model as served" bash -c "! curl -sf '$A_CONSOLE/api/status' | jq -e --arg m '$MODEL_ID' '.models | index(\$m)'"
check "its plan shows draining" bash -c "curl -sf '$A_CONSOLE/api/status' | jq -e '.plans[0].draining == true'"
b0=$(b_sequences)
code=$(curl -s -o "$T/new.json" -w '%{http_code}' "$A_API/completions" -d "$body")
check "a new request through A meanwhile is answered by B: 200" test "$code" = 200
check "with text" jq -e '.choices[0].text | length > 0' "$T/new.json"
check "B computed it (its batch counters grew)" test "$(b_sequences)" -gt "$b0"
wait "$c1"
check "the request in flight finished normally" grep -q '"finish_reason":"length"' "$T/long.txt"
check "with no error event" bash -c "! grep -q '^data: {\"error\"' '$T/long.txt'"
check "and [DONE]" bash -c "grep -v '^\$' '$T/long.txt' | tail -n 1 | grep -qx 'data: \[DONE\]'"
check "then A unloads the model: gone, memory given back" wait_for 10 gone "$A_CONSOLE"
check "B still serves it" served_by "$B_CONSOLE"

# ---- 2. the drain deadline, and no other host -----------------------------------------------
wait_for 15 bash -c "! curl -sf '$B_CONSOLE/api/status' | jq -e --arg m '$MODEL_ID' '[.peers[] | .models | index(\$m)] | any'" ||
  fail "B still sees A serving the model"
curl -sN "$B_API/completions" -d "$(stream_body 300)" >"$T/cut.txt" &
c2=$!
wait_for 20 first_chunk "$T/cut.txt" || die "no first chunk from B"
t0=$(date +%s%N)
check "unload with drain_s 1: 202" test "$(unload "$B_CONSOLE" "{\"model\": \"$MODEL_ID\", \"drain_s\": 1}")" = 202
code=$(curl -s -o "$T/refused.json" -w '%{http_code}' "$B_API/completions" -d "$body")
check "a new request while it drains, no other host: 503" test "$code" = 503
check "that says the model is being unloaded" grep -q "being unloaded" "$T/refused.json"
wait "$c2"
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
echo "the stream past the deadline ended ${ms} ms after the unload (drain_s 1)"
check "the stream past the deadline carries an error event" grep -q '^data: {"error".*drain deadline' "$T/cut.txt"
check "and ends with [DONE]" bash -c "grep -v '^\$' '$T/cut.txt' | tail -n 1 | grep -qx 'data: \[DONE\]'"
check "it was cut short" bash -c "[ \$(grep -c '^data: {\"id' '$T/cut.txt') -lt 250 ]"
check "then B unloads the model" wait_for 10 gone "$B_CONSOLE"
check "a request for it now gets 404" test "$(curl -s -o /dev/null -w '%{http_code}' "$B_API/completions" -d "$body")" = 404
grep -q "draining 1 request" "$T/B.log" && pass "B's log says it drains" || fail "B's log says it drains"
finish
