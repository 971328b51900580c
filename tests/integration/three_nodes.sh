#!/usr/bin/env bash
# Three real llmesh processes on loopback: A serves the demo model, B joins A
# with no model, C is a client that joins through B. Checks membership,
# model listing through C, and that a greedy completion forwarded C -> A is
# byte for byte what `llmesh run --temp 0` prints, streamed or not.
set -u
. "$(dirname "$0")/common.bash"

PROMPT="And Jesus said unto them,"
MODEL_ID=kjv-llama-6.3M-q8_0

# Not paced: the demo model makes 32 tokens in a few ms, faster than a busy loop
# takes them, and each must still go out as its own SSE chunk (checked below).
start_node A serve --model "$DEMO_MODEL"
start_node B serve --join "$A_TOKEN"
start_node C client --join "$B_TOKEN"
A_ID=$(curl -sf "$A_CONSOLE/api/status" | jq -r .node_id)
B_ID=$(curl -sf "$B_CONSOLE/api/status" | jq -r .node_id)

lists_alive() { # lists_alive CONSOLE_URL PEER_ID
  curl -sf "$1/api/status" | jq -e --arg id "$2" '.peers[] | select(.id == $id and .state == "alive")'
}
check "A lists B as alive" wait_for 30 lists_alive "$A_CONSOLE" "$B_ID"
check "B lists A as alive" wait_for 30 lists_alive "$B_CONSOLE" "$A_ID"
check "C learns of A through B" wait_for 30 lists_alive "$C_CONSOLE" "$A_ID"
check "A's status names its model" \
  bash -c "curl -sf '$A_CONSOLE/api/status' | jq -e '.models == [\"$MODEL_ID\"]'"
check "B sees A's model and memory in gossip" \
  bash -c "curl -sf '$B_CONSOLE/api/status' | jq -e --arg id '$A_ID' \
    '.peers[] | select(.id == \$id) | (.models | index(\"$MODEL_ID\")) and .memory_bytes > 0 and .role == \"host\" and (.addresses | length) > 0'"

models_has_demo() { curl -sf "$C_API/models" | jq -e --arg m "$MODEL_ID" '.object == "list" and (.data | map(.id) | index($m))'; }
check "/v1/models on C lists the demo model" wait_for 30 models_has_demo

# The reference: the engine run locally, greedy, 32 tokens.
"$LLMESH" run --model "$DEMO_MODEL" --prompt "$PROMPT" --temp 0 -n 32 >"$T/expected.txt" 2>"$T/run.log" \
  || die "llmesh run failed: $(cat "$T/run.log")"
[ -s "$T/expected.txt" ] || die "llmesh run printed nothing"

body=$(jq -n --arg m "$MODEL_ID" --arg p "$PROMPT" '{model: $m, prompt: $p, max_tokens: 32, temperature: 0}')
curl -sf "$C_API/completions" -H 'Content-Type: application/json' -d "$body" >"$T/completion.json" \
  || die "completion request to C failed"
jq -j '.choices[0].text' "$T/completion.json" >"$T/got.txt"
check "completion through C equals llmesh run output" cmp "$T/expected.txt" "$T/got.txt"
check "completion reports usage and finish_reason" \
  jq -e '.object == "text_completion" and .usage.completion_tokens == 32 and .choices[0].finish_reason == "length"' "$T/completion.json"

sbody=$(jq -n --arg m "$MODEL_ID" --arg p "$PROMPT" '{model: $m, prompt: $p, max_tokens: 32, temperature: 0, stream: true}')
curl -sfN "$C_API/completions" -H 'Content-Type: application/json' -d "$sbody" >"$T/stream.txt" \
  || die "streaming request to C failed"
grep '^data: {' "$T/stream.txt" | sed 's/^data: //' | jq -j '.choices[0].text' >"$T/got-stream.txt"
check "streamed completion equals llmesh run output" cmp "$T/expected.txt" "$T/got-stream.txt"
check "stream ends with data: [DONE]" bash -c "grep -v '^\$' '$T/stream.txt' | tail -n 1 | grep -qx 'data: \[DONE\]'"
# One chunk per token, as OpenAI streams: 32 tokens, 32 chunks with text, each
# carrying one token's log-probability.
text_chunks() { grep '^data: {' "$1" | sed 's/^data: //' | jq -s "$2"; }
check "stream has one chunk with text per token (32)" \
  test "$(text_chunks "$T/stream.txt" '[.[] | select(.choices[0].text != "")] | length')" = 32
lbody=$(jq -n --arg m "$MODEL_ID" --arg p "$PROMPT" '{model: $m, prompt: $p, max_tokens: 32, temperature: 0, stream: true, logprobs: 1}')
curl -sfN "$C_API/completions" -H 'Content-Type: application/json' -d "$lbody" >"$T/stream-lp.txt" \
  || die "streaming request with logprobs to C failed"
check "streamed logprobs: 32 chunks of exactly one token each" \
  test "$(text_chunks "$T/stream-lp.txt" '[.[] | select(.choices[0].text != "") | .choices[0].logprobs.tokens | length] | (length == 32 and all(. == 1))')" = true

cbody=$(jq -n --arg m "$MODEL_ID" '{model: $m, messages: [{role: "user", content: "Who is my shepherd?"}], max_tokens: 8, temperature: 0}')
check "chat completion through C" bash -c "curl -sf '$C_API/chat/completions' -d '$cbody' | jq -e '.object == \"chat.completion\" and .choices[0].message.role == \"assistant\" and .usage.completion_tokens > 0'"
cs=$(jq -n --arg m "$MODEL_ID" '{model: $m, messages: [{role: "user", content: "Hi"}], max_tokens: 4, temperature: 0, stream: true}')
check "streamed chat ends with [DONE] and carries deltas" bash -c "curl -sfN '$C_API/chat/completions' -d '$cs' > '$T/chat-stream.txt' && grep -q 'chat.completion.chunk' '$T/chat-stream.txt' && grep -qx 'data: \[DONE\]' '$T/chat-stream.txt'"

# Errors, in OpenAI's shape.
code=$(curl -s -o "$T/err.json" -w '%{http_code}' "$C_API/completions" -d '{"model": ')
check "malformed JSON -> 400" [ "$code" = 400 ]
check "400 body is an OpenAI error" jq -e '.error.message and .error.type == "invalid_request_error"' "$T/err.json"
code=$(curl -s -o "$T/err.json" -w '%{http_code}' "$C_API/completions" -d '{"model": "no-such-model", "prompt": "x"}')
check "unknown model -> 404" [ "$code" = 404 ]
check "404 body names the model" jq -e '.error.message | contains("no-such-model")' "$T/err.json"
code=$(curl -s -o /dev/null -w '%{http_code}' "$C_API/completions" -d "{\"model\": \"$MODEL_ID\", \"prompt\": 5}")
check "prompt of the wrong type -> 400" [ "$code" = 400 ]

# A goes away: its model is still known from gossip, but nobody serves it.
kill -TERM "$A_PID"
wait_gone() { ! curl -sf "$C_CONSOLE/api/status" | jq -e --arg id "$A_ID" '.peers[] | select(.id == $id and .state == "alive")'; }
if wait_for 40 wait_gone; then
  code=$(curl -s -o "$T/err.json" -w '%{http_code}' "$C_API/completions" -d "{\"model\": \"$MODEL_ID\", \"prompt\": \"x\"}")
  check "model whose only host is gone -> 503 or 404" bash -c "[ '$code' = 503 ] || [ '$code' = 404 ]"
else
  fail "C still lists A as alive 40 s after A exited"
fi

# The same home gives the same identity after a restart.
start_node A2 serve --home "$T/A"
check "restarted A has the same node id" [ "$(curl -sf "$A2_CONSOLE/api/status" | jq -r .node_id)" = "$A_ID" ]

finish
