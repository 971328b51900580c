#!/usr/bin/env bash
# Shutdown: SIGTERM lets a short request finish, closes a long stream with an
# error event and [DONE] (also when the client reaches the host through
# another node), exits within a couple of seconds; a second signal exits at
# once. Generation is slowed with LLMESH_DEBUG_TOKEN_DELAY_MS so that
# requests are still in flight when the signal comes.
set -u
. "$(dirname "$0")/common.bash"
MODEL_ID=kjv-llama-6.3M-q8_0

stream_body() { jq -n --arg m "$MODEL_ID" --argjson n "$1" '{model: $m, prompt: "In the beginning", max_tokens: $n, stream: true, temperature: 0}'; }
first_chunk() { grep -q '^data: {' "$1"; }
exited() { ! kill -0 "$1" 2>/dev/null; }

# 1. A short request finishes normally within the grace period.
LLMESH_DEBUG_TOKEN_DELAY_MS=40 start_node A serve --model "$DEMO_MODEL"
curl -sN "$A_API/completions" -d "$(stream_body 12)" >"$T/short.txt" &
curl_pid=$!
wait_for 20 first_chunk "$T/short.txt" || die "no first chunk from A"
t0=$(date +%s%N)
kill -TERM "$A_PID"
wait_for 10 exited "$A_PID"
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
echo "A exited ${ms} ms after SIGTERM (short request in flight)"
check "A exits within 5 s of SIGTERM" [ "$ms" -lt 5000 ]
wait "$curl_pid"
check "the short request finished normally" grep -q '"finish_reason":"length"' "$T/short.txt"
check "the short stream ends with [DONE]" bash -c "grep -v '^\$' '$T/short.txt' | tail -n 1 | grep -qx 'data: \[DONE\]'"

# 2. A long local stream is closed with an error event and [DONE].
LLMESH_DEBUG_TOKEN_DELAY_MS=40 start_node L serve --model "$DEMO_MODEL"
curl -sN "$L_API/completions" -d "$(stream_body 200)" >"$T/local.txt" &
c1=$!
wait_for 20 first_chunk "$T/local.txt" || die "no first chunk from L"
t0=$(date +%s%N)
kill -TERM "$L_PID"
wait_for 10 exited "$L_PID"
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
echo "L exited ${ms} ms after SIGTERM (a long stream in flight)"
check "L exits within 5 s of SIGTERM with a stream in flight" [ "$ms" -lt 5000 ]
wait "$c1"

# 3. The same through another node: B forwards to H, H shuts down.
LLMESH_DEBUG_TOKEN_DELAY_MS=40 start_node H serve --model "$DEMO_MODEL"
start_node B serve --join "$H_TOKEN"
b_sees_h() { curl -sf "$B_API/models" | jq -e --arg m "$MODEL_ID" '.data | map(.id) | index($m)'; }
wait_for 30 b_sees_h || die "B never learned of H's model"
curl -sN "$B_API/completions" -d "$(stream_body 200)" >"$T/forwarded.txt" &
c2=$!
wait_for 20 first_chunk "$T/forwarded.txt" || die "no first chunk through B"
kill -TERM "$H_PID"
wait_for 10 exited "$H_PID"
wait "$c2"
for f in local forwarded; do
  check "$f stream carries an error event" grep -q '^data: {"error"' "$T/$f.txt"
  check "$f stream ends with [DONE]" bash -c "grep -v '^\$' '$T/$f.txt' | tail -n 1 | grep -qx 'data: \[DONE\]'"
  check "$f stream was cut short" bash -c "[ \$(grep -c '^data: {\"id' '$T/$f.txt') -lt 150 ]"
done
check "B is still up" kill -0 "$B_PID"

# 4. A second signal exits at once.
LLMESH_DEBUG_TOKEN_DELAY_MS=40 start_node D serve --model "$DEMO_MODEL"
curl -sN "$D_API/completions" -d "$(stream_body 200)" >"$T/d.txt" &
wait_for 20 first_chunk "$T/d.txt" || die "no first chunk from D"
kill -TERM "$D_PID"; kill -INT "$D_PID"
wait_for 3 exited "$D_PID"
check "a second signal exits at once" exited "$D_PID"
wait "$D_PID" 2>/dev/null
rc=$?
check "exit code after a second signal is 130 (got $rc)" [ "$rc" = 130 ]


# 5. A crash leaves the crashing thread's stack in the log (lib/crash.c): the
#    frames map back to source lines with addr2line, so a crash seen once in
#    CI can be read. The default action follows (status 128 + 11). Sanitizer
#    builds keep their own reports instead.
if ! nm "$LLMESH" 2>/dev/null | grep -qE '__(asan|tsan)_init'; then
  start_node E serve --model "$DEMO_MODEL"
  kill -SEGV "$E_PID"
  wait_for 5 exited "$E_PID"
  wait "$E_PID" 2>/dev/null
  rc=$?
  check "a fatal signal ends the node with its default status (got $rc)" [ "$rc" = 139 ]
  check "the log names the signal" grep -q '^llmesh: fatal signal 11 (SIGSEGV)' "$T/E.log"
  check "the log holds the stack, with frames of llmesh itself" grep -q 'llmesh(+0x[0-9a-f]*)' "$T/E.log"
  frame=$(grep -o 'llmesh(+0x[0-9a-f]*)' "$T/E.log" | sed -n '2s/.*(+\(0x[0-9a-f]*\))/\1/p')
  check "a frame maps back to a function with addr2line" \
    bash -c "[ -n '$frame' ] && addr2line -f -e '$LLMESH' $frame | head -n 1 | grep -qv '^??\$'"
fi

finish
