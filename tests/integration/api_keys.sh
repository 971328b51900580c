#!/usr/bin/env bash
# API keys (issue 13, item 2), with curl against real nodes on loopback:
# - A serves the demo model with --api-key: no key, a wrong key or another
#   scheme -> 401 in OpenAI's shape with WWW-Authenticate: Bearer; the key ->
#   200 with a completion; the console's /api/status likewise, and it counts
#   the refusals (counters.auth_refused). The key is in no log and not in
#   A's command line as ps shows it.
# - B is a client with another key from LLMESH_API_KEY: B checks its own key,
#   and A serves what B forwards through the mesh without asking for A's.
# - C takes its key from --api-key-file; a file others may read is refused.
# - A non-loopback --http-host without a key refuses to start (exit 2, a
#   message naming --api-key and --no-auth); with --no-auth, or a key, it
#   starts.
set -u
. "$(dirname "$0")/common.bash"

MODEL_ID=kjv-llama-6.3M-q8_0
KEY_A="sk-a-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
KEY_B="sk-b-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
KEY_C="sk-c-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
BODY="{\"model\": \"$MODEL_ID\", \"prompt\": \"In the beginning\", \"max_tokens\": 8, \"temperature\": 0}"

# expect WHAT STATUS URL [CURL ARGS...]: checks the HTTP status of a request;
# its body is left in $T/last.json, its headers in $T/last.json.h.
expect() {
  local what=$1 want=$2 url=$3 got
  shift 3
  got=$(curl -s -o "$T/last.json" -D "$T/last.json.h" -w '%{http_code}' "$url" "$@")
  if [ "$got" = "$want" ]; then pass "$what"; else fail "$what (got $got)"; fi
}

# run_refused NAME ARGS...: runs `llmesh serve ARGS` expecting it to refuse to
# start (20 s at most); sets rc, output in $T/NAME.out and $T/NAME.err.
run_refused() {
  local name=$1; shift
  timeout 20 "$LLMESH" serve --home "$T/$name" --listen 127.0.0.1:0 --port 0 --console 0 "$@" \
    >"$T/$name.out" 2>"$T/$name.err"
  rc=$?
}

unset LLMESH_API_KEY
start_node A serve --model "$DEMO_MODEL" --api-key "$KEY_A" --log-level debug
ROOT_A=${A_API%/v1}

# ---- the OpenAI API on A
expect "no key -> 401" 401 "$A_API/completions" -d "$BODY"
check "no key: OpenAI's error shape, code null" jq -e \
  '.error.type == "invalid_request_error" and .error.code == null and .error.param == null
   and (.error.message | test("Authorization: Bearer"))' "$T/last.json"
check "no key: WWW-Authenticate: Bearer" grep -qi '^WWW-Authenticate: Bearer' "$T/last.json.h"
expect "a wrong key -> 401" 401 "$A_API/completions" -H "Authorization: Bearer ${KEY_A}x" -d "$BODY"
check "a wrong key: code invalid_api_key" jq -e \
  '.error.type == "invalid_request_error" and .error.code == "invalid_api_key"' "$T/last.json"
check "a wrong key: WWW-Authenticate: Bearer, invalid_token" \
  grep -qi '^WWW-Authenticate: Bearer.*invalid_token' "$T/last.json.h"
check "the 401 does not echo the key" bash -c "! grep -q '${KEY_A}' '$T/last.json' '$T/last.json.h'"
expect "the key less its last character -> 401" 401 "$A_API/completions" -H "Authorization: Bearer ${KEY_A%?}" -d "$BODY"
expect "the key as Basic auth -> 401" 401 "$A_API/completions" -u ":$KEY_A" -d "$BODY"
expect "the key -> 200" 200 "$A_API/completions" -H "Authorization: Bearer $KEY_A" -d "$BODY"
cp "$T/last.json" "$T/ok.json"
check "the key: a completion" jq -e '.choices[0].text | length > 0' "$T/ok.json"
expect "header and scheme in lower case -> 200" 200 "$A_API/completions" -H "authorization: bearer $KEY_A" -d "$BODY"
cp "$T/last.json" "$T/ok2.json"
check "the same completion" test "$(jq -r '.choices[0].text' "$T/ok.json")" = "$(jq -r '.choices[0].text' "$T/ok2.json")"
expect "GET /v1/models without a key -> 401" 401 "$A_API/models"
expect "GET /v1/models with the key -> 200" 200 "$A_API/models" -H "Authorization: Bearer $KEY_A"
expect "POST /tokenize without a key -> 401" 401 "$ROOT_A/tokenize" -d '{"content": "x"}'
expect "an unknown path without a key -> 401, not 404" 401 "$ROOT_A/no/such/path"
curl -sN "$A_API/completions" -H "Authorization: Bearer $KEY_A" \
  -d "$(jq -c '. + {stream: true}' <<<"$BODY")" >"$T/stream.txt"
check "a streamed completion with the key" grep -q '^data: \[DONE\]' "$T/stream.txt"

# ---- the console's API on A (7 refusals so far, all on the API port)
expect "console /api/status without a key -> 401" 401 "$A_CONSOLE/api/status"
check "console 401: OpenAI's shape" jq -e '.error.type == "invalid_request_error"' "$T/last.json"
expect "console /api/status with a wrong key -> 401" 401 "$A_CONSOLE/api/status" -H 'Authorization: Bearer nope'
expect "console /api/status with the key -> 200" 200 "$A_CONSOLE/api/status" -H "Authorization: Bearer $KEY_A"
cp "$T/last.json" "$T/status.json"
check "status: api_key_required, auth_refused counts all 9 refusals" \
  jq -e '.api_key_required == true and .counters.auth_refused == 9' "$T/status.json"
check "status does not show the key" bash -c "! grep -q '${KEY_A}' '$T/status.json'"

# ---- B: a client with its own key from the environment, forwarding to A
LLMESH_API_KEY=$KEY_B start_node B client --join "$A_TOKEN"
b_sees_model() {
  curl -sf "$B_API/models" -H "Authorization: Bearer $KEY_B" | jq -e --arg m "$MODEL_ID" '.data | map(.id) | index($m)'
}
wait_for 30 b_sees_model || die "B never learned of A's model"
expect "B (LLMESH_API_KEY): no key -> 401" 401 "$B_API/completions" -d "$BODY"
expect "B: A's key is not B's -> 401" 401 "$B_API/completions" -H "Authorization: Bearer $KEY_A" -d "$BODY"
expect "B: its key -> 200, served by A through the mesh (A trusts the mesh)" 200 "$B_API/completions" -H "Authorization: Bearer $KEY_B" -d "$BODY"
cp "$T/last.json" "$T/b_ok.json"
check "B's forwarded answer equals A's" \
  test "$(jq -r '.choices[0].text' "$T/b_ok.json")" = "$(jq -r '.choices[0].text' "$T/ok.json")"
curl -s "$A_CONSOLE/api/status" -H "Authorization: Bearer $KEY_A" >"$T/status2.json"
check "A counted no refusal for B's forwarded request" jq -e '.counters.auth_refused == 9' "$T/status2.json"

# ---- C: the key from a file
printf '%s\n' "$KEY_C" >"$T/c.key"
chmod 644 "$T/c.key"
run_refused C0 --api-key-file "$T/c.key"
check "a key file readable by others: exit 2" [ "$rc" = 2 ]
check "... with a message that says chmod 600" grep -q 'chmod 600' "$T/C0.err"
chmod 600 "$T/c.key"
start_node C serve --api-key-file "$T/c.key"
expect "C (--api-key-file): no key -> 401" 401 "$C_API/models"
expect "C: the file's first line is the key -> 200" 200 "$C_API/models" -H "Authorization: Bearer $KEY_C"
expect "C: console with the key -> 200" 200 "$C_CONSOLE/api/status" -H "Authorization: Bearer $KEY_C"

# ---- a non-loopback bind
run_refused D0 --http-host 0.0.0.0
check "0.0.0.0 without a key: refuses to start, exit 2" [ "$rc" = 2 ]
check "... printing no token" bash -c "! grep -q '^token:' '$T/D0.out'"
check "... with a message naming --api-key and --no-auth" \
  bash -c "grep -q -- '--api-key' '$T/D0.err' && grep -q -- '--no-auth' '$T/D0.err'"
echo "  message: $(cat "$T/D0.err")"
LLMESH_API_KEY='' run_refused D1 --http-host 0.0.0.0
check "0.0.0.0 with an empty LLMESH_API_KEY: refuses to start, exit 2" [ "$rc" = 2 ]
run_refused D2 --http-host 0.0.0.0 --no-auth --api-key "$KEY_A"
check "--no-auth with --api-key: refused as contradictory, exit 2" [ "$rc" = 2 ]
run_refused D3 --http-host 0.0.0.0 --api-key 'two words'
check "a key with a space: refused, exit 2" [ "$rc" = 2 ]
start_node D serve --http-host 0.0.0.0 --no-auth
PORT_D=${D_API##*:}; PORT_D=${PORT_D%/v1}
expect "0.0.0.0 with --no-auth: starts and answers without a key" 200 "http://127.0.0.1:$PORT_D/v1/models"
check "... and warns that it serves without a key" grep -q 'without a key' "$T/D.log"
start_node E serve --http-host 0.0.0.0 --api-key "$KEY_A"
PORT_E=${E_API##*:}; PORT_E=${PORT_E%/v1}
expect "0.0.0.0 with a key: starts and wants it" 401 "http://127.0.0.1:$PORT_E/v1/models"

# ---- the keys are nowhere in the logs, nor in A's command line
check "no key in any log or output" bash -c \
  "! grep -l -e '$KEY_A' -e '$KEY_B' -e '$KEY_C' '$T'/*.log '$T'/*.out '$T'/*.err"
check "A's command line shows no key (ps)" bash -c "! tr '\\0' ' ' </proc/$A_PID/cmdline | grep -q '$KEY_A'"
check "A's log has the refusals (debug), without the key" grep -q '401 POST /v1/completions' "$T/A.log"
finish
