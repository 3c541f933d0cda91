#!/usr/bin/env bash
# Everything a device session does, in one call that fits the device tool's 600 s per command
# (the machine is handed back after 30 s idle, so a second call starts and builds again):
#   1. gpu-check.sh --quick: configure against the machine's python torch, build `ganpo` and the
#      CUDA tests only, run the CUDA tests;
#   2. the quick demo on cuda (11 s on an H200 in an earlier session);
#   3. gpu-bench-table.sh with the time left, its rows in the order that answers most first:
#      GPT-2 124M bf16 and Llama 3.2 1B bf16 against eager PyTorch, GPT-2 without prefix sharing,
#      Llama 3.2 1B with full logits,
#      Gemma 2 2B, Llama 3 8B LoRA, GPT-2 with gradient checkpointing, GPT-2 fp32, the rest, and
#      last Llama 3 8B full fine-tuning (expected not to fit);
#   logs, the table and every row's JSON go into OUT as they come (the device tool's $OUT
#   comes back).
# Here first: `bash packaging/gpu-debs.sh` (build/gpu-debs), then on the device, with build/gpu-debs
# carried: bash packaging/gpu-session.sh build/gpu-debs "$OUT" [SECONDS]   (default 560)
set -uo pipefail
[ $# -ge 2 ] || { echo "usage: packaging/gpu-session.sh DEB_FOLDER OUT [SECONDS]" >&2; exit 2; }
DEBS=$(realpath -m "$1") OUT=$(realpath -m "$2") total=${3:-560}
REPO=$(cd "$(dirname "$0")/.." && pwd)
start=$(date +%s)
left() { echo $((total - ($(date +%s) - start))); }
mkdir -p "$OUT"
cd "$REPO"
export PATH=$PATH:/usr/local/cuda/bin  # nvcc, which a pip CUDA torch's CMake config looks for

bash packaging/gpu-check.sh --quick "$DEBS" "$OUT/check" 2>&1 | tee "$OUT/check.txt"
rc=${PIPESTATUS[0]}
G=$REPO/build/gpu/app/ganpo
[ "$rc" = 0 ] && [ -x "$G" ] ||
  { echo "gpu-session: configure or build failed (exit $rc; see $OUT/check.txt and $OUT/check/build.log)"; exit 1; }

echo "== quick demo on cuda ($(date +%T), $(left) s left)"
timeout 90 "$G" demo --quick --output-dir /tmp/ganpo-gpu-demo > "$OUT/demo.log" 2>&1
echo "demo exit $?"
tail -14 "$OUT/demo.log"

budget=$(( $(left) - 20 ))
echo "== benchmark table ($(date +%T), budget $budget s)"
# Straight into OUT (each row's data file is removed when the row ends), so a call cut short
# still brings back the rows that finished.
bash packaging/gpu-bench-table.sh --ganpo-binary "$G" --budget "$budget" --row-limit 110 \
  --rows 1,2,10,11,7,8,5,3,6,4,9 --work "$OUT/table"
echo "== done ($(( $(date +%s) - start )) s)"
