#!/usr/bin/env bash
# Anthropic's Messages API (POST /v1/messages, /v1/messages/count_tokens)
# through the official Anthropic Node client (tests/e2e/anthropic, npm package
# @anthropic-ai/sdk): plain and streamed messages (the event sequence, the
# streamed text equal to the plain greedy answer), system prompts,
# stop_sequences, max_tokens, tool use forced and streamed on models with the
# real Qwen2.5, Llama 3.2 and Mistral v0.3 templates (random weights, made by
# make_models) and the tool_result turn after it, count_tokens, the errors in
# Anthropic's shape, and the API key sent as x-api-key. The requests enter a
# passive client node C and are forwarded to the host A (a Messages request
# travels as a chat request), so the forwarded path is what is tested; B
# requires an API key; D and E run the demo model split in two stages (also
# OpenAI's n there: the choices in the split's batch steps).
set -u
. "$(dirname "$0")/common.bash"
E2E="$SRC/tests/e2e/anthropic"
MAKE_MODELS=$(dirname "$LLMESH")/make_models
TEMPLATES="$SRC/tests/fuzz/corpus/chat_template"

command -v node >/dev/null && command -v npm >/dev/null || die "node and npm are needed (scripts/deps.sh installs them)"
if [ ! -d "$E2E/node_modules/@anthropic-ai/sdk" ]; then
  (cd "$E2E" && timeout 300 npm ci --no-audit --no-fund >"$T/npm.log" 2>&1) ||
    die "npm ci in tests/e2e/anthropic failed: $(tail -n 3 "$T/npm.log")"
fi
for fam in qwen2.5 llama3.2 mistral-v0.3; do
  "$MAKE_MODELS" templated "$TEMPLATES/$fam.jinja" "$T/tools-$fam.gguf" || die "make_models templated $fam failed"
done

unset LLMESH_API_KEY
KEY=$(head -c 24 /dev/urandom | base64 | tr -d '/+=' | head -c 32)
start_node A serve --model "$DEMO_MODEL" --model "$T/tools-qwen2.5.gguf" --model "$T/tools-llama3.2.gguf" \
  --model "$T/tools-mistral-v0.3.gguf"
start_node B serve --model "$DEMO_MODEL" --api-key "$KEY"
start_node C client --join "$A_TOKEN"
has_models() { curl -sf "$C_API/models" | jq -e '.data | map(.id) | (index("tools-qwen2.5") and index("tools-mistral-v0.3"))'; }
wait_for 30 has_models || die "C never learned of A's models"

# ---- the key, as curl sends it: x-api-key on the Messages routes only
BODY='{"model":"kjv-llama-6.3M-q8_0","max_tokens":4,"messages":[{"role":"user","content":"In the beginning"}]}'
code() { curl -s -o "$T/last.json" -w '%{http_code}' "$@"; }
check "x-api-key on /v1/messages -> 200" test "$(code "$B_API/messages" -H "x-api-key: $KEY" -d "$BODY")" = 200
check "a wrong x-api-key -> 401" test "$(code "$B_API/messages" -H "x-api-key: ${KEY}x" -d "$BODY")" = 401
check "the 401 is Anthropic's authentication_error" jq -e '.type == "error" and .error.type == "authentication_error"' "$T/last.json"
check "no key on /v1/messages -> 401" test "$(code "$B_API/messages" -d "$BODY")" = 401
check "x-api-key on /v1/messages/count_tokens -> 200" \
  test "$(code "$B_API/messages/count_tokens" -H "x-api-key: $KEY" -d '{"model":"kjv-llama-6.3M-q8_0","messages":[{"role":"user","content":"x"}]}')" = 200
check "x-api-key is not taken on /v1/chat/completions (Bearer there) -> 401" \
  test "$(code "$B_API/chat/completions" -H "x-api-key: $KEY" -d '{"model":"kjv-llama-6.3M-q8_0","messages":[{"role":"user","content":"x"}]}')" = 401

# ---- the raw event stream (the client skips ping): the event lines in order
curl -sN --max-time 60 "$C_API/messages" -d '{"model":"kjv-llama-6.3M-q8_0","max_tokens":6,"temperature":0,"stream":true,"messages":[{"role":"user","content":"In the beginning"}]}' \
  >"$T/stream.txt"
sed -n 's/^event: //p' "$T/stream.txt" | uniq | tr '\n' ' ' >"$T/events.txt"
check "a stream's events: message_start, ping, a text block, message_delta, message_stop" \
  grep -qx 'message_start ping content_block_start content_block_delta content_block_stop message_delta message_stop ' "$T/events.txt"
check "each event's data names its event" bash -c "paste -d' ' <(sed -n 's/^event: //p' '$T/stream.txt') \
  <(sed -n 's/^data: //p' '$T/stream.txt' | jq -r .type) | awk '\$1 != \$2 { exit 1 }'"
check "one content_block_delta per output token (unpaced demo model)" test "$(sed -n 's/^data: //p' "$T/stream.txt" |
  jq -s '([.[] | select(.type == "content_block_delta")] | length) as $d
         | ([.[] | select(.type == "message_delta")][0].usage.output_tokens) as $n | $n > 0 and $d == $n')" = true

# ---- a split model: D coordinates the demo model in 2 stages (E runs stage 1,
# fetching its layers), a mesh of their own; a message to E goes to D as a chat
# request, and its greedy answer equals the solo one on A (through C)
start_node D serve --model "$DEMO_MODEL" --split 2 --threads 1
start_node E serve --join "$D_TOKEN" --threads 1
plan_ready() { curl -sf "$D_CONSOLE/api/status" | jq -e '.plans[] | select(.model == "kjv-llama-6.3M-q8_0" and .state == "ready" and (.stages | length) == 2)'; }
wait_for 90 plan_ready || die "the split plan on D was not ready in 90 s"
MSG='{"model":"kjv-llama-6.3M-q8_0","max_tokens":24,"temperature":0,"system":"Be brief.","messages":[{"role":"user","content":"In the beginning"}]}'
curl -sf "$C_API/messages" -d "$MSG" | jq -j '.content[0].text' >"$T/solo.txt"
curl -sf "$E_API/messages" -d "$MSG" >"$T/split.json"
jq -j '.content[0].text' "$T/split.json" >"$T/split.txt"
check "split: a message's text equals the solo answer" cmp "$T/solo.txt" "$T/split.txt"
check "split: a message object, max_tokens reached" jq -e '.type == "message" and .stop_reason == "max_tokens" and .usage.output_tokens == 24' "$T/split.json"
curl -sfN "$E_API/messages" -d "${MSG%\}},\"stream\":true}" | sed -n 's/^data: //p' |
  jq -j 'select(.type == "content_block_delta") | .delta.text' >"$T/split-stream.txt"
check "split: the streamed text equals the solo answer" cmp "$T/solo.txt" "$T/split-stream.txt"
check "split: the answer is not empty" test -s "$T/solo.txt"
# several choices on the split (OpenAI's n): at once in its batch steps, each evaluating the
# prompt (the other stage's caches cannot be copied from stage 0), all equal to the solo answer
N3='{"model":"kjv-llama-6.3M-q8_0","prompt":"In the beginning God created","max_tokens":12,"temperature":0'
curl -sf "$C_API/completions" -d "$N3}" | jq -r '.choices[0].text' >"$T/n-solo.txt"
curl -sf "$E_API/completions" -d "$N3,\"n\":3}" >"$T/n-split.json"
check "split: n=3 greedy choices all equal the solo answer" \
  test "$(jq -r '.choices | map(.text) | unique | .[]' "$T/n-split.json")" = "$(cat "$T/n-solo.txt")"
check "split: n=3, three indexes, each choice evaluated its prompt" \
  jq -e '(.choices | map(.index)) == [0,1,2] and .timings.prompt_n + .timings.cache_n >= .usage.prompt_tokens' "$T/n-split.json"

(cd "$E2E" && timeout 600 node anthropic.mjs "${C_API%/v1}" "${B_API%/v1}" "$KEY" kjv-llama-6.3M-q8_0 \
  tools-qwen2.5 tools-llama3.2 tools-mistral-v0.3) || FAILS=$((FAILS + 1))
finish
