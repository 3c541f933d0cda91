#!/usr/bin/env bash
# Kill soak: trains one DPO + GANPO run of the tiny model while killing its worker with SIGKILL
# KILLS times (default 20), resuming after each kill, then checks the finished run against an
# uninterrupted run with the same seed. Every fourth kill is random in time; the others are
# placed by GANPO_KILL_AT (core/fault_points.h) while the worker writes a checkpoint's files,
# after its marker but before the rename, or inside an SQLite transaction, so those moments are
# hit for certain (at the second checkpoint of a start, so the run moves on between kills).
# After every kill it checks, and prints one row:
#   PRAGMA integrity_check is ok; no metric step recorded twice and no gap in the steps;
#   every checkpoint the workspace lists is complete (its marker and sizes); the resume
#   continues from a complete checkpoint (never a *.tmp folder).
# At the end: the run completed, and its final weights are byte-identical to the reference.
#   usage: packaging/kill-soak.sh [KILLS] [STEPS]     (needs build/release and sqlite3)
set -euo pipefail
cd "$(dirname "$0")/.."
KILLS=${1:-20}
STEPS=${2:-300}
source packaging/soak-common.sh
soak_setup kill-soak
echo "kill soak in $WORK: $KILLS kills over $STEPS steps"

config() {  # name -> config file
  tiny_run_config "$1" "$WORK/$1.toml" "$WORK/$1" "$STEPS" 10
  echo "$WORK/$1.toml"
}

t0=$(date +%s)
"$GANPO" train --db "$WORK/reference.sqlite" --config "$(config reference)" >"$WORK/reference.log" 2>&1
echo "reference run: $(( $(date +%s) - t0 )) s"

DB=$WORK/workspace.sqlite
q() { sqlite3 "$DB" "$1"; }
failures=0
check() {  # what, condition output, expected
  if [[ "$2" != "$3" ]]; then echo "  FAILED: $1: got '$2', expected '$3'"; failures=$((failures + 1)); fi
}

start_worker() {  # log, kill plan ("" = none); first start creates the run
  local plan=$2
  if [[ ! -f $DB ]]; then
    GANPO_KILL_AT=$plan "$GANPO" train --db "$DB" --config "$(config soak)" >"$1" 2>&1 &
  else
    GANPO_KILL_AT=$plan "$GANPO" runs --db "$DB" resume 1 >"$1" 2>&1 &
  fi
  WORKER=$!
}

printf '%-4s %-30s %-9s %-8s %-10s %-22s %s\n' kill moment "step" "ckpt.tmp" integrity "steps (dup/gap)" "resumed from"
for ((k = 1; k <= KILLS; k++)); do
  case $((k % 4)) in
    1) plan="checkpoint.files_written:2" ;;
    2) plan="store.batch_written:$((2 + RANDOM % 6))" ;;
    3) plan="checkpoint.marker_written:2" ;;
    0) plan="" ;;
  esac
  log=$WORK/worker-$k.log
  start_worker "$log" "$plan"
  if [[ -z $plan ]]; then
    sleep "$(awk -v r=$RANDOM 'BEGIN { printf "%.2f", 3 + (r % 900) / 100 }')"
    kill -9 "$WORKER" 2>/dev/null || true
    moment="random (SIGKILL from outside)"
  else
    moment=$plan
  fi
  set +e
  wait "$WORKER" 2>/dev/null
  rc=$?
  set -e
  if [[ $rc -eq 0 && $(q "SELECT status FROM runs WHERE id = 1") == completed ]]; then
    # (a start that took the run to its end before the moment planned for it: the kills are over)
    echo "  the run completed before kill $k's moment came: $((k - 1)) kills"; break
  fi
  if [[ $rc -ne 137 ]]; then
    echo "  the worker was not killed (exit $rc); last lines:"; tail -3 "$log"; failures=$((failures + 1)); break
  fi
  resumed_from=$(grep -o 'continuing from .*' "$log" | head -1 | sed 's/continuing from //' || true)
  [[ -n $resumed_from ]] || resumed_from="(start)"
  check "resume used a temporary folder" "$(grep -c '\.tmp' <<<"$resumed_from" || true)" 0
  tmp_left=$( (ls -d "$WORK"/soak/*.tmp 2>/dev/null || true) | wc -l)
  integrity=$(q "PRAGMA integrity_check")
  check integrity_check "$integrity" ok
  steps=$(q "SELECT COUNT(DISTINCT step) FROM metrics WHERE run_id = 1")
  maxstep=$(q "SELECT COALESCE(MAX(step), 0) FROM metrics WHERE run_id = 1")
  dups=$(q "SELECT COUNT(*) FROM (SELECT 1 FROM metrics GROUP BY run_id, step, key HAVING COUNT(*) > 1)")
  check "steps recorded twice" "$dups" 0
  check "gap in recorded steps" "$maxstep" "$steps"
  incomplete=$("$GANPO" runs --db "$DB" show 1 --json | grep -c '"complete": false' || true)
  check "recorded checkpoints that are incomplete" "$incomplete" 0
  printf '%-4s %-30s %-9s %-8s %-10s %-22s %s\n' "$k" "$moment" "$maxstep" "$tmp_left" "$integrity" \
    "$steps ($dups/$((maxstep - steps)))" "$(basename "$resumed_from")"
done

t1=$(date +%s)
if [[ $(q "SELECT status FROM runs WHERE id = 1") != completed ]]; then
  "$GANPO" runs --db "$DB" resume 1 >"$WORK/final.log" 2>&1 || { echo "final resume failed:"; tail -5 "$WORK/final.log"; exit 1; }
  echo "final resume from $(grep -o 'continuing from .*' "$WORK/final.log" | sed 's/continuing from //' | xargs basename || true): $(( $(date +%s) - t1 )) s"
fi
check "status" "$(q "SELECT status FROM runs WHERE id = 1")" completed
check "steps recorded" "$(q "SELECT COUNT(DISTINCT step) FROM metrics WHERE run_id = 1")" "$STEPS"
check "integrity_check" "$(q "PRAGMA integrity_check")" ok
if cmp -s "$WORK/reference/final/model.safetensors" "$WORK/soak/final/model.safetensors"; then
  echo "final weights: byte-identical to the uninterrupted run ($(stat -c %s "$WORK/soak/final/model.safetensors") bytes)"
else
  echo "  FAILED: final weights differ from the uninterrupted run's"; failures=$((failures + 1))
fi
echo "failures: $failures"
[[ $failures -eq 0 ]] && rm -rf "$WORK"
exit $(( failures > 0 ))
