#!/usr/bin/env bash
# Long-lock check: another process (the sqlite3 command) takes the workspace's write lock and
# holds it for SECONDS (default 30) while a real worker trains a DPO + GANPO run of the tiny
# model. Checks that the worker neither fails nor drops anything: it waits, records everything
# once the lock is gone, and completes; every step is recorded once, with no gap, and the
# workspace passes PRAGMA integrity_check. Prints how far the run got during the lock.
#   usage: packaging/lock-check.sh [SECONDS] [STEPS]     (needs build/release and sqlite3)
set -euo pipefail
cd "$(dirname "$0")/.."
HOLD=${1:-30}
STEPS=${2:-400}
source packaging/soak-common.sh
soak_setup lock-check
DB=$WORK/workspace.sqlite
tiny_run_config locked "$WORK/run.toml" "$WORK/run" "$STEPS" 100
q() { sqlite3 "$DB" "$1"; }
recorded() { q "SELECT COALESCE(MAX(step), 0) FROM metrics WHERE key = 'loss'" 2>/dev/null || echo 0; }

t0=$(date +%s)
"$GANPO" train --db "$DB" --config "$WORK/run.toml" >"$WORK/train.log" 2>&1 &
worker=$!
until [[ -f $DB ]] && (( $(recorded) >= 20 )); do
  kill -0 $worker 2>/dev/null || { echo "the worker ended before step 20:"; tail "$WORK/train.log"; exit 1; }
  sleep 0.5
done
before=$(recorded)
echo "lock check in $WORK: step $before recorded; sqlite3 takes the write lock for $HOLD s"
# BEGIN IMMEDIATE takes the write lock; a change inside it proves it is a real write transaction.
sqlite3 "$DB" "BEGIN IMMEDIATE;" "UPDATE runs SET notes = 'written under the lock';" ".shell sleep $HOLD" \
  "SELECT 'during the lock the worker recorded up to step ' || MAX(step) FROM metrics WHERE key = 'loss';" "COMMIT;"
after_lock=$(recorded)
echo "lock released: step $after_lock recorded right after"
wait $worker || { echo "FAIL: the worker failed:"; tail "$WORK/train.log"; exit 1; }
t1=$(date +%s)

fail=0
check() { if [[ $2 == "$3" ]]; then echo "ok   $1: $2"; else echo "FAIL $1: $2 (expected $3)"; fail=1; fi; }
check "run status" "$(q "SELECT status FROM runs")" completed
check "integrity_check" "$(q "PRAGMA integrity_check")" ok
check "loss rows" "$(q "SELECT COUNT(*) FROM metrics WHERE key = 'loss'")" "$STEPS"
check "distinct loss steps" "$(q "SELECT COUNT(DISTINCT step) FROM metrics WHERE key = 'loss'")" "$STEPS"
check "last step" "$(recorded)" "$STEPS"
check "the other program's change" "$(q "SELECT notes FROM runs")" "written under the lock"
echo "run: $STEPS steps in $((t1 - t0)) s, of which the lock held the record for $HOLD s"
exit $fail
