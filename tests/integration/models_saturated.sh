#!/usr/bin/env bash
# A second host for a saturated model (issue 11, item 7): H serves the demo
# model with one lane and a queue of 2 (--parallel 1 --queue 2), generation
# slowed by the test knob LLMESH_DEBUG_TOKEN_DELAY_MS; S is a standby
# (--standby-for the same file). While H's queue stays over its threshold
# (half the queue bound) for 2 s, H marks the model saturated in its record;
# S, with room for a copy, loads it and becomes a second host; requests H
# cannot queue then go to S instead of getting 429. The mark has hysteresis:
# it stays while requests wait and for 20 s after the last one, so it does
# not flap with every request. E, an entry node (a host of another model),
# sends requests for the model to S while H is marked saturated, and to its
# rendezvous choice again once the mark is cleared. When the
# load is gone (no host saturated, S idle or at half its peak rate, for
# 10 s), S stops serving the model, draining, and requests through S go to H.
set -u
. "$(dirname "$0")/common.bash"
MODEL_ID=kjv-llama-6.3M-q8_0
body() { jq -n --arg m "$MODEL_ID" --argjson n "$1" '{model: $m, prompt: "In the beginning", max_tokens: $n, temperature: 0}'; }
saturated() { curl -sf "$H_CONSOLE/api/status" | jq -e --arg m "$MODEL_ID" --arg me "$1" \
  '.node_id as $id | [.plans[] | select(.model == $m and .coordinator == $id) | .saturated] == [$me == "yes"]'; }
s_serves() { curl -sf "$S_CONSOLE/api/status" | jq -e --arg m "$MODEL_ID" '.models | index($m)'; }
s_sequences() { curl -sf "$S_CONSOLE/api/status" | jq '[.lanes[].batch_sequences] | add // 0'; }
h_sequences() { curl -sf "$H_CONSOLE/api/status" | jq '[.lanes[].batch_sequences] | add // 0'; }
s_left() { ! s_serves >/dev/null; }
h_sees_s() { curl -sf "$H_CONSOLE/api/status" | jq -e --arg m "$MODEL_ID" '[.peers[] | select(.state == "alive") | .models | index($m)] | any'; }

LLMESH_DEBUG_TOKEN_DELAY_MS=60 start_node H serve --model "$DEMO_MODEL" --threads 1 --parallel 1 --queue 2
LLMESH_DEBUG_TOKEN_DELAY_MS=60 start_node S serve --join "$H_TOKEN" --threads 1 --standby-for "$DEMO_MODEL"
wait_for 20 bash -c "curl -sf '$S_CONSOLE/api/status' | jq -e '[.peers[] | select(.state == \"alive\")] | length == 1'" ||
  die "S did not join H"
# E: an entry node for the model that is no standby (it hosts another model).
cp "$DEMO_MODEL" "$T/other-model.gguf"
start_node E serve --model "$T/other-model.gguf" --join "$H_TOKEN" --threads 1

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
# H is still marked saturated (hysteresis): E sends the model's requests to S.
e_sees() { curl -sf "$E_CONSOLE/api/status" | jq -e --arg m "$MODEL_ID" '[.peers[] | select(.state == "alive") | .models | index($m)] | map(select(. != null)) | length == 2'; }
wait_for 10 e_sees || fail "E does not see two hosts of the model"
# Without the preference E would pick by rendezvous hash (router.c): say which, so a reader
# knows whether this run's check could have caught its absence.
rendezvous() { python3 -c '
import sys
def fnv(b):
    h = 0xcbf29ce484222325
    for x in b: h = ((h ^ x) * 0x100000001b3) & 0xffffffffffffffff
    return h
e, m = bytes.fromhex(sys.argv[1]), sys.argv[4].encode()
print("H" if fnv(e + bytes.fromhex(sys.argv[2]) + m) > fnv(e + bytes.fromhex(sys.argv[3]) + m) else "S")' "$@"; }
node_id() { curl -sf "$1/api/status" | jq -r .node_id; }
favoured=$(rendezvous "$(node_id "$E_CONSOLE")" "$(node_id "$H_CONSOLE")" "$(node_id "$S_CONSOLE")" "$MODEL_ID")
echo "E's rendezvous hash alone would pick $favoured$([ "$favoured" = H ] && echo ': the next check is decisive' || echo ': the next check would pass without the preference too')"
h0=$(h_sequences); s0=$(s_sequences)
e_ok=0
for i in 1 2 3 4; do curl -sf -o /dev/null --max-time 30 "$E_API/completions" -d "$(body 4)" && e_ok=$((e_ok + 1)); done
check "four requests through E answered" test "$e_ok" -eq 4
check "E sent none to H, marked saturated" test "$(h_sequences)" -eq "$h0"
check "S computed them" test "$(s_sequences)" -gt "$s0"
# Hysteresis: still saturated a few seconds after the last request, then not.
sleep 4
check "H stays saturated a few seconds after the load (no flapping)" saturated yes
check "H marked it saturated once" test "$(grep -c ': saturated (' "$T/H.log")" -eq 1
wait_for 40 saturated no || fail "H did not clear the mark after 20 s without waiting requests"
cleared=$(date +%s.%N)
grep -q "no longer saturated" "$T/H.log" && pass "H's log says it is no longer saturated" || fail "H's log says it is no longer saturated"
check "S still serves the model when H clears its mark" s_serves
# Unmarked, E is back on its rendezvous choice (its KV cache is warm there).
sleep 2
h0=$(h_sequences); s0=$(s_sequences)
for i in 1 2; do curl -sf -o /dev/null --max-time 30 "$E_API/completions" -d "$(body 4)" || fail "a request through E"; done
if [ "$favoured" = H ]; then
  check "H unmarked: E sends to H again, its rendezvous choice" test "$(h_sequences)" -gt "$h0" -a "$(s_sequences)" -eq "$s0"
else
  check "H unmarked: E stays on S, its rendezvous choice" test "$(s_sequences)" -gt "$s0" -a "$(h_sequences)" -eq "$h0"
fi
# The load is gone: S leaves, after its own hysteresis.
wait_for 40 s_left || fail "S still serves the model 40 s after H cleared its mark"
left=$(date +%s.%N)
held=$(echo "$left - $cleared" | bc)
echo "S stopped serving the model $held s after H cleared its mark"
check "S held it at least 10 s of calm (no flapping)" bash -c "echo '$held >= 9.5' | bc | grep -q 1"
grep -q "no longer a second host" "$T/S.log" && pass "S's log says why it left" || fail "S's log says why it left"
check "S's load is unloaded" bash -c \
  "curl -sf '$S_CONSOLE/api/status' | jq -e '.loads[] | select(.second_host and .state == \"unloaded\" and .model == \"$MODEL_ID\")'"
check "a request through S is answered (by H)" curl -sf -o /dev/null --max-time 30 "$S_API/completions" -d "$(body 4)"
check "H still serves the model" bash -c "curl -sf '$H_CONSOLE/api/status' | jq -e --arg m '$MODEL_ID' '.models | index(\$m)'"
finish
