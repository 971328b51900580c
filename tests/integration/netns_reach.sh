#!/usr/bin/env bash
# Reachability between NAT'd nodes (issue 4, point 3; docs/reachability.md).
# p1 is public; a1 and b1 sit behind port-preserving masquerade (cone-like):
# p1 introduces them and they punch a direct path. c1 sits behind "masquerade
# random" (symmetric-like: a new port per destination, punching cannot work)
# and serves the model: a1 reaches it through a relay (p1), end-to-end
# encrypted, and a completion from a1 runs on c1 through that relay.
# /api/status must say "direct" / "relayed" for those links, with an RTT.
# d1 and e1 sit behind cone NATs too, but d's router first drops everything
# to e's public address, so they start relayed; once the block is lifted
# their relayed link must turn direct (a new punch every 30 s).
# Needs root (skips otherwise). Every wait is bounded.
set -u
. "$(dirname "$0")/common.bash"
. "$(dirname "$0")/netns.bash"

PROMPT="In the beginning"
MODEL_ID=kjv-llama-6.3M-q8_0

netns_init
netns_add_host p1
netns_nat_site a 1
netns_nat_site b 1
netns_nat_site c 1 symmetric
netns_nat_site d 1
netns_nat_site e 1
echo "table ip lmblock { chain block { type filter hook forward priority -10; ip daddr $e_IP drop; }; }" \
  | ip netns exec "$(netns_ns d)" nft -f - || die "cannot add the block rule in d's router"

netns_start_node p1 serve --threads 1
netns_start_node a1 serve --join "$p1_TOKEN" --threads 1
netns_start_node b1 serve --join "$p1_TOKEN" --threads 1
netns_start_node c1 serve --join "$p1_TOKEN" --model "$DEMO_MODEL" --threads 1
p1_ID=$(netns_node_id p1); a1_ID=$(netns_node_id a1); b1_ID=$(netns_node_id b1); c1_ID=$(netns_node_id c1)

# link NAME PEER_ID : the link kind NAME shows for an alive PEER_ID ("" if none)
link() { netns_status "$1" | jq -r --arg id "$2" '.peers[] | select(.id == $id and .state == "alive") | .link // ""'; }
rtt() { netns_status "$1" | jq -r --arg id "$2" '.peers[] | select(.id == $id) | .rtt_ms'; }
is_link() { [ "$(link "$1" "$2")" = "$3" ]; }

check "a1 lists p1 alive, direct" wait_for 60 is_link a1 "$p1_ID" direct
check "a1 and b1 (both behind cone NATs) reach each other directly (hole punched)" \
  wait_for 30 is_link a1 "$b1_ID" direct
check "b1 shows a1 direct" wait_for 10 is_link b1 "$a1_ID" direct
check "a1 reaches c1 (symmetric NAT) through a relay" wait_for 40 is_link a1 "$c1_ID" relayed
check "c1 shows a1 relayed" wait_for 10 is_link c1 "$a1_ID" relayed
check "p1 sees c1 directly" is_link p1 "$c1_ID" direct
echo "info: rtt_ms a1->p1 $(rtt a1 "$p1_ID"), a1->b1 (punched) $(rtt a1 "$b1_ID"), a1->c1 (relayed) $(rtt a1 "$c1_ID")"

"$LLMESH" run --model "$DEMO_MODEL" --prompt "$PROMPT" --temp 0 -n 16 --threads 1 >"$T/expected.txt" 2>"$T/run.log" \
  || die "llmesh run failed: $(cat "$T/run.log")"
body=$(jq -n --arg m "$MODEL_ID" --arg p "$PROMPT" '{model: $m, prompt: $p, max_tokens: 16, temperature: 0}')
netns_curl a1 --max-time 60 http://127.0.0.1:9337/v1/completions -d "$body" | jq -j '.choices[0].text' >"$T/a1.txt"
check "completion from a1 served by c1 through the relay equals llmesh run" cmp "$T/expected.txt" "$T/a1.txt"
check "a1 still shows c1 relayed after the request" is_link a1 "$c1_ID" relayed

netns_start_node d1 serve --join "$p1_TOKEN" --threads 1
netns_start_node e1 serve --join "$p1_TOKEN" --threads 1
d1_ID=$(netns_node_id d1); e1_ID=$(netns_node_id e1)
check "d1 and e1 start relayed while d's router blocks e" wait_for 40 is_link d1 "$e1_ID" relayed
ip netns exec "$(netns_ns d)" nft delete table ip lmblock || die "cannot lift the block"
t0=$(date +%s)
check "once the block is lifted, d1 and e1 move to a direct link" wait_for 90 is_link d1 "$e1_ID" direct
echo "info: direct $(( $(date +%s) - t0 )) s after the block was lifted (a new punch every 30 s)"
check "e1 shows d1 direct too" wait_for 10 is_link e1 "$d1_ID" direct

finish
