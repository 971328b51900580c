#!/usr/bin/env bash
# Weights cross the internet once (issue 11, item 6), with the fake hub of
# tests/tools/fake_hub.py (HF_ENDPOINT; never the internet):
#   - A starts with `serve --model TestOrg/kjv-GGUF:Q8_0`: downloaded from the
#     hub into A's Hugging Face cache, listed in A's record (SHA-256, size,
#     reference);
#   - B (its own cache) is asked to load the same model: it asks the hub
#     what the file is (HEAD, the fit check's header Range) but gets the
#     bytes from A over the mesh: the hub's log shows no whole-file GET by
#     B; B's blob has the hub's SHA-256, and B answers as A does;
#   - D starts with `serve --model REF --join A` (the hub up, its own cache):
#     it waits for the mesh and gets the bytes from A, not from the hub;
#   - C loads it while A serves slowly (LLMESH_DEBUG_FILE_SERVE_DELAY_MS) and
#     A is killed -9 halfway: C goes on from the hub with Range from the
#     bytes it got from A (resumed, not restarted), verifies, and answers.
set -u
. "$(dirname "$0")/common.bash"
. "$(dirname "$0")/fake_hub.bash"
MODEL_ID=kjv-llama-6.3M-q8_0
REF=TestOrg/kjv-GGUF:Q8_0
SIZE=$(stat -c %s "$DEMO_MODEL")
SHA=$(sha256sum "$DEMO_MODEL" | cut -d' ' -f1)

start_fake_hub
body=$(jq -n --arg m "$MODEL_ID" '{model: $m, prompt: "In the beginning", max_tokens: 12, temperature: 0}')
answer() { curl -sf "$1/completions" -d "$body" | jq -e -r '.choices[0].text | select(length > 0)'; }
# A GET of the file's bytes that is not the fit check's header (bytes=0-N):
# the whole file, or its rest (bytes=N-).
weight_gets() { jq -r "select(.method == \"GET\" and (.path | startswith(\"/cdn/\"))) | .range // \"whole\"" "$T/hub.jsonl" | grep -v '^bytes=0-[0-9]' || true; }
ready() { curl -sf "$1/api/status" | jq -e --arg r "$REF" '.loads[] | select(.ref == $r and .state == "ready")'; }
sees_file() { curl -sf "$1/api/status" | jq -e '.peer_files >= 1'; }

# ---- A: from the hub -------------------------------------------------------------------
HF_HOME="$T/hfA" LLMESH_DEBUG_FILE_SERVE_DELAY_MS=400 start_node A serve --model "$REF" --threads 1
check "A downloaded the file from the hub" test "$(weight_gets | wc -l)" -ge 1
check "A lists the file in its status (SHA-256, size, reference)" bash -c \
  "curl -sf '$A_CONSOLE/api/status' | jq -e '.files[] | select(.sha256 == \"$SHA\" and .size == $SIZE and .ref == \"TestOrg/kjv-GGUF/$MODEL_ID.gguf@0123456789abcdef0123456789abcdef01234567\")'"
a=$(answer "$A_API") || die "A does not answer"

# ---- B: from A over the mesh -------------------------------------------------------------
HF_HOME="$T/hfB" start_node B serve --join "$A_TOKEN" --threads 1
wait_for 20 sees_file "$B_CONSOLE" || die "B does not see A's file in A's record"
: >"$T/hub.jsonl"
code=$(curl -s -o /dev/null -w '%{http_code}' "$B_CONSOLE/api/models/load" -d "{\"model\": \"$REF\"}")
check "B: load 202" test "$code" = 202
wait_for 60 ready "$B_CONSOLE" || fail "B's load did not become ready: $(curl -s "$B_CONSOLE/api/status" | jq -c .loads)"
check "the hub saw no download of the file's bytes by B" test -z "$(weight_gets)"
check "but B asked the hub what the file is (HEAD)" grep -q '"method": "HEAD"' "$T/hub.jsonl"
blob="$T/hfB/hub/models--TestOrg--kjv-GGUF/blobs/$SHA"
check "B's blob is in the Hugging Face layout, named by its SHA-256" test -f "$blob"
check "its bytes hash to the hub's SHA-256" test "$(sha256sum "$blob" | cut -d' ' -f1)" = "$SHA"
check "the snapshot links to it" test -L "$T/hfB/hub/models--TestOrg--kjv-GGUF/snapshots/0123456789abcdef0123456789abcdef01234567/$MODEL_ID.gguf"
check "B counts the bytes as from a peer" bash -c "curl -sf '$B_CONSOLE/api/status' | jq -e '.downloads.from_peers_bytes == $SIZE'"
check "A served the whole file" bash -c "curl -sf '$A_CONSOLE/api/status' | jq -e '.weights.counters.file_bytes_served == $SIZE'"
b=$(answer "$B_API")
check "B answers as A does" test "$b" = "$a"

# ---- D: serve --model at start, --join A: from A, not the hub ---------------------------------
: >"$T/hub.jsonl"
served() { echo $(( $(curl -sf "$A_CONSOLE/api/status" | jq '.weights.counters.file_bytes_served') + \
  $(curl -sf "$B_CONSOLE/api/status" | jq '.weights.counters.file_bytes_served') )); }
served_before=$(served)
HF_HOME="$T/hfD" start_node D serve --model "$REF" --join "$A_TOKEN" --threads 1
wait_for 45 ready "$D_CONSOLE" || fail "D's --model did not become ready: $(curl -s "$D_CONSOLE/api/status" | jq -c .loads)"
check "D's start waited for the mesh" grep -q "it will come from a peer once the mesh is known" "$T/D.log"
check "the hub saw no download of the file's bytes by D" test -z "$(weight_gets)"
check "D got the whole file from a peer" bash -c "curl -sf '$D_CONSOLE/api/status' | jq -e '.downloads.from_peers_bytes == $SIZE'"
check "A or B (both hold it) served it, once" test "$(served)" -eq $((served_before + SIZE))
check "D answers as A does" test "$(answer "$D_API")" = "$a"
kill -TERM "$B_PID" "$D_PID"
wait_for 20 bash -c "curl -sf '$A_CONSOLE/api/status' | jq -e '[.peers[] | select(.state == \"alive\")] | length == 0'" ||
  fail "A still sees B alive"

# ---- C: A dies halfway, the hub does the rest ----------------------------------------------
HF_HOME="$T/hfC" start_node C serve --join "$A_TOKEN" --threads 1
wait_for 20 sees_file "$C_CONSOLE" || die "C does not see A's file"
: >"$T/hub.jsonl"
check "C: load 202" test "$(curl -s -o /dev/null -w '%{http_code}' "$C_CONSOLE/api/models/load" -d "{\"model\": \"$REF\"}")" = 202
part="$T/hfC/hub/models--TestOrg--kjv-GGUF/blobs/$SHA.incomplete"
got_some() { [ "$(stat -c %s "$part" 2>/dev/null || echo 0)" -ge 1048576 ]; }
wait_for 30 got_some || die "C got no MiB from A"
kill -9 "$A_PID"
had=$(stat -c %s "$part" 2>/dev/null || echo 0)
echo "A killed with $had of $SIZE bytes at C"
check "C had part of the file, not all" test "$had" -lt "$SIZE"
wait_for 60 ready "$C_CONSOLE" || fail "C's load did not become ready: $(curl -s "$C_CONSOLE/api/status" | jq -c .loads)"
gets=$(weight_gets)
echo "C's GETs of the file at the hub: $gets"
check "C resumed at the hub with Range from the bytes A had sent" bash -c "echo '$gets' | grep -qE '^bytes=[1-9][0-9]*-\$'"
check "and never fetched the whole file" bash -c "! echo '$gets' | grep -q whole"
check "C's blob hashes to the hub's SHA-256" test "$(sha256sum "$T/hfC/hub/models--TestOrg--kjv-GGUF/blobs/$SHA" | cut -d' ' -f1)" = "$SHA"
check "C counted A as a failed peer" bash -c "curl -sf '$C_CONSOLE/api/status' | jq -e '.downloads.peer_failures >= 1 and .downloads.from_peers_bytes > 0'"
c=$(answer "$C_API")
check "C answers as A did" test "$c" = "$a"
finish
