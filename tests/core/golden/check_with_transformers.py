#!/usr/bin/python3
"""The workbench's Hugging Face folders against the real transformers library (and PEFT where present).

hf_golden.json's values come from an independent transcription of the transformers forwards
(make_hf_golden.py), because neither Debian 12 nor the CI machine has transformers. Where a Python
with transformers exists (Debian unstable's python3-transformers, run by
`packaging/check-libtorch2.sh --suite sid --transformers`, or the device machine's torch image) this
checks the chain end to end:

1. every golden case: the folder written from the weight formula, loaded by transformers'
   AutoModelForCausalLM in float64, gives the golden logits and final hidden states; and
   `ganpo logits` on the same folder gives transformers' float32 logits;
2. folders the workbench writes (`ganpo train`, each run's final/): a Llama and a GPT-2 preset
   trained from scratch for a few steps (the workbench writes their config.json), every golden case's
   family trained from random weights (its config.json carried through), and over each but GPT-2 a
   LoRA preference run, whose final/ holds the merged model and final/adapter/ the PEFT adapter
   folder. transformers loads each model folder and gives `ganpo logits`' logits on it; each merged
   model differs from its base by far more than the tolerance (so the LoRA checks can fail);
   `ganpo logits` on the adapter folder (base + adapter, as the workbench loads it) gives the merged
   logits; and where the peft package is installed, PeftModel.from_pretrained(base, adapter/) gives
   them too, and an adapter PEFT itself writes (save_pretrained, random non-zero B) over each such
   folder gives PeftModel's logits in `ganpo logits`; both with PEFT's per-layer settings too
   (layers_to_transform, layers_pattern, exclude_modules, target_modules as a regular expression, modules_to_save,
   trainable_token_indices, rank_pattern, alpha_pattern, and bias "all" / "lora_only");
3. where a folder holds a tokenizer.json and the tokenizers package is installed, its ids for a few
   texts equal `ganpo tokenize`'s.

    python3 tests/core/golden/check_with_transformers.py --ganpo build/app/ganpo [--work DIR]

Prints one line per check and exits 1 if any fails (2 if transformers is missing).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
# transformers in float64 against the float64 transcription: Gemma 2's RMSNorm computes in float32
# whatever the model's dtype (x.float()), which moves its hidden states by ~1.5e-6.
TOL_F64 = 5e-6
TOL_F32 = 5e-5   # float32 forwards (the golden README's noise is ~3e-6; kernels differ in summation order)

failures = []


def report(ok, what, detail=""):
    print(("PASS " if ok else "FAIL ") + what + (f": {detail}" if detail else ""), flush=True)
    if not ok:
        failures.append(what)


def ganpo(args, *extra, stdin=None):
    p = subprocess.run([args.ganpo, *extra], input=stdin, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"ganpo {' '.join(extra)} failed ({p.returncode}):\n{p.stderr[-2000:]}")
    return p.stdout


def ganpo_logits(args, folder, ids):
    import torch
    out = json.loads(ganpo(args, "logits", "--model", folder, "--ids", ",".join(map(str, ids)), "--json"))
    return torch.tensor(out["logits"], dtype=torch.float64)


def hf_forward(folder, ids, dtype):
    import torch
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, attn_implementation="eager")
    model.eval()
    x = torch.tensor([ids])
    with torch.no_grad():
        logits = model(input_ids=x).logits[0].to(torch.float64)
        hidden = getattr(model, model.base_model_prefix)(input_ids=x).last_hidden_state[0].to(torch.float64)
    return model, logits, hidden


def max_diff(a, b):
    return (a - b).abs().max().item()


def write_golden_folder(case, folder, make_weight):
    import torch
    from safetensors.torch import save_file
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(case["config"], f)
    tensors = {t["name"]: make_weight(t["name"], t["shape"]).to(torch.float32).contiguous() for t in case["tensors"]}
    save_file(tensors, os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})


def check_golden(args, work):
    import torch
    sys.path.insert(0, HERE)
    from make_hf_golden import make_weight  # the formula, not the forwards
    torch.set_default_dtype(torch.float32)  # make_hf_golden sets float64 on import
    with open(os.path.join(HERE, "hf_golden.json")) as f:
        golden = json.load(f)
    for case in golden["cases"]:
        name, ids = case["name"], case["input_ids"]
        folder = os.path.join(work, "golden", name)
        write_golden_folder(case, folder, make_weight)
        want_logits = torch.tensor(case["logits"], dtype=torch.float64)
        want_hidden = torch.tensor(case["hidden"], dtype=torch.float64)
        _, logits, hidden = hf_forward(folder, ids, torch.float64)
        d_logits, d_hidden = max_diff(logits, want_logits), max_diff(hidden, want_hidden)
        report(d_logits < TOL_F64 and d_hidden < TOL_F64, f"golden {name}: transformers float64 = hf_golden.json",
               f"max |d logits| {d_logits:.2e}, |d hidden| {d_hidden:.2e}")
        _, logits32, _ = hf_forward(folder, ids, torch.float32)
        d = max_diff(ganpo_logits(args, folder, ids), logits32)
        report(d < TOL_F32, f"golden {name}: ganpo logits = transformers float32", f"max |d| {d:.2e}")


# Short runs on the built-in task; the byte tokenizer's 259 ids fit every vocabulary below.
# A run's config: RUN_HEAD, its [model] (and [model.lora], [ganpo]) section, RUN_TAIL.
RUN_HEAD = """
name = "{name}"
stage = "{stage}"
output_dir = "{out}"
seed = 7
device = "cpu"
"""
RUN_TAIL = """
[data]
builtin = "lists"
builtin_train_size = 64
builtin_eval_size = 8
max_length = 64
max_prompt_length = 32
[train]
learning_rate = {lr}
per_device_train_batch_size = 4
max_steps = 3
logging_steps = 3
eval_steps = 0
save_steps = 0
[sampling]
every_steps = 0
[eval]
judge_at_end = false
"""

# SFT from a preset's architecture (the workbench writes config.json itself).
PRESET_RUN = RUN_HEAD + """
[model]
preset = ""
arch = "{arch}"
d_model = 64
n_layers = 2
n_heads = 4
max_seq_len = 256
""" + RUN_TAIL

# SFT from a family's config.json with random weights (the folder's config is carried over).
FAMILY_RUN = RUN_HEAD + """
[model]
checkpoint = "{shape}"
random_weights = true
""" + RUN_TAIL

# LoRA over a trained folder: DPO + GANPO, a rate that moves the adapters well away from zero.
LORA_RUN = RUN_HEAD + """
[model]
checkpoint = "{base}"
[model.lora]
r = 4
alpha = 8.0
use_rslora = {rslora}
use_dora = {dora}
dropout = 0.0
target_modules = "{targets}"
{extra}
[ganpo]
enabled = true
critic_hidden = 32
critic_layers = 1
critic_heads = 2
""" + RUN_TAIL


def train(args, work, name, text):
    path = os.path.join(work, name + ".toml")
    with open(path, "w") as f:
        f.write(text)
    ganpo(args, "train", "--no-db", "--config", path)
    final = os.path.join(work, name, "final")
    if not os.path.isfile(os.path.join(final, "config.json")):
        raise RuntimeError(f"ganpo train wrote no {final}/config.json")
    return final


def check_tokenizer(args, folder, label):
    if not os.path.isfile(os.path.join(folder, "tokenizer.json")):
        print(f"SKIP {label}: tokenizer: the folder has no tokenizer.json")
        return
    try:
        from tokenizers import Tokenizer
    except ImportError:
        print(f"SKIP {label}: tokenizer: the tokenizers package is not installed")
        return
    tok = Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))
    texts = ["red, green and blue", "Ünïcödé — 東京 🙂", "  two  spaces\nand a line"]
    rows = "".join(json.dumps({"text": t}) + "\n" for t in texts)
    out = ganpo(args, "tokenize", "--tokenizer", folder, "--no-special", stdin=rows)
    ours = [json.loads(line)["ids"] for line in out.splitlines()]
    theirs = [tok.encode(t, add_special_tokens=False).ids for t in texts]
    report(ours == theirs, f"{label}: ganpo tokenize = tokenizers", "" if ours == theirs else f"{ours} vs {theirs}")


IDS = [5, 72, 101, 44, 33, 90, 17, 64, 12, 99, 3, 58]


def check_folder(args, folder, label):
    import torch
    model, hf, _ = hf_forward(folder, IDS, torch.float32)
    d = max_diff(ganpo_logits(args, folder, IDS), hf)
    report(d < TOL_F32, f"{label}: transformers = ganpo logits", f"max |d| {d:.2e}")
    check_tokenizer(args, folder, label)
    return model, hf


def check_lora(args, work, name, base, hf_base, rslora=False, dora=False, targets="q_proj,v_proj,down_proj", extra=""):
    """extra: more [model.lora] lines (PEFT's layers_to_transform, rank_pattern, ...)."""
    import torch
    run = LORA_RUN.format(name=name, stage="preference", out=os.path.join(work, name), base=base, lr=5e-2,
                          rslora="true" if rslora else "false", dora="true" if dora else "false", targets=targets,
                          extra=extra)
    merged = train(args, work, name, run)
    adapter = os.path.join(merged, "adapter")
    _, hf_merged, _ = hf_forward(merged, IDS, torch.float32)
    moved = max_diff(hf_merged, hf_base)
    report(moved > 100 * TOL_F32, f"{name}: the merged model differs from its base", f"max |d| {moved:.2e}")
    d = max_diff(ganpo_logits(args, merged, IDS), hf_merged)
    report(d < TOL_F32, f"{name}: merged final/, transformers = ganpo logits", f"max |d| {d:.2e}")
    if not os.path.isfile(os.path.join(adapter, "adapter_config.json")):
        report(False, f"{name}: final/adapter/ holds a PEFT adapter folder")
        return
    d = max_diff(ganpo_logits(args, adapter, IDS), hf_merged)
    report(d < TOL_F32, f"{name}: ganpo logits on final/adapter/ (base + adapter) = the merged folder", f"max |d| {d:.2e}")
    try:
        from peft import PeftModel
    except ImportError:
        print(f"SKIP {name}: PeftModel.from_pretrained: the peft package is not installed")
        return
    # A fresh base model: from_pretrained puts its layers into the model it is given, and the
    # adapters of an earlier check over the same base would stay in it.
    base_model, _, _ = hf_forward(base, IDS, torch.float32)
    peft_model = PeftModel.from_pretrained(base_model, adapter)
    peft_model.eval()
    with torch.no_grad():
        got = peft_model(input_ids=torch.tensor([IDS])).logits[0].to(torch.float64)
    d = max_diff(got, hf_merged)
    report(d < TOL_F32, f"{name}: PeftModel.from_pretrained(base, final/adapter/) = the merged folder", f"max |d| {d:.2e}")


def check_peft_written(args, work, name, base, rslora=False, dora=False, targets=("q_proj", "v_proj", "down_proj"),
                       init=False, **lora_config):
    """The other direction: an adapter PEFT itself writes (random, non-zero B) over a workbench folder.
    lora_config: more LoraConfig settings (layers_to_transform, rank_pattern, exclude_modules, ...)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    torch.manual_seed(3)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32, attn_implementation="eager")
    config = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=targets if isinstance(targets, str) else list(targets),
                        init_lora_weights=init, use_rslora=rslora, use_dora=dora,
                        task_type="CAUSAL_LM", **lora_config)
    peft_model = get_peft_model(model, config)
    if lora_config.get("modules_to_save") or lora_config.get("trainable_token_indices") or lora_config.get("bias"):
        with torch.no_grad():  # copies, token rows and trained biases away from the originals, so they count
            for n, p in peft_model.named_parameters():
                if "modules_to_save" in n or "trainable_tokens_delta" in n or (p.requires_grad and n.endswith(".bias")):
                    p.add_(0.05 * torch.randn_like(p))
    with torch.no_grad():  # an embedding's A and B start as randn: scaled down to a trained adapter's size
        for n, p in peft_model.named_parameters():
            if "lora_embedding_" in n:
                p.mul_(0.1)
            if init and ("lora_A" in n or "lora_B" in n):  # PiSSA / OLoRA: trained away from their first values
                p.add_(0.05 * torch.randn_like(p) * p.abs().mean())
    if dora:  # magnitudes away from ||W||, so they count
        with torch.no_grad():
            for n, p in peft_model.named_parameters():
                if "lora_magnitude_vector" in n:
                    p.mul_(1 + 0.2 * torch.randn_like(p))
    peft_model.eval()
    adapter = os.path.join(work, name)
    peft_model.save_pretrained(adapter)
    with torch.no_grad():
        want = peft_model(input_ids=torch.tensor([IDS])).logits[0].to(torch.float64)
        with peft_model.disable_adapter():
            plain = peft_model(input_ids=torch.tensor([IDS])).logits[0].to(torch.float64)
    moved = max_diff(want, plain)
    d = max_diff(ganpo_logits(args, adapter, IDS), want)
    report(d < TOL_F32 and moved > 100 * TOL_F32, f"{name}: ganpo logits on PEFT's save_pretrained folder = PeftModel",
           f"max |d| {d:.2e} (the adapter moves the logits by {moved:.2e})")


def check_trained(args, work):
    # Presets: the workbench writes the config.
    bases = {}
    for arch in ("llama", "gpt2"):
        name = f"preset-{arch}"
        run = PRESET_RUN.format(name=name, stage="sft", arch=arch, out=os.path.join(work, name), lr=3e-3)
        final = train(args, work, name, run)
        bases[name] = (final, check_folder(args, final, f"{name} final/")[1])
    # Every golden family from random weights: the folder's config.json carried through training.
    with open(os.path.join(HERE, "hf_golden.json")) as f:
        cases = json.load(f)["cases"]
    for case in cases:
        cfg = dict(case["config"], vocab_size=320)
        name = f"family-{case['name']}"
        shape = os.path.join(work, "shapes", case["name"])
        os.makedirs(shape, exist_ok=True)
        with open(os.path.join(shape, "config.json"), "w") as f:
            json.dump(cfg, f)
        run = FAMILY_RUN.format(name=name, stage="sft", shape=shape, out=os.path.join(work, name), lr=3e-3)
        final = train(args, work, name, run)
        bases[name] = (final, check_folder(args, final, f"{name} final/")[1])
    # LoRA over each; on GPT-2 every Conv1D module, c_attn (q, k and v) with one A as PEFT's.
    for name, (final, hf) in bases.items():
        check_lora(args, work, "lora-" + name, final, hf, targets="all-linear" if "gpt2" in name else "q_proj,v_proj,down_proj")
    # rsLoRA (alpha / sqrt(r): here 4, against alpha / r = 2) over one folder, both directions.
    check_lora(args, work, "lora-rslora-preset-llama", *bases["preset-llama"], rslora=True)
    # DoRA (a trained magnitude per output row) over two folders, one with biases on its projections.
    for name in ("preset-llama", "family-llama_head_dim_bias"):
        if name in bases:
            check_lora(args, work, "lora-dora-" + name, *bases[name], dora=True)
    # DoRA on GPT-2's c_attn and its attention's c_proj alone (PEFT's "c_proj" would be both).
    check_lora(args, work, "lora-dora-preset-gpt2", *bases["preset-gpt2"], dora=True, targets="c_attn,attn.c_proj")
    # PEFT's per-layer settings: adapters on one layer with their own ranks and alphas (the folder
    # says layers_to_transform and a path's rank_pattern), on layers that differ between modules
    # (whole module names, a rank by whole name), and on GPT-2's c_attn in one layer.
    check_lora(args, work, "lora-layers-preset-llama", *bases["preset-llama"],
               extra='layers_to_transform = "1"\nrank_pattern = "mlp.down_proj=2"\nalpha_pattern = "v_proj=16"')
    check_lora(args, work, "lora-uneven-preset-llama", *bases["preset-llama"], targets="model.layers.0.self_attn.q_proj,v_proj",
               extra='rank_pattern = "layers.1.self_attn.v_proj=8"')
    check_lora(args, work, "lora-layers-dora-preset-gpt2", *bases["preset-gpt2"], dora=True, targets="c_attn,mlp.c_fc",
               extra='layers_to_transform = "0"\nrank_pattern = "c_attn=8"')
    # modules_to_save: the head untied from the tied embedding and the norms trained whole (the
    # merged folder unties them too); on GPT-2 the embedding and c_attn trained whole with the
    # head kept tied (ensure_weight_tying); Gemma 2's head untied.
    check_lora(args, work, "lora-save-preset-llama", *bases["preset-llama"], targets="q_proj,v_proj",
               extra='modules_to_save = "lm_head, norm"')
    check_lora(args, work, "lora-save-tied-preset-gpt2", *bases["preset-gpt2"], targets="c_fc",
               extra='modules_to_save = "wte, c_attn"\nensure_weight_tying = true')
    # trainable_token_indices: some rows of the embedding train, the tied head follows them.
    check_lora(args, work, "lora-tokens-preset-llama", *bases["preset-llama"], targets="q_proj",
               extra='trainable_token_indices = "10-20, 101"')
    # LoRA on the token embedding (PEFT's lora_embedding_A / B): the tied head keeps the original
    # weights, so the merged folder unties them; GPT-2's wte with a rank of its own.
    check_lora(args, work, "lora-embed-preset-llama", *bases["preset-llama"], targets="q_proj,embed_tokens")
    check_lora(args, work, "lora-embed-preset-gpt2", *bases["preset-gpt2"], targets="c_attn,wte", extra='rank_pattern = "wte=2"')
    if "family-gemma2_softcap_sliding" in bases:  # Gemma 2 scales the embedding by sqrt(d), the adapter's part too
        check_lora(args, work, "lora-embed-family-gemma2_softcap_sliding", *bases["family-gemma2_softcap_sliding"],
                   targets="q_proj,embed_tokens")
    # LoRA on the output head (PEFT's LoRA Linear on lm_head): a tied embedding keeps the original
    # weights (the merged folder unties them); GPT-2's with a rank of its own; an untied head;
    # Gemma 2's soft-capped logits.
    check_lora(args, work, "lora-head-preset-llama", *bases["preset-llama"], targets="q_proj,lm_head")
    check_lora(args, work, "lora-head-preset-gpt2", *bases["preset-gpt2"], targets="c_attn,lm_head", extra='rank_pattern = "lm_head=2"')
    for name in ("family-llama_head_dim_bias", "family-gemma2_softcap_sliding"):
        if name in bases:
            check_lora(args, work, "lora-head-" + name, *bases[name], targets="v_proj,lm_head")
    if "family-gemma2_softcap_sliding" in bases:
        check_lora(args, work, "lora-save-family-gemma2_softcap_sliding", *bases["family-gemma2_softcap_sliding"],
                   targets="q_proj", extra='modules_to_save = "lm_head, model.layers.1.mlp"')
    # PiSSA and OLoRA runs: their adapter folder is PEFT's conversion to plain LoRA of rank 2r.
    check_lora(args, work, "lora-pissa-preset-llama", *bases["preset-llama"], extra='init_lora_weights = "pissa"\nrank_pattern = "down_proj=2"')
    check_lora(args, work, "lora-olora-preset-gpt2", *bases["preset-gpt2"], targets="c_attn,c_fc", extra='init_lora_weights = "olora"')
    check_lora(args, work, "lora-pissa-preset-gpt2", *bases["preset-gpt2"], targets="c_attn", extra='init_lora_weights = "pissa"')
    # PEFT's bias option: every bias of GPT-2 beside a final norm trained whole, the adapted
    # modules' with DoRA, and Qwen2's q, k and v biases / Llama's attention and MLP biases.
    check_lora(args, work, "lora-bias-preset-gpt2", *bases["preset-gpt2"], targets="c_attn",
               extra='bias = "all"\nmodules_to_save = "ln_f"')
    check_lora(args, work, "lora-bias-dora-preset-gpt2", *bases["preset-gpt2"], dora=True, targets="c_attn,c_fc",
               extra='bias = "lora_only"')
    for name in ("family-qwen2_qkv_bias", "family-llama_head_dim_bias"):
        if name in bases:
            check_lora(args, work, "lora-bias-" + name, *bases[name], targets="q_proj,v_proj,down_proj", extra='bias = "lora_only"')
    try:
        import peft  # noqa: F401
    except ImportError:
        print("SKIP adapters PEFT writes: the peft package is not installed")
        return
    for name, (final, _) in bases.items():
        check_peft_written(args, work, "peft-" + name, final,
                           targets=("c_attn", "c_proj", "c_fc") if "gpt2" in name else ("q_proj", "v_proj", "down_proj"))
    check_peft_written(args, work, "peft-rslora-preset-llama", bases["preset-llama"][0], rslora=True)
    # "all-linear", which PEFT saves as every layer's module names.
    check_peft_written(args, work, "peft-all-linear-preset-llama", bases["preset-llama"][0], targets="all-linear")
    for name in ("preset-llama", "family-llama_head_dim_bias"):
        if name in bases:
            check_peft_written(args, work, "peft-dora-" + name, bases[name][0], dora=True)
    check_peft_written(args, work, "peft-dora-preset-gpt2", bases["preset-gpt2"][0], dora=True, targets="all-linear")
    # PEFT's per-layer settings as PEFT users write them: layers, rank and alpha patterns, a
    # regular expression with exclusions, GPT-2's "h" layers. (PEFT saves adapter_config.json with
    # its keys sorted, so where two patterns match one module the sorted order decides when the
    # folder is loaded, in PEFT too: patterns that overlap in another order do not reload there.)
    llama = bases["preset-llama"][0]
    check_peft_written(args, work, "peft-layers-preset-llama", llama, layers_to_transform=[1],
                       rank_pattern={"down_proj": 6, "layers.1.mlp.down_proj": 2, "q_proj": 8}, alpha_pattern={"v_proj": 32})
    check_peft_written(args, work, "peft-regex-preset-llama", llama, targets=r".*\.(self_attn\.(q|v)_proj|mlp\.(up|down)_proj)",
                       exclude_modules=r"model\.layers\.0\.mlp\..*", rank_pattern={"up_proj": 2})
    check_peft_written(args, work, "peft-exclude-preset-llama", llama, targets="all-linear",
                       exclude_modules=["model.layers.1.self_attn.o_proj", "gate_proj"])
    check_peft_written(args, work, "peft-layers-preset-gpt2", bases["preset-gpt2"][0], targets=("c_attn", "c_proj"),
                       layers_to_transform=1, layers_pattern="h", rank_pattern={"c_attn": 8}, dora=True)
    # modules_to_save as PEFT users write it: the embedding and head untied (PEFT's default), the
    # norms and one MLP by the end of their names, GPT-2's c_attn, positions and final norm, and
    # GPT-2's tied head kept tied to the trained embedding.
    check_peft_written(args, work, "peft-save-preset-llama", llama, targets=("q_proj", "v_proj"),
                       modules_to_save=["lm_head", "embed_tokens"])
    check_peft_written(args, work, "peft-save-norm-preset-llama", llama, targets=("q_proj", "v_proj"),
                       modules_to_save=["norm", "layers.0.mlp"])
    check_peft_written(args, work, "peft-save-preset-gpt2", bases["preset-gpt2"][0], targets=("c_fc",),
                       modules_to_save=["c_attn", "wpe", "ln_f"])
    check_peft_written(args, work, "peft-save-tied-preset-gpt2", bases["preset-gpt2"][0], targets=("c_fc",),
                       modules_to_save=["lm_head"], ensure_weight_tying=True)
    # ensure_weight_tying with a name PEFT does not tie by ("wte"): the head stays the original.
    check_peft_written(args, work, "peft-save-wte-preset-gpt2", bases["preset-gpt2"][0], targets=("c_fc",),
                       modules_to_save=["wte"], ensure_weight_tying=True)
    # A module to save over targeted ones: PEFT leaves layer 1's MLP unadapted and trains it whole.
    check_peft_written(args, work, "peft-save-over-targets-preset-llama", llama, targets="all-linear",
                       modules_to_save=["layers.1.mlp"])
    # The token embedding adapted (PEFT also saves its base weight, "...embed_tokens.base_layer.weight"),
    # alone with a pattern, and GPT-2's wte beside c_attn.
    check_peft_written(args, work, "peft-embed-preset-llama", llama, targets=("q_proj", "embed_tokens"))
    check_peft_written(args, work, "peft-embed-regex-preset-llama", llama, targets=r"model\.embed_tokens")
    check_peft_written(args, work, "peft-embed-preset-gpt2", bases["preset-gpt2"][0], targets=("c_attn", "wte"),
                       rank_pattern={"wte": 2})
    # The output head adapted (PEFT also saves its base weight, "lm_head.base_layer.weight"), alone
    # with a pattern, GPT-2's beside c_attn with its own rank, an untied head.
    check_peft_written(args, work, "peft-head-preset-llama", llama, targets=("q_proj", "lm_head"))
    check_peft_written(args, work, "peft-head-regex-preset-llama", llama, targets=r"lm_head")
    check_peft_written(args, work, "peft-head-preset-gpt2", bases["preset-gpt2"][0], targets=("c_attn", "lm_head"),
                       rank_pattern={"lm_head": 2})
    if "family-llama_head_dim_bias" in bases:
        check_peft_written(args, work, "peft-head-family-llama_head_dim_bias", bases["family-llama_head_dim_bias"][0],
                           targets=("v_proj", "lm_head"))
    # trainable_token_indices: the embedding's rows (the tied head follows them), and by layer with
    # other rows for the head, which PEFT then unties.
    check_peft_written(args, work, "peft-tokens-preset-llama", llama, targets=("q_proj",), trainable_token_indices=[10, 11, 101])
    check_peft_written(args, work, "peft-tokens-apart-preset-gpt2", bases["preset-gpt2"][0], targets=("c_fc",),
                       trainable_token_indices={"wte": [10, 11], "lm_head": [12]})
    # PiSSA and OLoRA, whose folders PEFT loads onto the base minus the adapters' first values
    # (computed again from the base), with a rank of their own on one module.
    check_peft_written(args, work, "peft-pissa-preset-llama", llama, init="pissa", rank_pattern={"down_proj": 2})
    check_peft_written(args, work, "peft-olora-preset-llama", llama, init="olora")
    check_peft_written(args, work, "peft-pissa-preset-gpt2", bases["preset-gpt2"][0], targets=("c_attn", "c_fc"), init="pissa")
    if "family-qwen2_qkv_bias" in bases:
        check_peft_written(args, work, "peft-olora-family-qwen2_qkv_bias", bases["family-qwen2_qkv_bias"][0], init="olora")
    # bias "all" (with a module trained whole: PEFT also saves its original's bias and its copy's
    # once more) and "lora_only" with DoRA; Qwen2's q, k and v biases.
    check_peft_written(args, work, "peft-bias-preset-gpt2", bases["preset-gpt2"][0], targets=("c_attn", "c_fc"), bias="all",
                       modules_to_save=["ln_f"])
    check_peft_written(args, work, "peft-bias-dora-preset-gpt2", bases["preset-gpt2"][0], targets=("c_attn",), dora=True,
                       bias="lora_only")
    if "family-qwen2_qkv_bias" in bases:
        check_peft_written(args, work, "peft-bias-family-qwen2_qkv_bias", bases["family-qwen2_qkv_bias"][0],
                           targets=("q_proj", "o_proj"), bias="lora_only")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ganpo", required=True, help="the ganpo binary")
    parser.add_argument("--work", help="scratch folder (default: a temporary one)")
    args = parser.parse_args()
    args.ganpo = os.path.abspath(args.ganpo)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        import torch
        import transformers
        transformers.utils.logging.disable_progress_bar()
    except ImportError as e:
        print(f"check_with_transformers: {e}; install transformers (Debian: python3-transformers)", file=sys.stderr)
        return 2
    print(f"transformers {transformers.__version__}, torch {torch.__version__}, "
          f"{ganpo(args, '--version').strip().splitlines()[0]}", flush=True)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="ganpo-hf-") as tmp:
        work = os.path.abspath(args.work or tmp)
        os.makedirs(work, exist_ok=True)
        check_golden(args, work)
        check_trained(args, work)
    print(f"{len(failures)} failed" if failures else "all passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
