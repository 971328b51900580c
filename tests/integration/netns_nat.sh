#!/usr/bin/env bash
# NAT smoke test. p1 is on the shared segment ("public") and serves the demo
# model; a1 sits behind a router with nftables masquerade (port-preserving,
# "cone-like"), b1 and b2 behind one with "masquerade random"
# (symmetric-like). a1 and b1 are members (standby) that join p1 by token; b2
# is a passive client. Completions from a1 and b2 are forwarded to p1 over
# their outbound connections, and a1 <-> b1 (NAT to NAT, one symmetric) end up
# relayed through p1. Needs root (skips otherwise).
set -u
. "$(dirname "$0")/common.bash"
. "$(dirname "$0")/netns.bash"

PROMPT="In the beginning"
MODEL_ID=kjv-llama-6.3M-q8_0

netns_init
netns_add_host p1
netns_nat_site a 1
netns_nat_site b 2 symmetric
check "a1 has a route to p1 (through its router)" netns_exec a1 ip route get "$p1_IP"
check "p1 cannot reach a1's private address" \
  bash -c "! ip netns exec $(netns_ns p1) ip route get $a1_IP >/dev/null 2>&1"

netns_start_node p1 serve --model "$DEMO_MODEL" --threads 1
netns_start_node a1 serve --join "$p1_TOKEN" --threads 1
netns_start_node b1 serve --join "$p1_TOKEN" --threads 1
netns_start_node b2 client --join "$p1_TOKEN"
p1_ID=$(netns_node_id p1); a1_ID=$(netns_node_id a1); b1_ID=$(netns_node_id b1); b2_ID=$(netns_node_id b2)

check "p1 lists a1 (behind NAT) alive" wait_for 60 netns_sees p1 "$a1_ID" alive
check "a1 lists p1 alive" wait_for 60 netns_sees a1 "$p1_ID" alive
check "p1 lists b1 (behind symmetric NAT) alive" wait_for 60 netns_sees p1 "$b1_ID" alive
check "b1 lists p1 alive" wait_for 60 netns_sees b1 "$p1_ID" alive
check "client b2 (behind symmetric NAT) has p1 in its routing table" wait_for 60 netns_sees b2 "$p1_ID" alive
b2_unlisted() { local j; j=$(netns_status p1) || return 1; ! jq -e --arg id "$b2_ID" '.peers[] | select(.id == $id)' <<<"$j"; }
check "p1 does not list the client b2 among its peers" b2_unlisted
masq_used() { netns_exec "$1" nft list chain ip lmnat masq | grep -Eq 'packets [1-9]'; }
check "a1's router masqueraded the mesh traffic" masq_used a
check "b1's router masqueraded the mesh traffic" masq_used b

"$LLMESH" run --model "$DEMO_MODEL" --prompt "$PROMPT" --temp 0 -n 16 --threads 1 >"$T/expected.txt" 2>"$T/run.log" \
  || die "llmesh run failed: $(cat "$T/run.log")"
body=$(jq -n --arg m "$MODEL_ID" --arg p "$PROMPT" '{model: $m, prompt: $p, max_tokens: 16, temperature: 0}')
netns_curl a1 --max-time 60 http://127.0.0.1:9337/v1/completions -d "$body" | jq -j '.choices[0].text' >"$T/a1.txt"
check "completion from a1 (behind NAT) forwarded to p1 equals llmesh run" cmp "$T/expected.txt" "$T/a1.txt"
netns_curl b2 --max-time 60 http://127.0.0.1:9337/v1/completions -d "$body" | jq -j '.choices[0].text' >"$T/b2.txt"
check "completion from client b2 (behind symmetric NAT) equals llmesh run" cmp "$T/expected.txt" "$T/b2.txt"

# NAT to NAT (cone and symmetric): no direct path can be punched, so the two
# reach each other through p1's relay (docs/reachability.md).
nat_pair_alive() { [ "$(netns_peer_state a1 "$b1_ID")" = alive ] && [ "$(netns_peer_state b1 "$a1_ID")" = alive ]; }
check "a1 and b1 (both behind NAT) reach each other" wait_for 30 nat_pair_alive
link=$(netns_status a1 | jq -r --arg id "$b1_ID" '.peers[] | select(.id == $id) | .link')
echo "info: a1 -> b1 link: $link"
check "their link is relayed (a symmetric NAT cannot be punched)" [ "$link" = relayed ]

finish
