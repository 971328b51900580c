#!/usr/bin/env bash
# The agents' API through the official OpenAI Node client (tests/e2e/openai,
# npm package openai): tool calls on models with the real Qwen2.5, Llama 3.2
# and Mistral v0.3 chat templates (random weights, made by make_models), plain
# and streamed, the next turn with the call in the history, json_schema output
# on the demo model, several choices (n), embeddings, and the 400s. The requests enter a passive client node
# and are forwarded to the host, so the forwarded path is what is tested. Before it, with curl on the
# host: n choices in the shared batch steps (the host's batch-step metrics show one prefill), and
# embeddings of a split model (equal to solo).
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

# ---- several choices in the batch steps (A has 4 lanes, --parallel's default),
# counted by A's batch-step metrics: the prompt evaluated once, then each choice
# its last prompt token and its own tokens, the choices together in each step
DEMO=kjv-llama-6.3M-q8_0
met() { curl -sf "$A_CONSOLE/metrics" | awk -v m="llmesh_batch_${1}_total{model=\"$DEMO\"}" '$1 == m { print $2 }'; }
steps0=$(met steps); seqs0=$(met sequences); tokens0=$(met tokens)
curl -sf "$A_API/completions" -d "{\"model\":\"$DEMO\",\"prompt\":\"Honour thy father and thy mother: that thy days may be long\",\"max_tokens\":24,\"seed\":11,\"n\":4}" >"$T/n4.json"
steps=$(($(met steps) - steps0)); seqs=$(($(met sequences) - seqs0)); tokens=$(($(met tokens) - tokens0))
echo "n=4: $(jq -c '{usage, timings: (.timings | {cache_n, prompt_n})}' "$T/n4.json"); steps $steps, sequences $seqs, positions $tokens"
check "n=4: four choices, the prompt counted once" jq -e '(.choices | length) == 4 and .usage.prompt_tokens > 10' "$T/n4.json"
check "n=4: the prompt evaluated once: timings.prompt_n + cache_n = the prompt + 3 (each other choice's last token)" \
  jq -e '.timings.prompt_n + .timings.cache_n == .usage.prompt_tokens + 3' "$T/n4.json"
# every position the steps evaluated: the prompt once, then per choice its tokens but the last
# sampled one when it ended by length (an end-of-generation token is evaluated before it comes)
want=$(jq '.timings.prompt_n + .usage.completion_tokens - ([.choices[] | select(.finish_reason == "length")] | length)' "$T/n4.json")
check "n=4: the batch steps evaluated exactly those positions ($tokens, want $want)" test "$tokens" = "$want"
# one after another they would be one sequence a step; together up to 4 (fewer on a loaded
# machine, where a lane's thread may miss a step)
check "n=4: the choices decode in the same steps (sequences $seqs > steps $steps)" test "$seqs" -gt "$steps"
curl -sf "$A_API/completions" -d "{\"model\":\"$DEMO\",\"prompt\":\"Honour thy father and thy mother: that thy days may be long\",\"max_tokens\":24,\"seed\":13}" >"$T/n1.json"
check "n=4: choice 2 is the answer with seed + 2" test "$(jq -r '.choices[2].text' "$T/n4.json")" = "$(jq -r '.choices[0].text' "$T/n1.json")"
# more choices than lanes: 6 on 4 lanes, the last two wait and run on lanes that hold the prompt
curl -sf "$A_API/completions" -d "{\"model\":\"$DEMO\",\"prompt\":\"Blessed are the meek: for they shall inherit\",\"max_tokens\":8,\"temperature\":0,\"n\":6}" >"$T/n6.json"
check "n=6 on 4 lanes: six equal greedy choices, the prompt evaluated once" \
  jq -e '(.choices | map(.text) | unique | length) == 1 and (.choices | map(.index)) == [0,1,2,3,4,5]
         and .timings.prompt_n + .timings.cache_n == .usage.prompt_tokens + 5' "$T/n6.json"

# ---- embeddings of a split model: D coordinates the demo model in 2 stages (E runs stage 1),
# a mesh of their own; the last stage returns every position's final hidden state and D
# pools them: the same vectors as solo on A (the activations cross as F32)
start_node D serve --model "$DEMO_MODEL" --split 2 --threads 1
start_node E serve --join "$D_TOKEN" --threads 1
plan_ready() { curl -sf "$D_CONSOLE/api/status" | jq -e '.plans[] | select(.model == "kjv-llama-6.3M-q8_0" and .state == "ready" and (.stages | length) == 2)'; }
if wait_for 90 plan_ready; then
  EMB="{\"model\":\"$DEMO\",\"input\":[\"In the beginning God created the heaven and the earth.\",\"Jesus wept.\"],\"encoding_format\":\"float\"}"
  curl -sf "$A_API/embeddings" -d "$EMB" >"$T/emb-solo.json"
  code=$(curl -s -o "$T/emb-split.json" -w '%{http_code}' "$E_API/embeddings" -d "$EMB")
  check "split embeddings: 200 with two vectors" test "$code" = 200
  check "split embeddings: bit for bit the solo vectors" jq -e --slurpfile s "$T/emb-solo.json" '
    [range(0; 2) as $i | [.data[$i].embedding, $s[0].data[$i].embedding] | transpose | map(.[0] - .[1] | fabs) | max]
    | max == 0' "$T/emb-split.json"
  check "split embeddings: the prompt tokens counted as solo" jq -e --slurpfile s "$T/emb-solo.json" \
    '.usage.prompt_tokens == $s[0].usage.prompt_tokens' "$T/emb-split.json"
  # the lane the embedding used generates as before afterwards (its caches start over)
  G='{"model":"kjv-llama-6.3M-q8_0","prompt":"In the beginning God created","max_tokens":12,"temperature":0}'
  check "split: a completion after the embeddings equals the solo one" \
    test "$(curl -sf "$E_API/completions" -d "$G" | jq -r '.choices[0].text')" = "$(curl -sf "$A_API/completions" -d "$G" | jq -r '.choices[0].text')"
else
  fail "the split plan on D was not ready in 90 s"
fi

(cd "$E2E" && timeout 600 node agents.mjs "$C_API" kjv-llama-6.3M-q8_0 tools-qwen2.5 tools-llama3.2 tools-mistral-v0.3) ||
  FAILS=$((FAILS + 1))
finish
