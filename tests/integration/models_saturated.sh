#!/usr/bin/env bash
# A second host for a saturated model (issue 11, item 7): H serves the demo
# model with one lane and a queue of 2 (--parallel 1 --queue 2), generation
# slowed by the test knob LLMESH_DEBUG_TOKEN_DELAY_MS; S is a standby
# (--standby-for the same file). While H's queue stays over its threshold
# (half the queue bound) for 2 s, H marks the model saturated in its record;
# S, with room for a copy, loads it and becomes a second host; requests H
# cannot queue then go to S instead of getting 429. The mark has hysteresis:
# it stays while requests wait and for 20 s after the last one, so it does
# not flap with every request.
set -u
. "$(dirname "$0")/common.bash"
MODEL_ID=kjv-llama-6.3M-q8_0
body() { jq -n --arg m "$MODEL_ID" --argjson n "$1" '{model: $m, prompt: "In the beginning", max_tokens: $n, temperature: 0}'; }
saturated() { curl -sf "$H_CONSOLE/api/status" | jq -e --arg m "$MODEL_ID" --arg me "$1" \
  '.node_id as $id | [.plans[] | select(.model == $m and .coordinator == $id) | .saturated] == [$me == "yes"]'; }
s_serves() { curl -sf "$S_CONSOLE/api/status" | jq -e --arg m "$MODEL_ID" '.models | index($m)'; }
s_sequences() { curl -sf "$S_CONSOLE/api/status" | jq '[.lanes[].batch_sequences] | add // 0'; }
h_sees_s() { curl -sf "$H_CONSOLE/api/status" | jq -e --arg m "$MODEL_ID" '[.peers[] | select(.state == "alive") | .models | index($m)] | any'; }

LLMESH_DEBUG_TOKEN_DELAY_MS=60 start_node H serve --model "$DEMO_MODEL" --threads 1 --parallel 1 --queue 2
LLMESH_DEBUG_TOKEN_DELAY_MS=60 start_node S serve --join "$H_TOKEN" --threads 1 --standby-for "$DEMO_MODEL"
wait_for 20 bash -c "curl -sf '$S_CONSOLE/api/status' | jq -e '[.peers[] | select(.state == \"alive\")] | length == 1'" ||
  die "S did not join H"

# Idle: nothing saturated, S stays a standby.
sleep 3
check "idle: H is not saturated" saturated no
check "idle: S serves nothing" bash -c "curl -sf '$S_CONSOLE/api/status' | jq -e '.models == [] and .loads == []'"

# Load: three clients in a loop, each request ~2.4 s on H's one lane.
: >"$T/codes"
load_until=$(( $(date +%s) + 40 ))
loaders=()
for c in 1 2 3; do
  ( while [ "$(date +%s)" -lt "$load_until" ] && [ ! -f "$T/stop" ]; do
      curl -s -o /dev/null -w '%{http_code}\n' --max-time 30 "$H_API/completions" -d "$(body 40)" >>"$T/codes"
    done ) &
  loaders+=($!)
done
t0=$(date +%s.%N)
wait_for 30 saturated yes || fail "H never marked the model saturated"
wait_for 30 s_serves || fail "S did not add itself as a second host: $(curl -s "$S_CONSOLE/api/status" | jq -c .loads)"
t1=$(date +%s.%N)
echo "S became a second host $(echo "$t1 - $t0" | bc) s after the load began"
check "S's load was a takeover of the saturated model" bash -c \
  "curl -sf '$S_CONSOLE/api/status' | jq -e '.loads[] | select(.takeover and .state == \"ready\" and .model == \"$MODEL_ID\")'"
grep -q "every host is saturated" "$T/S.log" && pass "S's log says why" || fail "S's log says why"
wait_for 20 h_sees_s || fail "H does not see S serving the model"
touch "$T/stop"
wait "${loaders[@]}"
# Six at once through H: its lane and queue hold three; the rest go to S.
s0=$(s_sequences)
burst=()
for i in 1 2 3 4 5 6; do
  curl -s -o "$T/r$i.json" -w '%{http_code}\n' --max-time 60 "$H_API/completions" -d "$(body 8)" >"$T/code$i" &
  burst+=($!)
done
wait "${burst[@]}"
ok=0
for i in 1 2 3 4 5 6; do [ "$(cat "$T/code$i")" = 200 ] && ok=$((ok + 1)); done
check "six requests at once through H all succeed (no 429)" test "$ok" -eq 6
check "S computed some of them" test "$(s_sequences)" -gt "$s0"
# Hysteresis: still saturated a few seconds after the last request, then not.
sleep 4
check "H stays saturated a few seconds after the load (no flapping)" saturated yes
check "H marked it saturated once" test "$(grep -c ': saturated (' "$T/H.log")" -eq 1
wait_for 40 saturated no || fail "H did not clear the mark after 20 s without waiting requests"
grep -q "no longer saturated" "$T/H.log" && pass "H's log says it is no longer saturated" || fail "H's log says it is no longer saturated"
check "S still serves the model (a second host is not dropped)" s_serves
finish
