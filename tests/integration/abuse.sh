#!/usr/bin/env bash
# Limits under abuse (issue 13, items 3 and 5), real processes on loopback:
# A serves the demo model and B is a member. At the same time:
# - a member (tests/tools/mesh_flood, holding the secret) opens streams of
#   an unknown type as fast as it can: A counts them as malformed, cuts it
#   off after 20 (--ban-bad-frames 20; the default is 32) and refuses it
#   while the ban lasts (--ban-seconds 45; peers_banned, banned_refused);
# - 300 idle TCP connections to A's API from 127.0.0.1: 64 are kept (the
#   per-address bound), the others shut at once (http_refused); the kept ones
#   are cut when no request came within the deadline (15 s, http_slow_cut);
# - a client trickling a request's headers, a byte every 0.5 s: cut at the
#   deadline too;
# - 60 garbage QUIC Initials (well-formed headers, undecryptable payload)
#   from 127.0.0.3: dropped (the per-address bound on half-open handshakes,
#   16, is not reached by these: a connection whose Initial does not decrypt
#   is discarded at once);
# and meanwhile a normal completion, from another loopback address
# (127.0.0.2: the per-address bound is per address), and a forwarded one
# through B, are answered. No timing threshold but the documented deadline.
set -u
. "$(dirname "$0")/common.bash"

MODEL_ID=kjv-llama-6.3M-q8_0
BODY="{\"model\": \"$MODEL_ID\", \"prompt\": \"In the beginning\", \"max_tokens\": 8, \"temperature\": 0}"
FLOOD=$(dirname "$LLMESH")/mesh_flood
[ -x "$FLOOD" ] || die "no $FLOOD (built with the tests)"
counter() { curl -s --interface 127.0.0.2 "$A_CONSOLE/api/status" | jq -r ".counters.$1"; }

start_node A serve --model "$DEMO_MODEL" --ban-bad-frames 20 --ban-seconds 45
start_node B serve --join "$A_TOKEN"
wait_for 20 bash -c "curl -s '$A_CONSOLE/api/status' | jq -e '[.peers[] | select(.state == \"alive\")] | length == 1'" \
  || die "B did not join A"
A_PORT=$(sed 's#.*:\([0-9]*\)/v1#\1#' <<<"$A_API")

# ---- the abuse, all at once
"$FLOOD" "$T/F" "$A_TOKEN" 8 >"$T/flood.out" 2>"$T/flood.log" &
FLOOD_PID=$!
PIDS+=("$FLOOD_PID")
python3 - "$A_PORT" 300 >"$T/idle.out" 2>&1 <<'PY' &
import socket, sys, time
port, n = int(sys.argv[1]), int(sys.argv[2])
socks = []
for _ in range(n):
    s = socket.socket()
    s.connect(("127.0.0.1", port))
    socks.append(s)
time.sleep(20)                      # past the 15 s deadline
open_now = 0
for s in socks:
    s.setblocking(False)
    try:
        if s.recv(1) != b"":
            open_now += 1
    except BlockingIOError:
        open_now += 1
    except OSError:
        pass
print("idle connections still open after 20 s:", open_now)
PY
IDLE_PID=$!
PIDS+=("$IDLE_PID")
python3 - "$A_PORT" >"$T/slow.out" 2>&1 <<'PY' &
import socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), source_address=("127.0.0.2", 0))
t0 = time.time()
request = b"POST /v1/completions HTTP/1.1\r\nHost: a\r\nContent-Length: 2000\r\n\r\n" + b" " * 2000
try:
    for b in request:
        s.send(bytes([b]))
        time.sleep(0.5)
    print("slow client: never cut")
except OSError:
    print("slow client cut after %.1f s" % (time.time() - t0))
PY
SLOW_PID=$!
PIDS+=("$SLOW_PID")
# QUIC Initials: the mesh port from A's status (its own address).
A_ID=$(curl -s "$A_CONSOLE/api/status" | jq -r .node_id)
A_MESH=$(curl -s "$B_CONSOLE/api/status" | jq -r --arg a "$A_ID" '.peers[] | select(.id == $a) | .addresses[0]')
python3 - "$A_MESH" <<'PY' >"$T/quic.out" 2>&1
import os, socket, sys
host, port = sys.argv[1].rsplit(":", 1)
# A QUIC v1 long-header Initial: 1200 bytes, random connection ids, random
# (undecryptable) payload: the server creates a half-open connection for each
# it accepts, which then times out.
for i in range(60):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.3", 0))        # its own address: the members' is not crowded
    dcid, scid = os.urandom(8), os.urandom(8)
    head = bytes([0xc0, 0, 0, 0, 1, 8]) + dcid + bytes([8]) + scid + bytes([0])
    rest = 1200 - len(head) - 2                      # packet number and payload
    pkt = head + bytes([0x40 | rest >> 8, rest & 0xff]) + os.urandom(rest)
    s.sendto(pkt, (host, int(port)))
    s.close()
print("sent 60 Initials")
PY

# ---- a normal request is answered meanwhile
sleep 2
check "a completion from another address during the abuse" \
  bash -c "[ \$(curl -s --interface 127.0.0.2 -o '$T/c1.json' -w '%{http_code}' -m 30 '$A_API/completions' -d '$BODY') = 200 ]"
check "...with text" jq -e '.choices[0].text | length > 0' "$T/c1.json"
check "a completion forwarded through B during the abuse" \
  bash -c "[ \$(curl -s -o /dev/null -w '%{http_code}' -m 30 '$B_API/completions' -d '$BODY') = 200 ]"

wait "$FLOOD_PID"
echo "flood: $(cat "$T/flood.out")"
check "the flooding member was banned" test "$(counter peers_banned)" -ge 1
check "its bad frames were counted" test "$(counter bad_frames)" -ge 20
check "A's log names the flags' bounds" grep -q "sent 20 malformed frames within 10 s: disconnected, refused for 45 s" "$T/A.log"
check "and its redials refused" wait_for 15 bash -c "[ \$(curl -s --interface 127.0.0.2 '$A_CONSOLE/api/status' | jq .counters.banned_refused) -ge 1 ]"
check "only B is alive on A" bash -c "curl -s --interface 127.0.0.2 '$A_CONSOLE/api/status' | jq -e '[.peers[] | select(.state == \"alive\")] | length == 1'"
check "idle connections over the per-address bound refused" test "$(counter http_refused)" -ge 200
wait "$SLOW_PID"
echo "$(cat "$T/slow.out")"
check "the slow client was cut" grep -q "slow client cut" "$T/slow.out"
wait "$IDLE_PID"
echo "$(cat "$T/idle.out")"
check "idle connections cut at the deadline" grep -q "still open after 20 s: 0$" "$T/idle.out"
check "slow and idle cuts counted" test "$(counter http_slow_cut)" -ge 64
check "/metrics shows the limits" bash -c "curl -s --interface 127.0.0.2 '$A_CONSOLE/metrics' | grep -Eq '^llmesh_http_slow_cut_total [1-9]' && curl -s --interface 127.0.0.2 '$A_CONSOLE/metrics' | grep -Eq '^llmesh_peers_banned_total [1-9]'"
check "a completion after the abuse" \
  bash -c "[ \$(curl -s -o /dev/null -w '%{http_code}' -m 30 '$A_API/completions' -d '$BODY') = 200 ]"
check "B is still alive on A" bash -c "curl -s '$A_CONSOLE/api/status' | jq -e --arg b \"\$(curl -s '$B_CONSOLE/api/status' | jq -r .node_id)\" '.peers[] | select(.id == \$b) | .state == \"alive\"'"

finish
