#!/usr/bin/env bash
# Models split across real llmesh processes on loopback (issue "Split a model
# across nodes"):
#  1. A serves several synthetic models (five architectures, F32/F16/Q8_0)
#     and the demo model with --split 3; B and C (standby, no model files)
#     fetch their layers from A. Greedy completions, plain and streamed, are
#     byte-identical to `llmesh run`; log-probabilities equal those of a solo
#     node (S, its own mesh) within 1e-4; a request sent to B reaches stage 0;
#     A's lanes send their FORWARDs themselves (and answers stay equal).
#  2. B leaves during a stream: with --split 3 and two nodes left no plan
#     fits, so the stream ends with the reason as an error event and
#     [DONE]; new requests get 503 with it. B restarts: the plan is made
#     again, and B loads its layers from its cache (A serves no weight bytes
#     again).
#  3. kill -9 of the middle stage, then of the last stage, each during a
#     long stream: the stream completes, identical to the no-failure answer.
#  4. F serves a model with a --max-memory below its need: split over the
#     members with memory, answers as `llmesh run`; S (a model that fits) is
#     not split.
#  5. G (too little memory) alone with H (too little): 503 with the reason;
#     I joins with memory, the model is served.
set -u
. "$(dirname "$0")/common.bash"

MAKE_MODELS="$(dirname "$LLMESH")/make_models"
[ -x "$MAKE_MODELS" ] || die "make_models is not built next to $LLMESH"
PROMPT="And Jesus said unto them,"
mkdir -p "$T/models"
MODELS=()
for name in $("$MAKE_MODELS" list-split); do
  "$MAKE_MODELS" model "$name" "$T/models/$name.gguf" || die "make_models $name"
  MODELS+=("$name")
done
cp "$DEMO_MODEL" "$T/models/"
DEMO_ID=$(basename "$DEMO_MODEL" .gguf)
MODELS+=("$DEMO_ID")
model_args=()
for m in "${MODELS[@]}"; do model_args+=(--model "$T/models/$m.gguf"); done

status() { curl -sf "$1/api/status"; }
plan_of() { status "$1" | jq -c --arg m "$2" '[.plans[] | select(.model == $m)][0]'; }
plan_ready() { plan_of "$1" "$2" | jq -e --argjson n "$3" '.state == "ready" and (.stages | length) == $n'; }
node_id() { status "$1" | jq -r .node_id; }

# Generation is slowed a little on the coordinator, so that a kill -9 lands
# in the middle of a stream (part 3).
LLMESH_DEBUG_TOKEN_DELAY_MS=25 start_node A serve "${model_args[@]}" --split 3 --threads 1 --parallel 2
start_node B serve --join "$A_TOKEN" --threads 1
start_node C serve --join "$A_TOKEN" --threads 1
start_node S serve "${model_args[@]}" --threads 1   # solo reference, its own mesh

for m in "${MODELS[@]}"; do
  wait_for 90 plan_ready "$A_CONSOLE" "$m" 3 || die "plan of $m not ready in 3 stages: $(plan_of "$A_CONSOLE" "$m")"
done
pass "every model runs in 3 stages on A, B and C"
check "stages 1 and 2 fetched their weights from A" bash -c "curl -sf '$A_CONSOLE/api/status' | jq -e '
  [.plans[] | select(.coordinator == .stages[0].node) | .stages[1:][] | .total_bytes > 0 and .fetched_bytes == .total_bytes] | all'"
check "A served weight bytes" bash -c "curl -sf '$A_CONSOLE/api/status' | jq -e '.counters.weights_served_bytes > 0'"
check "B runs stages and reports its memory in use" bash -c "curl -sf '$B_CONSOLE/api/status' | jq -e '(.stages | length) >= 1 and .memory_used > 0'"
check "B sees A's plans by gossip" bash -c "curl -sf '$B_CONSOLE/api/status' | jq -e '[.plans[] | select(.state == \"ready\")] | length >= ${#MODELS[@]}'"
check "S runs the same models solo (one stage each)" bash -c "curl -sf '$S_CONSOLE/api/status' | jq -e '[.plans[] | select((.stages | length) == 1 and .state == \"ready\")] | length == ${#MODELS[@]}'"

# ---- 1. answers equal solo ---------------------------------------------------
for m in "${MODELS[@]}"; do
  "$LLMESH" run --model "$T/models/$m.gguf" --prompt "$PROMPT" --temp 0 -n 40 >"$T/$m.expected" 2>"$T/run.log" \
    || die "llmesh run $m: $(cat "$T/run.log")"
  body=$(jq -n --arg m "$m" --arg p "$PROMPT" '{model: $m, prompt: $p, max_tokens: 40, temperature: 0}')
  curl -sf "$A_API/completions" -d "$body" | jq -j '.choices[0].text' >"$T/$m.got" || fail "$m: completion"
  check "$m: split completion equals llmesh run" cmp "$T/$m.expected" "$T/$m.got"
  sbody=$(jq -n --arg m "$m" --arg p "$PROMPT" '{model: $m, prompt: $p, max_tokens: 40, temperature: 0, stream: true}')
  curl -sfN "$A_API/completions" -d "$sbody" | grep '^data: {' | sed 's/^data: //' | jq -j '.choices[0].text' >"$T/$m.stream"
  check "$m: split streamed completion equals llmesh run" cmp "$T/$m.expected" "$T/$m.stream"
  lbody=$(jq -n --arg m "$m" --arg p "$PROMPT" '{model: $m, prompt: $p, max_tokens: 12, temperature: 0, logprobs: 3, echo: true}')
  curl -sf "$A_API/completions" -d "$lbody" >"$T/$m.lp-split.json" || fail "$m: logprobs (split)"
  curl -sf "$S_API/completions" -d "$lbody" >"$T/$m.lp-solo.json" || fail "$m: logprobs (solo)"
  check "$m: log-probabilities (echo, top 3) equal solo within 1e-4" jq -e -n \
    --slurpfile a "$T/$m.lp-split.json" --slurpfile b "$T/$m.lp-solo.json" '
    ($a[0].choices[0].logprobs) as $x | ($b[0].choices[0].logprobs) as $y |
    ($x.tokens == $y.tokens) and ($x.token_logprobs | length) > 12 and
    ([range(1; $x.token_logprobs | length) | ($x.token_logprobs[.] - $y.token_logprobs[.]) | fabs] | max) < 1e-4 and
    ([range(1; $x.top_logprobs | length) | . as $i | $x.top_logprobs[$i] | to_entries[] |
       (.value - $y.top_logprobs[$i][.key]) | fabs] | max) < 1e-4'
done
body=$(jq -n --arg m "$DEMO_ID" --arg p "$PROMPT" '{model: $m, prompt: $p, max_tokens: 40, temperature: 0}')
curl -sf "$B_API/completions" -d "$body" | jq -j '.choices[0].text' >"$T/via-b.got"
check "a request to B (a stage node) is routed to stage 0 and answers the same" cmp "$T/$DEMO_ID.expected" "$T/via-b.got"
# Per-stage timings in a split answer: every stage, in order, its node and
# layers as the plan says, compute times that add up to something, the hops.
A_ID=$(node_id "$A_CONSOLE")
curl -sf "$A_API/completions" -d "$body" >"$T/timed.json" || fail "a timed completion"
check "a split answer's timings name its 3 stages with the plan's nodes and layers" jq -e -n \
  --slurpfile a "$T/timed.json" --argjson plan "$(plan_of "$A_CONSOLE" "$DEMO_ID")" --arg a_id "$A_ID" '
  $a[0].timings.stages as $s | ($s | length) == 3 and $s[0].node == $a_id and
  ([range(0; 3) | $s[.].node == $plan.stages[.].node and $s[.].layers == $plan.stages[.].layers] | all)'
check "each stage computed for it, the hops took time, nothing negative" jq -e '.timings as $t |
  ([$t.stages[] | .compute_ms > 0 and .wait_ms >= 0] | all) and $t.hop_ms > 0' "$T/timed.json"
check "the stages' compute is within the request's time" jq -e '.timings as $t |
  ([$t.stages[].compute_ms] | add) + $t.hop_ms <= ($t.prompt_ms + $t.predicted_ms) * 1.05 + 5' "$T/timed.json"
curl -sfN "$A_API/completions" -d "$sbody" | grep '^data: {' | tail -n 1 | sed 's/^data: //' >"$T/timed-stream.json"
check "a split stream's last chunk carries the stage timings" jq -e '(.timings.stages | length) == 3' "$T/timed-stream.json"
curl -sf "$S_API/completions" -d "$body" >"$T/untimed.json" || fail "a solo completion"
check "a solo answer has no stage timings" jq -e '.timings | has("stages") | not' "$T/untimed.json"
check "A's pipeline counters moved" bash -c "curl -sf '$A_CONSOLE/api/status' | jq -e --arg m '$DEMO_ID' \
  '[.plans[] | select(.model == \$m)][0] | .counters.round_trips > 0 and .stages[1].counters.tokens > 0'"
# A's lanes send their FORWARDs themselves (pipeline.c), without waking the
# loop; every answer above was checked equal to llmesh run with that in
# place. (The loop's way, with its pre-wake: split_prewake.sh.)
check "A's lanes sent FORWARDs themselves" bash -c "curl -sf '$A_CONSOLE/api/status' |
  jq -e '[.plans[] | select(.stages | length > 1) | .counters] | (map(.frames_sent_now) | add) > 0'"

# Two requests at once on one model (two lanes): both answer as run.
par=()
for i in 1 2; do
  curl -sf "$A_API/completions" -d "$body" | jq -j '.choices[0].text' >"$T/par$i.got" &
  par+=($!)
done
wait "${par[@]}"
check "two concurrent split requests both equal llmesh run" bash -c "cmp '$T/$DEMO_ID.expected' '$T/par1.got' && cmp '$T/$DEMO_ID.expected' '$T/par2.got'"

# ---- 2. a restart loads from the cache --------------------------------------
# B leaves during a stream, and with --split 3 no plan fits the two nodes
# left: the stream ends with the reason and [DONE], never hangs.
"$LLMESH" run --model "$DEMO_MODEL" --prompt "$PROMPT" --temp 0 -n 200 >"$T/long.expected" 2>/dev/null
lbody=$(jq -n --arg m "$DEMO_ID" --arg p "$PROMPT" '{model: $m, prompt: $p, max_tokens: 200, temperature: 0, stream: true}')
served_before=$(status "$A_CONSOLE" | jq .counters.weights_served_bytes)
curl -sfN --max-time 60 "$A_API/completions" -d "$lbody" >"$T/noplan.sse" &
cpid=$!
sleep 1
kill -TERM "$B_PID"; wait "$B_PID" 2>/dev/null
wait "$cpid"
grep '^data: {"id' "$T/noplan.sse" | sed 's/^data: //' | jq -j '.choices[0].text' >"$T/noplan.got"
check "a stream that cannot resume ends with the reason as an error event" \
  grep -q '^data: {"error".*waiting for 1 more node' "$T/noplan.sse"
check "... then data: [DONE]" bash -c "grep -v '^\$' '$T/noplan.sse' | tail -n 1 | grep -qx 'data: \[DONE\]'"
check "... and what it sent before is the answer's beginning" \
  bash -c "[ -s '$T/noplan.got' ] && head -c \$(stat -c %s '$T/noplan.got') '$T/long.expected' | cmp -s - '$T/noplan.got'"
plan_waiting() { plan_of "$A_CONSOLE" "$DEMO_ID" | jq -e '.state == "planning" and (.reason | test("waiting for 1 more node"))'; }
check "with B gone, --split 3 waits for a third node (and says so)" wait_for 20 plan_waiting
code=$(curl -s -o "$T/wait.json" -w '%{http_code}' "$A_API/completions" -d "$body")
check "a request meanwhile gets 503 with the reason" bash -c "[ '$code' = 503 ] && jq -e '.error.message | test(\"waiting for 1 more node\")' '$T/wait.json'"
start_node B serve --join "$A_TOKEN" --threads 1 --home "$T/B"
for m in "${MODELS[@]}"; do
  wait_for 90 plan_ready "$A_CONSOLE" "$m" 3 || fail "plan of $m ready again after B's restart"
done
served_after=$(status "$A_CONSOLE" | jq .counters.weights_served_bytes)
check "B loaded its layers from its cache: A served no weight bytes again ($served_before, $served_after)" [ "$served_before" = "$served_after" ]
curl -sf "$A_API/completions" -d "$body" | jq -j '.choices[0].text' >"$T/after-restart.got"
check "answers after the restart equal llmesh run" cmp "$T/$DEMO_ID.expected" "$T/after-restart.got"

# ---- 3. kill -9 of a stage during a stream ------------------------------------
start_node D serve --join "$A_TOKEN" --threads 1
start_node E serve --join "$A_TOKEN" --threads 1
pid_of_node() { # the PID of the node with this id, among B..E
  local id=$1 n
  for n in B C D E; do
    local c; c=$(eval echo "\${${n}_CONSOLE:-}")
    [ -n "$c" ] && [ "$(node_id "$c" 2>/dev/null)" = "$id" ] && { eval echo "\$${n}_PID"; return; }
  done
}
for which in 1 2; do
  label=$([ "$which" = 1 ] && echo middle || echo last)
  wait_for 60 plan_ready "$A_CONSOLE" "$DEMO_ID" 3 || die "no 3-stage plan before the $label-stage kill"
  victim_id=$(plan_of "$A_CONSOLE" "$DEMO_ID" | jq -r ".stages[$which].node")
  victim=$(pid_of_node "$victim_id")
  [ -n "$victim" ] || die "stage $which's node is none of B..E"
  curl -sfN "$A_API/completions" -d "$lbody" >"$T/kill$which.sse" &
  cpid=$!
  sleep 1.5
  kill -KILL "$victim"
  echo "killed the $label stage (pid $victim) mid-stream"
  wait "$cpid"
  grep '^data: {' "$T/kill$which.sse" | sed 's/^data: //' | jq -j '.choices[0].text' >"$T/kill$which.got"
  check "kill -9 of the $label stage: the stream completes, identical to the answer without failure" \
    cmp "$T/long.expected" "$T/kill$which.got"
  check "kill -9 of the $label stage: no error event, ends with [DONE]" bash -c \
    "! grep -q '\"error\"' '$T/kill$which.sse' && grep -v '^\$' '$T/kill$which.sse' | tail -n 1 | grep -qx 'data: \[DONE\]'"
done
check "A counted the broken pipelines" bash -c "curl -sf '$A_CONSOLE/api/status' | jq -e --arg m '$DEMO_ID' '[.plans[] | select(.model == \$m)][0].counters.breaks >= 2'"

# ---- 4. a split driven by --max-memory; a model that fits is not split ------
# F's budget is 1 MiB short of the model's need: its first layers stay on F,
# the rest go to members with memory.
need=$(plan_of "$S_CONSOLE" "$DEMO_ID" | jq .need_bytes)
small=$((need - 1048576))
cp "$DEMO_MODEL" "$T/models/demo-small-node.gguf"
start_node F serve --model "$T/models/demo-small-node.gguf" --join "$A_TOKEN" --threads 1 --max-memory "$small"
plan_split() { plan_of "$F_CONSOLE" demo-small-node | jq -e '.state == "ready" and (.stages | length) >= 2'; }
check "F, short of memory for its model, splits it over the mesh" wait_for 60 plan_split
curl -sf "$F_API/completions" -d "$(jq -n --arg p "$PROMPT" '{model: "demo-small-node", prompt: $p, max_tokens: 40, temperature: 0}')" \
  | jq -j '.choices[0].text' >"$T/f.got"
check "F's split answers as llmesh run" cmp "$T/$DEMO_ID.expected" "$T/f.got"
check "F reports its budget and uses no more of it" bash -c "curl -sf '$F_CONSOLE/api/status' | jq -e --argjson b $small '.memory_bytes == \$b and .memory_used > 0 and .memory_used <= \$b'"

# ---- 5. a mesh short of memory answers 503, then serves when a node joins ----
# G can hold the model's first layers but not all of them; H has room for
# none: planning, 503 with what is missing; I joins with memory: served.
cp "$DEMO_MODEL" "$T/models/demo-short.gguf"
start_node G serve --model "$T/models/demo-short.gguf" --threads 1 --max-memory "$small"
start_node H serve --join "$G_TOKEN" --threads 1 --max-memory $((need / 3))
G_ID=$(node_id "$G_CONSOLE")
h_sees_plan() { plan_of "$H_CONSOLE" demo-short | jq -e '.state == "planning"'; }
wait_for 20 h_sees_plan || fail "H learns G's plan by gossip"
gbody=$(jq -n --arg p "$PROMPT" '{model: "demo-short", prompt: $p, max_tokens: 40, temperature: 0}')
code=$(curl -s -o "$T/short.json" -w '%{http_code}' "$G_API/completions" -d "$gbody")
check "short of memory: 503" [ "$code" = 503 ]
check "the 503 says how much memory is missing" jq -e '.error.message | test("MiB missing")' "$T/short.json"
code=$(curl -s -o "$T/short-h.json" -w '%{http_code}' "$H_API/completions" -d "$gbody")
check "another node answers 503 with the reason too (from the gossiped plan)" \
  bash -c "[ '$code' = 503 ] && jq -e '.error.message | test(\"MiB missing\")' '$T/short-h.json'"
start_node I serve --join "$G_TOKEN" --threads 1
plan_g() { plan_of "$G_CONSOLE" demo-short | jq -e '.state == "ready" and (.stages | length) >= 2'; }
check "once a node with memory joins, the model is planned and served" wait_for 60 plan_g
curl -sf "$G_API/completions" -d "$gbody" | jq -j '.choices[0].text' >"$T/g.got"
check "and answers as llmesh run" cmp "$T/$DEMO_ID.expected" "$T/g.got"
curl -sf "$H_API/completions" -d "$gbody" | jq -j '.choices[0].text' >"$T/h.got"
check "H now forwards it to G and gets the same" cmp "$T/$DEMO_ID.expected" "$T/h.got"

finish
