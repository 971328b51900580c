# common.bash: helpers for multi-process tests. Sourced, not run.
# Every wait is bounded; every process started with start_node is killed and
# every temporary directory removed on exit.

LLMESH=${LLMESH_BINARY:-$(dirname "$0")/../../build/llmesh}
SRC=${LLMESH_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
DEMO_MODEL="$SRC/models/kjv-llama-6.3M-q8_0.gguf"
T=$(mktemp -d /tmp/llmesh-it-XXXXXX)
PIDS=()
FAILS=0
PASSES=0

cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null
  done
  [ -n "${KEEP_TMP:-}" ] || rm -rf "$T"
}
trap cleanup EXIT

fail() { echo "FAIL: $*"; FAILS=$((FAILS + 1)); }
pass() { echo "ok: $*"; PASSES=$((PASSES + 1)); }
check() { # check "description" command...
  local what=$1; shift
  if "$@" >/dev/null; then pass "$what"; else fail "$what"; fi
}
finish() {
  echo "$PASSES passed, $FAILS failed"
  [ "$FAILS" -eq 0 ]
}
die() { echo "FATAL: $*"; echo "$PASSES passed, $((FAILS + 1)) failed"; for f in "$T"/*.log; do echo "--- $f"; tail -n 30 "$f"; done; exit 1; }

# start_node NAME ARGS... : starts llmesh with its own home, free ports and a
# log at $T/NAME.log; waits (60 s at most) for its "token:" line and sets
# NAME_API, NAME_CONSOLE, NAME_TOKEN.
start_node() {
  local name=$1; shift
  local cmd=$1; shift
  "$LLMESH" "$cmd" --home "$T/$name" --listen 127.0.0.1:0 --port 0 --console 0 "$@" \
      >"$T/$name.out" 2>"$T/$name.log" &
  PIDS+=($!)
  eval "${name}_PID=$!"
  for _ in $(seq 600); do
    grep -q '^token: ' "$T/$name.out" 2>/dev/null && break
    kill -0 "$!" 2>/dev/null || die "$name exited early"
    sleep 0.1
  done
  grep -q '^token: ' "$T/$name.out" || die "$name printed no token within 60 s"
  eval "${name}_API=$(sed -n 's/^api: //p' "$T/$name.out")"
  eval "${name}_CONSOLE=$(sed -n 's/^console: //p' "$T/$name.out")"
  eval "${name}_TOKEN=$(sed -n 's/^token: //p' "$T/$name.out")"
}

# wait_for SECONDS COMMAND... : polls every 0.2 s until COMMAND succeeds.
wait_for() {
  local limit=$1; shift
  local tries=$((limit * 5))
  for _ in $(seq "$tries"); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  return 1
}

# split_ready CONSOLE_URL MODEL STAGES [CURL_ARGS...] : 0 when that console's
# status shows MODEL's plan ready with STAGES stages (curl args: a key).
split_ready() {
  local url=$1 model=$2 n=$3; shift 3
  curl -sf "$@" "$url/api/status" |
    jq -e --arg m "$model" --argjson n "$n" '.plans[] | select(.model == $m and .state == "ready" and (.stages | length) == $n)'
}
