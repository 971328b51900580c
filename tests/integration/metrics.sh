#!/usr/bin/env bash
# GET /metrics (issue 12, item 2) on real nodes on loopback:
# - A serves the demo model split in 2 stages with an API key; B (no key)
#   joins and runs stage 1, fetching its layers from A.
# - /metrics follows the console's key rule: 401 without the key.
# - Requests: plain and streamed completions on A, a 404 (unknown model), a
#   400 (malformed body), a 401 (no key), and one on B forwarded to A.
# - Each node's /metrics is parsed by prometheus_client's text-format parser
#   (Debian's python3-prometheus-client; tests/integration/metrics_check.py)
#   and checked against its /api/status (counters, peers, lanes, the split's
#   stage counters) and against the requests made (answers by model and
#   code, tokens equal to the answers' usage, histogram counts equal to the
#   generations, buckets cumulative, HELP/TYPE for every family). No timing
#   thresholds.
set -u
. "$(dirname "$0")/common.bash"

PY=/usr/bin/python3
if ! "$PY" -c 'import prometheus_client.parser' 2>/dev/null; then
  echo "skip: $PY has no prometheus_client (scripts/deps.sh installs python3-prometheus-client)"
  exit 0
fi

MODEL_ID=kjv-llama-6.3M-q8_0
KEY="sk-m-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
AUTH=(-H "Authorization: Bearer $KEY")

unset LLMESH_API_KEY
start_node A serve --model "$DEMO_MODEL" --split 2 --api-key "$KEY"
start_node B serve --join "$A_TOKEN"

plan_ready() {
  curl -sf "${AUTH[@]}" "$A_CONSOLE/api/status" |
    jq -e --arg m "$MODEL_ID" '.plans[] | select(.model == $m and .state == "ready" and (.stages | length) == 2)'
}
wait_for 90 plan_ready || die "the 2-stage plan did not get ready within 90 s"
pass "A's model runs in 2 stages (B fetched its layers)"

# C joins after the plan is made (it takes no part in it) and leaves cleanly:
# one "left" event for A's failure detector.
start_node C serve --join "$A_TOKEN"
C_ID=$(curl -sf "$C_CONSOLE/api/status" | jq -r .node_id)
peer_state() { curl -sf "${AUTH[@]}" "$A_CONSOLE/api/status" | jq -e --arg id "$C_ID" --arg s "$1" '.peers[] | select(.id == $id and .state == $s)'; }
wait_for 30 peer_state alive || die "A did not see C alive within 30 s"
kill -TERM "$C_PID"
wait_for 30 peer_state left || die "A did not see C leave within 30 s"
pass "C joined and left"

# ---- the key rule
code=$(curl -s -o /dev/null -w '%{http_code}' "$A_CONSOLE/metrics")
[ "$code" = 401 ] && pass "/metrics without the key -> 401" || fail "/metrics without the key -> $code"
code=$(curl -s -o "$T/m0.txt" -D "$T/m0.h" -w '%{http_code}' "${AUTH[@]}" "$A_CONSOLE/metrics")
[ "$code" = 200 ] && pass "/metrics with the key -> 200" || fail "/metrics with the key -> $code"
check "Content-Type: text/plain; version=0.0.4" grep -qi '^Content-Type: text/plain; version=0.0.4' "$T/m0.h"

# ---- requests; usage summed from the answers themselves
PROMPT_TOKENS=0; COMPLETION_TOKENS=0; GENERATIONS=0; ITL=0
add_usage() { # add_usage PROMPT COMPLETION
  PROMPT_TOKENS=$((PROMPT_TOKENS + $1)); COMPLETION_TOKENS=$((COMPLETION_TOKENS + $2))
  GENERATIONS=$((GENERATIONS + 1)); [ "$2" -ge 2 ] && ITL=$((ITL + 1))
}
prompts=("In the beginning" "And God said" "The LORD is my shepherd")
for i in 0 1 2; do
  curl -sf "${AUTH[@]}" "$A_API/completions" -o "$T/plain$i.json" \
    -d "{\"model\": \"$MODEL_ID\", \"prompt\": \"${prompts[$i]}\", \"max_tokens\": $((6 + i)), \"temperature\": 0}" \
    || die "plain completion $i failed"
  add_usage "$(jq .usage.prompt_tokens "$T/plain$i.json")" "$(jq .usage.completion_tokens "$T/plain$i.json")"
done
for i in 0 1; do
  curl -sfN "${AUTH[@]}" "$A_API/completions" -o "$T/stream$i.txt" \
    -d "{\"model\": \"$MODEL_ID\", \"prompt\": \"${prompts[$i]}\", \"max_tokens\": 10, \"temperature\": 0.8, \"seed\": $i,
         \"stream\": true, \"stream_options\": {\"include_usage\": true}}" || die "streamed completion $i failed"
  grep -q '^data: \[DONE\]' "$T/stream$i.txt" || die "stream $i has no [DONE]"
  usage=$(sed -n 's/^data: //p' "$T/stream$i.txt" | grep -v '^\[DONE\]' | jq -s 'map(select(.usage)) | last | .usage')
  add_usage "$(jq .prompt_tokens <<<"$usage")" "$(jq .completion_tokens <<<"$usage")"
done
code=$(curl -s -o /dev/null -w '%{http_code}' "${AUTH[@]}" "$A_API/completions" -d '{"model": "no-such-model", "prompt": "x"}')
[ "$code" = 404 ] && pass "unknown model -> 404" || fail "unknown model -> $code"
code=$(curl -s -o /dev/null -w '%{http_code}' "${AUTH[@]}" "$A_API/completions" -d '{"model": ')
[ "$code" = 400 ] && pass "malformed body -> 400" || fail "malformed body -> $code"
code=$(curl -s -o /dev/null -w '%{http_code}' "$A_API/completions" -d '{}')
[ "$code" = 401 ] && pass "no key -> 401" || fail "no key -> $code"
# Through B: B's API forwards to A (A runs it, its tunnel brings it from a peer).
curl -sf "$B_API/completions" -o "$T/viaB.json" \
  -d "{\"model\": \"$MODEL_ID\", \"prompt\": \"In the beginning\", \"max_tokens\": 5, \"temperature\": 0}" \
  || die "completion through B failed"
add_usage "$(jq .usage.prompt_tokens "$T/viaB.json")" "$(jq .usage.completion_tokens "$T/viaB.json")"
echo "  $GENERATIONS generations: $PROMPT_TOKENS prompt tokens, $COMPLETION_TOKENS completion tokens"

# Stages report their counters to the coordinator once a second when they
# changed: wait until B's report has settled (the same twice, 1.2 s apart).
stage_tokens() {
  curl -sf "${AUTH[@]}" "$A_CONSOLE/api/status" |
    jq --arg m "$MODEL_ID" '[.plans[] | select(.model == $m and .counters) | .stages[1].counters.tokens] | first // 0'
}
settled() { local t1 t2; t1=$(stage_tokens); sleep 1.2; t2=$(stage_tokens); [ "$t1" -gt 0 ] && [ "$t1" = "$t2" ]; }
wait_for 30 settled || fail "B's stage counters settled within 30 s"

# ---- A: status first, then metrics (nothing runs in between: they agree)
curl -sf "${AUTH[@]}" "$A_CONSOLE/api/status" -o "$T/a_status.json" || die "A's status"
curl -sf "${AUTH[@]}" "$A_CONSOLE/metrics" -o "$T/a_metrics.txt" || die "A's metrics"
cat >"$T/a_want.json" <<JSON
{"model": "$MODEL_ID", "lanes": 4, "from_peers": 1, "split_model": "$MODEL_ID", "left": 1,
 "http": {"$MODEL_ID|200": 5, "|404": 1, "|400": 1, "|401": 1},
 "generations": $GENERATIONS, "prompt_tokens": $PROMPT_TOKENS, "completion_tokens": $COMPLETION_TOKENS, "itl": $ITL}
JSON
echo "-- A"
if "$PY" "$(dirname "$0")/metrics_check.py" "$T/a_metrics.txt" "$T/a_status.json" "$T/a_want.json" >"$T/a_check.txt"; then
  pass "A's /metrics parsed and checked ($(tail -n 1 "$T/a_check.txt"))"
else
  fail "A's /metrics:"; grep -v '^ok:' "$T/a_check.txt"
fi

# ---- B: a stage and an entry node; it forwarded one request
curl -sf "$B_CONSOLE/api/status" -o "$T/b_status.json" || die "B's status"
curl -sf "$B_CONSOLE/metrics" -o "$T/b_metrics.txt" || die "B's metrics"
cat >"$T/b_want.json" <<JSON
{"model": "$MODEL_ID", "lanes": 0, "from_peers": 0, "split_model": null,
 "http": {"$MODEL_ID|200": 1},
 "generations": 0, "prompt_tokens": 0, "completion_tokens": 0, "itl": 0}
JSON
echo "-- B"
if "$PY" "$(dirname "$0")/metrics_check.py" "$T/b_metrics.txt" "$T/b_status.json" "$T/b_want.json" >"$T/b_check.txt"; then
  pass "B's /metrics parsed and checked ($(tail -n 1 "$T/b_check.txt"))"
else
  fail "B's /metrics:"; grep -v '^ok:' "$T/b_check.txt"
fi
check "B forwarded one request" grep -qx 'llmesh_api_forwarded_total 1' "$T/b_metrics.txt"
check "B fetched weights (llmesh_weights_fetched_bytes_total > 0)" \
  awk '$1 == "llmesh_weights_fetched_bytes_total" && $2 > 0 {found = 1} END {exit !found}' "$T/b_metrics.txt"
check "B sees A alive" grep -qx 'llmesh_peers{state="alive"} 1' "$T/b_metrics.txt"
check "B saw C leave" grep -qx 'llmesh_failure_detector_events_total{event="left"} 1' "$T/b_metrics.txt"
check "A's stage counters name B's stage" grep -q "^llmesh_split_stage_tokens_total{model=\"$MODEL_ID\",stage=\"1\",node=\"$(jq -r .node_id "$T/b_status.json")\"}" "$T/a_metrics.txt"

finish
