#!/usr/bin/env bash
# The agents' API through the official OpenAI Node client (tests/e2e/openai,
# npm package openai): tool calls on models with the real Qwen2.5, Llama 3.2
# and Mistral v0.3 chat templates (random weights, made by make_models), plain
# and streamed, the next turn with the call in the history, json_schema output
# on the demo model, several choices (n), embeddings, and the 400s. The requests enter a passive client node
# and are forwarded to the host, so the forwarded path is what is tested.
set -u
. "$(dirname "$0")/common.bash"
E2E="$SRC/tests/e2e/openai"
MAKE_MODELS=$(dirname "$LLMESH")/make_models
TEMPLATES="$SRC/tests/fuzz/corpus/chat_template"

command -v node >/dev/null && command -v npm >/dev/null || die "node and npm are needed (scripts/deps.sh installs them)"
if [ ! -d "$E2E/node_modules/openai" ]; then
  (cd "$E2E" && npm ci --no-audit --no-fund >"$T/npm.log" 2>&1) || die "npm ci in tests/e2e/openai failed: $(tail -n 3 "$T/npm.log")"
fi
for fam in qwen2.5 llama3.2 mistral-v0.3; do
  "$MAKE_MODELS" templated "$TEMPLATES/$fam.jinja" "$T/tools-$fam.gguf" || die "make_models templated $fam failed"
done

start_node A serve --model "$DEMO_MODEL" --model "$T/tools-qwen2.5.gguf" --model "$T/tools-llama3.2.gguf" \
  --model "$T/tools-mistral-v0.3.gguf"
start_node C client --join "$A_TOKEN"
has_models() { curl -sf "$C_API/models" | jq -e '.data | map(.id) | (index("tools-qwen2.5") and index("tools-mistral-v0.3"))'; }
wait_for 30 has_models || die "C never learned of A's models"

(cd "$E2E" && timeout 600 node agents.mjs "$C_API" kjv-llama-6.3M-q8_0 tools-qwen2.5 tools-llama3.2 tools-mistral-v0.3)
