#!/usr/bin/env bash
# Builds the libFuzzer targets of the parsers (the "fuzz" preset: clang, ASan + UBSan) and runs
# each for SECONDS (default 60) on a working copy of its seed corpus, one after another, then
# prints the executions and crashes of each. A crash leaves its input under
# build/fuzz/runs/<target>/crashes/ and this script exits 1; replay it with
#   build/fuzz/tests/fuzz/fuzz_<target> build/fuzz/runs/<target>/crashes/<file>
# and add it to tests/fuzz/corpus/<target>/ with the fix, so `ctest --preset fuzz` keeps it fixed.
#   usage: packaging/fuzz.sh [SECONDS] [TARGET ...]
#   targets: run_config study_spec dataset_row eval_prompts tokenizer_json safetensors_header safetensors_index model_config chat_template run_filter workspace
#   (run_filter only where Qt 6 Core is installed)
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH=${1:-60}
shift || true
TARGETS=("$@")
[[ ${#TARGETS[@]} -gt 0 ]] || TARGETS=(run_config study_spec dataset_row eval_prompts tokenizer_json safetensors_header safetensors_index model_config chat_template run_filter workspace)
cmake --preset fuzz >/dev/null
cmake --build --preset fuzz
status=0
total=0
for t in "${TARGETS[@]}"; do
  if [[ ! -x build/fuzz/tests/fuzz/fuzz_$t ]]; then
    printf '%-18s not built (fuzz_run_filter needs Qt 6 Core)\n' "$t"
    continue
  fi
  work=build/fuzz/runs/$t
  mkdir -p "$work/corpus" "$work/crashes"
  cp -n tests/fuzz/corpus/"$t"/* "$work/corpus/" 2>/dev/null || true
  if ! build/fuzz/tests/fuzz/fuzz_"$t" -max_total_time="$SECONDS_EACH" -print_final_stats=1 -max_len=65536 -timeout=10 \
      -artifact_prefix="$work/crashes/" "$work/corpus" >"$work/log" 2>&1; then
    status=1
  fi
  execs=$(awk '/stat::number_of_executed_units/ {print $2}' "$work/log" | tail -1)
  crashes=$(find "$work/crashes" -type f | wc -l)
  total=$((total + ${execs:-0}))
  printf '%-18s %12s executions in %ss, %s crash file(s)\n' "$t" "${execs:-?}" "$SECONDS_EACH" "$crashes"
done
echo "total: $total executions"
exit $status
