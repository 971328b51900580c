#!/usr/bin/env bash
# A split across three network namespaces with delay on every link (tc netem
# 5 ms each way, or the nfqueue stand-in): s1 serves the demo model with
# --split 3, s2 and s3 join with no model and fetch their layers from s1.
# Checks: the plan is ready with three stages on three nodes; greedy
# completions (plain, streamed, and through s3) equal `llmesh run`; the hop
# round trip s1 measures is at least the emulated delay (the data really
# crossed the delayed links). Root is needed (skips otherwise).
set -u
. "$(dirname "$0")/common.bash"
. "$(dirname "$0")/netns.bash"

PROMPT="And Jesus said unto them,"
MODEL_ID=kjv-llama-6.3M-q8_0

netns_init
for h in s1 s2 s3; do netns_add_host "$h"; done
for h in s1 s2 s3; do netns_netem "$h" "delay 5ms"; done
echo "netem backend: $NETNS_NETEM_BACKEND"

netns_start_node s1 serve --model "$DEMO_MODEL" --split 3 --threads 1
netns_start_node s2 serve --join "$s1_TOKEN" --threads 1
netns_start_node s3 serve --join "$s1_TOKEN" --threads 1

ready() {
  netns_status s1 | jq -e --arg m "$MODEL_ID" \
    '[.plans[] | select(.model == $m)][0] | .state == "ready" and (.stages | map(.node) | unique | length) == 3'
}
check "the plan is ready: three stages on three nodes" wait_for 90 ready

"$LLMESH" run --model "$DEMO_MODEL" --prompt "$PROMPT" --temp 0 -n 24 --threads 1 >"$T/expected.txt" 2>"$T/run.log" \
  || die "llmesh run failed: $(cat "$T/run.log")"
body=$(jq -n --arg m "$MODEL_ID" --arg p "$PROMPT" '{model: $m, prompt: $p, max_tokens: 24, temperature: 0}')
sbody=$(jq -n --arg m "$MODEL_ID" --arg p "$PROMPT" '{model: $m, prompt: $p, max_tokens: 24, temperature: 0, stream: true}')
netns_curl s1 --max-time 60 http://127.0.0.1:9337/v1/completions -d "$body" | jq -j '.choices[0].text' >"$T/s1.txt"
check "s1's split answer equals llmesh run" cmp "$T/expected.txt" "$T/s1.txt"
netns_curl s1 --max-time 60 -N http://127.0.0.1:9337/v1/completions -d "$sbody" \
  | grep '^data: {' | sed 's/^data: //' | jq -j '.choices[0].text' >"$T/s1-stream.txt"
check "streamed, too" cmp "$T/expected.txt" "$T/s1-stream.txt"
netns_curl s3 --max-time 60 http://127.0.0.1:9337/v1/completions -d "$body" | jq -j '.choices[0].text' >"$T/s3.txt"
check "through s3 (a stage node), too" cmp "$T/expected.txt" "$T/s3.txt"

rtt=$(netns_status s1 | jq --arg m "$MODEL_ID" '[.plans[] | select(.model == $m)][0].counters.round_trip_ms')
echo "measured pipeline round trip: $rtt ms (3 links of 5 ms one way)"
check "the round trip crossed the delayed links (>= 14 ms)" awk -v r="$rtt" 'BEGIN { exit !(r >= 14) }'
finish
