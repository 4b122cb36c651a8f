#!/usr/bin/env bash
# A rank that dies or stalls mid-training must make the job end non-zero
# within a bounded time, and the model file rank 0 saved must load.
#   failure_test.sh kill|stall MPIRUN DRILL
#  kill:  the last rank SIGKILLs itself; mpirun notices and ends the job.
#  stall: the last rank SIGSTOPs itself; the others' collective watchdog
#         (KORTEX_DISTRIBUTED_TIMEOUT=5 s here) ends them with status 70.
set -u
mode="$1"
mpirun="$2"
drill="$3"
bound=25  # seconds from launch to the job's end, start-up included
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
model="$scratch/model.kdl"

start=$(date +%s%N)
KORTEX_DISTRIBUTED_TIMEOUT=5 timeout -k 5 60 "$mpirun" --oversubscribe --allow-run-as-root --bind-to none -np 3 \
  "$drill" "$mode" "$model" >"$scratch/out" 2>&1
status=$?
elapsed_ms=$(( ($(date +%s%N) - start) / 1000000 ))
cat "$scratch/out"
echo "--- mpirun exit status $status after ${elapsed_ms} ms"

fail() { echo "FAIL: $*"; exit 1; }
[ "$status" -ne 0 ] || fail "the job exited 0"
[ "$elapsed_ms" -lt $((bound * 1000)) ] || fail "the job took ${elapsed_ms} ms (bound ${bound} s)"
grep -q "simulating a failure ($mode)" "$scratch/out" || fail "the victim never ran"
grep -q "training finished" "$scratch/out" && fail "a rank finished training"
case "$mode" in
  kill) grep -q "exited on signal 9" "$scratch/out" || fail "mpirun did not report the killed rank" ;;
  stall) grep -q "did not complete within 5 s" "$scratch/out" || fail "no watchdog message" ;;
esac
[ -f "$model" ] || fail "rank 0 wrote no model"
"$drill" load "$model" || fail "the saved model does not load"
echo "PASS: $mode"
