# netns.bash: network-namespace topologies for multi-process tests. Sourced
# (after common.bash), never run: CMake registers only tests/integration/*.sh.
#
#   netns_init                     guard (skips the test if netns is impossible),
#                                  "internet" bridge in a switch namespace, cleanup trap
#   netns_add_host NAME [IP]       a host namespace on the bridge (10.77.0.X/24)
#   netns_nat_site SITE N [symmetric]
#                                  a router namespace (nftables masquerade on its
#                                  outside interface) with N hosts SITE1..SITEN behind it
#   netns_netem NAME "delay 50ms 20ms loss 10%"
#                                  impair NAME's uplink (egress): tc netem, or a
#                                  userspace nfqueue emulator when the kernel lacks netem
#   netns_exec NAME CMD...         run CMD inside NAME's namespace
#   netns_start_node NAME serve|client ARGS...
#                                  llmesh inside NAME's namespace on fixed ports
#   netns_status NAME              NAME's /api/status (JSON)
#
# Names: every namespace is "lm<PID of the test>" + a short name, so runs never
# collide. Addresses: 10.77.0.0/24 is the shared segment ("internet"); NAT site k
# uses 10.77.k.0/24 inside and 10.77.0.(200+k) outside. Nothing is ever created
# or changed in the namespace the test runs in: every `ip` command is aimed at a
# namespace made here, and every interface is created directly inside one.
# On exit (any exit) the processes inside our namespaces are killed and every
# namespace is deleted, which deletes the veths, bridges and nftables rules in it.

NETNS_PREFIX="lm$$"
NETNS_CREATED=()       # namespace names, deleted on exit
NETNS_HOSTS=()         # short names of hosts (not switch/routers)
NETNS_NEXT_IP=1        # next host number on 10.77.0.0/24
NETNS_NETEM_BACKEND="" # tc | nfqueue, once netns_netem ran
NETNS_SW="${NETNS_PREFIX}sw"

netns_ns() { echo "${NETNS_PREFIX}$1"; }
netns_exec() { local n=$1; shift; ip netns exec "$(netns_ns "$n")" "$@"; }

# A test that cannot run here is skipped: it says why and exits 0.
netns_skip() {
  echo "SKIP: $*"
  echo "0 passed, 0 failed (skipped: $*)"
  exit 0
}

netns_cleanup() {
  local ns p
  # Processes still inside our namespaces (nfqueue emulators, nodes that did
  # not stop): they were started here, so end them by pid.
  for ns in "${NETNS_CREATED[@]}"; do
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill -TERM "$p" 2>/dev/null; done
  done
  for ns in "${NETNS_CREATED[@]}"; do
    for _ in $(seq 20); do [ -z "$(ip netns pids "$ns" 2>/dev/null)" ] && break; sleep 0.1; done
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$p" 2>/dev/null; done
  done
  for ns in "${NETNS_CREATED[@]}"; do ip netns del "$ns" 2>/dev/null; done
  NETNS_CREATED=()
}

# Namespaces left by an earlier run of this harness that was itself killed -9
# (lm<pid>... whose pid no longer exists). Other runs in progress are left alone.
netns_sweep_stale() {
  local ns pid
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}'); do
    [[ "$ns" =~ ^lm([0-9]+)(sw|h[0-9]+|[a-z]+[0-9]*)$ ]] || continue
    pid=${BASH_REMATCH[1]}
    [ "$pid" = "$$" ] && continue
    kill -0 "$pid" 2>/dev/null && continue
    [ -z "$(ip netns pids "$ns" 2>/dev/null)" ] || continue
    ip netns del "$ns" 2>/dev/null
  done
}

netns_new() { # netns_new FULLNAME: a namespace with lo up
  ip netns add "$1" || return 1
  NETNS_CREATED+=("$1")
  ip -n "$1" link set lo up
}

netns_init() {
  [ "$(id -u)" -eq 0 ] || netns_skip "network namespaces need root (uid $(id -u))"
  command -v ip >/dev/null || netns_skip "no 'ip' command (apt-get install iproute2; see scripts/deps.sh)"
  command -v nft >/dev/null || netns_skip "no 'nft' command (apt-get install nftables; see scripts/deps.sh)"
  trap 'cleanup; netns_cleanup' EXIT
  netns_sweep_stale
  if ! netns_new "$NETNS_SW" 2>"$T/netns-init.err"; then
    netns_skip "cannot create a network namespace here: $(cat "$T/netns-init.err")"
  fi
  ip -n "$NETNS_SW" link add br0 type bridge || die "cannot create a bridge in $NETNS_SW"
  ip -n "$NETNS_SW" link set br0 up
}

# netns_link NS_A IF_A NS_B IF_B : a veth pair between two of our namespaces
netns_link() {
  ip -n "$1" link add "$2" type veth peer name "$4" netns "$3" || die "veth $1/$2 <-> $3/$4"
  ip -n "$1" link set "$2" up
  ip -n "$3" link set "$4" up
}

# netns_add_host NAME [IP] : namespace lm<pid>NAME, eth0 = IP/24 on the bridge.
# Sets NAME_IP and NAME_UPLINK (the interface netns_netem impairs).
netns_add_host() {
  local name=$1 ip=${2:-}
  if [ -z "$ip" ]; then ip="10.77.0.$NETNS_NEXT_IP"; NETNS_NEXT_IP=$((NETNS_NEXT_IP + 1)); fi
  local ns; ns=$(netns_ns "$name")
  netns_new "$ns" || die "cannot create namespace $ns"
  netns_link "$NETNS_SW" "v$name" "$ns" eth0
  ip -n "$NETNS_SW" link set "v$name" master br0
  ip -n "$ns" addr add "$ip/24" dev eth0
  NETNS_HOSTS+=("$name")
  eval "${name}_IP=$ip; ${name}_UPLINK=eth0"
}

# netns_nat_site SITE N [symmetric] : router namespace lm<pid>SITE with wan0 =
# 10.77.0.(200+k) on the bridge and lan0 = 10.77.k.1/24 (a bridge), nftables
# masquerade on wan0 and no inbound forwarding except replies; hosts SITE1..SITEN
# at 10.77.k.(10+i) with a default route through the router. Linux masquerade
# keeps the source port when it can (endpoint-independent mapping, so hole
# punching can work); "symmetric" uses random ports per mapping instead
# (hole punching cannot work; a relay is needed). Like a home router, the
# router drops unsolicited packets to its own WAN address: without that, Linux
# accepts a peer's early punch locally and records a conntrack entry for it,
# our own outbound packet to that peer then clashes with it and masquerade
# moves it to another port, so a simultaneous open never meets
# (docs/reachability.md).
NETNS_SITES=0
netns_nat_site() {
  local site=$1 n=$2 mode=${3:-cone}
  NETNS_SITES=$((NETNS_SITES + 1))
  local k=$NETNS_SITES r; r=$(netns_ns "$site")
  netns_new "$r" || die "cannot create namespace $r"
  netns_link "$NETNS_SW" "v$site" "$r" wan0
  ip -n "$NETNS_SW" link set "v$site" master br0
  ip -n "$r" addr add "10.77.0.$((200 + k))/24" dev wan0
  ip -n "$r" link add lan0 type bridge
  ip -n "$r" link set lan0 up
  ip -n "$r" addr add "10.77.$k.1/24" dev lan0
  ip netns exec "$r" sysctl -qw net.ipv4.ip_forward=1
  local masq="masquerade"
  [ "$mode" = symmetric ] && masq="masquerade random"
  ip netns exec "$r" nft -f - <<EOF || die "nftables in $r"
table ip lmnat {
  chain masq { type nat hook postrouting priority srcnat; oifname "wan0" counter $masq; }
  chain filter_fwd {
    type filter hook forward priority filter; policy drop;
    ct state established,related accept
    iifname "lan0" oifname "wan0" accept
  }
  chain filter_in { type filter hook input priority filter; policy accept; iifname "wan0" ct state new drop; }
}
EOF
  eval "${site}_IP=10.77.0.$((200 + k)); ${site}_UPLINK=wan0"
  local i h ns
  for i in $(seq "$n"); do
    h="$site$i"; ns=$(netns_ns "$h")
    netns_new "$ns" || die "cannot create namespace $ns"
    netns_link "$r" "v$i" "$ns" eth0
    ip -n "$r" link set "v$i" master lan0
    ip -n "$ns" addr add "10.77.$k.$((10 + i))/24" dev eth0
    ip -n "$ns" route add default via "10.77.$k.1"
    NETNS_HOSTS+=("$h")
    eval "${h}_IP=10.77.$k.$((10 + i)); ${h}_UPLINK=eth0"
  done
}

# The userspace stand-in for netem (some kernels, e.g. minimal VM kernels, are
# built without sch_netem): iptables queues every packet leaving the interface
# to NFQUEUE 0 and an emulator gives each a verdict (tests/tools/nfq_delay.c,
# or where it is not built this Python program): drop with probability
# LOSS, else accept after DELAY +- JITTER ms (uniform, like netem without a
# distribution table; packets may reorder, as with netem). Only the packet
# metadata crosses to userspace.
netns_nfqueue_py() {
  cat <<'EOF'
import socket, struct, sys, random, heapq, time, select, errno
delay, jitter, loss = float(sys.argv[1]) / 1000, float(sys.argv[2]) / 1000, float(sys.argv[3]) / 100
QUEUE = 0
s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 12)  # NETLINK_NETFILTER
try: s.setsockopt(socket.SOL_SOCKET, 33, 16 << 20)         # SO_RCVBUFFORCE
except OSError: s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
s.bind((0, 0))
seq = 0
def send(msg, flags, attrs):
    global seq
    seq += 1
    body = struct.pack('=BBH', 0, 0, socket.htons(QUEUE))
    for t, d in attrs:
        l = 4 + len(d)
        body += struct.pack('=HH', l, t) + d + b'\0' * (-l % 4)
    s.send(struct.pack('=IHHII', 16 + len(body), (3 << 8) | msg, flags, seq, 0) + body)
def ack():
    d = s.recv(65536)
    typ = struct.unpack_from('=H', d, 4)[0]
    if typ == 2 and struct.unpack_from('=i', d, 16)[0] != 0:
        sys.exit('nfqueue config refused: errno %d' % -struct.unpack_from('=i', d, 16)[0])
REQ, ACK = 1, 4
send(2, REQ | ACK, [(1, struct.pack('!BBH', 1, 0, 0))]); ack()                 # CMD_BIND
send(2, REQ | ACK, [(2, struct.pack('!IB', 0, 1)), (3, struct.pack('!I', 65536))]); ack()  # COPY_META, maxlen
print('ready', flush=True)
due = []
while True:
    now = time.monotonic()
    while due and due[0][0] <= now:
        _, pid = heapq.heappop(due)
        send(1, REQ, [(2, struct.pack('!II', 1, pid))])                          # NF_ACCEPT
    r, _, _ = select.select([s], [], [], max(0.0, due[0][0] - now) if due else 1.0)
    if not r: continue
    try: d = s.recv(1 << 20)
    except OSError as e:
        if e.errno == errno.ENOBUFS: continue
        raise
    off = 0
    while off + 16 <= len(d):
        ln, typ = struct.unpack_from('=IH', d, off)
        if ln < 16: break
        if typ == (3 << 8):                                                      # NFQNL_MSG_PACKET
            a = off + 20
            while a + 4 <= off + ln:
                al, at = struct.unpack_from('=HH', d, a)
                if al < 4: break
                if at & 0x7fff == 1:                                             # NFQA_PACKET_HDR
                    pid = struct.unpack_from('!I', d, a + 4)[0]
                    if random.random() < loss:
                        send(1, REQ, [(2, struct.pack('!II', 0, pid))])          # NF_DROP
                    else:
                        t = time.monotonic() + max(0.0, delay + random.uniform(-jitter, jitter))
                        heapq.heappush(due, (t, pid))
                    break
                a += (al + 3) & ~3
        off += (ln + 3) & ~3
EOF
}

netns_ms() { # "50ms" / "0.05s" / "50" -> milliseconds
  local v=$1
  case "$v" in
    *ms) echo "${v%ms}" ;;
    *us) awk -v x="${v%us}" 'BEGIN { print x / 1000 }' ;;
    *s) awk -v x="${v%s}" 'BEGIN { print x * 1000 }' ;;
    *) echo "$v" ;;
  esac
}

# netns_netem NAME SPEC : impair the egress of NAME's uplink. SPEC is netem's
# syntax; the fallback understands "delay D [J]" and "loss P%". Sets
# NETNS_NETEM_BACKEND. NETNS_NETEM=tc|nfqueue forces one backend.
netns_netem() {
  local name=$1 spec=$2 ns dev
  ns=$(netns_ns "$name"); eval "dev=\$${name}_UPLINK"
  if [ "${NETNS_NETEM:-}" != nfqueue ] &&
     ip -n "$ns" qdisc replace dev "$dev" root netem $spec 2>"$T/netem.err"; then
    NETNS_NETEM_BACKEND=tc
    return 0
  fi
  [ "${NETNS_NETEM:-}" = tc ] && die "tc netem failed in $ns: $(cat "$T/netem.err")"
  # The emulator: tests/tools/nfq_delay (C, built beside llmesh), else the
  # Python one below (a few times the CPU per packet).
  local nfq_bin; nfq_bin="$(dirname "$LLMESH")/nfq_delay"
  [ -x "$nfq_bin" ] || command -v python3 >/dev/null || die "no netem in this kernel and no emulator for the fallback"
  command -v iptables >/dev/null || die "no netem in this kernel and no iptables for the fallback"
  local d=0 j=0 l=0 w
  set -- $spec
  while [ $# -gt 0 ]; do
    w=$1; shift
    case "$w" in
      delay) d=$(netns_ms "$1"); shift
             if [ $# -gt 0 ] && [[ "$1" =~ ^[0-9.]+(ms|us|s)?$ ]]; then j=$(netns_ms "$1"); shift; fi
             if [ $# -gt 0 ] && [[ "$1" =~ ^[0-9.]+%$ ]]; then shift; fi ;;  # correlation: ignored
      loss) l=${1%\%}; shift
            if [ $# -gt 0 ] && [[ "$1" =~ ^[0-9.]+%$ ]]; then shift; fi ;;
      *) die "netns_netem fallback: unsupported '$w' in '$spec'" ;;
    esac
  done
  # One emulator per namespace: replace an earlier one.
  local old; eval "old=\${NETNS_NFQ_${name}:-}"
  if [ -n "$old" ]; then
    ip netns exec "$ns" iptables -t mangle -F POSTROUTING 2>/dev/null
    kill "$old" 2>/dev/null
  fi
  if [ -x "$nfq_bin" ]; then
    ip netns exec "$ns" "$nfq_bin" "$d" "$j" "$l" >"$T/nfq-$name.out" 2>"$T/nfq-$name.log" &
  else
    netns_nfqueue_py >"$T/netns_nfqueue.py"
    ip netns exec "$ns" python3 "$T/netns_nfqueue.py" "$d" "$j" "$l" >"$T/nfq-$name.out" 2>"$T/nfq-$name.log" &
  fi
  local pid=$!
  eval "NETNS_NFQ_${name}=$pid"
  for _ in $(seq 50); do grep -q ready "$T/nfq-$name.out" 2>/dev/null && break; sleep 0.1; done
  grep -q ready "$T/nfq-$name.out" || die "nfqueue emulator in $ns did not start: $(cat "$T/nfq-$name.log")"
  # xtables' NFQUEUE target (through iptables-nft): kernels without nft_queue
  # still have it.
  ip netns exec "$ns" iptables -t mangle -A POSTROUTING -o "$dev" -j NFQUEUE --queue-num 0 --queue-bypass \
    || die "iptables NFQUEUE rule in $ns"
  NETNS_NETEM_BACKEND=nfqueue
}

# netns_start_node NAME serve|client ARGS... : llmesh in NAME's namespace, mesh
# on NAME_IP:9337, API on 127.0.0.1:9337 and console on 127.0.0.1:3131 (each
# namespace has its own loopback, so every node uses the same ports). Waits 60 s
# at most for the token; sets NAME_PID and NAME_TOKEN. netns_launch_node starts
# without waiting (then netns_wait_token NAME). NETNS_HOME_SUFFIX, if set, gives
# a fresh identity (home $T/NAME$NETNS_HOME_SUFFIX).
NETNS_MESH_PORT=9337
netns_launch_node() {
  local name=$1; shift
  local cmd=$1; shift
  local ip; eval "ip=\$${name}_IP"
  ip netns exec "$(netns_ns "$name")" "$LLMESH" "$cmd" --home "$T/$name${NETNS_HOME_SUFFIX:-}" \
      --listen "$ip:$NETNS_MESH_PORT" --http-host 127.0.0.1 --port 9337 --console 3131 "$@" \
      >"$T/$name.out" 2>"$T/$name.log" &
  local pid=$!   # ip netns exec execs the command: this is llmesh's pid
  disown "$pid"  # no "Killed" job notice when a test kills it on purpose
  PIDS+=("$pid")
  eval "${name}_PID=$pid"
}
netns_wait_token() {
  local name=$1 pid; eval "pid=\$${name}_PID"
  for _ in $(seq 600); do
    grep -q '^token: ' "$T/$name.out" 2>/dev/null && break
    kill -0 "$pid" 2>/dev/null || die "$name exited early"
    sleep 0.1
  done
  grep -q '^token: ' "$T/$name.out" || die "$name printed no token within 60 s"
  eval "${name}_TOKEN=$(sed -n 's/^token: //p' "$T/$name.out")"
}
netns_start_node() { netns_launch_node "$@"; netns_wait_token "$1"; }

# netns_stop_node NAME [SIGNAL] : signal NAME's llmesh (TERM by default) and wait
# 10 s at most for it to exit (then KILL).
netns_stop_node() {
  local name=$1 sig=${2:-TERM} pid; eval "pid=\$${name}_PID"
  kill -"$sig" "$pid" 2>/dev/null
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null
}

netns_curl() { local n=$1; shift; ip netns exec "$(netns_ns "$n")" curl -sf --max-time 5 "$@"; }
netns_status() { netns_curl "$1" http://127.0.0.1:3131/api/status; }
netns_node_id() { netns_status "$1" | jq -r .node_id; }

# netns_sees NAME PEER_ID STATE : NAME lists PEER_ID in that state
netns_sees() {
  netns_status "$1" | jq -e --arg id "$2" --arg s "$3" '.peers[] | select(.id == $id and .state == $s)' >/dev/null
}
# netns_peer_state NAME PEER_ID : the state NAME shows for PEER_ID, "gone" if
# not listed, "down" if NAME does not answer
netns_peer_state() {
  local j; j=$(netns_status "$1") || { echo down; return; }
  jq -r --arg id "$2" '[.peers[] | select(.id == $id) | .state] | .[0] // "gone"' <<<"$j"
}
# netns_alive_count NAME : how many peers NAME lists as alive
netns_alive_count() {
  netns_status "$1" | jq '[.peers[] | select(.state == "alive")] | length'
}
