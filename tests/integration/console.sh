#!/usr/bin/env bash
# The web console (issue 12, items 1 and 4) on a real mesh on loopback:
# - A serves the demo model split in 2 stages with an API key; B and C join
#   (B runs stage 1, fetching its layers; C stands by); D is a passive
#   client (`llmesh client`, no key).
# - HTTP: the page and its files are served without the key, with their
#   content type, no-cache and an ETag (304 when it matches); /api/ and
#   unknown paths need the key (401); on D an unknown path is 404.
#   /api/events: the status at once, then at least every 2 s; at most 16
#   subscribers (the 17th gets 503, counted), gone ones forgotten.
#   /api/history: the node's own points (one per 5 s), behind the key.
# - In a real browser (Debian's chromium, driven by playwright-core from npm,
#   tests/e2e/console/console.mjs): the key prompt, every node, the split's
#   stages and layers, the join command with the token and its copy button,
#   a streamed chat answer with its speed and, under it, its stage times and
#   hops; each stage's compute per position and the ring round trip in the
#   model panel; C killed (kill -9) turning dead; a fresh page (phone-sized)
#   whose traffic graphs hold the node's history at once; D's own console. Screenshots go to
#   $LLMESH_ARTIFACTS_DIR/console (the build dir's test-artifacts/).
# - A's /metrics, parsed by prometheus_client, against the status the page
#   draws from (console_metrics.py).
set -u
. "$(dirname "$0")/common.bash"
E2E="$SRC/tests/e2e/console"
ART="${LLMESH_ARTIFACTS_DIR:-$PWD/test-artifacts}/console"
PY=/usr/bin/python3
MODEL_ID=kjv-llama-6.3M-q8_0

command -v node >/dev/null && command -v npm >/dev/null || die "node and npm are needed (scripts/deps.sh installs them)"
CHROMIUM=$(command -v chromium) || die "chromium is needed (scripts/deps.sh installs Debian's chromium)"
"$PY" -c 'import prometheus_client.parser' 2>/dev/null || die "python3-prometheus-client is needed (scripts/deps.sh)"
if [ ! -d "$E2E/node_modules/playwright-core" ]; then
  (cd "$E2E" && timeout 300 npm ci --no-audit --no-fund >"$T/npm.log" 2>&1) ||
    die "npm ci in tests/e2e/console failed: $(tail -n 3 "$T/npm.log")"
fi

KEY="sk-c-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
AUTH=(-H "Authorization: Bearer $KEY")
unset LLMESH_API_KEY
start_node A serve --model "$DEMO_MODEL" --split 2 --api-key "$KEY"
start_node B serve --join "$A_TOKEN"
wait_for 90 split_ready "$A_CONSOLE" "$MODEL_ID" 2 "${AUTH[@]}" || die "the 2-stage plan did not get ready within 90 s"
start_node C serve --join "$A_TOKEN"
start_node D client --join "$A_TOKEN"
A_ID=$(curl -sf "${AUTH[@]}" "$A_CONSOLE/api/status" | jq -r .node_id)
B_ID=$(curl -sf "$B_CONSOLE/api/status" | jq -r .node_id)
C_ID=$(curl -sf "$C_CONSOLE/api/status" | jq -r .node_id)
alive_on_a() { curl -sf "${AUTH[@]}" "$A_CONSOLE/api/status" | jq -e --arg id "$1" '.peers[] | select(.id == $id and .state == "alive")'; }
wait_for 30 alive_on_a "$C_ID" || die "A did not see C alive within 30 s"
d_knows() { curl -sf "$D_CONSOLE/api/status" | jq -e --arg m "$MODEL_ID" '[.peers[].models[]] | index($m)'; }
wait_for 60 d_knows || die "D never learned of the model"
pass "A (key, split 2), B (stage 1), C (standby) and client D are up"

# ---- HTTP: files, headers, the key rule, unknown paths
code=$(curl -s -o "$T/index.html" -D "$T/index.h" -w '%{http_code}' "$A_CONSOLE/")
[ "$code" = 200 ] && pass "/ without the key -> 200" || fail "/ without the key -> $code"
check "/ is text/html" grep -qi '^Content-Type: text/html; charset=utf-8' "$T/index.h"
check "/ has Cache-Control: no-cache" grep -qi '^Cache-Control: no-cache' "$T/index.h"
check "/ is the console's page" grep -q 'console.js' "$T/index.html"
etag=$(sed -n 's/^ETag: *//Ip' "$T/index.h" | tr -d '\r')
code=$(curl -s -o /dev/null -w '%{http_code}' -H "If-None-Match: $etag" "$A_CONSOLE/")
[ -n "$etag" ] && [ "$code" = 304 ] && pass "If-None-Match with the ETag -> 304" || fail "ETag '$etag' -> $code"
ctype=$(curl -s -o /dev/null -w '%{content_type}' "$A_CONSOLE/console.js")
[ "$ctype" = "text/javascript; charset=utf-8" ] && pass "console.js: $ctype" || fail "console.js: '$ctype'"
ctype=$(curl -s -o /dev/null -w '%{content_type}' "$A_CONSOLE/console.css")
[ "$ctype" = "text/css; charset=utf-8" ] && pass "console.css: $ctype" || fail "console.css: '$ctype'"
for path in /api/status /api/events /api/history /metrics /no-such-file; do
  code=$(curl -s -m 5 -o /dev/null -w '%{http_code}' "$A_CONSOLE$path")
  [ "$code" = 401 ] && pass "A $path without the key -> 401" || fail "A $path without the key -> $code"
done
code=$(curl -s -o /dev/null -w '%{http_code}' "$D_CONSOLE/no-such-file")
[ "$code" = 404 ] && pass "D (no key) unknown path -> 404" || fail "D unknown path -> $code"
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "$D_CONSOLE/")
[ "$code" = 404 ] && pass "D POST / -> 404" || fail "D POST / -> $code"

# ---- /api/events: at once, then within 2 s; the subscriber bound
# Each event's arrival time (curl's output through a line-by-line timestamper):
# the first at once, then never more than 2 s apart (2.5 s allowed for a
# loaded machine's scheduling).
timeout 6.5 curl -sN "${AUTH[@]}" "$A_CONSOLE/api/events" |
  "$PY" -u -c 'import sys, time
t0 = time.monotonic()
for line in sys.stdin:
    if line.startswith("event: status"): print(f"{time.monotonic() - t0:.3f}", flush=True)
    sys.stderr.write(line)' >"$T/events.times" 2>"$T/events.txt"
n=$(wc -l <"$T/events.times")
[ "$n" -ge 3 ] && pass "/api/events: $n status events in 6.5 s" || fail "/api/events: $n events in 6.5 s"
check "/api/events: the first at once (< 1 s), then at most 2 s apart ($(tr '\n' ' ' <"$T/events.times"))" \
  awk 'NR == 1 && $1 >= 1 {bad = 1} NR > 1 && $1 - last > 2.5 {bad = 1} {last = $1} END {exit bad || NR < 3}' "$T/events.times"
check "each event's data is the status document" \
  sh -c "sed -n 's/^data: //p' '$T/events.txt' | jq -e -s 'length >= 2 and all(.node_id == \"$A_ID\")'"
SUBS=()
for i in $(seq 16); do
  curl -sN -m 30 "$D_CONSOLE/api/events" >"$T/sub$i.txt" 2>/dev/null &
  SUBS+=($!)
done
subscribers() { curl -sf "$D_CONSOLE/api/status" | jq -e ".console_events.subscribers == $1"; }
wait_for 10 subscribers 16 || fail "16 subscribers on D"
code=$(curl -s -m 5 -o "$T/sub17.txt" -w '%{http_code}' "$D_CONSOLE/api/events")
[ "$code" = 503 ] && pass "the 17th subscriber -> 503" || fail "the 17th subscriber -> $code"
check "refused subscribers counted" subscribers 16
check "console_events.refused == 1" sh -c "curl -sf '$D_CONSOLE/api/status' | jq -e '.console_events.refused == 1'"
kill "${SUBS[@]}" 2>/dev/null; wait "${SUBS[@]}" 2>/dev/null
wait_for 10 subscribers 0 && pass "gone subscribers are forgotten" || fail "subscribers left after their clients went"

# ---- /api/history: a point per 5 s since the start, every series as long as the times
history_points() { curl -sf "${AUTH[@]}" "$A_CONSOLE/api/history" -o "$T/history.json" && jq -e ".ago_ms | length >= $1" "$T/history.json"; }
wait_for 15 history_points 2 || fail "A's /api/history: fewer than 2 points 15 s on"
what="/api/history: 5 s points, newest last, series as long as ago_ms, the model served"
if jq -e --arg m "$MODEL_ID" '.ago_ms as $a | .interval_ms == 5000 and .max_points == 120 and
    ($a | length) >= 2 and $a == ($a | sort_by(-.)) and ([.models[] | select(.model == $m)] | length) == 1 and
    all(.models[]; [.req_s, .tok_s, .ttft_ms, .queued] | all(length == ($a | length))) and
    ([.models[] | select(.model == $m) | .queued[-1]] == [0])' "$T/history.json" >/dev/null; then
  pass "$what"
else
  fail "$what"; head -c 1500 "$T/history.json"; echo
fi

# ---- a request through the client, so D has used A (its routing at work)
curl -sf "$D_API/completions" -o "$T/viaD.json" \
  -d "{\"model\": \"$MODEL_ID\", \"prompt\": \"In the beginning\", \"max_tokens\": 4, \"temperature\": 0}" \
  || fail "a completion through D"

# ---- the browser
mkdir -p "$ART"
if (cd "$E2E" && CONSOLE_URL="$A_CONSOLE" API_KEY="$KEY" NODES="$A_ID,$B_ID,$C_ID" KILL_PID="$C_PID" \
      MODEL="$MODEL_ID" CLIENT_URL="$D_CONSOLE" ARTIFACTS="$ART" CHROMIUM="$CHROMIUM" \
      timeout 240 node console.mjs) >"$T/browser.txt" 2>&1; then
  pass "browser: $(grep -c '^ok:' "$T/browser.txt") checks"
else
  fail "browser:"; grep -v '^ok:' "$T/browser.txt" | head -n 20
fi
grep '^  ' "$T/browser.txt"
for f in console-desktop console-node-dead console-phone console-client; do
  check "screenshot $f.png written" test -s "$ART/$f.png"
done

# ---- /metrics against the status the page draws from
curl -sf "${AUTH[@]}" "$A_CONSOLE/api/status" -o "$T/a_status.json" || die "A's status"
curl -sf "${AUTH[@]}" "$A_CONSOLE/metrics" -o "$T/a_metrics.txt" || die "A's metrics"
if "$PY" "$(dirname "$0")/console_metrics.py" "$T/a_metrics.txt" "$T/a_status.json" "$MODEL_ID" >"$T/m_check.txt"; then
  pass "A's /metrics agrees with its status ($(tail -n 1 "$T/m_check.txt"))"
else
  fail "A's /metrics:"; grep -v '^ok:' "$T/m_check.txt"
fi
finish
