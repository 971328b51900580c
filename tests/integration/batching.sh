#!/usr/bin/env bash
# Many users at once (continuous batching, prompt cache, bounded queue), with
# real processes and curl as the client:
#   1. six greedy requests at once (different prompts and lengths, with
#      log-probabilities, three streamed) answer byte for byte what each
#      gives alone, and the batch steps did hold several sequences;
#   2. a chat's second turn reuses the first turn's cache
#      (usage.prompt_tokens_details.cached_tokens) and answers what a node
#      with an empty cache answers, also when four chats send their second
#      turns at once; every answer carries `timings`;
#   3. a client that disconnects frees its lane at once;
#   4. past --queue, 429 with Retry-After; past --queue-timeout, 503; both
#      counted in /api/status and /metrics;
#   5. the same concurrent requests through a 2-stage split answer the same,
#      and their steps crossed the ring as shared FORWARDs (pieces of several
#      lanes per frame, counted at stage 0 and at stage 1);
#   6. back-pressure: through a stage made slow, a long prompt's chunks wait
#      for the window (as many steps on the ring as there are stages).
set -u
. "$(dirname "$0")/common.bash"
MODEL_ID=kjv-llama-6.3M-q8_0

status_lanes() { curl -sf "$1/api/status" | jq -c --arg m "$MODEL_ID" '.lanes[] | select(.model == $m)'; }

start_node A serve --model "$DEMO_MODEL" --threads 2 --parallel 4

# ---- 1. concurrent requests equal the same requests alone --------------------
PROMPTS=("In the beginning" "And the LORD spake unto Moses, saying," "Blessed are the"
         "And it came to pass, when" "The LORD is my shepherd;" "For God so loved")
LENS=(40 64 25 90 33 50)
request() { # request I STREAM -> the request body
  jq -n --arg m "$MODEL_ID" --arg p "${PROMPTS[$1]}" --argjson n "${LENS[$1]}" --argjson s "$2" \
    '{model: $m, prompt: $p, max_tokens: $n, temperature: 0, logprobs: 2, stream: $s}'
}
# The text and the log-probabilities of an answer, plain or streamed.
transcript() {
  if grep -q '^data: ' "$1"; then
    grep '^data: {' "$1" | sed 's/^data: //' | jq -s -c '{text: (map(.choices[0].text // "") | join("")),
      tokens: (map(.choices[0].logprobs.tokens // []) | add), lp: (map(.choices[0].logprobs.token_logprobs // []) | add),
      top: (map(.choices[0].logprobs.top_logprobs // []) | add)}'
  else
    jq -c '{text: .choices[0].text, tokens: .choices[0].logprobs.tokens, lp: .choices[0].logprobs.token_logprobs,
      top: .choices[0].logprobs.top_logprobs}' "$1"
  fi
}
pids=()
for i in 0 1 2 3 4 5; do
  s=$([ $((i % 2)) -eq 1 ] && echo true || echo false)
  curl -sfN "$A_API/completions" -d "$(request $i $s)" >"$T/together.$i" & pids+=($!)
done
for p in "${pids[@]}"; do wait "$p" || fail "a concurrent request failed"; done
for i in 0 1 2 3 4 5; do
  s=$([ $((i % 2)) -eq 1 ] && echo true || echo false)
  curl -sfN "$A_API/completions" -d "$(request $i $s)" >"$T/alone.$i" || fail "request $i alone"
done
same=0
for i in 0 1 2 3 4 5; do
  transcript "$T/together.$i" >"$T/together.$i.t"
  transcript "$T/alone.$i" >"$T/alone.$i.t"
  if cmp -s "$T/together.$i.t" "$T/alone.$i.t" && jq -e '(.tokens | length) > 10' "$T/alone.$i.t" >/dev/null; then
    same=$((same + 1))
  else
    echo "  request $i differs: $(head -c 300 "$T/together.$i.t") vs $(head -c 300 "$T/alone.$i.t")"
  fi
done
check "6 concurrent greedy requests (3 streamed) equal each alone: text, tokens, log-probabilities" [ "$same" -eq 6 ]
check "the batch steps held several sequences at once" bash -c "curl -sf '$A_CONSOLE/api/status' | jq -e --arg m $MODEL_ID \
  '.lanes[] | select(.model == \$m) | .batch_steps > 0 and .batch_sequences > .batch_steps'"
check "/metrics counts the batch steps" bash -c "curl -sf '$A_CONSOLE/metrics' | grep -E '^llmesh_batch_sequences_total\\{model=\"$MODEL_ID\"\\} [1-9]'"

# ---- 1b. many short streams at once, round after round ----------------------
# The hand-off from lane threads to the loop (scheduler.c, sched_on_wake) once
# freed a job still on the ready list when a worker posted it while the loop
# walked that list: a double free, 1 run in 10 of section 1 and 1 in 3 of
# eight streams on a 0.5B model. tests/unit/test_scheduler.c reproduces it
# (3 failures in 3 runs before the fix); here, end to end, twelve rounds of
# eight short streams (more than A's four lanes: some wait in the queue) must
# all complete (on this tiny model this did not catch the old code in 3 runs).
burst_ok=0
for round in $(seq 12); do
  pids=()
  for i in $(seq 8); do
    curl -sfN -m 60 "$A_API/completions" -d "{\"model\":\"$MODEL_ID\",\"prompt\":\"Round $round voice $i\",\"max_tokens\":6,\"temperature\":0,\"stream\":true}" \
      >"$T/burst.$i" & pids+=($!)
  done
  all=1
  for p in "${pids[@]}"; do wait "$p" || all=0; done
  for i in $(seq 8); do grep -q '^data: \[DONE\]' "$T/burst.$i" || all=0; done
  kill -0 "$A_PID" 2>/dev/null || { all=0; break; }
  burst_ok=$((burst_ok + all))
done
check "12 rounds of 8 concurrent streams all completed, the node alive ($burst_ok of 12)" [ "$burst_ok" -eq 12 ]

# ---- 2. a chat's second turn reuses the cache ---------------------------------
turn1=$(jq -n --arg m "$MODEL_ID" '{model: $m, messages: [{role: "user", content: "Who made the heaven and the earth?"}], max_tokens: 24, temperature: 0}')
curl -sf "$A_API/chat/completions" -d "$turn1" >"$T/turn1.json" || fail "chat turn 1"
answer1=$(jq -r '.choices[0].message.content' "$T/turn1.json")
turn2=$(jq -n --arg m "$MODEL_ID" --arg a "$answer1" '{model: $m, messages: [
  {role: "user", content: "Who made the heaven and the earth?"}, {role: "assistant", content: $a},
  {role: "user", content: "And what did he say?"}], max_tokens: 24, temperature: 0}')
curl -sf "$A_API/chat/completions" -d "$turn2" >"$T/turn2.json" || fail "chat turn 2"
check "turn 2 reports the cached prompt tokens (at least turn 1's prompt)" jq -e -n \
  --slurpfile a "$T/turn1.json" --slurpfile b "$T/turn2.json" \
  '$b[0].usage.prompt_tokens_details.cached_tokens >= $a[0].usage.prompt_tokens and
   $b[0].usage.prompt_tokens_details.cached_tokens < $b[0].usage.prompt_tokens and
   $b[0].timings.cache_n == $b[0].usage.prompt_tokens_details.cached_tokens and
   $b[0].timings.prompt_n == $b[0].usage.prompt_tokens - $b[0].timings.cache_n'
check "timings: llama-server's fields, counts equal usage" jq -e '.timings | (.predicted_n > 0) and (.predicted_ms > 0)
  and (.prompt_ms >= 0) and has("prompt_per_second") and has("predicted_per_token_ms")' "$T/turn2.json"
start_node F serve --model "$DEMO_MODEL" --threads 1   # a fresh node: nothing cached
curl -sf "$F_API/chat/completions" -d "$turn2" >"$T/turn2-fresh.json" || fail "chat turn 2 on a fresh node"
check "turn 2 answers what an empty cache answers" jq -e -n --slurpfile a "$T/turn2.json" --slurpfile b "$T/turn2-fresh.json" \
  '$a[0].choices[0].message.content == $b[0].choices[0].message.content and $b[0].usage.prompt_tokens_details.cached_tokens == 0
   and ($a[0].choices[0].message.content | length) > 0'
# Four chats whose next turns arrive together, in the reverse order of their
# first turns: each lands on the lane holding its conversation, although the
# lanes take the jobs from the queue in lane order before any is placed. A
# node slowed to 20 ms a token, so that the four first turns run at once on
# four lanes (the demo model alone would finish each before the next came).
LLMESH_DEBUG_TOKEN_DELAY_MS=20 start_node C serve --model "$DEMO_MODEL" --threads 1 --parallel 4
QS=("Who made the heaven and the earth?" "What is the name of the river?" "Where did Moses go?" "Who was David's father?")
chat1() { jq -n --arg m "$MODEL_ID" --arg q "${QS[$1]}" '{model: $m, messages: [{role: "user", content: $q}], max_tokens: 12, temperature: 0}'; }
pids=()
for i in 0 1 2 3; do curl -sf "$C_API/chat/completions" -d "$(chat1 $i)" >"$T/c1.$i" & pids+=($!); done
for p in "${pids[@]}"; do wait "$p" || fail "a concurrent first turn failed"; done
for i in 0 1 2 3; do
  jq -n --arg m "$MODEL_ID" --arg q "${QS[$i]}" --arg a "$(jq -r '.choices[0].message.content' "$T/c1.$i")" \
    '{model: $m, messages: [{role: "user", content: $q}, {role: "assistant", content: $a},
      {role: "user", content: "Say more."}], max_tokens: 4, temperature: 0}' >"$T/c2.$i.body"
done
pids=()
for i in 3 2 1 0; do curl -sf "$C_API/chat/completions" -d "@$T/c2.$i.body" >"$T/c2.$i" & pids+=($!); done
for p in "${pids[@]}"; do wait "$p" || fail "a concurrent second turn failed"; done
hits=0
for i in 0 1 2 3; do
  jq -e -n --slurpfile a "$T/c1.$i" --slurpfile b "$T/c2.$i" \
    '$b[0].usage.prompt_tokens_details.cached_tokens >= $a[0].usage.prompt_tokens' >/dev/null && hits=$((hits + 1))
done
check "4 chats' second turns sent at once each reuse their own first turn's cache ($hits of 4)" [ "$hits" -eq 4 ]
sbody=$(jq -n --arg m "$MODEL_ID" '{model: $m, prompt: "And God said", max_tokens: 5, temperature: 0, stream: true}')
curl -sfN "$A_API/completions" -d "$sbody" >"$T/stream-timings"
check "a streamed answer carries timings in its last chunk (the finish_reason one)" bash -c \
  "grep '^data: {' '$T/stream-timings' | tail -n 1 | sed 's/^data: //' | jq -e '.choices[0].finish_reason != null and .timings.predicted_n == 5'"

# ---- 3 and 4. a slow node: disconnects, queue overflow, queue deadline ----------
# Each token waits 40 ms (a testing knob), one lane, one place in the queue,
# and a 2 s deadline.
LLMESH_DEBUG_TOKEN_DELAY_MS=40 start_node B serve --model "$DEMO_MODEL" --threads 1 --parallel 1 --queue 1 --queue-timeout 2
long=$(jq -n --arg m "$MODEL_ID" '{model: $m, prompt: "In the beginning", max_tokens: 200, temperature: 0, stream: true}')
short=$(jq -n --arg m "$MODEL_ID" '{model: $m, prompt: "And", max_tokens: 2, temperature: 0}')
curl -sN "$B_API/completions" -d "$long" >/dev/null & gone=$!
wait_for 10 bash -c "curl -sf '$B_CONSOLE/api/status' | jq -e '.lanes[0].busy == 1'" || fail "B's lane never got busy"
kill "$gone"; wait "$gone" 2>/dev/null
check "a client that disconnects frees its lane within 2 s" wait_for 2 bash -c "curl -sf '$B_CONSOLE/api/status' | jq -e '.lanes[0].busy == 0'"
check "the freed lane serves the next request" bash -c "curl -sf '$B_API/completions' -d '$short' | jq -e '.usage.completion_tokens == 2'"

curl -sN "$B_API/completions" -d "$long" >/dev/null & hold=$!
wait_for 10 bash -c "curl -sf '$B_CONSOLE/api/status' | jq -e '.lanes[0].busy == 1'" || fail "B's lane never got busy (2)"
curl -s -o "$T/queued.json" -w '%{http_code}' "$B_API/completions" -d "$short" >"$T/queued.code" & queued=$!
wait_for 5 bash -c "curl -sf '$B_CONSOLE/api/status' | jq -e '.lanes[0].queued == 1'" || fail "the second request never queued"
code=$(curl -s -D "$T/full.head" -o "$T/full.json" -w '%{http_code}' "$B_API/completions" -d "$short")
check "past the queue: 429" [ "$code" = 429 ]
check "429 carries Retry-After" grep -qi '^retry-after: [0-9]' "$T/full.head"
check "429's body is OpenAI's error shape" jq -e '.error.type == "rate_limit_error" and .error.code == "rate_limit_exceeded"' "$T/full.json"
wait "$queued"
check "a request queued past --queue-timeout gets 503" [ "$(cat "$T/queued.code")" = 503 ]
check "the 503 says why" jq -e '.error.message | test("busy")' "$T/queued.json"
kill "$hold"; wait "$hold" 2>/dev/null
check "/api/status counts the 429 and the 503" bash -c "curl -sf '$B_CONSOLE/api/status' | jq -e '.lanes[0].refused_queue_full == 1 and .lanes[0].queue_timeouts == 1'"
check "/metrics counts them" bash -c "curl -sf '$B_CONSOLE/metrics' | grep -q '^llmesh_queue_refused_total{model=\"$MODEL_ID\"} 1' &&
  curl -sf '$B_CONSOLE/metrics' | grep -q '^llmesh_queue_timeouts_total{model=\"$MODEL_ID\"} 1'"

# ---- 5. concurrent requests through a 2-stage split ------------------------------
start_node S serve --model "$DEMO_MODEL" --split 2 --threads 1 --parallel 4
start_node S2 serve --join "$S_TOKEN" --threads 1
plan_ready() { curl -sf "$S_CONSOLE/api/status" | jq -e --arg m "$MODEL_ID" '[.plans[] | select(.model == $m)][0] | .state == "ready" and (.stages | length) == 2'; }
wait_for 90 plan_ready || die "the split plan never got ready"
pids=()
for i in 0 1 2 3 4 5; do
  s=$([ $((i % 2)) -eq 1 ] && echo true || echo false)
  curl -sSfN "$S_API/completions" -d "$(request $i $s)" >"$T/split.$i" & pids+=($!)
done
for p in "${pids[@]}"; do wait "$p" || fail "a concurrent request through the split failed (S: $(grep -iE 'warn|error' "$T/S.log" | tail -n 3))"; done
same=0
for i in 0 1 2 3 4 5; do
  transcript "$T/split.$i" >"$T/split.$i.t"
  # log-probabilities through a split are equal on one machine (same ISA)
  cmp -s "$T/split.$i.t" "$T/alone.$i.t" && same=$((same + 1))
done
check "6 concurrent requests through a 2-stage split equal solo (text, tokens, log-probabilities)" [ "$same" -eq 6 ]
# The lanes shared steps, and each step crossed the ring as one FORWARD
# carrying several lanes' pieces: more pieces than frames at both ends.
check "the split's batch steps held several sequences at once" bash -c "curl -sf '$S_CONSOLE/api/status' | jq -e --arg m $MODEL_ID \
  '.lanes[] | select(.model == \$m) | .batch_steps > 0 and .batch_sequences > .batch_steps'"
check "stage 0 sent FORWARDs carrying several lanes (pieces_sent > frames_sent)" bash -c "curl -sf '$S_CONSOLE/api/status' | \
  jq -e --arg m $MODEL_ID '[.plans[] | select(.model == \$m)][0].counters | .frames_sent > 0 and .pieces_sent > .frames_sent'"
check "stage 1 computed FORWARDs of several lanes in one pass (pieces > frames)" bash -c "curl -sf '$S2_CONSOLE/api/status' | \
  jq -e --arg m $MODEL_ID '[.stages[] | select(.model == \$m)][0] | .frames > 0 and .pieces > .frames'"

# ---- 6. back-pressure: a slow stage sets the pace ----------------------------------
# P2 waits 300 ms before each FORWARD (a testing knob): a long prompt's chunks
# (3 that ask nothing back, then the last) would all queue there; stage 0
# sends 2 (the window of a 2-stage plan) and waits for room.
start_node P serve --model "$DEMO_MODEL" --split 2 --threads 1 --parallel 1
LLMESH_DEBUG_STAGE_DELAY_MS=300 start_node P2 serve --join "$P_TOKEN" --threads 1
p_ready() { curl -sf "$P_CONSOLE/api/status" | jq -e --arg m "$MODEL_ID" '[.plans[] | select(.model == $m)][0] | .state == "ready"'; }
wait_for 90 p_ready || die "the slow split plan never got ready"
long_prompt=$(printf 'And God said, Let there be light: and there was light. %.0s' $(seq 1 14))
lbody=$(jq -n --arg m "$MODEL_ID" --arg p "$long_prompt" '{model: $m, prompt: $p, max_tokens: 3, temperature: 0}')
curl -sSf "$P_API/completions" -d "$lbody" >"$T/slow.json" || fail "the long prompt through the slow stage"
curl -sSf "$A_API/completions" -d "$lbody" >"$T/slow-solo.json" || fail "the long prompt solo"
check "the long prompt took several chunks" jq -e '.usage.prompt_tokens > 150' "$T/slow.json"
check "through a slow stage the answer equals solo's" jq -e -n --slurpfile a "$T/slow.json" --slurpfile b "$T/slow-solo.json" \
  '$a[0].choices[0].text == $b[0].choices[0].text'
check "stage 0 waited for the window, and never had more than it on the ring" bash -c "curl -sf '$P_CONSOLE/api/status' | \
  jq -e --arg m $MODEL_ID '[.plans[] | select(.model == \$m)][0].counters | .window == 2 and .window_waits > 0 and
    .steps_in_flight_max == 2 and .steps_in_flight == 0'"
check "/metrics counts the waits" bash -c "curl -sf '$P_CONSOLE/metrics' | grep -E '^llmesh_split_window_waits_total\{model=\"$MODEL_ID\"\} [1-9]'"

finish
