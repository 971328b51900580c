#!/usr/bin/env bash
# Admission by mesh secret (issue 13, items 1 and 5), real nodes on loopback:
# - A serves the demo model; B joins with A's token: both hold the same
#   secret (their homes' mesh-secret files, mode 0600) and see each other.
# - S, a node with a fresh key and A's token with a wrong secret (A's id and
#   addresses, another secret), is refused and counted (admission_refused in
#   /api/status and /metrics), and neither A nor B ever lists it.
# - C, a passive client with the same wrong token, is refused likewise: it
#   gets no routing table, is not counted as a client, cannot use the model.
# - A version 1 token (no secret) is refused at start with a message that
#   says to use a new one.
# - /api/status shows the token on a loopback console, null on a console
#   bound elsewhere; the secret and the token are in no log.
set -u
. "$(dirname "$0")/common.bash"

MODEL_ID=kjv-llama-6.3M-q8_0
BODY="{\"model\": \"$MODEL_ID\", \"prompt\": \"In the beginning\", \"max_tokens\": 8, \"temperature\": 0}"

status() { curl -s "$1/api/status"; }
# peers_of CONSOLE: the ids a node lists
peers_of() { status "$1" | jq -r '.peers[].id'; }
refused() { status "$1" | jq -r '.counters.admission_refused'; }

# retoken TOKEN MODE: the token re-encoded: "wrong" flips a bit of its
# secret, "v1" drops the secret and says version 1.
retoken() {
  python3 - "$1" "$2" <<'PY'
import base64, sys
t, mode = sys.argv[1], sys.argv[2]
b = bytearray(base64.urlsafe_b64decode(t + "=" * (-len(t) % 4)))
assert b[0] == 2, "not a version 2 token"
if mode == "wrong":
    b[1 + 32 + 5] ^= 0x10
else:
    b = bytearray([1]) + b[1:33] + b[65:]
print(base64.urlsafe_b64encode(bytes(b)).decode().rstrip("="))
PY
}

start_node A serve --model "$DEMO_MODEL" --log-level debug
start_node B serve --join "$A_TOKEN" --log-level debug
wait_for 20 bash -c "curl -s '$A_CONSOLE/api/status' | jq -e '[.peers[] | select(.state == \"alive\")] | length == 1'" \
  || die "B did not join A"
check "B is alive on A" bash -c "curl -s '$A_CONSOLE/api/status' | jq -e '.peers[0].state == \"alive\"'"
check "A and B hold the same mesh secret" cmp -s "$T/A/mesh-secret" "$T/B/mesh-secret"
check "the mesh secret file is mode 0600" test "$(stat -c %a "$T/A/mesh-secret")" = 600
check "the token is version 2 (66 bytes and more)" \
  python3 -c "import base64,sys; t=sys.argv[1]; b=base64.urlsafe_b64decode(t+'='*(-len(t)%4)); sys.exit(not (b[0]==2 and len(b)>=73))" "$A_TOKEN"
check "no refusal so far" test "$(refused "$A_CONSOLE")" = 0

# ---- a stranger with a fresh key and a wrong secret
BAD=$(retoken "$A_TOKEN" wrong)
start_node S serve --join "$BAD" --log-level debug
S_ID=$(status "$S_CONSOLE" | jq -r .node_id)
check "S is refused and counted on A" wait_for 10 bash -c "[ \$(curl -s '$A_CONSOLE/api/status' | jq .counters.admission_refused) -ge 1 ]"
check "/metrics counts it" bash -c "curl -s '$A_CONSOLE/metrics' | grep -Eq '^llmesh_admission_refused_total [1-9]'"
check "S says why in its log" grep -q "refused this node: our mesh secret is not its mesh's" "$T/S.log"
sleep 3   # S redials with backoff: refused again each time, never in
check "A never lists S" bash -c "! curl -s '$A_CONSOLE/api/status' | jq -r '.peers[].id' | grep -q '$S_ID'"
check "B never lists S" bash -c "! curl -s '$B_CONSOLE/api/status' | jq -r '.peers[].id' | grep -q '$S_ID'"
check "A lists only B" bash -c "curl -s '$A_CONSOLE/api/status' | jq -e '.peers | length == 1'"
check "S has no live peer" bash -c "curl -s '$S_CONSOLE/api/status' | jq -e '[.peers[] | select(.state == \"alive\")] | length == 0'"
check "S cannot use A's model" bash -c "[ \$(curl -s -o /dev/null -w '%{http_code}' '$S_API/completions' -d '$BODY') != 200 ]"

# ---- a passive client with the wrong secret
before=$(refused "$A_CONSOLE")
start_node C client --join "$BAD" --log-level debug
check "C is refused and counted on A" wait_for 10 bash -c "[ \$(curl -s '$A_CONSOLE/api/status' | jq .counters.admission_refused) -gt $before ]"
check "C got no routing table" bash -c "curl -s '$C_CONSOLE/api/status' | jq -e '.counters.routes_pulled == 0'"
check "C is not a client of A" bash -c "curl -s '$A_CONSOLE/api/status' | jq -e '.clients_connected == 0'"
check "C cannot use A's model" bash -c "[ \$(curl -s -o /dev/null -w '%{http_code}' '$C_API/completions' -d '$BODY') != 200 ]"
# ...while a client with the right token can.
start_node D client --join "$A_TOKEN"
check "a client with the right token gets a completion" \
  wait_for 20 bash -c "[ \$(curl -s -o /dev/null -w '%{http_code}' '$D_API/completions' -d '$BODY') = 200 ]"

# ---- a version 1 token
V1=$(retoken "$A_TOKEN" v1)
timeout 20 "$LLMESH" serve --home "$T/V" --listen 127.0.0.1:0 --port 0 --console 0 --join "$V1" \
  >"$T/V.out" 2>"$T/V.err"
rc=$?
check "a version 1 token is refused at start" test "$rc" -ne 0
check "...with a message that says to use a new token" grep -q "version 1 token.*new token" "$T/V.err"

# ---- the token in /api/status
check "a loopback console shows the token" bash -c "curl -s '$A_CONSOLE/api/status' | jq -e --arg t '$A_TOKEN' '.token == \$t'"
start_node E serve --join "$A_TOKEN" --http-host 0.0.0.0 --no-auth
E_PORT=${E_CONSOLE##*:}
check "a console bound to 0.0.0.0 hides it" bash -c "curl -s 'http://127.0.0.1:$E_PORT/api/status' | jq -e '.token == null and (.node_id | length == 64)'"

# ---- nothing secret in the logs
SECRET_HEX=$(sed -n 's/^secret //p' "$T/A/mesh-secret")
[ ${#SECRET_HEX} = 64 ] || fail "cannot read A's mesh secret"
check "the secret is in no log" bash -c "! grep -l '$SECRET_HEX' '$T'/*.log '$T'/*.err"
check "the token is in no log" bash -c "! grep -lF '$A_TOKEN' '$T'/*.log '$T'/*.err"
check "the wrong token is in no log" bash -c "! grep -lF '$BAD' '$T'/*.log '$T'/*.err"

finish
