#!/usr/bin/env bash
# Passive clients (issue 4, point 4): two hosts serve the demo model, a
# standby node serves nothing, and 16 `llmesh client` processes join through
# the standby. Checks that:
#   - clients get the routing table by pulling it, and members never list them;
#   - each client sticks to one host, and the clients spread over both;
#   - the standby is never routed a request;
#   - idle clients cost members nothing but the routing pulls (no streams but
#     ROUTES ones over a 32 s window, about one pull per client, spread over
#     the members);
#   - after kill -9 of a host, a client that used it still gets its answer
#     (its probes find the host silent, the request is retried on the other)
#     and drops the host from its table.
set -u
. "$(dirname "$0")/common.bash"
MODEL_ID=kjv-llama-6.3M-q8_0
N=16

start_node H1 serve --model "$DEMO_MODEL" --threads 1
start_node H2 serve --model "$DEMO_MODEL" --threads 1 --join "$H1_TOKEN"
start_node S serve --join "$H1_TOKEN"
H1_ID=$(curl -sf "$H1_CONSOLE/api/status" | jq -r .node_id)
H2_ID=$(curl -sf "$H2_CONSOLE/api/status" | jq -r .node_id)
S_ID=$(curl -sf "$S_CONSOLE/api/status" | jq -r .node_id)
members_full() {
  for c in "$H1_CONSOLE" "$H2_CONSOLE" "$S_CONSOLE"; do
    curl -sf "$c/api/status" | jq -e '[.peers[] | select(.state == "alive")] | length == 2' >/dev/null || return 1
  done
}
wait_for 30 members_full || die "the three members do not see each other"

for i in $(seq $N); do start_node "C$i" client --join "$S_TOKEN"; done
console() { eval echo "\$${1}_CONSOLE"; }
api() { eval echo "\$${1}_API"; }
status() { curl -sf "$(console "$1")/api/status"; }

has_table() { # has_table CLIENT: H1, H2 and S alive in its routing table
  status "$1" | jq -e --arg a "$H1_ID" --arg b "$H2_ID" --arg s "$S_ID" \
    '[.peers[] | select((.id == $a or .id == $b or .id == $s) and .state == "alive")] | length == 3'
}
all_tables() { for i in $(seq $N); do has_table "C$i" >/dev/null || return 1; done; }
check "all $N clients pulled a routing table with both hosts and the standby" wait_for 30 all_tables
check "a client's status has no token and a routes age" \
  bash -c "curl -sf '$C1_CONSOLE/api/status' | jq -e '.token == null and .routes_age_ms >= 0 and .role == \"client\" and .counters.routes_pulled >= 1'"
no_clients_listed() {
  for c in "$H1_CONSOLE" "$H2_CONSOLE" "$S_CONSOLE"; do
    curl -sf "$c/api/status" | jq -e '(.peers | length) == 2 and ([.peers[] | select(.role == "client")] | length == 0)' >/dev/null || return 1
  done
}
check "members list only each other (no client among their peers)" no_clients_listed
check "the standby served the first pulls" \
  bash -c "curl -sf '$S_CONSOLE/api/status' | jq -e '.counters.routes_served >= $N'"

# Requests: 3 per client, one client at a time; the hosts' request counters
# tell which host served each client.
reqs() { status "$1" | jq -r .counters.requests; }
body=$(jq -n --arg m "$MODEL_ID" '{model: $m, prompt: "In the beginning", max_tokens: 2, temperature: 0}')
on_h1=0; on_h2=0; sticky=0; failed=0
declare -A HOST_OF
for i in $(seq $N); do
  a1=$(reqs H1); a2=$(reqs H2)
  for _ in 1 2 3; do
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 30 "$(api "C$i")/completions" -d "$body")
    [ "$code" = 200 ] || failed=$((failed + 1))
  done
  d1=$(( $(reqs H1) - a1 )); d2=$(( $(reqs H2) - a2 ))
  if [ "$d1" = 3 ] && [ "$d2" = 0 ]; then sticky=$((sticky + 1)); on_h1=$((on_h1 + 1)); HOST_OF[C$i]=H1; fi
  if [ "$d2" = 3 ] && [ "$d1" = 0 ]; then sticky=$((sticky + 1)); on_h2=$((on_h2 + 1)); HOST_OF[C$i]=H2; fi
done
echo "info: clients on H1: $on_h1, on H2: $on_h2"
check "every request succeeded" [ "$failed" = 0 ]
check "each client sent its 3 requests to one host (stable choice)" [ "$sticky" = "$N" ]
check "the clients spread over both hosts" bash -c "[ $on_h1 -gt 0 ] && [ $on_h2 -gt 0 ]"
check "the standby was routed no request" bash -c "curl -sf '$S_CONSOLE/api/status' | jq -e '.counters.requests == 0'"
check "hosts count their connected clients" \
  bash -c "[ \$(( \$(curl -sf '$H1_CONSOLE/api/status' | jq .clients_connected) + \$(curl -sf '$H2_CONSOLE/api/status' | jq .clients_connected) )) -ge $N ]"

# Idle clients: over 32 s (one routes interval and a bit), members accept
# no stream from anyone but ROUTES pulls: about one per client.
sum_counter() { local t=0 c; for c in "$H1_CONSOLE" "$H2_CONSOLE" "$S_CONSOLE"; do t=$((t + $(curl -sf "$c/api/status" | jq ".counters.$1"))); done; echo $t; }
served() { status "$1" | jq .counters.routes_served; }
r0=$(sum_counter routes_served); s0=$(sum_counter streams_accepted)
p0=("$(served H1)" "$(served H2)" "$(served S)")
sleep 32
r1=$(sum_counter routes_served); s1=$(sum_counter streams_accepted)
p1=("$(served H1)" "$(served H2)" "$(served S)")
echo "info: in 32 s members served $((r1 - r0)) routing tables (H1 $((p1[0] - p0[0])), H2 $((p1[1] - p0[1])), S $((p1[2] - p0[2]))) and accepted $((s1 - s0)) streams"
serving=0; for k in 0 1 2; do [ $((p1[k] - p0[k])) -gt 0 ] && serving=$((serving + 1)); done
check "the pulls spread over the members ($serving of 3 served some)" [ "$serving" -ge 2 ]
check "idle clients pulled about once each in 32 s ($((r1 - r0)) pulls)" bash -c "[ $((r1 - r0)) -ge $N ] && [ $((r1 - r0)) -le $((3 * N)) ]"
check "and members accepted no other stream" [ "$((s1 - s0))" = "$((r1 - r0))" ]

# kill -9 of H1: a client that used it gets its answer from H2 anyway.
victim=""
for i in $(seq $N); do [ "${HOST_OF[C$i]:-}" = H1 ] && { victim=C$i; break; }; done
[ -n "$victim" ] || die "no client used H1"
kill -KILL "$H1_PID"
t0=$(date +%s%N)
code=$(curl -s -o "$T/after.json" -w '%{http_code}' --max-time 60 "$(api "$victim")/completions" -d "$body")
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
echo "info: $victim's request after kill -9 of its host took $ms ms"
check "$victim's request after kill -9 of its host succeeds (got $code)" [ "$code" = 200 ]
check "and was retried" bash -c "curl -sf '$(console "$victim")/api/status' | jq -e '.counters.retried >= 1'"
h1_gone() { status "$victim" | jq -e --arg a "$H1_ID" '[.peers[] | select(.id == $a and .state == "alive")] | length == 0'; }
check "$victim drops H1 from its routing table" wait_for 20 h1_gone
all_ok() {
  for i in $(seq $N); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 30 "$(api "C$i")/completions" -d "$body")" = 200 ] || return 1
  done
}
check "every client's requests succeed after the kill" wait_for 40 all_ok
check "no bad frames anywhere" \
  bash -c "for c in '$H2_CONSOLE' '$S_CONSOLE' '$C1_CONSOLE'; do curl -sf \$c/api/status | jq -e '.counters.bad_frames == 0' >/dev/null || exit 1; done"

finish
