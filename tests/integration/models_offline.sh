#!/usr/bin/env bash
# Loads by hub reference with the hub down (issue 11: "a node gets a file
# from its peer with the HTTP server stopped"), with the fake hub of
# tests/tools/fake_hub.py (HF_ENDPOINT; never the internet):
#   - A downloads TestOrg/kjv-GGUF:Q8_0 at start (the hub up) and lists it
#     in its record with the snapshot's commit;
#   - HF_HUB_OFFLINE=1 is honoured: C, the hub up, loads the hub file by the
#     load API without one request to the hub: named by A's record, bytes
#     from A, into C's cache;
#   - the hub stopped: B (its own cache) starts with `serve --model
#     TestOrg/kjv-GGUF:Q8_0 --join A`: it waits for the mesh, gets the file
#     from A, keeps it in the Hugging Face layout (blob, snapshot at A's
#     commit, refs/main) and answers as A;
#   - the hub stopped: A restarted alone, by repo:QUANT and by hub file,
#     loads from its cache; a node alone whose cache lacks the file fails at
#     once, and one that joins a mesh where nobody holds it fails once the
#     mesh is known, both with a message that says why;
#   - the hub stopped: F, whose cache still has the snapshot link but not the
#     blob (deleted by hand), gets the bytes its own link names from A;
#   - `llmesh models` asks the node's console which cached models it serves.
set -u
. "$(dirname "$0")/common.bash"
. "$(dirname "$0")/fake_hub.bash"
MODEL_ID=kjv-llama-6.3M-q8_0
REF=TestOrg/kjv-GGUF:Q8_0
FILE_REF=TestOrg/kjv-GGUF/$MODEL_ID.gguf
COMMIT=0123456789abcdef0123456789abcdef01234567
SIZE=$(stat -c %s "$DEMO_MODEL")
SHA=$(sha256sum "$DEMO_MODEL" | cut -d' ' -f1)

start_fake_hub
body=$(jq -n --arg m "$MODEL_ID" '{model: $m, prompt: "In the beginning", max_tokens: 12, temperature: 0}')
answer() { curl -sf "$1/completions" -d "$body" | jq -e -r '.choices[0].text | select(length > 0)'; }
ready() { curl -sf "$1/api/status" | jq -e --arg r "$2" '.loads[] | select(.ref == $r and .state == "ready")'; }
sees_file() { curl -sf "$1/api/status" | jq -e '.peer_files >= 1'; }
in_layout() { # in_layout HF_HOME: the blob, the snapshot link at A's commit, refs/main
  local repo="$1/hub/models--TestOrg--kjv-GGUF"
  [ "$(sha256sum "$repo/blobs/$SHA" | cut -d' ' -f1)" = "$SHA" ] &&
    [ "$(readlink "$repo/snapshots/$COMMIT/$MODEL_ID.gguf")" = "../../blobs/$SHA" ] &&
    [ "$(cat "$repo/refs/main")" = "$COMMIT" ]
}

# ---- A: from the hub ---------------------------------------------------------------------
HF_HOME="$T/hfA" start_node A serve --model "$REF" --threads 1
check "A lists the file in its status with the snapshot's commit" bash -c \
  "curl -sf '$A_CONSOLE/api/status' | jq -e '.files[] | select(.sha256 == \"$SHA\" and .size == $SIZE and .ref == \"$FILE_REF@$COMMIT\")'"
a=$(answer "$A_API") || die "A does not answer"

# ---- C: HF_HUB_OFFLINE=1, the hub up: not one request ---------------------------------------
HF_HOME="$T/hfC" HF_HUB_OFFLINE=1 start_node C serve --join "$A_TOKEN" --threads 1
wait_for 20 sees_file "$C_CONSOLE" || die "C does not see A's file in A's record"
: >"$T/hub.jsonl"
code=$(curl -s -o /dev/null -w '%{http_code}' "$C_CONSOLE/api/models/load" -d "{\"model\": \"$FILE_REF\"}")
check "C: load 202" test "$code" = 202
wait_for 30 ready "$C_CONSOLE" "$FILE_REF" ||
  fail "C's load did not become ready: $(curl -s "$C_CONSOLE/api/status" | jq -c .loads)"
check "with HF_HUB_OFFLINE=1 the hub got no request at all" test ! -s "$T/hub.jsonl"
check "C counts the whole file as from a peer" bash -c \
  "curl -sf '$C_CONSOLE/api/status' | jq -e '.downloads.from_peers_bytes >= $SIZE and .downloads.requests == 0'"
check "C's copy is in the Hugging Face layout (blob, snapshot at A's commit, refs/main)" in_layout "$T/hfC"
check "C answers as A" test "$(answer "$C_API")" = "$a"
kill -TERM "$C_PID"

# ---- the hub stopped ---------------------------------------------------------------------------
kill "$HUB_PID"
wait "$HUB_PID" 2>/dev/null
check "the hub is down" bash -c "! curl -s -o /dev/null '$HF_ENDPOINT/api/models/TestOrg/kjv-GGUF/revision/main'"

# ---- B: serve --model at start, the hub down: from A, once the mesh is known -------------------------
started=$(date +%s.%N)
HF_HOME="$T/hfB" start_node B serve --model "$REF" --join "$A_TOKEN" --threads 1
wait_for 45 ready "$B_CONSOLE" "$REF" ||
  fail "B's --model did not become ready: $(curl -s "$B_CONSOLE/api/status" | jq -c .loads)"
echo "B serves $REF $(echo "$(date +%s.%N) - $started" | bc) s after its start, the hub down"
check "B said it waits for the mesh" grep -q "it will come from a peer once the mesh is known" "$T/B.log"
check "B's log says the peers' records named the file" grep -q "named by the peers' records" "$T/B.log"
check "B got the whole file from a peer" bash -c \
  "curl -sf '$B_CONSOLE/api/status' | jq -e '.downloads.from_peers_bytes >= $SIZE'"
check "B's copy is in the Hugging Face layout (blob, snapshot at A's commit, refs/main)" in_layout "$T/hfB"
check "B answers as A" test "$(answer "$B_API")" = "$a"

# ---- llmesh models: which cached models the running node serves -------------------------------------------
marked() { echo "$listing" | grep -E "$1"; }
listing=$(HF_HOME="$T/hfB" "$LLMESH" models --home "$T/B" --console "$B_CONSOLE" 2>"$T/models.err")
echo "$listing"
check "llmesh models marks the cached model B serves" marked "$MODEL_ID +serving +$FILE_REF\$"
listing=$(HF_HOME="$T/hfB" "$LLMESH" models --home "$T/B" --console 9 2>"$T/models.err")
check "with no node to ask it marks nothing as served" marked "$MODEL_ID +[?] +$FILE_REF\$"
check "and says it could not ask" grep -q "no node's status from http://127.0.0.1:9" "$T/models.err"

# ---- a load nobody can give, the hub down ---------------------------------------------------------------
code=$(curl -s -o /dev/null -w '%{http_code}' "$B_CONSOLE/api/models/load" -d '{"model": "TestOrg/kjv-GGUF:Q4_K_M"}')
check "B: load of a quant nobody holds: 202" test "$code" = 202
failed() { curl -sf "$B_CONSOLE/api/status" | jq -e -r '.loads[] | select(.ref == "TestOrg/kjv-GGUF:Q4_K_M" and .state == "failed") | .error'; }
wait_for 20 failed || fail "the load did not fail"
err=$(failed)
echo "the load's error: $err"
says() { grep -q "the hub cannot be asked.*no peer lists a file of TestOrg/kjv-GGUF carrying Q4_K_M" <<<"$err"; }
check "its error says the hub cannot be asked and no peer lists it" says

# ---- E: --join, the hub down, nobody holds it: exits once the mesh is known --------------------------------
HF_HOME="$T/hfE" start_node E serve --model TestOrg/kjv-GGUF:Q4_K_M --join "$A_TOKEN" --threads 1
gone() { ! kill -0 "$E_PID" 2>/dev/null; }
wait_for 40 gone || fail "E still runs"
check "E says why it stops" grep -q "llmesh: --model TestOrg/kjv-GGUF:Q4_K_M: .*the hub cannot be asked.*no peer lists" "$T/E.log"
wait "$E_PID" 2>/dev/null
check "E exits with 1" test $? -eq 1

# ---- D alone, the hub down, not cached: fails at once ------------------------------------------------------
HF_HOME="$T/hfD" timeout 30 "$LLMESH" serve --home "$T/D" --listen 127.0.0.1:0 --port 0 --console 0 --model "$REF" \
  >"$T/D.out" 2>"$T/D.log"
check "D alone fails" test $? -eq 1
check "D's message names the hub, the cache and --join" grep -q "the hub cannot be asked.*not in the cache.*with --join, a peer holding it would give it" "$T/D.log"

# ---- F: its cache names the file (the blob deleted by hand), a peer has the bytes ------------------------------
mkdir -p "$T/hfF" && cp -a "$T/hfB/hub" "$T/hfF/"
rm "$T/hfF/hub/models--TestOrg--kjv-GGUF/blobs/$SHA"
HF_HOME="$T/hfF" start_node F serve --model "$REF" --join "$A_TOKEN" --threads 1
wait_for 45 ready "$F_CONSOLE" "$REF" ||
  fail "F's --model did not become ready: $(curl -s "$F_CONSOLE/api/status" | jq -c .loads)"
check "F's own snapshot link named the file, not the peers' records" grep -q "named by this node's cache" "$T/F.log"
check "F's blob is back, verified" in_layout "$T/hfF"
check "F answers as A" test "$(answer "$F_API")" = "$a"
kill -TERM "$F_PID"

# ---- A restarted, the hub down: from its cache, by repo:QUANT and by hub file ---------------------------------
kill -TERM "$A_PID"
wait_for 20 bash -c "! kill -0 $A_PID 2>/dev/null" || fail "A did not stop"
for ref in "$REF" "$FILE_REF"; do
  HF_HOME="$T/hfA" start_node A2 serve --model "$ref" --threads 1
  check "A restarted with --model $ref answers from its cache, the hub down" test "$(answer "$A2_API")" = "$a"
  kill -TERM "$A2_PID"
  wait_for 20 bash -c "! kill -0 $A2_PID 2>/dev/null" || fail "A2 did not stop"
done
finish
