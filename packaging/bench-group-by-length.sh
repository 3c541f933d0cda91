#!/usr/bin/env bash
# One epoch of DPO + GANPO on pairs of varied length, with and without train.group_by_length: the
# same rows in a different order, so the same tokens; the sum of the step times and the tokens/s
# of each. The pairs are written here: prompt and response lengths drawn log-normal (median ~55
# and ~150 bytes, the byte tokenizer of the presets), as chat data varies.
#   usage: packaging/bench-group-by-length.sh [--preset small] [--pairs 136] [--batch 8] [--threads 1]
#            [--ganpo-binary PATH] [--work FOLDER]
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
preset=small pairs=136 batch=8 threads=1 G=$REPO/build/release/app/ganpo W=/tmp/ganpo-bench-group-by-length
while [ $# -gt 0 ]; do
  case "$1" in
    --preset) preset=$2 ;; --pairs) pairs=$2 ;; --batch) batch=$2 ;; --threads) threads=$2 ;;
    --ganpo-binary) G=$2 ;; --work) W=$2 ;;
    *) echo "bench-group-by-length.sh: unknown option $1 (see the usage at the top of this script)" >&2; exit 2 ;;
  esac
  shift 2
done
G=$(realpath "$G")
mkdir -p "$W"
W=$(realpath "$W")
python3 - "$W/pairs.jsonl" "$pairs" <<'EOF'
import json, random, sys
random.seed(5)
words = "the a model data policy critic reward token batch step loss value of in to and for with on is".split()
def text(n):
    out = []
    while len(" ".join(out)) < n:
        out.append(random.choice(words))
    return " ".join(out)[:n]
with open(sys.argv[1], "w") as f:
    for _ in range(int(sys.argv[2])):
        p, c, r = (int(random.lognormvariate(mu, s)) for mu, s in ((4.0, 0.6), (5.0, 0.7), (5.0, 0.7)))
        f.write(json.dumps({"prompt": text(max(8, p)), "chosen": text(max(8, c)), "rejected": text(max(8, r))}) + "\n")
EOF
# The training rows (95 %) in whole batches: one epoch.
steps=$(( pairs * 95 / 100 / batch ))
cat > "$W/run.toml" <<EOF
stage = "preference"
seed = 42
device = "cpu"
[model]
preset = "$preset"
max_seq_len = 512
[data]
train = "$W/pairs.jsonl"
eval_fraction = 0.05
max_length = 512
max_prompt_length = 128
[ganpo]
critic_hidden = 128
critic_layers = 2
critic_heads = 4
critic_max_len = 512
[train]
per_device_train_batch_size = $batch
max_steps = $steps
num_threads = $threads
logging_steps = 1
eval_steps = 0
save_steps = 0
[sampling]
num_prompts = 0
[eval]
judge_at_end = false
EOF
for grouped in false true; do
  rm -rf "$W/out-$grouped"
  "$G" train --config "$W/run.toml" --no-db --set output_dir="$W/out-$grouped" \
    --set train.group_by_length=$grouped > "$W/log-$grouped.txt" 2>&1
done
python3 - "$W" "$steps" "$batch" <<'EOF'
import json, os, sys
w, steps, batch = sys.argv[1], int(sys.argv[2]), sys.argv[3]
print(f"one epoch: {steps} steps of {batch} pairs, DPO + GANPO (step times from metrics.jsonl)")
seconds = {}
for grouped in ("false", "true"):
    rows = [json.loads(line) for line in open(os.path.join(w, f"out-{grouped}", "metrics.jsonl"))]
    rows = [r for r in rows if "step_time_s" in r]
    seconds[grouped] = sum(r["step_time_s"] for r in rows)
    print(f"  group_by_length = {grouped:5}: {seconds[grouped]:.1f} s, {rows[-1]['tokens_seen']:.0f} tokens, "
          f"{rows[-1]['tokens_seen'] / seconds[grouped]:.0f} tokens/s")
print(f"  speed-up {seconds['false'] / seconds['true']:.2f}x")
EOF
