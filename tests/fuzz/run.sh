#!/usr/bin/env bash
# run.sh: every libFuzzer target, with its corpus and dictionary, under
# ASan + UBSan, for a fixed time each; then one line per target: executions,
# coverage (edges, features), corpus size and findings.
#
#   tests/fuzz/run.sh [--minutes N] [--jobs N] [--build DIR] [--prebuilt] [--save] [TARGET...]
#
# --minutes N   time per target (default 1; fractions allowed: 0.5)
# --jobs N      targets run at the same time (default 1); each takes a core
# --build DIR   the fuzz build tree (default build-fuzz): configured here with
#               clang, -DLLMESH_FUZZ=ON -DLLMESH_SANITIZE=ON, built if needed
# --prebuilt    run the targets already built in DIR as they are (no
#               configure, no build: a long campaign while the tree changes)
# --save        merge the inputs that found new coverage back into
#               tests/fuzz/corpus/NAME (minimised with -merge=1)
# TARGET        names without the fuzz_ prefix (default: every fuzz_*.c)
#
# Work corpora and findings live in DIR/fuzz-work/NAME and DIR/fuzz-findings
# (crash-*, leak-*, timeout-*, oom-*). The exit status is 1 when any target
# found something, 2 when one could not run (build, a bad dictionary).
# Targets run one after the other, or N at a time with --jobs N (one core
# each); the table is printed in the order given once all have finished.
set -u
SRC=$(cd "$(dirname "$0")/../.." && pwd)
MINUTES=1
BUILD="$SRC/build-fuzz"
SAVE=0
PREBUILT=0
JOBS_AT_ONCE=1
TARGETS=()
while [ $# -gt 0 ]; do
  case $1 in
    --minutes) MINUTES=$2; shift 2 ;;
    --jobs) JOBS_AT_ONCE=$2; shift 2 ;;
    --build) BUILD=$(realpath -m "$2"); shift 2 ;;
    --prebuilt) PREBUILT=1; shift ;;
    --save) SAVE=1; shift ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    -*) echo "run.sh: unknown option $1" >&2; exit 2 ;;
    *) TARGETS+=("$1"); shift ;;
  esac
done
if [ ${#TARGETS[@]} -eq 0 ]; then
  for f in "$SRC"/tests/fuzz/fuzz_*.c; do n=$(basename "$f" .c); TARGETS+=("${n#fuzz_}"); done
fi
SECONDS_EACH=$(awk -v m="$MINUTES" 'BEGIN { s = int(m * 60 + 0.5); print (s < 1 ? 1 : s) }')

if [ "$PREBUILT" = 0 ]; then
  command -v clang >/dev/null || { echo "run.sh: clang is needed (scripts/deps.sh installs it)" >&2; exit 2; }
  cmake -S "$SRC" -B "$BUILD" -DCMAKE_C_COMPILER=clang -DLLMESH_FUZZ=ON -DLLMESH_SANITIZE=ON \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null || exit 2
  names=()
  for t in "${TARGETS[@]}"; do names+=("fuzz_$t"); done
  cmake --build "$BUILD" -j "${JOBS:-2}" --target "${names[@]}" >/dev/null || { echo "run.sh: build failed" >&2; exit 2; }
fi

WORK="$BUILD/fuzz-work"
FIND="$BUILD/fuzz-findings"
mkdir -p "$WORK" "$FIND"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

# One target: runs it, writes its table line (and notes) to $WORK/NAME.result.
run_one() {
  local t=$1 bin seed dict log before after execs rate last edges feats corp new
  local -a args
  bin="$BUILD/fuzz_$t"
  seed="$SRC/tests/fuzz/corpus/$t"
  dict="$SRC/tests/fuzz/dict/$t.dict"
  mkdir -p "$WORK/$t"
  args=(-max_total_time="$SECONDS_EACH" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048
        -artifact_prefix="$FIND/$t-")
  [ -f "$dict" ] && args+=(-dict="$dict")
  log="$WORK/$t.log"
  before=$(ls "$FIND" | grep -c "^$t-" || true)
  "$bin" "${args[@]}" "$WORK/$t" "$seed" >"$log" 2>&1
  after=$(ls "$FIND" | grep -c "^$t-" || true)
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  # The last status line: "#N  KIND cov: E ft: F corp: C/..."
  last=$(grep -E '^#[0-9]+.*cov: ' "$log" | tail -1)
  edges=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  feats=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  corp=$(sed -n 's/.* corp: \([0-9]*\).*/\1/p' <<<"$last")
  new=$((after - before))
  {
    printf '%-14s %6s %12s %9s %7s %8s %7s %9s\n' "$t" "$SECONDS_EACH" "${execs:-?}" "${rate:-?}" \
      "${edges:-?}" "${feats:-?}" "${corp:-?}" "$new"
    if [ -z "$execs" ]; then
      echo "    did not run: $(tail -n 2 "$log" | tr '\n' ' ')(log: $log)"
    fi
    if [ "$new" -gt 0 ]; then
      ls "$FIND" | grep "^$t-" | sed 's/^/    finding: /'
      grep -m1 -E 'ERROR: |runtime error' "$log" | sed 's/^/    /'
    fi
  } >"$WORK/$t.result"
  if [ "$SAVE" = 1 ]; then
    "$bin" -merge=1 "$seed" "$WORK/$t" >>"$log" 2>&1
  fi
}

for t in "${TARGETS[@]}"; do
  [ -x "$BUILD/fuzz_$t" ] || { echo "run.sh: no target fuzz_$t" >&2; exit 2; }
  rm -f "$WORK/$t.result"
done
running=0
for t in "${TARGETS[@]}"; do
  if [ "$running" -ge "$JOBS_AT_ONCE" ]; then
    wait -n
    running=$((running - 1))
  fi
  run_one "$t" &
  running=$((running + 1))
done
wait

printf '%-14s %6s %12s %9s %7s %8s %7s %9s\n' target seconds executions exec/s edges features corpus findings
found_any=0
failed=0
for t in "${TARGETS[@]}"; do
  res="$WORK/$t.result"
  if [ ! -f "$res" ]; then
    echo "$t: no result (log: $WORK/$t.log)"
    failed=1
    continue
  fi
  cat "$res"
  grep -q '^    did not run' "$res" && failed=1
  grep -q '^    finding: ' "$res" && found_any=1
done
[ "$failed" = 1 ] && exit 2
exit "$found_any"
