#!/usr/bin/env bash
# Data-parallel scaling on this machine's CPU cores: the same DPO + GANPO run (tiny preset, the
# built-in lists task, critics 64 wide x 1 layer x 4 heads, 25 steps) trained
#   - by N processes x batch B with one thread each (Gloo over loopback),
#   - by one process with the same global batch N x B and N threads,
#   - by one process with batch B and N threads,
# each --repeat times. Prints, per run, the median tokens/s of metrics.jsonl after its first
# logged line, the median all-reduce time left after the backward pass (`ranks/allreduce_s`) and
# the final loss (equal global batches give equal losses).
#   usage: packaging/bench-data-parallel.sh [--ganpo-binary PATH] [--processes 2] [--batch 8]
#            [--steps 25] [--repeat 2] [--work FOLDER]
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
ganpo="$REPO/build/release/app/ganpo" n=2 batch=8 steps=25 repeat=2 work=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --ganpo-binary) ganpo=$2; shift 2 ;;
    --processes) n=$2; shift 2 ;;
    --batch) batch=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    --repeat) repeat=$2; shift 2 ;;
    --work) work=$2; shift 2 ;;
    -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench-data-parallel: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
[[ -x "$ganpo" ]] || { echo "bench-data-parallel: no ganpo binary at $ganpo (build first, or pass --ganpo-binary)" >&2; exit 2; }
if [[ -z "$work" ]]; then work=$(mktemp -d); trap 'rm -rf "$work"' EXIT; fi
mkdir -p "$work"

cat > "$work/dp.toml" <<EOF
name = "dp-scaling"
stage = "preference"
seed = 7
device = "cpu"
output_dir = "$work/out"

[model]
preset = "tiny"

[data]
builtin = "lists"
builtin_train_size = 2000
builtin_eval_size = 50

[objective]
loss_type = "sigmoid"
beta = 0.1

[ganpo]
enabled = true
critic_hidden = 64
critic_layers = 1
critic_heads = 4
critic_max_len = 256

[train]
per_device_train_batch_size = $batch
max_steps = $steps
logging_steps = 5
save_steps = 100000
eval_steps = 100000

[sampling]
num_prompts = 0
EOF

summary() {  # metrics.jsonl -> "tokens/s median, all-reduce median, final loss"
  python3 - "$1" <<'EOF'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
tps = [r["tokens_per_s"] for r in rows if "tokens_per_s" in r][1:]
ar = [r["ranks/allreduce_s"] for r in rows if "ranks/allreduce_s" in r][1:]
step = [r["step_time_s"] for r in rows if "step_time_s" in r][1:]
loss = [r["loss"] for r in rows if "loss" in r]
print(f"{statistics.median(tps):9.0f} tokens/s  step {statistics.median(step):.3f} s  "
      + (f"all-reduce {1000 * statistics.median(ar):5.1f} ms  " if ar else "")
      + f"final loss {loss[-1]:.6f}")
EOF
}

run() {  # label, overrides...
  local label=$1; shift
  rm -rf "$work/out"
  "$ganpo" train --no-db --config "$work/dp.toml" "$@" > "$work/log.txt" 2>&1 ||
    { echo "bench-data-parallel: $label failed:" >&2; tail -20 "$work/log.txt" >&2; exit 1; }
  printf '%-36s %s\n' "$label" "$(summary "$(find "$work/out" -name metrics.jsonl | head -1)")"
}

echo "DPO + GANPO, tiny preset, $steps steps, $(nproc) cores here"
for ((i = 1; i <= repeat; i++)); do
  run "$n processes x batch $batch, 1 thread" --set train.num_processes=$n --set train.num_threads=1
  run "1 process x batch $((n * batch)), $n threads" --set train.per_device_train_batch_size=$((n * batch)) --set train.num_threads=$n
  run "1 process x batch $batch, $n threads" --set train.num_threads=$n
done
