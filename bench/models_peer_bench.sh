#!/usr/bin/env bash
# models_peer_bench.sh: how fast a model file crosses the mesh from a peer
# (issue 11, item 6), against the same file from the local fake hub
# (tests/tools/fake_hub.py, a Python HTTP server: a reference point on the
# same loopback, not the real hub's speed).
#
#   bench/models_peer_bench.sh BUILD_DIR MODEL.gguf [RUNS]
#
# Each run: fresh Hugging Face caches; A starts with `serve --model
# Org/Repo/MODEL.gguf` (downloaded from the fake hub); B joins and loads the
# same reference with the load API (fetched from A over the mesh). The times
# are read from the logs: the download's first line to its "SHA-256 verified"
# (the whole-file hash included). Prints each run and the medians.
set -u
BUILD=$(realpath "$1")
MODEL=$(realpath "$2")
RUNS=${3:-3}
SRC=$(cd "$(dirname "$0")/.." && pwd)
T=$(mktemp -d /tmp/llmesh-peerbench-XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done; sleep 1
            for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done; rm -rf "$T"; }
trap cleanup EXIT
NAME=$(basename "$MODEL")
mkdir -p "$T/root/Bench/Repo"
ln "$MODEL" "$T/root/Bench/Repo/$NAME" 2>/dev/null || cp "$MODEL" "$T/root/Bench/Repo/$NAME"
python3 "$SRC/tests/tools/fake_hub.py" --root "$T/root" --port-file "$T/hub.port" 2>"$T/hub.log" &
PIDS+=($!)
for _ in $(seq 50); do [ -s "$T/hub.port" ] && break; sleep 0.1; done
export HF_ENDPOINT="http://127.0.0.1:$(cat "$T/hub.port")"
unset HF_HUB_CACHE HF_TOKEN
REF="Bench/Repo/$NAME"
SIZE=$(stat -c %s "$MODEL")

start() { # NAME ARGS...: sets PID_NAME, API_NAME, CONSOLE_NAME, TOKEN_NAME
  local n=$1; shift
  HF_HOME="$T/hf-$n" "$BUILD/llmesh" serve --home "$T/$n" --listen 127.0.0.1:0 --port 0 --console 0 "$@" \
    >"$T/$n.out" 2>"$T/$n.log" &
  PIDS+=($!)
  eval "PID_$n=$!"
  for _ in $(seq 1200); do grep -q '^token: ' "$T/$n.out" 2>/dev/null && break; sleep 0.1; done
  eval "CONSOLE_$n=$(sed -n 's/^console: //p' "$T/$n.out")"
  eval "TOKEN_$n=$(sed -n 's/^token: //p' "$T/$n.out")"
}
# Seconds from the first download line to "SHA-256 verified" in a log.
span() { python3 - "$1" <<'PY'
import sys, datetime
lines = open(sys.argv[1]).read().splitlines()
start = [l.split()[0] for l in lines if " needs " in l or ": from peer " in l]
end = [l.split()[0] for l in lines if "SHA-256 verified" in l]
p = lambda s: datetime.datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ")
# the peer's start when there is one (the fit check ran before it), else the fit check's end
print("%.2f" % (p(end[-1]) - p(start[-1])).total_seconds() if start and end else "nan")
PY
}
hubs=(); peers=()
for r in $(seq "$RUNS"); do
  rm -rf "$T"/hf-* "$T"/A "$T"/B
  start A --model "$REF" --threads 1
  start B --join "$TOKEN_A" --threads 1
  for _ in $(seq 100); do curl -sf "$CONSOLE_B/api/status" | jq -e '.peer_files >= 1' >/dev/null && break; sleep 0.2; done
  curl -sf -o /dev/null "$CONSOLE_B/api/models/load" -d "{\"model\": \"$REF\"}"
  for _ in $(seq 1200); do
    curl -sf "$CONSOLE_B/api/status" | jq -e '.loads[0].state | . == "ready" or . == "failed"' >/dev/null && break
    sleep 0.25
  done
  from_peer=$(curl -sf "$CONSOLE_B/api/status" | jq '.downloads.from_peers_bytes')
  # A's hub download: from "needs" (the fit check's end) to verified.
  h=$(span "$T/A.log")
  p=$(span "$T/B.log")
  echo "run $r: hub (fake, Python) $h s, from peer A $p s ($from_peer of $SIZE bytes from the peer)"
  hubs+=("$h"); peers+=("$p")
  kill -TERM "$PID_A" "$PID_B"; wait "$PID_A" "$PID_B" 2>/dev/null
done
med() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
mh=$(med "${hubs[@]}"); mp=$(med "${peers[@]}")
echo "median of $RUNS: hub $mh s ($(echo "$SIZE / $mh / 1000000" | bc) MB/s), peer $mp s ($(echo "$SIZE / $mp / 1000000" | bc) MB/s), $SIZE bytes"
