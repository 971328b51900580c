#!/usr/bin/env bash
# Five llmesh nodes in five network namespaces on one bridge, every uplink
# impaired (20 ms +- 5 ms, 1% loss; tc netem, or the nfqueue stand-in when the
# kernel has no netem). h1 serves the demo model, h2..h5 join it by token.
# Checks: full mesh (everyone lists 4 alive peers); a greedy completion through
# a node without the model equals h1's own answer and `llmesh run`; after
# kill -9 of h5 the others stop listing it alive. Bounds are generous; measured
# times are printed. Root is needed (skips otherwise).
set -u
. "$(dirname "$0")/common.bash"
. "$(dirname "$0")/netns.bash"

PROMPT="And Jesus said unto them,"
MODEL_ID=kjv-llama-6.3M-q8_0
NODES=(h1 h2 h3 h4 h5)
start=$(date +%s.%N)
elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }

netns_init
for h in "${NODES[@]}"; do netns_add_host "$h"; done
for h in "${NODES[@]}"; do netns_netem "$h" "delay 20ms 5ms loss 1%"; done
echo "netem backend: $NETNS_NETEM_BACKEND"

netns_start_node h1 serve --model "$DEMO_MODEL" --threads 1
t_form=$(date +%s.%N)
for h in h2 h3 h4 h5; do netns_start_node "$h" serve --join "$h1_TOKEN" --threads 1; done

full_mesh() {
  local h
  for h in "${NODES[@]}"; do [ "$(netns_alive_count "$h")" = 4 ] || return 1; done
}
if wait_for 60 full_mesh; then
  pass "all 5 nodes list 4 alive peers ($(elapsed "$t_form") s after the first join)"
else
  for h in "${NODES[@]}"; do echo "$h alive peers: $(netns_alive_count "$h")"; done
  fail "no full mesh within 60 s"
fi

models_has_demo() { netns_curl h3 http://127.0.0.1:9337/v1/models | jq -e --arg m "$MODEL_ID" '.data | map(.id) | index($m)'; }
check "h3 (no model) lists the demo model" wait_for 30 models_has_demo

"$LLMESH" run --model "$DEMO_MODEL" --prompt "$PROMPT" --temp 0 -n 24 --threads 1 >"$T/expected.txt" 2>"$T/run.log" \
  || die "llmesh run failed: $(cat "$T/run.log")"
body=$(jq -n --arg m "$MODEL_ID" --arg p "$PROMPT" '{model: $m, prompt: $p, max_tokens: 24, temperature: 0}')
netns_curl h1 --max-time 60 http://127.0.0.1:9337/v1/completions -H 'Content-Type: application/json' -d "$body" \
  | jq -j '.choices[0].text' >"$T/h1.txt"
netns_curl h3 --max-time 60 http://127.0.0.1:9337/v1/completions -H 'Content-Type: application/json' -d "$body" \
  | jq -j '.choices[0].text' >"$T/h3.txt"
check "h1 answers like llmesh run" cmp "$T/expected.txt" "$T/h1.txt"
check "completion through h3 equals h1's answer" cmp "$T/h1.txt" "$T/h3.txt"

# kill -9 of a node without the model: until failure detection lands, peers
# notice through QUIC's 30 s idle timeout; the bound is 60 s.
h5_ID=$(netns_node_id h5)
[ -n "$h5_ID" ] && [ "$h5_ID" != null ] || die "no node id from h5"
kill -KILL "$h5_PID"
t_kill=$(date +%s.%N)
nobody_lists_h5_alive() {
  local h
  for h in h1 h2 h3 h4; do ! netns_sees "$h" "$h5_ID" alive || return 1; done
}
if wait_for 60 nobody_lists_h5_alive; then
  pass "h1..h4 stop listing h5 as alive after kill -9 ($(elapsed "$t_kill") s)"
else
  fail "h5 still listed alive 60 s after kill -9"
fi
survivors_mesh() {
  local h
  for h in h1 h2 h3 h4; do [ "$(netns_alive_count "$h")" = 3 ] || return 1; done
}
check "h1..h4 still list each other alive" wait_for 20 survivors_mesh
netns_curl h4 --max-time 60 http://127.0.0.1:9337/v1/completions -H 'Content-Type: application/json' -d "$body" \
  | jq -j '.choices[0].text' >"$T/h4.txt"
check "completion through h4 after the kill still equals h1's answer" cmp "$T/h1.txt" "$T/h4.txt"

echo "runtime: $(elapsed "$start") s"
finish
