#!/usr/bin/env bash
# Issue 13's benchmark table on a GPU in one call: each row runs `ganpo bench` (DPO and DPO +
# GANPO with the paper's critics: 512 wide, 2 layers, 8 heads) through bench-vs-eager.sh, against
# the eager PyTorch step where the row has one, on a model shape of resources/model-shapes trained
# from random weights. Rows run in this order, each under a time limit, and no row starts once
# the budget is spent; each row's figures print when it ends, the table at the end (also
# WORK/table.md, and every row's JSON under WORK/ROW/).
#   1-4  GPT-2 124M and Llama 3.2 1B, 8 pairs x 1024 tokens (256 prompt + 768 response), bf16 and
#        fp32, against eager PyTorch
#   5-6  the same two in bf16 with gradient checkpointing (the eager step has none)
#   7    Gemma 2 2B, bf16, 8 pairs x 16 accumulation steps (the paper's batch of 128), gradient
#        checkpointing: does it fit, its peak memory and tokens/s
#   8-9  Llama 3 8B, bf16, gradient checkpointing: LoRA r 16 on every linear, then full
#        fine-tuning (fp32 weights, gradients, AdamW and the reference need ~160 GB before any
#        activation: expected not to fit one H100 (80 GB) or H200 (141 GB); the row says how it fails)
#   10   row 1 without prefix sharing (the responses' pass over a shared prompt's cached keys needs
#        an explicit mask, so SDPA cannot take its flash kernel there; this row says what that costs;
#        row 1 has the eager step)
#   11   row 2 with the full logits (train.chunked_logps = off): Llama 3's 128k vocabulary makes
#        the rows of Llama, Gemma 2 (256k) take the chunked head by default ("auto"); this row says
#        what the chunked head saves in memory and costs in time
#
#   packaging/gpu-bench-table.sh [--ganpo-binary PATH] [--python PY] [--budget SECONDS]
#                                [--row-limit SECONDS] [--rows 1,2,...] [--work DIR] [--smoke]
# --rows: which rows, in that order (the budget goes to the first ones).
# --smoke runs the same rows on the CPU with small stand-ins of the shapes (fp32, 1 step): it
# checks the script and the configs without a GPU.
set -uo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
G=$REPO/build/gpu/app/ganpo PY=python3 budget=480 row_limit=240 rows="" W=/tmp/ganpo-gpu-bench-table smoke=0
while [ $# -gt 0 ]; do
  case "$1" in
    --ganpo-binary) G=$(realpath "$2"); shift ;;
    --python) PY=$2; shift ;;
    --budget) budget=$2; shift ;;
    --row-limit) row_limit=$2; shift ;;
    --rows) rows=$2; shift ;;
    --work) W=$(realpath -m "$2"); shift ;;
    --smoke) smoke=1 ;;
    *) echo "gpu-bench-table.sh: unknown option $1 (see the usage at the top of this script)" >&2; exit 2 ;;
  esac
  shift
done
[ -x "$G" ] || { echo "gpu-bench-table.sh: no ganpo binary at $G (--ganpo-binary)" >&2; exit 2; }
mkdir -p "$W"
shapes=$REPO/resources/model-shapes
device=cuda prompt=256 response=768 batch=8 steps=3 critics=(--critic-hidden 512 --critic-layers 2 --critic-heads 8)
if [ "$smoke" = 1 ]; then
  # Small stand-ins with each shape's family and features (GQA, tied or untied head, soft-caps).
  shapes=$W/smoke-shapes
  "$PY" - "$REPO/resources/model-shapes" "$shapes" <<'EOF'
import json, os, sys
small = {"gpt2-124m": dict(n_embd=64, n_layer=2, n_head=4, vocab_size=300, n_positions=256, n_ctx=256),
         "llama-3.2-1b": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                              num_key_value_heads=2, head_dim=16, vocab_size=300),
         "gemma-2-2b": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                            num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=16, sliding_window=32, vocab_size=300),
         "llama-3-8b": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                            num_key_value_heads=2, vocab_size=300)}
for name, sizes in small.items():
    c = json.load(open(os.path.join(sys.argv[1], name, "config.json")))
    c.update(sizes)
    os.makedirs(os.path.join(sys.argv[2], name), exist_ok=True)
    json.dump(c, open(os.path.join(sys.argv[2], name, "config.json"), "w"), indent=2)
EOF
  device=cpu prompt=32 response=32 batch=2 steps=1 critics=(--critic-hidden 16 --critic-layers 1 --critic-heads 2)
fi

start=$(date +%s)
# row N LABEL SHAPE DTYPE EAGER(1|0) [--set KEY=VALUE ...]
row() {
  local n=$1 label=$2 shape=$3 dtype=$4 eager=$5
  shift 5
  local left=$((budget - ($(date +%s) - start)))
  if [ "$left" -lt 60 ]; then
    echo "== row $n ($label): not run, the budget of $budget s is spent"
    echo "$n|$label|budget" >> "$W/rows.txt"
    return 0
  fi
  [ "$smoke" = 1 ] && dtype=fp32
  local limit=$((left < row_limit ? left : row_limit)) out=$W/row$n
  echo "== row $n: $label ($(date +%T), limit $limit s)"
  local args=(--shape "$shapes/$shape" --device "$device" --dtype "$dtype" --batch "$batch" --prompt-len "$prompt"
              --response-len "$response" --steps "$steps" "${critics[@]}" --ganpo-binary "$G" --python "$PY"
              --work "$out" --threads "$(nproc)")
  [ "$eager" = 1 ] || args+=(--no-eager)
  timeout "$limit" bash "$REPO/packaging/bench-vs-eager.sh" "${args[@]}" "$@" > "$out.log" 2>&1
  local rc=$?
  tail -8 "$out.log"
  rm -f "$out/pairs.jsonl"  # the row's data, written again by the next run; the figures stay
  [ "$rc" = 124 ] && echo "(row $n stopped at its limit of $limit s)"
  echo "$n|$label|$rc" >> "$W/rows.txt"
}

rm -f "$W/rows.txt"
ckpt=(--set train.gradient_checkpointing=true)
run_row() {
  case "$1" in
    1) row 1 "GPT-2 124M, bf16" gpt2-124m bf16 1 ;;
    2) row 2 "Llama 3.2 1B, bf16, chunked head" llama-3.2-1b bf16 1 ;;
    3) row 3 "GPT-2 124M, fp32" gpt2-124m fp32 1 ;;
    4) row 4 "Llama 3.2 1B, fp32, chunked head" llama-3.2-1b fp32 1 ;;
    5) row 5 "GPT-2 124M, bf16, gradient checkpointing" gpt2-124m bf16 0 "${ckpt[@]}" ;;
    6) row 6 "Llama 3.2 1B, bf16, chunked head, gradient checkpointing" llama-3.2-1b bf16 0 "${ckpt[@]}" ;;
    7) row 7 "Gemma 2 2B, bf16, 8 x 16 accumulation, chunked head, gradient checkpointing" gemma-2-2b bf16 0 "${ckpt[@]}" \
         --set train.gradient_accumulation_steps=16 --data-rows $((batch * 16 * (steps + 2) + 16)) ;;
    8) row 8 "Llama 3 8B, bf16, LoRA r 16 all-linear, chunked head, gradient checkpointing" llama-3-8b bf16 0 "${ckpt[@]}" \
         --set model.lora.r=16 --set model.lora.alpha=32 --set model.lora.target_modules=all-linear ;;
    9) row 9 "Llama 3 8B, bf16, full fine-tuning, chunked head, gradient checkpointing" llama-3-8b bf16 0 "${ckpt[@]}" ;;
    10) row 10 "GPT-2 124M, bf16, without prefix sharing" gpt2-124m bf16 0 --set train.prefix_sharing=false ;;
    11) row 11 "Llama 3.2 1B, bf16, full logits (not chunked)" llama-3.2-1b bf16 0 --set train.chunked_logps=off ;;
    *) echo "gpu-bench-table.sh: there is no row $1 (rows 1-11)" >&2 ;;
  esac
}
# In the order --rows lists them (all ten in order by default).
for n in $(tr ',' ' ' <<< "${rows:-1,2,3,4,5,6,7,8,9,10,11}"); do run_row "$n"; done

# The table: one line per row and variant, from each row's JSON.
"$PY" - "$W" "$smoke" > "$W/table.md" <<'EOF'
import json, os, sys
w = sys.argv[1]
if sys.argv[2] == "1":
    print("Smoke run: small CPU stand-ins of the shapes in fp32, one step each; the figures say nothing.\n")
mib = lambda b: f"{b / 2**20:.0f}" if b is not None and b >= 0 else "-"
print("| row | step | ganpo s/step (fastest) | tokens/s | MFU % | estimate MiB | CUDA peak MiB | eager s/step | speed-up | eager peak MiB |")
print("|---|---|---|---|---|---|---|---|---|---|")
def load(path):
    try:
        return json.load(open(path))
    except (OSError, ValueError):  # absent, or cut short by the row's time limit
        return None

rows = open(os.path.join(w, "rows.txt")).read().splitlines() if os.path.exists(os.path.join(w, "rows.txt")) else []
for line in rows:
    n, label, rc = line.split("|")
    cpp, eager = load(os.path.join(w, f"row{n}", "cpp.json")), load(os.path.join(w, f"row{n}", "eager.json"))
    if cpp is None:
        if rc == "budget":
            why = "not run: the budget was spent"
        elif rc == "124":
            why = "stopped at its time limit"
        else:
            try:
                log = open(os.path.join(w, f"row{n}.log")).read().strip().splitlines()
            except OSError:
                log = []
            why = log[-1] if log else f"exit {rc}"
        print(f"| {n} {label} | - | {why[:200]} | | | | | | | |")
        continue
    for key, step in (("ganpo_off", "DPO"), ("ganpo_on", "DPO + GANPO")):
        c = cpp[key]
        mfu = f"{100 * c['mfu']:.1f}" if c.get("mfu", -1) >= 0 else "-"
        e = eager[key] if eager else None
        eager_cols = (f"{e['median_step_time_s']:.3f} | {e['median_step_time_s'] / c['median_step_time_s']:.2f}x | "
                      f"{mib(e.get('cuda_peak_bytes'))}") if e else "- | - | -"
        print(f"| {n} {label} | {step} | {c['median_step_time_s']:.3f} ({c['min_step_time_s']:.3f}) | {c['tokens_per_s']:.0f} | "
              f"{mfu} | {mib(c['memory_estimate_bytes'])} | {mib(c['cuda_peak_bytes'])} | {eager_cols} |")
    # Beside the step-time ratio, the model FLOPs ratio: what the critics' products add by count.
    print(f"| {n} {label} | GANPO / DPO | {cpp['step_time_ratio']:.3f} (model FLOPs {cpp.get('model_flops_ratio', 0):.3f}) | | | | | "
          + (f"{eager['ganpo_on']['median_step_time_s'] / eager['ganpo_off']['median_step_time_s']:.3f}" if eager else "-")
          + " | | |")
EOF
echo "== table ($(( $(date +%s) - start )) s; $W/table.md)"
cat "$W/table.md"
