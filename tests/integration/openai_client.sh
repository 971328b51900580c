#!/usr/bin/env bash
# The official OpenAI Node client (npm package openai, installed from the npm
# registry into tests/e2e/openai/node_modules) against a client node that
# forwards to the host: listing, greedy completions (plain and streamed) that
# equal `llmesh run`, streamed chat, chat logprobs, and the error classes the
# client raises for our 404 and 400 answers. The client node requires an API
# key (--api-key): the client sends it, and one with a wrong key gets an
# AuthenticationError.
set -u
. "$(dirname "$0")/common.bash"
E2E="$SRC/tests/e2e/openai"
MODEL_ID=kjv-llama-6.3M-q8_0
PROMPT="The LORD is my shepherd;"

command -v node >/dev/null && command -v npm >/dev/null || die "node and npm are needed (scripts/deps.sh installs them)"
if [ ! -d "$E2E/node_modules/openai" ]; then
  (cd "$E2E" && npm ci --no-audit --no-fund >"$T/npm.log" 2>&1) || die "npm ci in tests/e2e/openai failed: $(tail -n 3 "$T/npm.log")"
fi

# Not paced: the demo model makes 32 tokens in a few ms, and each must still come
# as its own chunk (client.mjs counts them).
start_node A serve --model "$DEMO_MODEL"
KEY="sk-e2e-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
start_node C client --join "$A_TOKEN" --api-key "$KEY"
has_model() { curl -sf "$C_API/models" -H "Authorization: Bearer $KEY" | jq -e --arg m "$MODEL_ID" '.data | map(.id) | index($m)'; }
wait_for 30 has_model || die "C never learned of A's model"

"$LLMESH" run --model "$DEMO_MODEL" --prompt "$PROMPT" --temp 0 -n 32 >"$T/expected.txt" 2>/dev/null || die "llmesh run failed"
(cd "$E2E" && LLMESH_TEST_API_KEY=$KEY node client.mjs "$C_API" "$MODEL_ID" "$PROMPT" "$T/expected.txt")
