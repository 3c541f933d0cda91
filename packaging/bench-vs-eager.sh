#!/usr/bin/env bash
# `ganpo bench` against the eager PyTorch step of packaging/bench-eager.py on the same shapes,
# the same data lengths, the same device and the same number of threads: DPO and DPO + GANPO,
# median and fastest optimizer-step time of each (on a shared machine the fastest step repeats
# best), the speed-ups and the GANPO / DPO ratio of each side.
# `ganpo bench` reads a preference file of fixed-length rows (no padding) that the script writes;
# the eager step draws random ids of the same lengths. Eager runs with torch's thread defaults
# for --threads N (ATen's and OpenBLAS's pools both N threads), as a TRL user's run does, and
# with the glibc allocator settings `ganpo` sets for itself (core/cpu_runtime.cpp: tensors up to
# 32 MiB from the heap, no trimming). Without them glibc maps and unmaps large tensors on every
# step until its dynamic threshold catches up: the eager steps then take ~1.4x longer for the
# first five or so steps, and a 4-step median measures the allocator, not the step.
#   usage: packaging/bench-vs-eager.sh [--preset tiny|small|base | --shape DIR] [--batch 8] [--prompt-len 64]
#            [--response-len 192] [--critic-hidden 128 --critic-layers 2 --critic-heads 4]
#            [--threads 1] [--steps 6] [--device cpu|cuda] [--dtype fp32|bf16]
#            [--ganpo-binary PATH] [--python PYTHON] [--work FOLDER] [--set KEY=VALUE ...] [--no-eager]
#            [--data-rows N]
# --set passes a config override to `ganpo bench` alone (train.gradient_checkpointing=true, a LoRA
# rank, ...); --no-eager measures `ganpo bench` only. FOLDER keeps bench.toml, cpp.json,
# eager.json and eager-args (the eager step's arguments).
# --shape DIR: a model folder's config.json (resources/model-shapes/gpt2-124m or llama-3.2-1b)
# in place of a preset, trained from random weights (model.random_weights) with its real
# vocabulary; the eager model takes the same sizes (GPT-2, or Llama with a tied output head; other
# shapes run with --no-eager). --data-rows N: rows of the data file (default: enough for the
# measured steps without gradient accumulation).
# Python: an interpreter with torch (Debian's python3-torch on the CPU, /usr/bin/python3 by
# default when it has torch; the device machine's own elsewhere).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
preset=small batch=8 prompt=64 response=192 ch=128 cl=2 chd=4 threads=1 steps=6 device=cpu dtype=fp32
G=$REPO/build/release/app/ganpo W=/tmp/ganpo-bench-vs-eager PY="" shape_dir="" eager=1 sets=() rows=0
while [ $# -gt 0 ]; do
  case "$1" in
    --no-eager) eager=0; shift; continue ;;
    --set) sets+=(--set "$2") ;;
    --preset) preset=$2 ;; --batch) batch=$2 ;; --prompt-len) prompt=$2 ;; --response-len) response=$2 ;;
    --critic-hidden) ch=$2 ;; --critic-layers) cl=$2 ;; --critic-heads) chd=$2 ;; --threads) threads=$2 ;;
    --steps) steps=$2 ;; --device) device=$2 ;; --dtype) dtype=$2 ;; --ganpo-binary) G=$2 ;;
    --python) PY=$2 ;; --work) W=$2 ;; --shape) shape_dir=$2 ;; --data-rows) rows=$2 ;;
    *) echo "bench-vs-eager.sh: unknown option $1 (see the usage at the top of this script)" >&2; exit 2 ;;
  esac
  shift 2
done
# Paths given relative to where the script was started, before moving to the repository.
G=$(realpath "$G")
W=$(realpath -m "$W")
[ -z "$shape_dir" ] || shape_dir=$(realpath "$shape_dir")
[ -z "$PY" ] || [[ "$PY" != */* ]] || PY=$(realpath "$PY")
cd "$REPO"
[ "$device" = cpu ] && [ "$dtype" = bf16 ] && { echo "bench-vs-eager.sh: bf16 needs --device cuda" >&2; exit 2; }
if [ -z "$PY" ]; then
  for candidate in /usr/bin/python3 python3; do
    if "$candidate" -c 'import torch' 2>/dev/null; then PY=$candidate; break; fi
  done
fi
[ -n "$PY" ] || { echo "bench-vs-eager.sh: no python3 with torch; install python3-torch or pass --python" >&2; exit 2; }
T=$((prompt + response))
shape=""
if [ -n "$shape_dir" ]; then
  # The eager model's sizes from config.json (HF's Llama and GPT-2 key names).
  [ "$eager" = 0 ] || shape=$("$PY" - "$shape_dir/config.json" <<'EOF'
import json, sys
c = json.load(open(sys.argv[1]))
if c.get("model_type") == "gpt2":
    print(f"--arch gpt2 --d-model {c['n_embd']} --layers {c['n_layer']} --heads {c['n_head']} --vocab {c['vocab_size']}")
elif c.get("model_type") == "llama" and c.get("tie_word_embeddings", False):
    print(f"--arch llama --d-model {c['hidden_size']} --layers {c['num_hidden_layers']} --heads {c['num_attention_heads']}"
          f" --kv-heads {c.get('num_key_value_heads', c['num_attention_heads'])} --d-ff {c['intermediate_size']}"
          f" --vocab {c['vocab_size']}")
else:
    sys.exit(f"bench-vs-eager.sh: the eager model has GPT-2 and tied-head Llama blocks; {sys.argv[1]} is neither")
EOF
)
  model_toml="checkpoint = \"$shape_dir\"
random_weights = true"
  label="$(basename "$shape_dir") shape"
else
  case "$preset" in
    tiny) shape="--arch llama --d-model 128 --layers 4 --heads 4" ;;
    small) shape="--arch llama --d-model 384 --layers 6 --heads 6" ;;
    base) shape="--arch gpt2 --d-model 768 --layers 12 --heads 12" ;;
    *) echo "bench-vs-eager.sh: --preset is tiny, small or base" >&2; exit 2 ;;
  esac
  label="$preset preset"
  model_toml="preset = \"$preset\"
max_seq_len = $((T > 256 ? T : 256))"
fi
mkdir -p "$W"
"$PY" packaging/bench-eager.py --write-data "$W/pairs.jsonl" --rows $((rows > 0 ? rows : batch * (steps + 4) + 16)) \
  --prompt-len "$prompt" --response-len "$response"
cat > "$W/bench.toml" <<EOF
stage = "preference"
seed = 42
device = "$device"
[model]
$model_toml
[data]
train = "$W/pairs.jsonl"
eval_fraction = 0.05
max_length = $T
max_prompt_length = $prompt
[objective]
loss_type = "sigmoid"
beta = 0.1
[ganpo]
critic_hidden = $ch
critic_layers = $cl
critic_heads = $chd
critic_max_len = $((T > 256 ? T : 256))
[train]
per_device_train_batch_size = $batch
num_threads = $threads
precision = "$dtype"
[sampling]
num_prompts = 0
EOF
rm -f "$W/cpp.json" "$W/eager.json"
"$G" bench --config "$W/bench.toml" ${sets[@]+"${sets[@]}"} --steps "$steps" --json > "$W/cpp.json"
# The eager step's arguments, kept in FOLDER/eager-args for other scripts (bench-gemm-share.sh).
echo $shape --batch "$batch" --prompt-len "$prompt" --response-len "$response" --max-len $((T > 256 ? T : 256)) \
  --critic-hidden "$ch" --critic-layers "$cl" --critic-heads "$chd" --critic-max-len $((T > 256 ? T : 256)) \
  --threads "$threads" --steps "$steps" --device "$device" --dtype "$dtype" > "$W/eager-args"
if [ "$eager" = 1 ]; then
GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=1073741824 \
OMP_NUM_THREADS=$threads "$PY" packaging/bench-eager.py $(cat "$W/eager-args") > "$W/eager.json"
fi
"$PY" - "$W/cpp.json" "$W/eager.json" "$label" "$batch" "$T" "$threads" <<'EOF'
import json, os, sys
cpp = json.load(open(sys.argv[1]))
if not os.path.exists(sys.argv[2]):  # --no-eager
    print(f"{sys.argv[3]}, {sys.argv[4]} pairs x {sys.argv[5]} tokens, {cpp['device']}")
    for key, label in (("ganpo_off", "DPO"), ("ganpo_on", "DPO + GANPO")):
        c = cpp[key]
        mfu = f", MFU {100 * c['mfu']:.1f} %" if c.get("mfu", -1) >= 0 else ""
        peak = f", CUDA peak {c['cuda_peak_bytes'] / 2**20:.0f} MiB" if c["cuda_peak_bytes"] >= 0 else ""
        print(f"{label}: {c['median_step_time_s']:.3f} s ({c['min_step_time_s']:.3f}), {c['tokens_per_s']:.0f} tokens/s{mfu}, "
              f"memory estimate {c['memory_estimate_bytes'] / 2**20:.0f} MiB{peak}")
    print(f"GANPO / DPO step-time ratio {cpp['step_time_ratio']:.3f}, model FLOPs ratio {cpp['model_flops_ratio']:.3f}")
    sys.exit(0)
eager = json.load(open(sys.argv[2]))
preset, batch, T, threads = sys.argv[3:7]
print(f"{preset}, {batch} pairs x {T} tokens, {cpp['device']}, {threads} thread(s); eager: torch {eager['torch']}, {eager['dtype']}")
print("| step | ganpo bench median (fastest), s | eager PyTorch median (fastest), s | speed-up of medians (fastest) |")
print("|---|---|---|---|")
for key, label in (("ganpo_off", "DPO"), ("ganpo_on", "DPO + GANPO")):
    c, e = cpp[key], eager[key]
    cm, em, cf, ef = c["median_step_time_s"], e["median_step_time_s"], c["min_step_time_s"], e["min_step_time_s"]
    print(f"| {label} | {cm:.3f} ({cf:.3f}) | {em:.3f} ({ef:.3f}) | {em / cm:.2f}x ({ef / cf:.2f}x) |")
mib = lambda b: f"{b / 2**20:.0f} MiB" if b is not None and b >= 0 else "-"
for key, label in (("ganpo_off", "DPO"), ("ganpo_on", "DPO + GANPO")):
    c, e = cpp[key], eager[key]
    mfu = f", MFU {100 * c['mfu']:.1f} %" if c.get("mfu", -1) >= 0 else ""
    print(f"{label}: ganpo bench {c['tokens_per_s']:.0f} tokens/s, {c['model_tflops']:.2f} TFLOP/s{mfu}, memory estimate "
          f"{mib(c['memory_estimate_bytes'])}, CUDA peak {mib(c['cuda_peak_bytes'])}; eager {e['tokens_per_s']:.0f} tokens/s, "
          f"CUDA peak {mib(e.get('cuda_peak_bytes'))}")
r = lambda d, f: d["ganpo_on"][f] / d["ganpo_off"][f]
print(f"GANPO / DPO step-time ratio of medians (fastest): ganpo bench {r(cpp, 'median_step_time_s'):.3f} "
      f"({r(cpp, 'min_step_time_s'):.3f}), eager {r(eager, 'median_step_time_s'):.3f} ({r(eager, 'min_step_time_s'):.3f}); "
      f"model FLOPs ratio of ganpo bench's step {cpp['model_flops_ratio']:.3f} (the critics' matrix products)")
EOF
