#!/usr/bin/env bash
# Everything a device session does, in one call that fits the device tool's 600 s per command
# (the machine is handed back after 30 s idle, so a second call starts and builds again):
#   1. gpu-check.sh --quick: configure against the machine's python torch, build `ganpo` and the
#      CUDA tests only, run the CUDA tests;
#   2. the quick demo on cuda (11 s on an H200 in an earlier session);
#   3. beside the CUDA build, tests and demo (CPU work, started once `ganpo` is linked):
#      tests/core/golden/check_with_transformers.py with the machine's transformers and peft: the
#      golden cases, `ganpo train`'s folders and LoRA runs' merged and PEFT adapter folders against
#      transformers and PeftModel;
#   4. gpu-bench-table.sh with the time left, its rows in the order that answers most first:
#      GPT-2 124M bf16 and Llama 3.2 1B bf16 against eager PyTorch, GPT-2 without prefix sharing,
#      Llama 3.2 1B with full logits,
#      Gemma 2 2B, Llama 3 8B LoRA, GPT-2 with gradient checkpointing, GPT-2 fp32, the rest, and
#      last Llama 3 8B full fine-tuning (expected not to fit);
#   logs, the table and every row's JSON go into a work folder; the device tool brings back at
#   most 8 files of $OUT, so OUT holds the few that matter (check.txt, gpu-tests.log, demo.log,
#   transformers.log, table.md) and session.tar.gz, the whole work folder, renewed every 15 s and at
#   the end, so a call cut short still brings back what had finished.
# Here first: `bash packaging/gpu-debs.sh` (build/gpu-debs), then on the device, with build/gpu-debs
# carried: bash packaging/gpu-session.sh build/gpu-debs "$OUT" [SECONDS]   (default 560)
# Read what came back: tables in table.md, the rest with `tar -xzf session.tar.gz -C DIR`.
set -uo pipefail
[ $# -ge 2 ] || { echo "usage: packaging/gpu-session.sh DEB_FOLDER OUT [SECONDS]" >&2; exit 2; }
DEBS=$(realpath -m "$1") OUT=$(realpath -m "$2") total=${3:-560}
REPO=$(cd "$(dirname "$0")/.." && pwd)
start=$(date +%s)
left() { echo $((total - ($(date +%s) - start))); }
W=/tmp/ganpo-gpu-session
rm -rf "$W"
mkdir -p "$OUT" "$W"
cd "$REPO"
export PATH=$PATH:/usr/local/cuda/bin  # nvcc, which a pip CUDA torch's CMake config looks for

# OUT: the files worth reading first, and the whole work folder as one archive.
bring_back() {
  local tmp=$OUT/.session.$BASHPID.tar.gz  # the keeper's and the last call's never share one
  # (tar exits 1 when a log grew while it read it: the archive is still whole)
  tar --warning=no-file-changed -czf "$tmp" -C "$W" . 2>/dev/null
  if [ $? -le 1 ]; then mv -f "$tmp" "$OUT/session.tar.gz"; else rm -f "$tmp"; fi
  for f in check.txt check/gpu-tests.log demo.log transformers.log table/table.md; do
    [ -f "$W/$f" ] && cp -f "$W/$f" "$OUT/$(basename "$f")"
  done
  return 0
}
session=$$
( while sleep 15 && kill -0 "$session" 2>/dev/null; do bring_back; done ) >/dev/null 2>&1 &
keeper=$!
hf=""
# Whatever ends this script (the end, a failure, the device tool's time limit) ends its helpers.
trap 'kill "$keeper" ${hf:+"$hf"} 2>/dev/null' EXIT
finish() {
  kill "$keeper" 2>/dev/null
  wait "$keeper" 2>/dev/null
  bring_back
  rm -f "$OUT"/.session.*.tar.gz
  echo "== done ($(( $(date +%s) - start )) s)"
}

G=$REPO/build/gpu/app/ganpo
mkdir -p "$W/check"
( bash packaging/gpu-check.sh --quick "$DEBS" "$W/check" 2>&1 | tee "$W/check.txt"; exit "${PIPESTATUS[0]}" ) &
check=$!
# Once `ganpo` is linked (gpu-check marks it; a binary from an earlier call does not count), the
# transformers check runs on the CPU beside the rest of the build, the CUDA tests and the demo (its
# training runs say device = "cpu"); the benchmarks wait for it.
start_hf() {
  [ -z "$hf" ] && [ -f "$W/check/ganpo.built" ] || return 0
  OMP_NUM_THREADS=4 timeout 240 nice python3 tests/core/golden/check_with_transformers.py --ganpo "$G" \
    --work "$W/transformers" > "$W/transformers.log" 2>&1 &
  hf=$!
}
while kill -0 "$check" 2>/dev/null; do
  start_hf
  sleep 1
done
wait "$check"
rc=$?
start_hf
if [ ! -f "$W/check/ganpo.built" ]; then
  echo "gpu-session: configure or build failed (exit $rc; see check.txt and session.tar.gz's check/build.log)"
  finish
  exit 1
fi
# `ganpo` built but the CUDA tests did not: the demo and the benchmarks still run.
[ "$rc" = 0 ] || echo "gpu-session: the CUDA tests did not build (exit $rc; see check.txt); going on with ganpo"

echo "== quick demo on cuda ($(date +%T), $(left) s left)"
timeout 90 "$G" demo --quick --output-dir /tmp/ganpo-gpu-demo > "$W/demo.log" 2>&1
echo "demo exit $?"
tail -14 "$W/demo.log"
hf_rc="not started"
[ -n "$hf" ] && { wait "$hf"; hf_rc="exit $?"; }
echo "== transformers and PEFT against the workbench's folders ($hf_rc, $(left) s left)"
grep -E "^(FAIL|SKIP)|passed|failed|transformers " "$W/transformers.log" | tail -20
rm -rf "$W/transformers"  # model folders; the log stays

budget=$(( $(left) - 25 ))
echo "== benchmark table ($(date +%T), budget $budget s)"
# Each row's data file is removed when the row ends; the keeper's session.tar.gz holds the rows
# that finished (table.md itself is written at the end).
bash packaging/gpu-bench-table.sh --ganpo-binary "$G" --budget "$budget" --row-limit 110 \
  --rows 1,2,10,11,7,8,5,3,6,4,9 --work "$W/table"
finish
