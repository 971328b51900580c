#!/usr/bin/env bash
# Failover of forwarded requests: two hosts serve the model, a client
# forwards to one of them; that host shuts down before answering, and the
# client retries on the other host, so the caller still gets its answer.
# Generation is slowed (LLMESH_DEBUG_TOKEN_DELAY_MS) to catch it in flight.
set -u
. "$(dirname "$0")/common.bash"
MODEL_ID=kjv-llama-6.3M-q8_0

LLMESH_DEBUG_TOKEN_DELAY_MS=40 start_node H1 serve --model "$DEMO_MODEL"
LLMESH_DEBUG_TOKEN_DELAY_MS=40 start_node H2 serve --model "$DEMO_MODEL" --join "$H1_TOKEN"
start_node C client --join "$H1_TOKEN"
H1_ID=$(curl -sf "$H1_CONSOLE/api/status" | jq -r .node_id)
H2_ID=$(curl -sf "$H2_CONSOLE/api/status" | jq -r .node_id)
sees_both() {
  curl -sf "$C_CONSOLE/api/status" | jq -e --arg a "$H1_ID" --arg b "$H2_ID" \
    '[.peers[] | select((.id == $a or .id == $b) and .state == "alive")] | length == 2'
}
wait_for 30 sees_both || die "C does not see both hosts alive"

body=$(jq -n --arg m "$MODEL_ID" '{model: $m, prompt: "In the beginning", max_tokens: 100, temperature: 0}')
curl -s -o "$T/answer.json" -w '%{http_code}' "$C_API/completions" -d "$body" >"$T/code.txt" &
curl_pid=$!

busy() { curl -sf "$1/api/status" | jq -e '.jobs_active > 0'; }
which=""
for _ in $(seq 100); do
  if busy "$H1_CONSOLE" >/dev/null 2>&1; then which=H1; break; fi
  if busy "$H2_CONSOLE" >/dev/null 2>&1; then which=H2; break; fi
  sleep 0.1
done
[ -n "$which" ] || die "neither host got the request"
echo "the request went to $which; stopping it"
if [ "$which" = H1 ]; then kill -TERM "$H1_PID"; other=H2; else kill -TERM "$H2_PID"; other=H1; fi
wait "$curl_pid"

check "the caller still gets 200" [ "$(cat "$T/code.txt")" = 200 ]
check "with the whole completion" jq -e '.usage.completion_tokens == 100 and (.choices[0].text | length) > 0' "$T/answer.json"
check "C counted one retry" bash -c "curl -sf '$C_CONSOLE/api/status' | jq -e '.counters.retried == 1'"
other_console=$(eval echo "\$${other}_CONSOLE")
check "the other host served it" bash -c "curl -sf '$other_console/api/status' | jq -e '.counters.requests >= 1'"

# Reference: the same greedy request straight to the surviving host.
curl -sf "$other_console/api/status" >/dev/null
other_api=$(eval echo "\$${other}_API")
curl -sf "$other_api/completions" -d "$body" >"$T/direct.json"
check "the retried answer equals the host's own" \
  bash -c "[ \"\$(jq -r .choices[0].text '$T/answer.json')\" = \"\$(jq -r .choices[0].text '$T/direct.json')\" ]"

# Two new hosts join the surviving one; C is a passive client and learns of
# them from its next routing-table pull. A request for a model nobody serves
# makes a client pull at once (its table may be stale), so the test need not
# wait for the 30 s period.
other_token=$(eval echo "\$${other}_TOKEN")
other_id=$(eval echo "\$${other}_ID")
LLMESH_DEBUG_TOKEN_DELAY_MS=40 start_node H3 serve --model "$DEMO_MODEL" --join "$other_token"
LLMESH_DEBUG_TOKEN_DELAY_MS=40 start_node H4 serve --model "$DEMO_MODEL" --join "$other_token"
H3_ID=$(curl -sf "$H3_CONSOLE/api/status" | jq -r .node_id)
H4_ID=$(curl -sf "$H4_CONSOLE/api/status" | jq -r .node_id)
sees_34() {
  curl -s -o /dev/null "$C_API/completions" -d '{"model": "nobody-serves-this", "prompt": "x"}'
  curl -sf "$C_CONSOLE/api/status" | jq -e --arg a "$H3_ID" --arg b "$H4_ID" \
    '[.peers[] | select((.id == $a or .id == $b) and .state == "alive")] | length == 2'
}
wait_for 30 sees_34 || die "C does not see H3 and H4 alive"
# The survivor leaves: its connection to C closes, and C pulls the table
# again from H3 or H4 (the ones it knows now).
kill -TERM "$(eval echo "\$${other}_PID")"
other_gone() {
  curl -sf "$C_CONSOLE/api/status" | jq -e --arg id "$other_id" '[.peers[] | select(.id == $id and .state == "alive")] | length == 0'
}
check "C drops the host that left from its routing table" wait_for 20 other_gone

# kill -9 this time: no LEAVE; the client, waiting on the host, finds it
# silent by probing and drops its connection: a stream already under way
# ends with an error event.
sbody=$(jq -n --arg m "$MODEL_ID" '{model: $m, prompt: "In the beginning", max_tokens: 200, temperature: 0, stream: true}')
curl -sN "$C_API/completions" -d "$sbody" >"$T/s9.txt" &
cp=$!
victim=""
for _ in $(seq 100); do
  if busy "$H3_CONSOLE" >/dev/null 2>&1; then victim=$H3_PID; break; fi
  if busy "$H4_CONSOLE" >/dev/null 2>&1; then victim=$H4_PID; break; fi
  sleep 0.1
done
[ -n "$victim" ] || die "neither H3 nor H4 got the stream"
t0=$(date +%s%N)
kill -KILL "$victim"
wait "$cp"
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
echo "the stream through C ended ${ms} ms after kill -9 of its host"
check "a stream cut by kill -9 ends within 20 s" [ "$ms" -lt 20000 ]
check "with an error event" grep -q '^data: {"error"' "$T/s9.txt"
check "and [DONE]" bash -c "grep -v '^\$' '$T/s9.txt' | tail -n 1 | grep -qx 'data: \[DONE\]'"
short=$(jq -n --arg m "$MODEL_ID" '{model: $m, prompt: "In the beginning", max_tokens: 5, temperature: 0}')
code=$(curl -s -o "$T/after.json" -w '%{http_code}' --max-time 30 "$C_API/completions" -d "$short")
check "after the kill, requests through C still succeed (got $code)" [ "$code" = 200 ]

finish
