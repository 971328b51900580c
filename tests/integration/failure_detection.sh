#!/usr/bin/env bash
# Failure detection with five real llmesh processes on loopback (issue 4):
#   - kill -9 of one node: every other node shows it dead (or forgotten)
#     within 20 s (target 10 s; the measured time is printed);
#   - the killed node restarts on the same --home: alive again everywhere;
#   - SIGTERM of another: the others show it left (target 1 s; asserted with
#     5 s) once the node's shutdown sends the mesh's LEAVE (mesh_leave); until
#     then they must at least see it dead;
#   - no live node is ever shown dead, suspect-then-dead or left meanwhile;
#   - A's byte counts for C go on across C's reconnection (never back to 0).
# Bounds are generous (CI machines are noisy); bench/ measures speed.
set -u
. "$(dirname "$0")/common.bash"

start_node A serve
for n in B C D E; do start_node "$n" serve --join "$A_TOKEN"; done
NODES="A B C D E"
for n in $NODES; do
  eval "${n}_ID=\$(curl -sf \"\$${n}_CONSOLE/api/status\" | jq -r .node_id)"
done
console() { eval echo "\$${1}_CONSOLE"; }
id_of() { eval echo "\$${1}_ID"; }

# state_of OBSERVER SUBJECT: the subject's state in the observer's
# /api/status, "gone" when it is not listed.
state_of() {
  curl -sf --max-time 2 "$(console "$1")/api/status" |
    jq -r --arg id "$(id_of "$2")" '[.peers[] | select(.id == $id) | .state] | if length == 0 then "gone" else .[0] end'
}
all_see() { # all_see SUBJECT STATE_REGEX OBSERVERS...
  local subject=$1 re=$2; shift 2
  for o in "$@"; do [[ "$(state_of "$o" "$subject")" =~ ^($re)$ ]] || return 1; done
}
full_mesh() {
  for o in $NODES; do for s in $NODES; do
    [ "$o" = "$s" ] || all_see "$s" alive "$o" || return 1
  done; done
}
check "five nodes form a full mesh" wait_for 30 full_mesh
sleep 3   # some probe rounds with everyone up
check "nobody is suspect or dead with everyone up" full_mesh

now_ms() { date +%s%3N; }
# measure LIMIT_S SUBJECT STATE_REGEX OBSERVERS...: prints the ms from $T0
# (set it when the event happens) until every observer shows the state, or
# fails once LIMIT_S have passed since T0.
measure() {
  local limit=$1; shift
  local end=$((T0 + limit * 1000))
  while [ "$(now_ms)" -lt "$end" ]; do
    if all_see "$@"; then echo $(($(now_ms) - T0)); return 0; fi
    sleep 0.1
  done
  return 1
}

# ---- kill -9: detected by probes --------------------------------------------
peer_bytes() { # peer_bytes VIEWER ID KEY
  curl -s "$(console "$1")/api/status" | jq -r --arg id "$2" ".peers[] | select(.id == \$id) | .$3"
}
C_RX_BEFORE=$(peer_bytes A "$C_ID" rx_bytes)
C_TX_BEFORE=$(peer_bytes A "$C_ID" tx_bytes)
kill -KILL "$C_PID"; T0=$(now_ms)
if ms=$(measure 20 C 'dead|gone' A B D E); then
  pass "kill -9 of C seen by A, B, D, E as dead"
  echo "measured: kill -9 detected by all 4 other nodes after $ms ms (target 10000)"
else
  fail "C not dead everywhere 20 s after kill -9: A=$(state_of A C) B=$(state_of B C) D=$(state_of D C) E=$(state_of E C)"
fi
live_ok() {
  for o in A B D E; do for s in A B D E; do
    [ "$o" = "$s" ] || all_see "$s" alive "$o" || return 1
  done; done
}
check "the live nodes stayed alive meanwhile" live_ok

# ---- the killed node comes back on the same home --------------------------------
wait "$C_PID" 2>/dev/null
OLD_C_ID=$C_ID
start_node C serve --join "$A_TOKEN"
C_ID=$(curl -sf "$C_CONSOLE/api/status" | jq -r .node_id); T0=$(now_ms)
check "restarted C has the same id" [ "$C_ID" = "$OLD_C_ID" ]
if ms=$(measure 30 C alive A B D E); then
  pass "restarted C is alive again everywhere"
  echo "measured: restarted node alive on all 4 others after $ms ms"
else
  fail "restarted C not alive everywhere: A=$(state_of A C) B=$(state_of B C) D=$(state_of D C) E=$(state_of E C)"
fi
# The new connection's bytes add to the old one's. The restarted C counts
# only the new connection: what it sent A (read after A's figure) is about
# what A received on it, so A's total for C must be above that by the old
# connection's bytes, and never below what it was before the kill.
A_RX_C=$(peer_bytes A "$C_ID" rx_bytes); A_TX_C=$(peer_bytes A "$C_ID" tx_bytes)
C_TX_A=$(peer_bytes C "$A_ID" tx_bytes); C_RX_A=$(peer_bytes C "$A_ID" rx_bytes)
echo "A's bytes from/to C: $C_RX_BEFORE/$C_TX_BEFORE before the kill, $A_RX_C/$A_TX_C now; C's new connection: $C_TX_A/$C_RX_A"
check "A's rx_bytes for C go on across the reconnection" \
  test "${A_RX_C:-0}" -ge "${C_RX_BEFORE:-1}" -a "${A_RX_C:-0}" -gt "${C_TX_A:-0}"
check "A's tx_bytes for C likewise" \
  test "${A_TX_C:-0}" -ge "${C_TX_BEFORE:-1}" -a "${A_TX_C:-0}" -gt "${C_RX_A:-0}"

# ---- clean exit -------------------------------------------------------------------
kill -TERM "$D_PID"; T0=$(now_ms)
if ms=$(measure 5 D 'left|gone' A B C E); then
  pass "SIGTERM of D seen by A, B, C, E as left"
  echo "measured: SIGTERM seen as left by all 4 other nodes after $ms ms (target 1000)"
elif ! grep -q 'leave sent' "$T/D.log"; then
  # The node's shutdown does not call mesh_leave yet (src/serve/node.c):
  # the peers find the node dead by probing instead.
  echo "NOTE: D's shutdown sent no LEAVE (mesh_leave not wired into node shutdown): checking dead instead"
  if ms=$(measure 25 D 'dead|left|gone' A B C E); then
    pass "SIGTERM of D seen as dead (no LEAVE sent)"
    echo "measured: SIGTERM without LEAVE seen as dead after $ms ms"
  else
    fail "D still listed alive 20 s after SIGTERM"
  fi
else
  fail "D sent a LEAVE but is not left everywhere within 5 s: A=$(state_of A D) B=$(state_of B D) C=$(state_of C D) E=$(state_of E D)"
fi
for n in A B C E; do
  if grep -q "node ${D_ID:0:16} dead" "$T/$n.log" && grep -q 'leave sent' "$T/D.log"; then
    fail "$n declared D dead although D sent a LEAVE"
  fi
done

# No node ever declared a live node dead.
for n in A B E; do
  for s in A B E; do
    [ "$n" = "$s" ] && continue
    if grep -q "node $(id_of "$s" | cut -c1-16) dead" "$T/$n.log"; then fail "$n declared live node $s dead"; fi
  done
done
[ -n "${KEEP_LOGS:-}" ] && cp -r "$T" "$KEEP_LOGS"
finish
