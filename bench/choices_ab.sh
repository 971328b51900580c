#!/usr/bin/env bash
# choices_ab.sh: a request's n choices, before/after (issue 14 item 4): one
# completion with n=4 on a fresh node, OLD and NEW binaries interleaved, RUNS
# times each. Prints per run the node's CPU time for the request (utime +
# stime from /proc, in ms), its wall time, and the answer's usage and
# timings.prompt_n; then the medians. CPU time is the figure on a shared
# machine; wall time only on a quiet one.
# usage: bench/choices_ab.sh OLD_LLMESH NEW_LLMESH [RUNS] [MODEL.gguf]
set -u
OLD=${1:?old llmesh binary}; NEW=${2:?new llmesh binary}; RUNS=${3:-7}
SRC=$(cd "$(dirname "$0")/.." && pwd)
MODEL=${4:-$SRC/models/kjv-llama-6.3M-q8_0.gguf}
ID=$(basename "$MODEL" .gguf)
T=$(mktemp -d /tmp/choices-ab.XXXXXX)
PID=
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null; rm -rf "$T"; }
trap cleanup EXIT
TICK=$(getconf CLK_TCK)
P="And it came to pass in those days, that there went out a decree from Caesar Augustus, that all the world should be taxed. And this taxing was first made when Cyrenius was governor of Syria. And all went to be taxed, every one into his own city. And Joseph also went up from Galilee, out of the city of Nazareth, into Judaea, unto the city of David, which is called Bethlehem; because he was of the house and lineage of David: To be taxed with Mary his espoused wife, being great with child. And so it was, that, while they were there, the days were accomplished that she should be delivered."
cpu_ms() { awk -v t="$TICK" '{ print ($14 + $15) * 1000 / t }' "/proc/$1/stat"; }
median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
for run in $(seq "$RUNS"); do
  for which in old new; do
    bin=$OLD; [ "$which" = new ] && bin=$NEW
    rm -rf "$T/home"
    "$bin" serve --home "$T/home" --listen 127.0.0.1:0 --port 0 --console 0 --model "$MODEL" >"$T/out" 2>"$T/log" &
    PID=$!
    for _ in $(seq 300); do grep -q '^token: ' "$T/out" 2>/dev/null && break; sleep 0.1; done
    API=$(sed -n 's/^api: //p' "$T/out")
    curl -sf "$API/completions" -d "{\"model\":\"$ID\",\"prompt\":\"warm up\",\"max_tokens\":4}" >/dev/null
    c0=$(cpu_ms "$PID"); t0=$(date +%s%N)
    curl -sf "$API/completions" -d "{\"model\":\"$ID\",\"prompt\":\"$P\",\"max_tokens\":192,\"seed\":$run,\"n\":4}" >"$T/a.json"
    t1=$(date +%s%N); c1=$(cpu_ms "$PID")
    cpu=$(awk -v a="$c0" -v b="$c1" 'BEGIN { print b - a }'); wall=$(( (t1 - t0) / 1000000 ))
    echo "$which $cpu $wall" >>"$T/rows"
    echo "$which run $run: cpu ${cpu} ms, wall ${wall} ms, $(jq -c '{prompt: .usage.prompt_tokens, completion: .usage.completion_tokens, prompt_n: .timings.prompt_n}' "$T/a.json"), load $(cut -d' ' -f1 /proc/loadavg)"
    kill "$PID"; wait "$PID" 2>/dev/null; PID=
  done
done
for which in old new; do
  echo "$which: median cpu $(awk -v w=$which '$1 == w { print $2 }' "$T/rows" | median) ms, median wall $(awk -v w=$which '$1 == w { print $3 }' "$T/rows" | median) ms"
done
