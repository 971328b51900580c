#!/usr/bin/env bash
# The per-address bound on QUIC half-open handshakes (issue 13, item 3), real
# processes on loopback. A serves the demo model with
# --quic-max-half-open-per-addr 8. tests/tools/quic_stall, from its own
# address (127.0.0.4), starts 20 real handshakes (Initials with a real
# ClientHello) and never answers: A holds 8 of them half-open and drops the
# others' Initials, counted in quic_refused and quic_refused_addr. Meanwhile
# B joins A (a full handshake from 127.0.0.1: another address, not crowded)
# and a completion through B and one on A are answered. Once A's handshake
# timeout (10 s) passes, the stalled connections are gone. The HTTP bounds'
# flags too: with --http-max-conns-per-addr 4 and --http-request-timeout 2,
# of 10 idle TCP connections from 127.0.0.5 to A's API 4 are kept and cut
# after 2 s, the others shut at once. No timing threshold but those
# documented timeouts.
set -u
. "$(dirname "$0")/common.bash"

MODEL_ID=kjv-llama-6.3M-q8_0
BODY="{\"model\": \"$MODEL_ID\", \"prompt\": \"In the beginning\", \"max_tokens\": 8, \"temperature\": 0}"
STALL=$(dirname "$LLMESH")/quic_stall
[ -x "$STALL" ] || die "no $STALL (built with the tests)"
counter() { curl -s "$A_CONSOLE/api/status" | jq -r ".counters.$1"; }

# Debug logs: A's mesh port is in its "listening on" line (B, which could
# tell it, must join only during the stall).
start_node A serve --model "$DEMO_MODEL" --quic-max-half-open-per-addr 8 --log-level debug \
  --http-max-conns-per-addr 4 --http-request-timeout 2
A_PORT=$(grep -o 'listening on [0-9.]*:[0-9]*' "$T/A.log" | head -1 | sed 's/.*://')
[ -n "$A_PORT" ] || die "cannot find A's mesh port in its log"
check "no half-open handshakes at start" test "$(counter quic_half_open)" -eq 0

# ---- 20 stalled handshakes from 127.0.0.4, held for 15 s (past the 10 s timeout)
"$STALL" "$T/S" 127.0.0.4 "127.0.0.1:$A_PORT" 20 15 >"$T/stall.out" 2>"$T/stall.log" &
STALL_PID=$!
PIDS+=("$STALL_PID")
check "the staller sent its Initials" wait_for 10 grep -q "^sent 20 Initials" "$T/stall.out"
check "A holds 8 half-open handshakes (the per-address bound)" \
  wait_for 10 bash -c "[ \$(curl -s '$A_CONSOLE/api/status' | jq .counters.quic_half_open) -eq 8 ]"
echo "A: quic_half_open $(counter quic_half_open), quic_refused_addr $(counter quic_refused_addr), quic_refused $(counter quic_refused)"
check "the other 12 were refused by the per-address bound" test "$(counter quic_refused_addr)" -ge 12
check "...and counted in quic_refused" test "$(counter quic_refused)" -ge 12
check "/metrics shows them" bash -c "curl -s '$A_CONSOLE/metrics' | grep -Eq '^llmesh_quic_refused_addr_total (1[2-9]|[2-9][0-9])' && curl -s '$A_CONSOLE/metrics' | grep -q '^llmesh_quic_half_open 8'"

# ---- meanwhile a member joins and requests are answered
start_node B serve --join "$A_TOKEN"
check "B joins A during the stall" wait_for 20 bash -c \
  "curl -s '$A_CONSOLE/api/status' | jq -e '[.peers[] | select(.state == \"alive\")] | length == 1'"
check "a completion forwarded through B during the stall" \
  bash -c "[ \$(curl -s -o '$T/c1.json' -w '%{http_code}' -m 30 '$B_API/completions' -d '$BODY') = 200 ]"
check "...with text" jq -e '.choices[0].text | length > 0' "$T/c1.json"
check "a completion on A during the stall" \
  bash -c "[ \$(curl -s -o /dev/null -w '%{http_code}' -m 30 '$A_API/completions' -d '$BODY') = 200 ]"
check "still 8 half-open (B's handshake completed)" test "$(counter quic_half_open)" -le 8

# ---- the handshake timeout frees the slots
check "the stalled handshakes time out (10 s)" \
  wait_for 20 bash -c "[ \$(curl -s '$A_CONSOLE/api/status' | jq .counters.quic_half_open) -eq 0 ]"
check "B is still alive on A" bash -c \
  "curl -s '$A_CONSOLE/api/status' | jq -e '[.peers[] | select(.state == \"alive\")] | length == 1'"
wait "$STALL_PID"

# ---- the HTTP bounds as flags: 4 per address, a whole request within 2 s
A_HTTP_PORT=$(sed 's#.*:\([0-9]*\)/v1#\1#' <<<"$A_API")
python3 - "$A_HTTP_PORT" >"$T/idle.out" 2>&1 <<'PY'
import socket, sys, time
socks = [socket.create_connection(("127.0.0.1", int(sys.argv[1])), source_address=("127.0.0.5", 0))
         for _ in range(10)]
def still_open():
    n = 0
    for s in socks:
        s.setblocking(False)
        try:
            n += s.recv(1) != b""
        except BlockingIOError:
            n += 1
        except OSError:
            pass
    return n
time.sleep(1)
print("open after 1 s:", still_open())
time.sleep(3)                       # past the 2 s deadline
print("open after 4 s:", still_open())
PY
cat "$T/idle.out"
check "4 idle connections kept from one address (--http-max-conns-per-addr 4)" grep -q "open after 1 s: 4$" "$T/idle.out"
check "...and cut at the 2 s deadline (--http-request-timeout 2)" grep -q "open after 4 s: 0$" "$T/idle.out"
check "the other 6 refused, counted" test "$(counter http_refused)" -ge 6
check "the 4 cut, counted" test "$(counter http_slow_cut)" -ge 4

finish
