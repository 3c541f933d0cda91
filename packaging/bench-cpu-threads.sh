#!/usr/bin/env bash
# CPU thread settings measured: `ganpo bench` (median optimizer-step time, DPO and DPO + GANPO)
# at three shapes, each with train.num_threads = 1, 2 and the default (0), then two preference
# runs started together with and without the CPU share, and one after the other.
# Prints Markdown tables (the figures in README.md and in issue 9's note come from this script).
#   usage: packaging/bench-cpu-threads.sh [GANPO_BINARY] [WORK_FOLDER]
set -euo pipefail
cd "$(dirname "$0")/.."
G=$(realpath "${1:-build/release/app/ganpo}")
W=${2:-/tmp/ganpo-bench-cpu-threads}
rm -rf "$W" && mkdir -p "$W"

common='stage = "preference"
device = "cpu"
[data]
builtin = "lists"
builtin_train_size = 400
builtin_eval_size = 20'
# The shape of issue 9: d 128, 4 layers, T <= 64, batch 8, 128-wide 2-layer critics.
printf '%s\n[model]\npreset = ""\narch = "llama"\nd_model = 128\nn_layers = 4\nn_heads = 4\nmax_seq_len = 256\n[ganpo]\ncritic_hidden = 128\ncritic_layers = 2\ncritic_heads = 4\ncritic_max_len = 256\n[train]\nper_device_train_batch_size = 8\n' \
  "$common" | sed 's/^builtin_eval_size = 20$/builtin_eval_size = 20\nmax_length = 64\nmax_prompt_length = 32/' > "$W/issue9.toml"
# The demo's preference stage: tiny preset, batch 16, 64-wide 1-layer critics.
printf '%s\n[model]\npreset = "tiny"\n[ganpo]\ncritic_hidden = 64\ncritic_layers = 1\ncritic_heads = 4\ncritic_max_len = 256\n[train]\nper_device_train_batch_size = 16\n' "$common" > "$W/tiny.toml"
# The small preset (10.6M parameters), batch 8, 128-wide 2-layer critics.
printf '%s\n[model]\npreset = "small"\n[ganpo]\ncritic_hidden = 128\ncritic_layers = 2\ncritic_heads = 4\ncritic_max_len = 512\n[train]\nper_device_train_batch_size = 8\n' "$common" > "$W/small.toml"

field() { python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))" "$@"; }
echo "BLAS: $("$G" bench --config "$W/tiny.toml" --steps 1 --set train.num_threads=1 | sed -n 's/.*threads: [^;]*; \(.*\) (train.*/\1/p')"
echo
echo "| shape | num_threads | threads used | DPO step (s) | DPO + GANPO step (s) |"
echo "|---|---|---|---|---|"
for shape in issue9 tiny small; do
  steps=20; [ "$shape" = small ] && steps=6
  for n in 1 2 0; do
    out="$W/$shape-$n.json"
    "$G" bench --config "$W/$shape.toml" --steps $steps --set train.num_threads=$n --json > "$out"
    label=$n; [ "$n" = 0 ] && label="0 (default)"
    echo "| $shape | $label | $(field "$out" 'r["cpu_threads"].split(";")[0]') | $(field "$out" 'round(r["ganpo_off"]["median_step_time_s"],3)') | $(field "$out" 'round(r["ganpo_on"]["median_step_time_s"],3)') |"
  done
done

# Two runs of the demo's preference shape (60 steps each, default threads) on this machine.
printf '%s\n[model]\npreset = "tiny"\n[ganpo]\ncritic_hidden = 64\ncritic_layers = 1\ncritic_heads = 4\ncritic_max_len = 256\n[train]\nper_device_train_batch_size = 16\nmax_steps = 60\nlogging_steps = 10\nlearning_rate = 1e-4\n[sampling]\nnum_prompts = 2\nmax_new_tokens = 16\n' \
  "$common" | sed 's/builtin_train_size = 400/builtin_train_size = 2000/' > "$W/pair.toml"
one() { local n=$1; shift; env "$@" "$G" train --config "$W/pair.toml" --no-db --set output_dir="$W/out-$n" > "$W/log-$n.txt" 2>&1; }
now() { date +%s.%N; }
secs() { python3 -c "print(round($2 - $1, 1))"; }
echo
echo "| two runs of 60 steps | wall time (s) |"
echo "|---|---|"
s=$(now); one A & one B & wait; echo "| together, sharing the cores (default) | $(secs "$s" "$(now)") |"
s=$(now); one C GANPO_CPU_SHARE_DIR="$W/share-C" & one D GANPO_CPU_SHARE_DIR="$W/share-D" & wait
echo "| together, each blind to the other (both take all cores) | $(secs "$s" "$(now)") |"
s=$(now); one E; one F; echo "| one after the other | $(secs "$s" "$(now)") |"
grep -h "CPU job(s)" "$W/log-A.txt" "$W/log-B.txt" | sed 's/^/  /' || true
