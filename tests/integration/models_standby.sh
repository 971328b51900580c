#!/usr/bin/env bash
# Models at run time (issue 11): the load API and standby takeover, with the
# fake hub of tests/tools/fake_hub.py (HF_ENDPOINT; never the internet).
#   - POST /api/models/load {"model": REF} on the console port: 202, the
#     download and the load shown in /api/status "loads", then the model
#     answers; malformed bodies and references get 400, without the API key
#     401; unload stops the model (200), gives its memory back, and a
#     second load brings it back;
#   - demand: requests for a model are counted and travel in the records;
#   - standby takeover: H serves the demo model, S is a standby with
#     --standby-for a hub reference of the same model id, C a passive client
#     joined through S. After kill -9 of H (the only host), requests through
#     C succeed again within 15 s, answered by S, identical to H's.
set -u
. "$(dirname "$0")/common.bash"
. "$(dirname "$0")/fake_hub.bash"
MODEL_ID=kjv-llama-6.3M-q8_0

start_fake_hub
export HF_HOME="$T/hf"
body='{"model": "MODEL", "prompt": "In the beginning", "max_tokens": 12, "temperature": 0}'

# ---- the load API -------------------------------------------------------------------------
start_node L serve --threads 1 --api-key sekrit
auth=(-H "Authorization: Bearer sekrit")
post() { curl -s -o "$T/post.json" -w '%{http_code}' "${auth[@]}" "$L_CONSOLE/api/models/$1" -d "$2"; }
check "load without the key: 401" test "$(curl -s -o /dev/null -w '%{http_code}' "$L_CONSOLE/api/models/load" -d '{"model": "x"}')" = 401
check "load with a body that is not JSON: 400" test "$(post load 'nope')" = 400
check "load without \"model\": 400" test "$(post load '{"ref": "x"}')" = 400
check "load of a malformed reference: 400" test "$(post load '{"model": "org/repo/../x.gguf"}')" = 400
check "its message says why" grep -q "gguf" "$T/post.json"
check "unload of a model not served here: 404" test "$(post unload "{\"model\": \"$MODEL_ID\"}")" = 404
code=$(post load '{"model": "TestOrg/kjv-GGUF:Q8_0"}')
check "load of org/repo:QUANT: 202" test "$code" = 202
loaded() { curl -sf "${auth[@]}" "$L_CONSOLE/api/status" | jq -e '.loads[] | select(.ref == "TestOrg/kjv-GGUF:Q8_0" and .state == "ready")'; }
wait_for 30 loaded || fail "the load did not become ready: $(curl -s "${auth[@]}" "$L_CONSOLE/api/status" | jq -c .loads)"
st=$(curl -sf "${auth[@]}" "$L_CONSOLE/api/status")
check "the status shows the load's bytes" test "$(echo "$st" | jq '.loads[0].done_bytes')" -eq "$(stat -c %s "$DEMO_MODEL")"
check "the model is served" bash -c "echo '$st' | jq -e '.models | index(\"$MODEL_ID\")'"
l=$(curl -sf "${auth[@]}" "$L_API/completions" -d "${body/MODEL/$MODEL_ID}" | jq -r '.choices[0].text')
check "the loaded model answers" test -n "$l"
check "a second load of the same model fails with the reason" bash -c "
  [ \$(curl -s -o '$T/p2.json' -w '%{http_code}' -H 'Authorization: Bearer sekrit' '$L_CONSOLE/api/models/load' -d '{\"model\": \"TestOrg/kjv-GGUF:Q8_0\"}') = 202 ] &&
  for i in \$(seq 50); do curl -s -H 'Authorization: Bearer sekrit' '$L_CONSOLE/api/status' | jq -e '.loads[] | select(.state == \"failed\") | .error | test(\"already served\")' && exit 0; sleep 0.2; done; exit 1"
check "unload: 200" test "$(post unload "{\"model\": \"$MODEL_ID\"}")" = 200
check "the unloaded model is gone from the status" bash -c "curl -sf -H 'Authorization: Bearer sekrit' '$L_CONSOLE/api/status' | jq -e '.models | length == 0'"
check "and its memory is given back" bash -c "curl -sf -H 'Authorization: Bearer sekrit' '$L_CONSOLE/api/status' | jq -e '.memory_used == 0'"
check "a request for it now gets 404" test "$(curl -s -o /dev/null -w '%{http_code}' "${auth[@]}" "$L_API/completions" -d "${body/MODEL/$MODEL_ID}")" = 404
check "it can be loaded again" test "$(post load '{"model": "TestOrg/kjv-GGUF:Q8_0"}')" = 202
wait_for 30 bash -c "curl -sf -H 'Authorization: Bearer sekrit' '$L_CONSOLE/api/status' | jq -e '.models | index(\"$MODEL_ID\")'" || fail "no reload"
l2=$(curl -sf "${auth[@]}" "$L_API/completions" -d "${body/MODEL/$MODEL_ID}" | jq -r '.choices[0].text')
check "and answers as before" test "$l2" = "$l"
kill -TERM "$L_PID"

# ---- standby takeover after kill -9 of the only host ----------------------------------
start_node H serve --model "$DEMO_MODEL" --threads 1
start_node S serve --join "$H_TOKEN" --threads 1 --standby-for "TestOrg/kjv-GGUF/$MODEL_ID.gguf"
start_node C client --join "$S_TOKEN"
routed() { # the completion's text through C; fails on any HTTP error or an empty answer
  local out
  out=$(curl -sf "$C_API/completions" --max-time 5 -d "${body/MODEL/$MODEL_ID}") || return 1
  echo "$out" | jq -e -r '.choices[0].text | select(length > 0)'
}
wait_for 30 routed || die "the client gets no answer from H"
h=$(routed)
for _ in 1 2 3 4 5; do routed >/dev/null; done
demanded() { curl -sf "$S_CONSOLE/api/status" | jq -e ".demand[\"$MODEL_ID\"] > 0"; }
wait_for 15 demanded || fail "S does not see the demand for $MODEL_ID in H's record"
check "S has not taken over while H serves" bash -c "curl -sf '$S_CONSOLE/api/status' | jq -e '.loads | length == 0'"
kill -9 "$H_PID"
t0=$(date +%s.%N)
ok=0
for _ in $(seq 60); do
  if s=$(routed); then ok=1; break; fi
  sleep 0.5
done
t=$(echo "$(date +%s.%N) - $t0" | bc)
echo "requests through the client answered again ${t} s after kill -9 of the only host"
check "requests through the passive client succeed again" test "$ok" = 1
check "... within 15 s" bash -c "(( \$(echo '$t < 15' | bc) ))"
check "the answer is the same as the dead host's" test "$s" = "$h"
check "S took the model over from the hub reference" bash -c "curl -sf '$S_CONSOLE/api/status' | jq -e '.loads[] | select(.takeover and .state == \"ready\" and .model == \"$MODEL_ID\")'"
check "S serves it" bash -c "curl -sf '$S_CONSOLE/api/status' | jq -e '.models | index(\"$MODEL_ID\")'"

finish
