#!/usr/bin/env bash
# A file several peers hold comes from all of them at once (issue 11, item 5:
# "several peers may share the work"), with the fake hub of
# tests/tools/fake_hub.py (HF_ENDPOINT; never the internet):
#   - A downloads TestOrg/kjv-GGUF:Q8_0 from the hub; B loads it from A.
#     Both serve whole files slowly (LLMESH_DEBUG_FILE_SERVE_DELAY_MS: a pause
#     after each 1 MiB piece), so the others' loads take seconds;
#   - C loads it: the hub sees no GET of its bytes, A and B both served
#     pieces of it, and C's blob hashes to the hub's SHA-256;
#   - C stops; D loads it, and B is killed -9 once it served D a piece: D gets the
#     rest from A (A serves after the kill; the hub sees no GET of the
#     bytes), its blob hashes right, D answers as A.
set -u
. "$(dirname "$0")/common.bash"
MODEL_ID=kjv-llama-6.3M-q8_0
REF=TestOrg/kjv-GGUF:Q8_0
SIZE=$(stat -c %s "$DEMO_MODEL")
SHA=$(sha256sum "$DEMO_MODEL" | cut -d' ' -f1)
BLOB="hub/models--TestOrg--kjv-GGUF/blobs/$SHA"

mkdir -p "$T/root/TestOrg/kjv-GGUF"
cp "$DEMO_MODEL" "$T/root/TestOrg/kjv-GGUF/$MODEL_ID.gguf"
python3 "$SRC/tests/tools/fake_hub.py" --root "$T/root" --port-file "$T/hub.port" --log "$T/hub.jsonl" \
  2>"$T/hub.log" &
PIDS+=($!)
wait_for 10 test -s "$T/hub.port" || die "the fake hub did not start"
export HF_ENDPOINT="http://127.0.0.1:$(cat "$T/hub.port")" LLMESH_DOWNLOAD_RETRY_MS=100
unset HF_HUB_CACHE HF_TOKEN
body=$(jq -n --arg m "$MODEL_ID" '{model: $m, prompt: "In the beginning", max_tokens: 12, temperature: 0}')
answer() { curl -sf "$1/completions" -d "$body" | jq -e -r '.choices[0].text | select(length > 0)'; }
weight_gets() { jq -r "select(.method == \"GET\" and (.path | startswith(\"/cdn/\"))) | .range // \"whole\"" "$T/hub.jsonl" | grep -v '^bytes=0-[0-9]' || true; }
ready() { curl -sf "$1/api/status" | jq -e --arg r "$REF" '.loads[] | select(.ref == $r and .state == "ready")'; }
sees_files() { curl -sf "$1/api/status" | jq -e --argjson n "$2" '.peer_files >= $n'; }
served() { curl -sf "$1/api/status" | jq -r '.weights.counters.file_bytes_served'; }
load() { curl -s -o /dev/null -w '%{http_code}' "$1/api/models/load" -d "{\"model\": \"$REF\"}"; }

# ---- A from the hub, B from A ------------------------------------------------------------------
HF_HOME="$T/hfA" LLMESH_DEBUG_FILE_SERVE_DELAY_MS=500 start_node A serve --model "$REF" --threads 1
a=$(answer "$A_API") || die "A does not answer"
HF_HOME="$T/hfB" LLMESH_DEBUG_FILE_SERVE_DELAY_MS=500 start_node B serve --join "$A_TOKEN" --threads 1
wait_for 20 sees_files "$B_CONSOLE" 1 || die "B does not see A's file"
check "B: load 202" test "$(load "$B_CONSOLE")" = 202
wait_for 60 ready "$B_CONSOLE" || die "B's load did not become ready: $(curl -s "$B_CONSOLE/api/status" | jq -c .loads)"

# ---- C from A and B at once -----------------------------------------------------------------
HF_HOME="$T/hfC" start_node C serve --join "$A_TOKEN" --threads 1
wait_for 20 sees_files "$C_CONSOLE" 2 || die "C does not see both files: $(curl -s "$C_CONSOLE/api/status" | jq -c .peer_files)"
a0=$(served "$A_CONSOLE")
b0=$(served "$B_CONSOLE")
: >"$T/hub.jsonl"
check "C: load 202" test "$(load "$C_CONSOLE")" = 202
wait_for 60 ready "$C_CONSOLE" || fail "C's load did not become ready: $(curl -s "$C_CONSOLE/api/status" | jq -c .loads)"
a1=$(served "$A_CONSOLE")
b1=$(served "$B_CONSOLE")
echo "C got $((a1 - a0)) bytes from A and $((b1 - b0)) from B (the file is $SIZE)"
check "A served C pieces" test $((a1 - a0)) -gt 0
check "B served C pieces" test $((b1 - b0)) -gt 0
check "together at least the file" test $((a1 - a0 + b1 - b0)) -ge "$SIZE"
check "the hub saw no download of the file's bytes by C" test -z "$(weight_gets)"
check "C's blob hashes to the hub's SHA-256" test "$(sha256sum "$T/hfC/$BLOB" | cut -d' ' -f1)" = "$SHA"
check "C counts the bytes as from peers" \
  bash -c "curl -sf '$C_CONSOLE/api/status' | jq -e '.downloads.from_peers_bytes == $SIZE'"

# ---- D from A and B; B killed -9 halfway ---------------------------------------------------
kill -TERM "$C_PID" # C holds the file now too: out of the way, so that D has A and B only
wait "$C_PID" 2>/dev/null
HF_HOME="$T/hfD" start_node D serve --join "$A_TOKEN" --threads 1
wait_for 20 sees_files "$D_CONSOLE" 2 || die "D does not see both files"
b0=$(served "$B_CONSOLE")
: >"$T/hub.jsonl"
check "D: load 202" test "$(load "$D_CONSOLE")" = 202
b_served_d() { [ "$(served "$B_CONSOLE")" -gt "$b0" ]; }
wait_for 30 b_served_d || die "B served D nothing"
a0=$(served "$A_CONSOLE")
b1=$(served "$B_CONSOLE")
ready "$D_CONSOLE" >/dev/null && early=1 || early=0
kill -9 "$B_PID"
check "D's load was not done when B died" test "$early" = 0
echo "B killed after serving D $((b1 - b0)) bytes"
wait_for 60 ready "$D_CONSOLE" || fail "D's load did not become ready: $(curl -s "$D_CONSOLE/api/status" | jq -c .loads)"
a1=$(served "$A_CONSOLE")
echo "A served $((a1 - a0)) bytes after B's death"
check "A served D the rest after B died" test $((a1 - a0)) -gt 0
check "the hub saw no download of the file's bytes by D (A did the rest)" test -z "$(weight_gets)"
check "D's blob hashes to the hub's SHA-256" test "$(sha256sum "$T/hfD/$BLOB" | cut -d' ' -f1)" = "$SHA"
check "D counts every byte as from peers" \
  bash -c "curl -sf '$D_CONSOLE/api/status' | jq -e '.downloads.from_peers_bytes == $SIZE'"
d=$(answer "$D_API")
check "D answers as A does" test "$d" = "$a"
finish
