#!/usr/bin/env bash
# Models by name (issue 11): downloads from a local fake hub
# (tests/tools/fake_hub.py, pointed to by HF_ENDPOINT; never the internet).
#   - `llmesh download` by hub file, by repo:QUANT, by catalog name, by URL;
#     files land in the Hugging Face cache layout (blobs, snapshots, refs);
#   - a download cut halfway by the server resumes with Range and verifies;
#   - a download killed halfway resumes with Range on the next run;
#   - a corrupted file is refused (SHA-256 mismatch) and its partial deleted;
#   - a second download, and `serve --model REF` of a cached model, make no request;
#   - `serve --model REF` downloads, loads and answers exactly as the path;
#   - a model in 3 parts (tests/tools/gguf_split) is fetched whole and loaded
#     as one model with the one-file model's answers;
#   - a model too large for --max-memory is refused before any weight byte
#     is requested (only the header's Range), with how much is missing, by
#     download, serve and the load API;
#   - a gated repo needs HF_TOKEN (or $HF_HOME/token): 401 names it;
#   - `serve --model` by catalog name and by URL answers as the path does;
#   - on a terminal, `download` draws a progress bar (bytes, rate, time left);
#     a load's progress is in /api/status and, every 5 s, in the log.
set -u
. "$(dirname "$0")/common.bash"
MODEL_ID=kjv-llama-6.3M-q8_0
HUB_PID=

start_hub() { # start_hub ARGS...: (re)starts the fake hub; sets HF_ENDPOINT
  [ -n "$HUB_PID" ] && { kill "$HUB_PID" 2>/dev/null; wait "$HUB_PID" 2>/dev/null; }
  rm -f "$T/hub.port"
  python3 "$SRC/tests/tools/fake_hub.py" --root "$T/root" --plain-dir "$T/plain" --port-file "$T/hub.port" \
    --log "$T/hub.jsonl" "$@" 2>>"$T/hub.log" &
  HUB_PID=$!
  PIDS+=("$HUB_PID")
  wait_for 10 test -s "$T/hub.port" || die "the fake hub did not start"
  export HF_ENDPOINT="http://127.0.0.1:$(cat "$T/hub.port")"
}
requests() { [ -f "$T/hub.jsonl" ] && wc -l <"$T/hub.jsonl" || echo 0; }
reset_log() { : >"$T/hub.jsonl"; }

# The hub's repos: the demo model under three names, and a plain server dir.
mkdir -p "$T/root/TestOrg/kjv-GGUF/sub" "$T/root/Qwen/Qwen2.5-0.5B-Instruct-GGUF" "$T/plain"
cp "$DEMO_MODEL" "$T/root/TestOrg/kjv-GGUF/kjv-llama-6.3M-Q8_0.gguf"
cp "$DEMO_MODEL" "$T/root/TestOrg/kjv-GGUF/sub/kjv-llama-6.3M-F99.gguf"
cp "$DEMO_MODEL" "$T/root/Qwen/Qwen2.5-0.5B-Instruct-GGUF/qwen2.5-0.5b-instruct-q4_k_m.gguf"
cp "$DEMO_MODEL" "$T/plain/$MODEL_ID.gguf"
export HF_HOME="$T/hf" LLMESH_DOWNLOAD_RETRY_MS=100
unset HF_HUB_CACHE HF_TOKEN
CACHE="$T/hf/hub"
SHA=$(sha256sum "$DEMO_MODEL" | cut -d' ' -f1)
SIZE=$(stat -c %s "$DEMO_MODEL")
dl() { "$LLMESH" download --home "$T/home" "$@" 2>>"$T/download.log"; }

# ---- by repo:QUANT, cut halfway by the server: resumed with Range ---------------------
start_hub --cut-once $((SIZE / 2))
out=$(dl TestOrg/kjv-GGUF:Q8_0) || die "download TestOrg/kjv-GGUF:Q8_0 failed: $(tail -3 "$T/download.log")"
snap="$CACHE/models--TestOrg--kjv-GGUF/snapshots/0123456789abcdef0123456789abcdef01234567/kjv-llama-6.3M-Q8_0.gguf"
check "repo:QUANT lands in the snapshot" test "$out" = "$snap"
check "the snapshot is a relative link to blobs/SHA256" test "$(readlink "$snap")" = "../../blobs/$SHA"
check "the blob is the file, byte for byte" cmp -s "$CACHE/models--TestOrg--kjv-GGUF/blobs/$SHA" "$DEMO_MODEL"
check "refs/main names the commit" test "$(cat "$CACHE/models--TestOrg--kjv-GGUF/refs/main")" = 0123456789abcdef0123456789abcdef01234567
check "the listing API was asked" grep -q '"/api/models/TestOrg/kjv-GGUF/revision/main"' "$T/hub.jsonl"
check "the cut download resumed with Range from the cut" grep -q "\"range\": \"bytes=$((SIZE / 2))-\"" "$T/hub.jsonl"
check "no partial file is left" bash -c "! ls '$CACHE'/models--TestOrg--kjv-GGUF/blobs/*.incomplete 2>/dev/null"

# ---- a second download makes no request ------------------------------------------------
reset_log
dl TestOrg/kjv-GGUF:Q8_0 >/dev/null || fail "second download"
check "a second download (repo:QUANT) makes no request" test "$(requests)" -eq 0
dl TestOrg/kjv-GGUF/kjv-llama-6.3M-Q8_0.gguf >/dev/null || fail "download by file"
check "the file reference of a cached file makes no request" test "$(requests)" -eq 0

# ---- by hub file in a directory, and by catalog name --------------------------------------
start_hub
out=$(dl "TestOrg/kjv-GGUF/sub/kjv-llama-6.3M-F99.gguf@main") || fail "download by file in sub/"
check "a file in a repo directory keeps its path, linked ../../../blobs" \
  test "$(readlink "$out")" = "../../../blobs/$SHA"
out=$(dl qwen2.5-0.5b-instruct) || fail "download by catalog name"
check "a catalog name resolves to its repo and file" \
  test "$out" = "$CACHE/models--Qwen--Qwen2.5-0.5B-Instruct-GGUF/snapshots/0123456789abcdef0123456789abcdef01234567/qwen2.5-0.5b-instruct-q4_k_m.gguf"
check "llmesh models lists the cached files" bash -c "'$LLMESH' models --home '$T/home' | grep -q 'qwen2.5-0.5b-instruct-q4_k_m'"
catalog=$("$LLMESH" models --catalog)
families() { for f in Qwen Llama Gemma Mistral Phi; do grep -qE "^[^ ]+ +$f +[0-9.]+ (MB|GB) +[^ ]+/[^ ]+\.gguf\$" <<<"$catalog" || return 1; done; }
check "llmesh models --catalog lists the Qwen, Llama, Gemma, Mistral and Phi families with sizes and files" families
check "and the catalog name used above" grep -q "^qwen2.5-0.5b-instruct " <<<"$catalog"

# ---- by URL, killed halfway and resumed on the next run ----------------------------------
reset_log
start_hub --cut-once 1   # the first GET breaks at once ...
LLMESH_DOWNLOAD_RETRY_MS=3000 "$LLMESH" download --home "$T/home" "$HF_ENDPOINT/plain/$MODEL_ID.gguf" \
  >/dev/null 2>>"$T/download.log" &
dlpid=$!
# ... and while it waits to retry, it is killed: a restart must resume.
wait_for 10 bash -c "ls '$T'/home/downloads/*/$MODEL_ID.gguf.incomplete" || fail "no partial URL download"
kill -9 "$dlpid" 2>/dev/null; wait "$dlpid" 2>/dev/null
part=$(ls "$T"/home/downloads/*/"$MODEL_ID.gguf.incomplete" 2>/dev/null | head -1)
have=$(stat -c %s "$part" 2>/dev/null || echo 0)
echo "partial after kill -9: $have bytes"
out=$(dl "$HF_ENDPOINT/plain/$MODEL_ID.gguf") || fail "download by URL after a kill"
check "the URL download is complete and equal" cmp -s "$out" "$DEMO_MODEL"
if [ "$have" -gt 0 ]; then
  check "the restart resumed with Range" grep -q "\"range\": \"bytes=$have-\"" "$T/hub.jsonl"
else
  pass "the restart started over (nothing was written before the kill)"
fi

# ---- a corrupted file is refused, its partial deleted ---------------------------------
rm -rf "$T/hf2"
start_hub --corrupt kjv-llama-6.3M-Q8_0
HF_HOME="$T/hf2" "$LLMESH" download --home "$T/home" TestOrg/kjv-GGUF/kjv-llama-6.3M-Q8_0.gguf \
  >/dev/null 2>"$T/corrupt.log" && fail "a corrupted download was accepted"
check "the mismatch is reported with both hashes" grep -q "SHA-256 mismatch: the hub publishes $SHA" "$T/corrupt.log"
check "the message says the partial was deleted" grep -q "partial file was deleted" "$T/corrupt.log"
check "nothing is left in blobs/" bash -c "[ -z \"\$(ls -A '$T/hf2/hub/models--TestOrg--kjv-GGUF/blobs')\" ]"
check "no snapshot link to a bad file" bash -c "! ls '$T/hf2/hub/models--TestOrg--kjv-GGUF/snapshots' 2>/dev/null | grep -q ."

# ---- too large: refused before any weight byte is requested --------------------------
rm -rf "$T/hf3"
start_hub
reset_log
HF_HOME="$T/hf3" "$LLMESH" download --home "$T/home" --max-memory 1M TestOrg/kjv-GGUF:Q8_0 \
  >/dev/null 2>"$T/big.log" && fail "a model over --max-memory was downloaded"
check "the refusal says how much is missing" grep -qE "needs [0-9.]+ GB .* GB missing; nothing was downloaded" "$T/big.log"
cdn_gets=$(jq -r 'select(.method == "GET" and (.path | startswith("/cdn/"))) | .range // "none"' "$T/hub.jsonl")
echo "CDN GETs of the refused download: $(echo $cdn_gets)"
check "only the header was read (one Range of its first 2 MiB)" test "$(echo $cdn_gets)" = "bytes=0-2097151"
check "no blob was written" bash -c "! ls '$T/hf3/hub/models--TestOrg--kjv-GGUF/blobs/'* 2>/dev/null"
HF_HOME="$T/hf3" "$LLMESH" serve --home "$T/big" --listen 127.0.0.1:0 --port 0 --console 0 --max-memory 1M \
  --model TestOrg/kjv-GGUF/sub/kjv-llama-6.3M-F99.gguf >/dev/null 2>"$T/bigserve.log"
check "serve --model refuses a model over its budget with the shortfall" grep -q "GB missing; nothing was downloaded" "$T/bigserve.log"
# The load API of a running node: the check is against the mesh's free memory (here its own).
reset_log
HF_HOME="$T/hf3" start_node BIG serve --max-memory 1M --threads 1
code=$(curl -s -o /dev/null -w '%{http_code}' "$BIG_CONSOLE/api/models/load" -d '{"model": "TestOrg/kjv-GGUF:Q8_0"}')
check "the load API takes it (202)" test "$code" = 202
big_failed() { curl -sf "$BIG_CONSOLE/api/status" | jq -e -r '.loads[] | select(.state == "failed") | .error'; }
wait_for 20 big_failed >/dev/null || fail "the load of a model over the mesh's memory did not fail"
big_err=$(big_failed)
echo "the load's error: $big_err"
says_missing() { grep -qE "needs [0-9.]+ GB .* but the mesh's free memory \(this node and 0 members\) is [0-9.]+ GB: [0-9.]+ GB missing; nothing was downloaded" <<<"$big_err"; }
check "its error says how much the mesh lacks" says_missing
check "and only the header was read" test "$(jq -r 'select(.method == "GET" and (.path | startswith("/cdn/"))) | .range // "none"' "$T/hub.jsonl" | tr '\n' ' ')" = "bytes=0-2097151 "
kill -TERM "$BIG_PID"

# ---- a gated repo: HF_TOKEN, else $HF_HOME/token -----------------------------------------
start_hub --token sekrit
HF_HOME="$T/hf6" "$LLMESH" download --home "$T/home" TestOrg/kjv-GGUF:Q8_0 >/dev/null 2>"$T/token.log" &&
  fail "a gated repo was downloaded without a token"
check "without a token: 401, and the message names HF_TOKEN" grep -q "HTTP 401: not allowed .*HF_TOKEN" "$T/token.log"
check "with HF_TOKEN it downloads" env HF_HOME="$T/hf6" HF_TOKEN=sekrit "$LLMESH" download --home "$T/home" TestOrg/kjv-GGUF:Q8_0
mkdir -p "$T/hf7" && echo sekrit >"$T/hf7/token"
check "with \$HF_HOME/token (huggingface-cli login) it downloads" env HF_HOME="$T/hf7" "$LLMESH" download --home "$T/home" TestOrg/kjv-GGUF:Q8_0

# ---- serve --model REF: downloads, loads, answers as the path does ---------------------
rm -rf "$T/hf4"
start_hub
export HF_HOME="$T/hf4"
start_node A serve --model TestOrg/kjv-GGUF:Q8_0 --threads 1
start_node P serve --model "$DEMO_MODEL" --threads 1
body='{"model": "MODEL", "prompt": "In the beginning", "max_tokens": 16, "temperature": 0}'
a=$(curl -sf "$A_API/completions" -d "${body/MODEL/kjv-llama-6.3M-Q8_0}" | jq -r '.choices[0].text')
p=$(curl -sf "$P_API/completions" -d "${body/MODEL/$MODEL_ID}" | jq -r '.choices[0].text')
echo "by reference: $a"
check "serve --model org/repo:QUANT answers" test -n "$a"
check "its answer equals the same file served by path" test "$a" = "$p"
dl=$(curl -sf "$A_CONSOLE/api/status" | jq '.downloads.bytes')
check "A's /metrics counts the bytes downloaded as its status does ($dl)" \
  bash -c "[ '$dl' -gt 0 ] && curl -sf '$A_CONSOLE/metrics' | grep -qx 'llmesh_download_bytes_total $dl'"
# ---- multi-part: every part fetched, loaded as one model, same answers ----------------
GGUF_SPLIT="$(dirname "$LLMESH")/gguf_split"
mkdir -p "$T/root/TestOrg/kjv-split-GGUF"
"$GGUF_SPLIT" "$DEMO_MODEL" 3 "$T/root/TestOrg/kjv-split-GGUF" kjv-split-Q8_0 || die "gguf_split failed"
start_hub   # hashes the new files
reset_log
start_node M serve --model TestOrg/kjv-split-GGUF:Q8_0 --threads 1
m=$(curl -sf "$M_API/completions" -d "${body/MODEL/kjv-split-Q8_0}" | jq -r '.choices[0].text')
check "a 3-part model by org/repo:QUANT answers" test -n "$m"
check "its answer equals the one-file model's" test "$m" = "$p"
parts=$(jq -r 'select(.method == "GET" and (.path | startswith("/cdn/")) and .range == null) | .path' "$T/hub.jsonl" | sort -u | wc -l)
check "each of the 3 parts was downloaded once" test "$parts" -eq 3
check "the parts are joined in the node's cache" test -s "$T/M/cache/joined/kjv-split-Q8_0.gguf"
check "the 3 parts are in the HF snapshot" test "$(ls "$HF_HOME/hub/models--TestOrg--kjv-split-GGUF/snapshots/"*/ | wc -l)" -eq 3

kill -TERM "$A_PID"; wait "$A_PID" 2>/dev/null
reset_log
start_node A2 serve --model TestOrg/kjv-GGUF:Q8_0 --threads 1 --home "$T/A"
check "a second start of serve --model REF makes no request" test "$(requests)" -eq 0
check "and serves the model" bash -c "curl -sf '$A2_CONSOLE/api/status' | jq -e '.models | index(\"kjv-llama-6.3M-Q8_0\")'"

# ---- serve by catalog name and by URL (both downloaded above): answers as the path ------------
HF_HOME="$T/hf" start_node Q serve --model qwen2.5-0.5b-instruct --threads 1
q=$(curl -sf "$Q_API/completions" -d "${body/MODEL/qwen2.5-0.5b-instruct-q4_k_m}" | jq -r '.choices[0].text')
check "serve --model CATALOG-NAME answers as the same file by path" test "$q" = "$p"
start_node U serve --model "$HF_ENDPOINT/plain/$MODEL_ID.gguf" --threads 1 --home "$T/home"
u=$(curl -sf "$U_API/completions" -d "${body/MODEL/$MODEL_ID}" | jq -r '.choices[0].text')
check "serve --model URL answers as the same file by path" test "$u" = "$p"

# ---- progress of a load in /api/status and in the log (the CDN slowed to ~1 MB/s) ----------------
start_hub --rate 1000000
HF_HOME="$T/hf8" start_node SLOW serve --threads 1
code=$(curl -s -o /dev/null -w '%{http_code}' "$SLOW_CONSOLE/api/models/load" -d '{"model": "TestOrg/kjv-GGUF:Q8_0"}')
check "a slow load: 202" test "$code" = 202
midway() { curl -sf "$SLOW_CONSOLE/api/status" | jq -e \
  '.loads[0] | select(.state == "downloading" and .done_bytes > 0 and .done_bytes < .total_bytes and .bytes_per_s > 0)'; }
check "its progress shows in /api/status while it downloads (bytes, total, rate)" wait_for 10 midway
slow_ready() { curl -sf "$SLOW_CONSOLE/api/status" | jq -e '.loads[0].state == "ready"'; }
wait_for 30 slow_ready || fail "the slow load did not finish"
check "and in the log every 5 s (bytes of total, rate)" grep -qE "kjv-llama-6.3M-Q8_0.gguf: [0-9.]+ of 6.9 MB, [0-9.]+ MB/s" "$T/SLOW.log"
kill -TERM "$SLOW_PID"
start_hub

# ---- the progress bar on a terminal ----------------------------------------------------------
HF_HOME="$T/hf5" script -qec "'$LLMESH' download --home '$T/home' TestOrg/kjv-GGUF:Q8_0" /dev/null >"$T/tty.out" 2>&1
check "on a terminal, download draws a bar to 100% with the rate and time left" \
  grep -qE '\[#{30}\] 100\.0% +[0-9.]+ / [0-9.]+ MB +[0-9.]+ MB/s +ETA' "$T/tty.out"

finish
