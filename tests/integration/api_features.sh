#!/usr/bin/env bash
# The API's newer fields through the mesh: a host A serving the demo model and
# a client C joined to it. Log-probabilities, echo, stop strings, token-id
# prompts and /tokenize, /detokenize asked of C (forwarded to A) must give
# exactly A's own answers; lm-evaluation-harness's loglikelihood request shape
# (token ids, echo, max_tokens 0, logprobs 1) works end to end.
set -u
. "$(dirname "$0")/common.bash"

MODEL_ID=kjv-llama-6.3M-q8_0
start_node A serve --model "$DEMO_MODEL"
start_node C client --join "$A_TOKEN"
models_has_demo() { curl -sf "$C_API/models" | jq -e --arg m "$MODEL_ID" '.data | map(.id) | index($m)'; }
wait_for 30 models_has_demo || die "C never learned of A's model"

ROOT_A=${A_API%/v1}
ROOT_C=${C_API%/v1}
# post URL BODY: the response body (fails on an HTTP error)
post() { curl -sf "$1" -H 'Content-Type: application/json' -d "$2"; }
# same_answer NAME PATH BODY: A's and C's answers equal, ids and times aside
same_answer() {
  local a c
  a=$(post "$ROOT_A$2" "$3" | jq -S 'del(.id, .created, .timings, .usage.prompt_tokens_details)') || { fail "$1 (A)"; return; }
  c=$(post "$ROOT_C$2" "$3" | jq -S 'del(.id, .created, .timings, .usage.prompt_tokens_details)') || { fail "$1 (C)"; return; }
  if [ -n "$a" ] && [ "$a" = "$c" ]; then pass "$1"; else fail "$1"; echo "A: $a"; echo "C: $c"; fi
}

# /tokenize through C, without and with the BOS
tok=$(post "$ROOT_C/tokenize" "{\"model\": \"$MODEL_ID\", \"content\": \"In the beginning God created\"}") \
  || die "/tokenize through C failed"
tokb=$(post "$ROOT_C/tokenize" "{\"model\": \"$MODEL_ID\", \"content\": \"In the beginning God created\", \"add_special\": true}")
check "/tokenize through C returns ids" jq -e '.tokens | length > 3 and all(type == "number")' <<<"$tok"
check "add_special puts one BOS first" test "$(jq -c '.tokens[1:]' <<<"$tokb")" = "$(jq -c '.tokens' <<<"$tok")"
same_answer "/tokenize: C equals A" /tokenize "{\"model\": \"$MODEL_ID\", \"content\": \"And God said\"}"
detok=$(post "$ROOT_C/detokenize" "$(jq -c --arg m "$MODEL_ID" '{model: $m, tokens: .tokens}' <<<"$tok")")
check "/detokenize through C round-trips" jq -e '.content == "In the beginning God created"' <<<"$detok"
check "/tokenize on A without a model (it serves one)" \
  bash -c "curl -sf '$ROOT_A/tokenize' -d '{\"content\": \"x\"}' | jq -e '.tokens | length == 1'"

# lm-eval's loglikelihood: token ids, echo, max_tokens 0, logprobs 1, temperature 0
ids=$(jq -c '.tokens' <<<"$tokb")
ll=$(jq -nc --arg m "$MODEL_ID" --argjson p "$ids" '{model: $m, prompt: $p, echo: true, max_tokens: 0, logprobs: 1, temperature: 0}')
same_answer "echo + logprobs through C equals A" /v1/completions "$ll"
post "$C_API/completions" "$ll" >"$T/ll.json" || die "loglikelihood request failed"
check "echo scores every prompt token, the first null" jq -e --argjson n "$(jq length <<<"$ids")" \
  '.choices[0].logprobs as $l | ($l.token_logprobs | length) == $n and $l.token_logprobs[0] == null
   and $l.top_logprobs[0] == null and ($l.token_logprobs[1:] | all(. <= 0))
   and ($l.top_logprobs[1:] | all(length == 1)) and .usage.completion_tokens == 0
   and .choices[0].text == "In the beginning God created"' "$T/ll.json"

# generation with logprobs, stop strings and penalties, plain and streamed
g=$(jq -nc --arg m "$MODEL_ID" '{model: $m, prompt: "The LORD is my shepherd;", max_tokens: 20, temperature: 0, logprobs: 3, stop: ["salvation"]}')
same_answer "logprobs + stop through C equals A" /v1/completions "$g"
check "the stop string is cut and not emitted" \
  bash -c "curl -sf '$C_API/completions' -d '$g' | jq -e '(.choices[0].text | contains(\"salv\") | not) and .choices[0].finish_reason == \"stop\"'"
sg=$(jq -c '. + {stream: true, stream_options: {include_usage: true}}' <<<"$g")
curl -sfN "$C_API/completions" -d "$sg" >"$T/stream.txt" || die "streamed request failed"
grep '^data: {' "$T/stream.txt" | sed 's/^data: //' | jq -s '.' >"$T/chunks.json"
check "streamed text equals the plain text" test "$(jq -j '[.[].choices[0].text // ""] | join("")' "$T/chunks.json")" = \
  "$(post "$C_API/completions" "$g" | jq -j '.choices[0].text')"
check "streamed chunks carry the tokens' logprobs" \
  jq -e '[.[].choices[0].logprobs.tokens // [] | length] | add > 0' "$T/chunks.json"
check "the last chunk carries usage" jq -e '.[-1].usage.completion_tokens > 0 and (.[-1].choices | length) == 0' "$T/chunks.json"

c=$(jq -nc --arg m "$MODEL_ID" '{model: $m, messages: [{role: "user", content: "Who is my shepherd?"}], max_tokens: 6, temperature: 0, logprobs: true, top_logprobs: 2, frequency_penalty: 0.5, logit_bias: {"5": -100}}')
same_answer "chat logprobs through C equal A" /v1/chat/completions "$c"

code=$(curl -s -o "$T/err.json" -w '%{http_code}' "$C_API/completions" -d "{\"model\": \"$MODEL_ID\", \"prompt\": [1, 99999999]}")
check "an id out of the vocabulary -> 400 (through C)" [ "$code" = 400 ]
check "the 400 names the id" jq -e '.error.message | contains("99999999")' "$T/err.json"
finish
