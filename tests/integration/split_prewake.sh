#!/usr/bin/env bash
# How a split's coordinator sends its FORWARDs (serve/pipeline.c): from the
# lane that computed them, and, through the loop (LLMESH_SPLIT_LOOP_SEND=1),
# the pre-wake of the loop and its CPU guard, with real processes on loopback. Tokens are slowed to ~25 ms apart
# (LLMESH_DEBUG_TOKEN_DELAY_MS), so decode sends come at a pace worth a
# pre-wake:
#  1. a coordinator with one compute thread and the machine's CPUs (2 or
#     more), sending through its loop, pre-wakes the loop before decode
#     sends, and its greedy answer equals `llmesh run`; its stage, with 2
#     compute threads, runs the decode steps on its loop thread (where the
#     datagram was decrypted), not its worker's;
#  2. the same coordinator pinned to one CPU (taskset), sending from its
#     lanes (the default), sends most FORWARDs from them and never spins;
#     its answer is the same.
# About 20 s.
set -u
. "$(dirname "$0")/common.bash"
command -v taskset >/dev/null || { echo "SKIP: no taskset"; echo "0 passed, 0 failed (skipped)"; exit 0; }
PROMPT="And Jesus said unto them,"
MODEL_ID=$(basename "$DEMO_MODEL" .gguf)
"$LLMESH" run --model "$DEMO_MODEL" --prompt "$PROMPT" --temp 0 -n 40 >"$T/expected" 2>"$T/run.log" || die "llmesh run"
body=$(jq -n --arg m "$MODEL_ID" --arg p "$PROMPT" '{model: $m, prompt: $p, max_tokens: 40, temperature: 0, stream: true}')
REAL=$LLMESH
printf '#!/bin/sh\nexec taskset -c 0 %s "$@"\n' "$REAL" >"$T/llmesh-cpu0"
chmod +x "$T/llmesh-cpu0"
counters() { curl -sf "$1/api/status" | jq -c --arg m "$MODEL_ID" '[.plans[] | select(.model == $m)][0].counters'; }

# run_pair NAME LLMESH_FOR_THE_COORDINATOR: a coordinator and a stage node,
# one streamed completion; leaves the answer in $T/NAME.got.
run_pair() {
  local name=$1 stage_threads=${4:-1}
  LLMESH=$2 LLMESH_SPLIT_LOOP_SEND=$3 LLMESH_DEBUG_TOKEN_DELAY_MS=25 start_node "C$name" serve --model "$DEMO_MODEL" --split 2 --threads 1 --parallel 1
  local tv="C${name}_TOKEN" cv="C${name}_CONSOLE" av="C${name}_API"
  start_node "S$name" serve --join "${!tv}" --threads "$stage_threads"
  wait_for 60 split_ready "${!cv}" "$MODEL_ID" 2 || die "$name: no 2-stage plan"
  curl -sfN "${!av}/completions" -d "$body" | grep '^data: {' | sed 's/^data: //' | jq -j '.choices[0].text' >"$T/$name.got"
}

if [ "$(nproc)" -ge 2 ]; then
  run_pair free "$REAL" 1 2
  check "a coordinator with a CPU to spare: the answer equals llmesh run" cmp "$T/expected" "$T/free.got"
  c=$(counters "$Cfree_CONSOLE")
  check "... and its loop was pre-woken before decode sends ($c)" jq -e '.prewakes + .prewake_late > 0' <<<"$c"
  s=$(curl -sf "$Sfree_CONSOLE/api/status" | jq -c '.stages[0] | {frames, frames_inline}')
  check "... its stage at 2 threads ran most steps on its loop thread ($s)" jq -e '.frames_inline * 2 > .frames' <<<"$s"
else
  echo "(one CPU here: the coordinator with a CPU to spare is not tried)"
fi
run_pair pinned "$T/llmesh-cpu0" 0
check "a coordinator pinned to one CPU: the answer equals llmesh run" cmp "$T/expected" "$T/pinned.got"
c=$(counters "$Cpinned_CONSOLE")
check "... and it never spun ($c)" jq -e '.prewakes == 0 and .prewake_late == 0 and .prewake_spin_ms == 0 and .round_trips > 0' <<<"$c"
check "... and its lanes sent most FORWARDs themselves ($c)" jq -e '.frames_sent_now * 2 > .frames_sent' <<<"$c"
finish
