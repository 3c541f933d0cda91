#!/usr/bin/python3
"""Independent float64 reference for Hugging Face causal-LM forward passes -> hf_golden.json.

Run with Debian's interpreter and torch (transformers is NOT needed):
    /usr/bin/python3 tests/core/golden/make_hf_golden.py            # writes hf_golden.json next to this file
    /usr/bin/python3 tests/core/golden/make_hf_golden.py --check    # self-checks only, writes nothing

Every forward below is transcribed by hand from the transformers modeling code (see TRANSFORMERS_SOURCES) and
evaluated in float64 on weights that are float32 values produced by the deterministic formula in `make_weight`.
The C++ test builds the same model folders (config.json + F32 safetensors from the same formula) and compares.
"""
import copy
import json
import math
import os
import sys

import torch

torch.set_default_dtype(torch.float64)
F64 = torch.float64

TRANSFORMERS_SOURCES = {
    "note": "huggingface/transformers files read from the stored index; versions differ per file, the commit of each "
            "file read is listed. Semantics used here are the ones of current main (transformers 5.x, "
            "masking_utils era), which agree with the 4.4x files read for everything these cases exercise.",
    "src/transformers/masking_utils.py": "00c4411cbe15d4c56d54d3b56d4d171e9c289dac",
    "src/transformers/modeling_rope_utils.py": "0044e3b3facff1a1ad60b235c69d5b45beae75a4",
    "src/transformers/models/qwen3/modeling_qwen3.py": "000c33fdfde12e1ffafbfcdb3c926df5727a00b6",
    "src/transformers/models/qwen2/modeling_qwen2.py": "00d4b3d2142cb4ced2f51b90614b5d26bc045015",
    "src/transformers/models/gemma2/modeling_gemma2.py": "006e86931247d7bacf94ad00ada1fb6baf11e94b",
    "src/transformers/models/gemma2/modular_gemma2.py": "006e86931247d7bacf94ad00ada1fb6baf11e94b (+ a 5.x copy)",
    "src/transformers/models/mistral/modeling_mistral.py": "005a187ea7c5a291ef79f737d47233641ac17f24",
    "src/transformers/models/llama/modeling_llama.py": "002272831fba584eb30dca9729c1be456836960a (+ 5.x copies)",
    "src/transformers/models/gpt2/modeling_gpt2.py": "0010f60284ab4b9d14b7df9c6525b1a2ad44e640",
    "src/transformers/pytorch_utils.py (Conv1D)": "04ae75715f2cca2d87bbaf07c1d8e9fb2ab20bfd",
}

FORMULA = (
    "h = FNV-1a 32 (offset 2166136261, prime 16777619) of the stored tensor name (UTF-8). For flat row-major index k of "
    "the stored shape: x = (h*0x9E3779B97F4A7C15 + (k+1)*0xBF58476D1CE4E5B9) mod 2^64; x ^= x>>30; "
    "x = x*0xBF58476D1CE4E5B9 mod 2^64; x ^= x>>27; x = x*0x94D049BB133111EB mod 2^64; x ^= x>>31; "
    "u = (x>>11)*2^-53; s = 2.0*u - 1.0 (double). value = 1.0 + 0.1*s for 1-D tensors whose name ends in "
    "'norm.weight' or in 'ln_1.weight'/'ln_2.weight'/'ln_f.weight'; 0.05*s for names ending '.bias'; 0.1*s otherwise "
    "(double arithmetic, no FMA). Stored as float32(value) (round to nearest even); the reference uses that float32 as "
    "a double.")

# ----------------------------------------------------------------------------------------------------------------
# Weights by formula
# ----------------------------------------------------------------------------------------------------------------
M64 = (1 << 64) - 1


def fnv1a32(name):
    h = 2166136261
    for b in name.encode("utf-8"):
        h = ((h ^ b) * 16777619) & 0xFFFFFFFF
    return h


def weight_kind(name, shape):
    if len(shape) == 1 and (name.endswith("norm.weight") or name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight"))):
        return 1.0, 0.1
    if name.endswith(".bias"):
        return 0.0, 0.05
    return 0.0, 0.1


def make_weight(name, shape):
    h = fnv1a32(name)
    offset, scale = weight_kind(name, shape)
    base = (h * 0x9E3779B97F4A7C15) & M64
    n = math.prod(shape)
    vals = []
    for k in range(n):
        x = (base + (k + 1) * 0xBF58476D1CE4E5B9) & M64
        x ^= x >> 30
        x = (x * 0xBF58476D1CE4E5B9) & M64
        x ^= x >> 27
        x = (x * 0x94D049BB133111EB) & M64
        x ^= x >> 31
        s = 2.0 * ((x >> 11) * 2.0 ** -53) - 1.0
        vals.append(offset + scale * s if offset else scale * s)
    # float32 rounding (what the F32 safetensors holds), then back to float64 for the reference
    return torch.tensor(vals, dtype=F64).to(torch.float32).to(F64).reshape(shape)


def build_weights(specs):
    return {name: make_weight(name, shape) for name, shape in specs}


# ----------------------------------------------------------------------------------------------------------------
# Building blocks (float64), each a transcription of the HF module named in the comment
# ----------------------------------------------------------------------------------------------------------------
def linear(x, W, b=None):  # nn.Linear: W [out, in]; x [T, in] -> [T, out]
    y = x @ W.t()
    return y if b is None else y + b


def rms_norm(x, w, eps):  # LlamaRMSNorm / Qwen*RMSNorm / MistralRMSNorm: w * (x * rsqrt(mean(x^2) + eps))
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def gemma_rms_norm(x, w, eps):  # Gemma2RMSNorm: (x * rsqrt(mean(x^2) + eps)) * (1 + w), in float32 in HF
    return (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)) * (1.0 + w)


def layer_norm(x, w, b, eps):  # nn.LayerNorm (biased variance)
    mu = x.mean(-1, keepdim=True)
    var = (x - mu).pow(2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * w + b


def silu(x):
    return x * torch.sigmoid(x)


def gelu_tanh(x):  # ACT2FN["gelu_new"] == ACT2FN["gelu_pytorch_tanh"] (same formula)
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


def rope_inv_freq(cfg, dim):
    """modeling_rope_utils: default / linear / llama3. Returns [dim/2] inverse frequencies (float64)."""
    base = cfg.get("rope_theta", 10000.0)
    inv = [1.0 / base ** (2 * i / dim) for i in range(dim // 2)]
    rs = cfg.get("rope_scaling")
    if not rs:
        return torch.tensor(inv)
    kind = rs.get("rope_type", rs.get("type"))  # BC: "type" is the old spelling
    if kind == "linear":  # inv_freq /= factor  (== positions / factor)
        return torch.tensor([f / rs["factor"] for f in inv])
    if kind == "llama3":
        factor, lo, hi = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
        old = rs["original_max_position_embeddings"]
        out = []
        for f in inv:
            wavelen = 2 * math.pi / f
            if wavelen < old / hi:  # high frequency: unchanged
                out.append(f)
            elif wavelen > old / lo:  # low frequency: divided by factor
                out.append(f / factor)
            else:  # medium: smooth interpolation
                smooth = (old / wavelen - lo) / (hi - lo)
                out.append((1 - smooth) * f / factor + smooth * f)
        return torch.tensor(out)
    raise ValueError(kind)


def apply_rope(x, inv_freq):  # x [T, n, d]; HF rotate_half convention: emb = cat(freqs, freqs)
    T, d = x.shape[0], x.shape[-1]
    freqs = torch.outer(torch.arange(T, dtype=x.dtype), inv_freq.to(x.dtype))  # [T, d/2]
    emb = torch.cat([freqs, freqs], -1)[:, None, :]  # [T, 1, d]
    rot = torch.cat([-x[..., d // 2:], x[..., : d // 2]], -1)
    return x * emb.cos() + rot * emb.sin()


def visible(T, window):
    """masking_utils: causal kv_idx <= q_idx, sliding overlay kv_idx > q_idx - sliding_window (i.e. i - j < W)."""
    i = torch.arange(T)[:, None]
    j = torch.arange(T)[None, :]
    m = j <= i
    return m if window is None else m & (j > i - window)


def attention(q, k, v, scale, window=None, softcap=None):
    """eager_attention_forward: q [T, H, d], k/v [T, KV, d] (repeat_kv: head h uses kv head h // (H/KV)) -> [T, H*d]."""
    T, H, d = q.shape
    rep = H // k.shape[1]
    k = k.repeat_interleave(rep, dim=1)
    v = v.repeat_interleave(rep, dim=1)
    s = torch.einsum("ihd,jhd->hij", q, k) * scale  # [H, T, T]
    if softcap is not None:  # Gemma2: softcap before the mask
        s = torch.tanh(s / softcap) * softcap
    s = s.masked_fill(~visible(T, window), float("-inf"))
    p = torch.softmax(s, -1)
    return torch.einsum("hij,jhd->ihd", p, v).reshape(T, H * d)


# ----------------------------------------------------------------------------------------------------------------
# Tensor lists (stored names and shapes, in module order)
# ----------------------------------------------------------------------------------------------------------------
def head_dim_of(cfg):
    return cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]


def rope_decoder_specs(cfg, qkv_bias, o_bias, mlp_bias, qk_norm=False, gemma_norms=False):
    D, I, hd = cfg["hidden_size"], cfg["intermediate_size"], head_dim_of(cfg)
    H, KV = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    specs = [("model.embed_tokens.weight", [cfg["vocab_size"], D])]
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}."
        specs.append((p + "input_layernorm.weight", [D]))
        for nm, rows in (("q", H * hd), ("k", KV * hd), ("v", KV * hd)):
            specs.append((p + f"self_attn.{nm}_proj.weight", [rows, D]))
            if qkv_bias:
                specs.append((p + f"self_attn.{nm}_proj.bias", [rows]))
        specs.append((p + "self_attn.o_proj.weight", [D, H * hd]))
        if o_bias:
            specs.append((p + "self_attn.o_proj.bias", [D]))
        if qk_norm:
            specs += [(p + "self_attn.q_norm.weight", [hd]), (p + "self_attn.k_norm.weight", [hd])]
        specs.append((p + "post_attention_layernorm.weight", [D]))
        if gemma_norms:
            specs += [(p + "pre_feedforward_layernorm.weight", [D]), (p + "post_feedforward_layernorm.weight", [D])]
        for nm, shape in (("gate", [I, D]), ("up", [I, D]), ("down", [D, I])):
            specs.append((p + f"mlp.{nm}_proj.weight", shape))
            if mlp_bias:
                specs.append((p + f"mlp.{nm}_proj.bias", shape[:1]))
    specs.append(("model.norm.weight", [D]))
    if not cfg["tie_word_embeddings"]:
        specs.append(("lm_head.weight", [cfg["vocab_size"], D]))
    return specs


def gpt2_specs(cfg, prefix):
    E, V, P = cfg["n_embd"], cfg["vocab_size"], cfg["n_positions"]
    inner = cfg["n_inner"] or 4 * E
    specs = [(prefix + "wte.weight", [V, E]), (prefix + "wpe.weight", [P, E])]
    for l in range(cfg["n_layer"]):
        p = f"{prefix}h.{l}."
        specs += [(p + "ln_1.weight", [E]), (p + "ln_1.bias", [E]),
                  (p + "attn.c_attn.weight", [E, 3 * E]), (p + "attn.c_attn.bias", [3 * E]),  # Conv1D: [in, out]
                  (p + "attn.c_proj.weight", [E, E]), (p + "attn.c_proj.bias", [E]),
                  (p + "ln_2.weight", [E]), (p + "ln_2.bias", [E]),
                  (p + "mlp.c_fc.weight", [E, inner]), (p + "mlp.c_fc.bias", [inner]),
                  (p + "mlp.c_proj.weight", [inner, E]), (p + "mlp.c_proj.bias", [E])]
    specs += [(prefix + "ln_f.weight", [E]), (prefix + "ln_f.bias", [E])]
    return specs


def specs_for(cfg, gpt2_prefix=""):
    mt = cfg["model_type"]
    if mt == "llama":
        return rope_decoder_specs(cfg, cfg["attention_bias"], cfg["attention_bias"], cfg["mlp_bias"])
    if mt == "mistral":
        return rope_decoder_specs(cfg, False, False, False)
    if mt == "qwen2":
        return rope_decoder_specs(cfg, True, False, False)
    if mt == "qwen3":
        return rope_decoder_specs(cfg, cfg["attention_bias"], cfg["attention_bias"], False, qk_norm=True)
    if mt == "gemma2":
        return rope_decoder_specs(cfg, cfg["attention_bias"], cfg["attention_bias"], False, gemma_norms=True)
    if mt == "gpt2":
        return gpt2_specs(cfg, gpt2_prefix)
    raise ValueError(mt)


# ----------------------------------------------------------------------------------------------------------------
# Forward passes, one per architecture. All return (logits [T, V], last_hidden_state [T, D]).
# `ab` (ablations) switches a feature off for the self-check; the golden values use ab = {}.
# ----------------------------------------------------------------------------------------------------------------
def _qkv(cfg, W, p, h, qk_norm=False):
    """Project + split heads (+ Qwen3 per-head RMSNorm over head_dim BEFORE RoPE) + RoPE. h [T, D]."""
    T, hd = h.shape[0], head_dim_of(cfg)
    q = linear(h, W[p + "q_proj.weight"], W.get(p + "q_proj.bias")).view(T, -1, hd)  # [T, H, hd]
    k = linear(h, W[p + "k_proj.weight"], W.get(p + "k_proj.bias")).view(T, -1, hd)  # [T, KV, hd]
    v = linear(h, W[p + "v_proj.weight"], W.get(p + "v_proj.bias")).view(T, -1, hd)  # [T, KV, hd]
    if qk_norm:
        q = rms_norm(q, W[p + "q_norm.weight"], cfg["rms_norm_eps"])
        k = rms_norm(k, W[p + "k_norm.weight"], cfg["rms_norm_eps"])
    inv = rope_inv_freq(cfg, hd)
    return apply_rope(q, inv), apply_rope(k, inv), v


def _swiglu(W, p, h, act=silu):  # LlamaMLP: down(act(gate(x)) * up(x))
    return linear(act(linear(h, W[p + "gate_proj.weight"], W.get(p + "gate_proj.bias")))
                  * linear(h, W[p + "up_proj.weight"], W.get(p + "up_proj.bias")),
                  W[p + "down_proj.weight"], W.get(p + "down_proj.bias"))


def _llama_like(cfg, W, ids, window_of_layer, qk_norm=False):
    """LlamaModel / MistralModel / Qwen2Model / Qwen3Model: pre-norm residual blocks, final RMSNorm."""
    eps, hd = cfg["rms_norm_eps"], head_dim_of(cfg)
    x = W["model.embed_tokens.weight"][ids]  # [T, D]
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}."
        q, k, v = _qkv(cfg, W, p + "self_attn.", rms_norm(x, W[p + "input_layernorm.weight"], eps), qk_norm)
        a = attention(q, k, v, hd ** -0.5, window=window_of_layer(l))  # [T, H*hd]
        x = x + linear(a, W[p + "self_attn.o_proj.weight"], W.get(p + "self_attn.o_proj.bias"))
        x = x + _swiglu(W, p + "mlp.", rms_norm(x, W[p + "post_attention_layernorm.weight"], eps))
    x = rms_norm(x, W["model.norm.weight"], eps)
    head = W["model.embed_tokens.weight"] if cfg["tie_word_embeddings"] else W["lm_head.weight"]
    return linear(x, head), x


def forward_llama(cfg, W, ids, ab={}):  # LlamaForCausalLM: no window; biases present iff attention_bias / mlp_bias
    return _llama_like(cfg, W, ids, lambda l: None)


def forward_mistral(cfg, W, ids, ab={}):  # MistralForCausalLM: config.sliding_window on every layer (None = full)
    w = None if ab.get("no_window") else cfg.get("sliding_window")
    return _llama_like(cfg, W, ids, lambda l: w)


def forward_qwen2(cfg, W, ids, ab={}):
    """Qwen2ForCausalLM: q/k/v bias, no o bias. sliding_window is None unless use_sliding_window, and then only for
    layers l >= max_window_layers (configuration_qwen2 layer_types)."""
    sw = cfg["sliding_window"] if (cfg["use_sliding_window"] or ab.get("misread_window")) else None
    mwl = 0 if ab.get("misread_window") else cfg["max_window_layers"]
    return _llama_like(cfg, W, ids, lambda l: sw if (sw is not None and l >= mwl) else None)


def forward_qwen3(cfg, W, ids, ab={}):  # Qwen3ForCausalLM: per-head q_norm/k_norm (over head_dim) before RoPE
    sw = cfg["sliding_window"] if cfg["use_sliding_window"] else None
    return _llama_like(cfg, W, ids, lambda l: sw if (sw is not None and l >= cfg["max_window_layers"]) else None,
                       qk_norm=not ab.get("no_qk_norm"))


def forward_gemma2(cfg, W, ids, ab={}):
    """Gemma2ForCausalLM (tied head). Embedding * float32(sqrt(hidden)); sandwich norms with (1 + w);
    gelu_pytorch_tanh gated MLP; scale query_pre_attn_scalar^-0.5; attn softcap; final softcap;
    layer_types default: layer l is sliding iff (l + 1) % 2 == 1, i.e. even layers (0, 2, ...) slide."""
    eps, hd, L = cfg["rms_norm_eps"], cfg["head_dim"], cfg["num_hidden_layers"]
    types = cfg.get("layer_types") or ["sliding_attention" if (l + 1) % 2 else "full_attention" for l in range(L)]
    if ab.get("flip_parity"):
        types = ["full_attention" if t == "sliding_attention" else "sliding_attention" for t in types]
    scale = (hd if ab.get("scale_head_dim") else cfg["query_pre_attn_scalar"]) ** -0.5
    cap = None if ab.get("no_attn_softcap") else cfg["attn_logit_softcapping"]
    # HF: normalizer = torch.tensor(hidden_size**0.5, dtype=hidden_states.dtype) -> float32 for an F32 model
    normalizer = 1.0 if ab.get("no_normalizer") else float(torch.tensor(cfg["hidden_size"] ** 0.5, dtype=torch.float32))
    x = W["model.embed_tokens.weight"][ids] * normalizer
    for l in range(L):
        p = f"model.layers.{l}."
        window = cfg["sliding_window"] if types[l] == "sliding_attention" and not ab.get("no_window") else None
        q, k, v = _qkv(cfg, W, p + "self_attn.", gemma_rms_norm(x, W[p + "input_layernorm.weight"], eps))
        a = linear(attention(q, k, v, scale, window=window, softcap=cap), W[p + "self_attn.o_proj.weight"])
        x = x + gemma_rms_norm(a, W[p + "post_attention_layernorm.weight"], eps)
        m = _swiglu(W, p + "mlp.", gemma_rms_norm(x, W[p + "pre_feedforward_layernorm.weight"], eps), act=gelu_tanh)
        x = x + gemma_rms_norm(m, W[p + "post_feedforward_layernorm.weight"], eps)
    x = gemma_rms_norm(x, W["model.norm.weight"], eps)
    logits = linear(x, W["model.embed_tokens.weight"])
    fcap = None if ab.get("no_final_softcap") else cfg["final_logit_softcapping"]
    if fcap is not None:
        logits = torch.tanh(logits / fcap) * fcap
    return logits, x


def forward_gpt2(cfg, W, ids, prefix, ab={}):
    """GPT2LMHeadModel (tied to wte). Conv1D: y = x @ W + b with W [in, out]; c_attn -> split(q, k, v) along out."""
    E, H, eps = cfg["n_embd"], cfg["n_head"], cfg["layer_norm_epsilon"]
    hd, T = E // H, len(ids)
    act = (lambda t: 0.5 * t * (1 + torch.erf(t / math.sqrt(2.0)))) if ab.get("exact_gelu") else gelu_tanh
    P = W[prefix + "wpe.weight"][torch.arange(T)] if not ab.get("no_wpe") else 0.0
    x = W[prefix + "wte.weight"][ids] + P  # [T, E]
    for l in range(cfg["n_layer"]):
        p = f"{prefix}h.{l}."
        h = layer_norm(x, W[p + "ln_1.weight"], W[p + "ln_1.bias"], eps)
        qkv = h @ W[p + "attn.c_attn.weight"] + W[p + "attn.c_attn.bias"]  # [T, 3E]
        q, k, v = (t.reshape(T, H, hd) for t in qkv.split(E, dim=-1))
        a = attention(q, k, v, 1.0 / math.sqrt(hd))  # scale_attn_weights: / sqrt(head_dim)
        x = x + a @ W[p + "attn.c_proj.weight"] + W[p + "attn.c_proj.bias"]
        h = layer_norm(x, W[p + "ln_2.weight"], W[p + "ln_2.bias"], eps)
        x = x + act(h @ W[p + "mlp.c_fc.weight"] + W[p + "mlp.c_fc.bias"]) @ W[p + "mlp.c_proj.weight"] \
            + W[p + "mlp.c_proj.bias"]
    x = layer_norm(x, W[prefix + "ln_f.weight"], W[prefix + "ln_f.bias"], eps)
    return linear(x, W[prefix + "wte.weight"]), x


# ----------------------------------------------------------------------------------------------------------------
# Cases
# ----------------------------------------------------------------------------------------------------------------
TV = "4.51.3"


def llama_cfg(**kw):
    c = {"architectures": ["LlamaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0, "bos_token_id": 1,
         "eos_token_id": 2, "hidden_act": "silu", "hidden_size": 48, "initializer_range": 0.02,
         "intermediate_size": 96, "max_position_embeddings": 256, "mlp_bias": False, "model_type": "llama",
         "num_attention_heads": 4, "num_hidden_layers": 2, "num_key_value_heads": 4, "pretraining_tp": 1,
         "rms_norm_eps": 1e-05, "rope_scaling": None, "rope_theta": 10000.0, "tie_word_embeddings": False,
         "torch_dtype": "float32", "transformers_version": TV, "use_cache": True, "vocab_size": 112}
    c.update(kw)
    return dict(sorted(c.items()))


def gpt2_cfg():
    return {"activation_function": "gelu_new", "architectures": ["GPT2LMHeadModel"], "attn_pdrop": 0.1,
            "bos_token_id": 95, "embd_pdrop": 0.1, "eos_token_id": 95, "initializer_range": 0.02,
            "layer_norm_epsilon": 1e-05, "model_type": "gpt2", "n_ctx": 64, "n_embd": 32, "n_head": 4,
            "n_inner": None, "n_layer": 2, "n_positions": 64, "reorder_and_upcast_attn": False, "resid_pdrop": 0.1,
            "scale_attn_by_inverse_layer_idx": False, "scale_attn_weights": True, "summary_activation": None,
            "summary_first_dropout": 0.1, "summary_proj_to_labels": True, "summary_type": "cls_index",
            "summary_use_proj": True, "torch_dtype": "float32", "transformers_version": TV, "use_cache": True,
            "vocab_size": 96}


CASES = [
    dict(name="llama2_mha_untied",
         description="Llama-2 style: MHA (kv heads = heads), default RoPE theta 1e4, no rope_scaling, no head_dim key, "
                     "separate lm_head.weight, RMSNorm eps 1e-5, SiLU SwiGLU MLP.",
         config=llama_cfg(), T=13),
    dict(name="llama3_gqa_rope_llama3_tied",
         description="Llama-3.x style: GQA 4 heads / 2 kv heads, head_dim 16, rope_theta 5e5, rope_scaling "
                     "rope_type llama3 (factor 8, low 1, high 4, original_max_position_embeddings 64): of the 8 "
                     "frequencies (wavelengths 6.3, 32, 167, 861, ...) index 0 is kept, index 1 is smoothed "
                     "(16 <= wavelen <= 64), indices 2..7 are divided by 8. Tied embeddings (no lm_head.weight).",
         config=llama_cfg(hidden_size=64, intermediate_size=128, num_key_value_heads=2, head_dim=16,
                          rope_theta=500000.0, max_position_embeddings=512, tie_word_embeddings=True,
                          bos_token_id=100, eos_token_id=101, vocab_size=128,
                          rope_scaling={"factor": 8.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                                        "original_max_position_embeddings": 64, "rope_type": "llama3"}),
         T=16),
    dict(name="llama_linear_rope_mqa",
         description="Llama with rope_scaling {type: linear, factor 4.0} (old 'type' key spelling), MQA "
                     "(1 kv head, 2 heads, head_dim 16), hidden 32, untied.",
         config=llama_cfg(hidden_size=32, intermediate_size=64, num_attention_heads=2, num_key_value_heads=1,
                          vocab_size=100, rope_scaling={"factor": 4.0, "type": "linear"}),
         T=12),
    dict(name="llama_head_dim_bias",
         description="Llama with explicit head_dim 16 != hidden/heads (48/4 = 12): q_proj [64, 48], o_proj [48, 64]; "
                     "attention_bias true (q, k, v AND o biases) and mlp_bias true (gate, up, down biases); GQA 4/2.",
         config=llama_cfg(head_dim=16, num_key_value_heads=2, attention_bias=True, mlp_bias=True, vocab_size=104),
         T=14),
    dict(name="mistral_sliding_window",
         description="Mistral: sliding_window 4 < T=14 on every layer (key j visible from query i iff 0 <= i-j < 4), "
                     "GQA 4/2, no head_dim key (defaults to hidden/heads = 12), no biases, untied.",
         config={"architectures": ["MistralForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 1,
                 "eos_token_id": 2, "hidden_act": "silu", "hidden_size": 48, "initializer_range": 0.02,
                 "intermediate_size": 96, "max_position_embeddings": 256, "model_type": "mistral",
                 "num_attention_heads": 4, "num_hidden_layers": 2, "num_key_value_heads": 2, "rms_norm_eps": 1e-05,
                 "rope_theta": 10000.0, "sliding_window": 4, "tie_word_embeddings": False,
                 "torch_dtype": "float32", "transformers_version": TV, "use_cache": True, "vocab_size": 112},
         T=14),
    dict(name="qwen2_qkv_bias",
         description="Qwen2: q/k/v biases, no o_proj bias, no MLP bias, rope_theta 1e6, RMSNorm eps 1e-6, GQA 4/2, "
                     "untied. use_sliding_window false: sliding_window (6) and max_window_layers (1) must be IGNORED "
                     "(HF sets sliding_window = None when use_sliding_window is false).",
         config={"architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 100,
                 "eos_token_id": 101, "hidden_act": "silu", "hidden_size": 48, "initializer_range": 0.02,
                 "intermediate_size": 96, "max_position_embeddings": 256, "max_window_layers": 1,
                 "model_type": "qwen2", "num_attention_heads": 4, "num_hidden_layers": 2, "num_key_value_heads": 2,
                 "rms_norm_eps": 1e-06, "rope_scaling": None, "rope_theta": 1000000.0, "sliding_window": 6,
                 "tie_word_embeddings": False, "torch_dtype": "float32", "transformers_version": TV,
                 "use_cache": True, "use_sliding_window": False, "vocab_size": 108},
         T=14),
    dict(name="qwen3_qk_norm_head_dim",
         description="Qwen3: explicit head_dim 16 != hidden/heads (32/4 = 8): q_proj [64, 32], k_proj [32, 32], "
                     "o_proj [32, 64]; q_norm/k_norm RMSNorm over head_dim applied per head after the projection and "
                     "BEFORE RoPE; attention_bias false; GQA 4/2; rope_theta 1e6; tied embeddings.",
         config={"architectures": ["Qwen3ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
                 "bos_token_id": 100, "eos_token_id": 101, "head_dim": 16, "hidden_act": "silu", "hidden_size": 32,
                 "initializer_range": 0.02, "intermediate_size": 80, "max_position_embeddings": 256,
                 "max_window_layers": 2, "model_type": "qwen3", "num_attention_heads": 4, "num_hidden_layers": 2,
                 "num_key_value_heads": 2, "rms_norm_eps": 1e-06, "rope_scaling": None, "rope_theta": 1000000.0,
                 "sliding_window": None, "tie_word_embeddings": True, "torch_dtype": "float32",
                 "transformers_version": TV, "use_cache": True, "use_sliding_window": False, "vocab_size": 104},
         T=13),
    dict(name="gemma2_softcap_sliding",
         description="Gemma2: 3 layers, layers 0 and 2 sliding (window 5 < T=14), layer 1 full; embeddings * "
                     "float32(sqrt(48)); (1 + w) RMSNorm; 4 norms per layer (input, post_attention, pre_feedforward, "
                     "post_feedforward); gelu_pytorch_tanh gated MLP; head_dim 16 (q_proj [64, 48]); scaling "
                     "query_pre_attn_scalar^-0.5 with query_pre_attn_scalar 24 != head_dim; attn_logit_softcapping "
                     "and final_logit_softcapping small enough that tanh is non-linear; tied head; no layer_types key "
                     "(default parity).",
         config={"architectures": ["Gemma2ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
                 "attn_logit_softcapping": 1.0, "bos_token_id": 2, "cache_implementation": "hybrid",
                 "eos_token_id": 1, "final_logit_softcapping": 1.5, "head_dim": 16,
                 "hidden_act": "gelu_pytorch_tanh", "hidden_activation": "gelu_pytorch_tanh", "hidden_size": 48,
                 "initializer_range": 0.02, "intermediate_size": 96, "max_position_embeddings": 256,
                 "model_type": "gemma2", "num_attention_heads": 4, "num_hidden_layers": 3,
                 "num_key_value_heads": 2, "pad_token_id": 0, "query_pre_attn_scalar": 24, "rms_norm_eps": 1e-06,
                 "rope_theta": 10000.0, "sliding_window": 5, "tie_word_embeddings": True, "torch_dtype": "float32",
                 "transformers_version": TV, "use_cache": True, "vocab_size": 96},
         T=14),
    dict(name="gpt2_prefixed",
         description="GPT2LMHeadModel with tensors stored under 'transformer.' (as GPT2LMHeadModel.save_pretrained "
                     "writes them; tied lm_head not stored): Conv1D weights [in, out], fused c_attn [E, 3E] split "
                     "q|k|v, learned wpe, LayerNorm eps 1e-5, gelu_new, n_inner null -> 4*n_embd.",
         config=gpt2_cfg(), T=15, prefix="transformer."),
    dict(name="gpt2_unprefixed",
         description="Same GPT-2 config, tensors stored WITHOUT prefix ('wte.weight', 'h.0.attn.c_attn.weight', ...) "
                     "as in the original openai-community/gpt2 checkpoint. Names differ, so by the formula the "
                     "weights (and logits) differ from gpt2_prefixed.",
         config=gpt2_cfg(), T=15, prefix=""),
]

FORWARD = {"llama": forward_llama, "mistral": forward_mistral, "qwen2": forward_qwen2, "qwen3": forward_qwen3,
           "gemma2": forward_gemma2}

# feature switches checked per case: (label, ablation) -> max |delta logits| must be clearly non-zero
SWITCHES = {
    "llama2_mha_untied": [("head tied to embed_tokens instead of lm_head", "tie")],
    "llama3_gqa_rope_llama3_tied": [("rope_scaling removed", "no_scaling"),
                                    ("llama3 smoothing band treated as unscaled", "llama3_no_smooth")],
    "llama_linear_rope_mqa": [("rope_scaling removed", "no_scaling")],
    "llama_head_dim_bias": [("attention biases zeroed", "zero:self_attn"), ("o_proj bias zeroed", "zero:o_proj.bias"),
                            ("mlp biases zeroed", "zero:mlp")],
    "mistral_sliding_window": [("sliding window removed", "no_window"), ("window W+1 (i-j <= W)", "window_plus1")],
    "qwen2_qkv_bias": [("q/k/v biases zeroed", "zero:self_attn"),
                       ("sliding_window applied despite use_sliding_window=false", "misread_window")],
    "qwen3_qk_norm_head_dim": [("q_norm/k_norm skipped", "no_qk_norm"),
                               ("q/k norm applied after RoPE instead of before", "qk_norm_after_rope")],
    "gemma2_softcap_sliding": [("attn softcap removed", "no_attn_softcap"), ("final softcap removed", "no_final_softcap"),
                               ("sliding window removed", "no_window"), ("window parity flipped", "flip_parity"),
                               ("scale head_dim^-0.5 instead of query_pre_attn_scalar", "scale_head_dim"),
                               ("no sqrt(hidden) normalizer", "no_normalizer")],
    "gpt2_prefixed": [("exact erf GELU instead of gelu_new", "exact_gelu"), ("wpe removed", "no_wpe"),
                      ("Conv1D read as [out, in] (transposed c_proj)", "transpose_c_proj")],
    "gpt2_unprefixed": [("wpe removed", "no_wpe")],
}


def input_ids(case_idx, T, vocab):
    ids, x = [], 12345 + 977 * case_idx
    for _ in range(T):
        x = (x * 1103515245 + 12345) % (1 << 31)
        ids.append((x >> 8) % vocab)
    return ids


def run(case, W, ids, ab={}):
    cfg = case["config"]
    if cfg["model_type"] == "gpt2":
        return forward_gpt2(cfg, W, ids, case["prefix"], ab)
    return FORWARD[cfg["model_type"]](cfg, W, ids, ab)


def ablate(case, W, ids, key):
    """Logits with one feature switched off (config/weight edits, or an `ab` flag understood by the forward)."""
    case2, W2 = copy.deepcopy(case), dict(W)
    cfg2 = case2["config"]
    if key == "tie":
        cfg2["tie_word_embeddings"] = True
    elif key == "no_scaling":
        cfg2["rope_scaling"] = None
    elif key == "llama3_no_smooth":  # keep only the two hard bands: wavelen > low_wavelen -> / factor, else unchanged
        rs = cfg2["rope_scaling"]
        cfg2["rope_scaling"] = dict(rs, high_freq_factor=rs["low_freq_factor"] * (1 + 1e-9))
    elif key.startswith("zero:"):
        W2 = {n: (torch.zeros_like(t) if (key[5:] in n and n.endswith("bias")) else t) for n, t in W.items()}
    elif key == "window_plus1":
        cfg2["sliding_window"] += 1
    elif key == "qk_norm_after_rope":
        return qwen3_norm_after_rope(cfg2, W, ids)[0]
    elif key == "transpose_c_proj":
        W2 = {n: (t.t().contiguous() if n.endswith("attn.c_proj.weight") else t) for n, t in W.items()}
    else:
        return run(case2, W2, ids, {key: True})[0]
    return run(case2, W2, ids)[0]


def qwen3_norm_after_rope(cfg, W, ids):  # wrong order on purpose, only for the switch check
    global _qkv
    orig = _qkv

    def swapped(cfg_, W_, p, h, qk_norm=False):
        q, k, v = orig(cfg_, W_, p, h, qk_norm=False)
        return (rms_norm(q, W_[p + "q_norm.weight"], cfg_["rms_norm_eps"]),
                rms_norm(k, W_[p + "k_norm.weight"], cfg_["rms_norm_eps"]), v)
    _qkv = swapped
    try:
        return forward_qwen3(cfg, W, ids)
    finally:
        _qkv = orig


# ----------------------------------------------------------------------------------------------------------------
# Self-checks: second computation paths with torch's own modules
# ----------------------------------------------------------------------------------------------------------------
def meta_llama_forward(cfg, W, ids):
    """Second path for Llama: Meta's original layout (interleaved RoPE pairs via complex multiply) on q/k weights
    un-permuted from the HF layout (inverse of convert_llama_weights_to_hf.permute), nn.Linear modules,
    F.silu, a -inf triu mask and F.softmax. Independent of rotate_half / apply_rope / attention above."""
    import torch.nn as nn
    import torch.nn.functional as Fn
    D, H, KV, hd, eps = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"], head_dim_of(cfg), \
        cfg["rms_norm_eps"]
    T = len(ids)

    def lin(w, b=None):
        m = nn.Linear(w.shape[1], w.shape[0], bias=b is not None).double()
        with torch.no_grad():
            m.weight.copy_(w)
            if b is not None:
                m.bias.copy_(b)
        return m

    def unpermute(w, n):  # HF [n*hd, D] (halves) -> Meta [n*hd, D] (interleaved pairs)
        return w.view(n, 2, hd // 2, w.shape[1]).transpose(1, 2).reshape(n * hd, w.shape[1])

    def unpermute_b(b, n):
        return b.view(n, 2, hd // 2).transpose(1, 2).reshape(n * hd)

    def norm(x, w):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w

    freqs_cis = torch.polar(torch.ones(T, hd // 2, dtype=F64), torch.outer(torch.arange(T, dtype=F64),
                                                                           rope_inv_freq(cfg, hd)))

    def rope(x):  # [T, n, hd]
        xc = torch.view_as_complex(x.reshape(T, x.shape[1], hd // 2, 2).contiguous())
        return torch.view_as_real(xc * freqs_cis[:, None, :]).reshape(T, x.shape[1], hd)

    mask = torch.full((T, T), float("-inf")).triu(1)
    x = nn.Embedding.from_pretrained(W["model.embed_tokens.weight"])(torch.tensor(ids))
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}."
        g = lambda n: W.get(p + n)
        h = norm(x, W[p + "input_layernorm.weight"])
        qb, kb = g("self_attn.q_proj.bias"), g("self_attn.k_proj.bias")
        q = lin(unpermute(W[p + "self_attn.q_proj.weight"], H), None if qb is None else unpermute_b(qb, H))(h)
        k = lin(unpermute(W[p + "self_attn.k_proj.weight"], KV), None if kb is None else unpermute_b(kb, KV))(h)
        v = lin(W[p + "self_attn.v_proj.weight"], g("self_attn.v_proj.bias"))(h)
        q, k, v = rope(q.view(T, H, hd)), rope(k.view(T, KV, hd)), v.view(T, KV, hd)
        k = torch.cat([k[:, i // (H // KV): i // (H // KV) + 1] for i in range(H)], 1)
        v = torch.cat([v[:, i // (H // KV): i // (H // KV) + 1] for i in range(H)], 1)
        s = torch.matmul(q.transpose(0, 1), k.permute(1, 2, 0)) / math.sqrt(hd) + mask
        o = torch.matmul(Fn.softmax(s, dim=-1), v.transpose(0, 1)).transpose(0, 1).reshape(T, H * hd)
        x = x + lin(W[p + "self_attn.o_proj.weight"], g("self_attn.o_proj.bias"))(o)
        h = norm(x, W[p + "post_attention_layernorm.weight"])
        up = lin(W[p + "mlp.up_proj.weight"], g("mlp.up_proj.bias"))(h)
        gate = Fn.silu(lin(W[p + "mlp.gate_proj.weight"], g("mlp.gate_proj.bias"))(h))
        x = x + lin(W[p + "mlp.down_proj.weight"], g("mlp.down_proj.bias"))(gate * up)
    x = norm(x, W["model.norm.weight"])
    head = W["model.embed_tokens.weight"] if cfg["tie_word_embeddings"] else W["lm_head.weight"]
    return lin(head)(x), x


def torch_gpt2_forward(cfg, W, ids, prefix):
    """Second path for GPT-2: nn.LayerNorm, nn.MultiheadAttention (in_proj = c_attn^T, out_proj = c_proj^T),
    F.gelu(approximate='tanh')."""
    import torch.nn as nn
    import torch.nn.functional as Fn
    E, H, eps, T = cfg["n_embd"], cfg["n_head"], cfg["layer_norm_epsilon"], len(ids)

    def ln(w, b):
        m = nn.LayerNorm(E, eps=eps).double()
        with torch.no_grad():
            m.weight.copy_(w)
            m.bias.copy_(b)
        return m

    x = (W[prefix + "wte.weight"][ids] + W[prefix + "wpe.weight"][:T])[None]  # [1, T, E]
    mask = torch.full((T, T), float("-inf")).triu(1)
    for l in range(cfg["n_layer"]):
        p = f"{prefix}h.{l}."
        mha = nn.MultiheadAttention(E, H, batch_first=True).double()
        with torch.no_grad():
            mha.in_proj_weight.copy_(W[p + "attn.c_attn.weight"].t())
            mha.in_proj_bias.copy_(W[p + "attn.c_attn.bias"])
            mha.out_proj.weight.copy_(W[p + "attn.c_proj.weight"].t())
            mha.out_proj.bias.copy_(W[p + "attn.c_proj.bias"])
        mha.eval()
        h = ln(W[p + "ln_1.weight"], W[p + "ln_1.bias"])(x)
        x = x + mha(h, h, h, attn_mask=mask, need_weights=False)[0]
        h = ln(W[p + "ln_2.weight"], W[p + "ln_2.bias"])(x)
        h = Fn.gelu(torch.addmm(W[p + "mlp.c_fc.bias"], h[0], W[p + "mlp.c_fc.weight"]), approximate="tanh")
        x = x + torch.addmm(W[p + "mlp.c_proj.bias"], h, W[p + "mlp.c_proj.weight"])[None]
    x = ln(W[prefix + "ln_f.weight"], W[prefix + "ln_f.bias"])(x)[0]
    return x @ W[prefix + "wte.weight"].t(), x


def hf_llama3_inv_freq(cfg, dim):
    """Literal transcription of modeling_rope_utils._compute_llama3_parameters (torch.where form)."""
    inv_freq = 1.0 / (cfg["rope_theta"] ** (torch.arange(0, dim, 2, dtype=torch.int64).to(F64) / dim))
    rs = cfg["rope_scaling"]
    factor, lo, hi, old = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"], \
        rs["original_max_position_embeddings"]
    low_freq_wavelen, high_freq_wavelen = old / lo, old / hi
    wavelen = 2 * math.pi / inv_freq
    inv_freq_llama = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    smooth_factor = (old / wavelen - lo) / (hi - lo)
    smoothed_inv_freq = (1 - smooth_factor) * inv_freq_llama / factor + smooth_factor * inv_freq_llama
    is_medium_freq = ~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)
    return torch.where(is_medium_freq, smoothed_inv_freq, inv_freq_llama)


def self_checks(results):
    ok = True

    def report(label, value, cond):
        nonlocal ok
        ok &= bool(cond)
        print(f"  {'ok ' if cond else 'BAD'} {label}: {value:.3e}")

    print("self-checks (second computation paths):")
    # masking_utils docstring example: sliding_window_causal_mask_function(3), 5x5
    doc = torch.tensor([[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [0, 1, 1, 1, 0], [0, 0, 1, 1, 1]]).bool()
    report("sliding mask == masking_utils docstring (W=3, T=5) mismatches", float((visible(5, 3) != doc).sum()),
           (visible(5, 3) == doc).all())
    old = torch.tril(torch.ones(9, 9), diagonal=0).bool() & ~torch.tril(torch.ones(9, 9), diagonal=-4).bool()
    report("sliding mask == Gemma2 4.4x tril(diagonal=-W) form (W=4) mismatches", float((visible(9, 4) != old).sum()),
           (visible(9, 4) == old).all())
    for case, ids, W, logits, hidden in results:
        cfg = case["config"]
        if cfg["model_type"] == "llama":
            l2, h2 = meta_llama_forward(cfg, W, ids)
            report(f"{case['name']}: Meta-layout complex-RoPE path max|dlogits|", (l2 - logits).abs().max().item(),
                   (l2 - logits).abs().max() < 1e-10)
            report(f"{case['name']}: Meta-layout path max|dhidden|", (h2 - hidden).abs().max().item(),
                   (h2 - hidden).abs().max() < 1e-10)
            if (cfg.get("rope_scaling") or {}).get("rope_type") == "llama3":
                d = (hf_llama3_inv_freq(cfg, head_dim_of(cfg)) - rope_inv_freq(cfg, head_dim_of(cfg))).abs().max()
                report(f"{case['name']}: llama3 inv_freq vs torch.where transcription", d.item(), d < 1e-15)
        if cfg["model_type"] == "gpt2":
            l2, h2 = torch_gpt2_forward(cfg, W, ids, case["prefix"])
            report(f"{case['name']}: nn.MultiheadAttention/nn.LayerNorm path max|dlogits|",
                   (l2 - logits).abs().max().item(), (l2 - logits).abs().max() < 1e-10)
    print("float32 noise (same code on float32 tensors; a float32 C++ forward should be this close):")
    noise = {}
    for case, ids, W, logits, hidden in results:
        l32, h32 = run(case, {n: t.float() for n, t in W.items()}, ids)
        noise[case["name"]] = max((l32.double() - logits).abs().max().item(), (h32.double() - hidden).abs().max().item())
        report(f"{case['name']}: float32 max|d| (logits, hidden)", noise[case["name"]], noise[case["name"]] < 1e-5)
    print("feature switches (max |delta logits| when the feature is switched off; must be >> float32 noise):")
    deltas = {}
    for case, ids, W, logits, hidden in results:
        for label, key in SWITCHES.get(case["name"], []):
            d = (ablate(case, W, ids, key) - logits).abs().max().item()
            deltas.setdefault(case["name"], {})[label] = d
            report(f"{case['name']}: {label}", d, d > 1e-4)
    return ok, deltas, noise


def magnitudes(case, W, ids):
    """Pre-softcap magnitudes for Gemma2 (used to pick the caps)."""
    cfg = dict(case["config"], attn_logit_softcapping=None, final_logit_softcapping=None)
    captured = []
    global attention
    orig = attention

    def spy(q, k, v, scale, window=None, softcap=None):
        captured.append((torch.einsum("ihd,jhd->hij", q, k.repeat_interleave(q.shape[1] // k.shape[1], 1)) * scale)
                        .masked_fill(~visible(q.shape[0], window), 0).abs().max().item())
        return orig(q, k, v, scale, window, softcap)
    attention = spy
    try:
        logits, _ = forward_gemma2(cfg, W, ids)
    finally:
        attention = orig
    return max(captured), logits.abs().max().item(), logits.std().item()


# ----------------------------------------------------------------------------------------------------------------
def fmt(t):
    return [[float(f"{v:.8g}") for v in row] for row in t.tolist()]


def main():
    check_only = "--check" in sys.argv
    results, out_cases = [], []
    for ci, case in enumerate(CASES):
        cfg = case["config"]
        specs = specs_for(cfg, case.get("prefix", ""))
        W = build_weights(specs)
        ids = input_ids(ci, case["T"], cfg["vocab_size"])
        logits, hidden = run(case, W, ids)
        results.append((case, ids, W, logits, hidden))
        if cfg["model_type"] == "gemma2":
            s, lmax, lstd = magnitudes(case, W, ids)
            print(f"gemma2 pre-cap magnitudes: max|attn score| {s:.3f} (cap {cfg['attn_logit_softcapping']}), "
                  f"max|logit| {lmax:.3f} std {lstd:.3f} (cap {cfg['final_logit_softcapping']})")
        print(f"{case['name']}: {len(specs)} tensors, T={len(ids)}, logits {list(logits.shape)}, "
              f"max|logit| {logits.abs().max().item():.4f}")
        out_cases.append({
            "name": case["name"], "description": case["description"], "config": cfg,
            "tensor_names": ("HF standard names" if "prefix" not in case else
                             "GPT-2 names with the 'transformer.' prefix" if case["prefix"] else
                             "GPT-2 names without prefix (as in the original gpt2 checkpoint)"),
            "tensors": [{"name": n, "shape": s} for n, s in specs],
            "input_ids": ids, "logits": fmt(logits), "hidden": fmt(hidden)})
    ok, deltas, noise = self_checks(results)
    for c in out_cases:
        c["feature_switch_deltas"] = {k: float(f"{v:.4g}") for k, v in deltas.get(c["name"], {}).items()}
        c["float32_noise"] = float(f"{noise[c['name']]:.3g}")
    if not ok:
        print("SELF-CHECK FAILED")
        sys.exit(1)
    if check_only:
        return
    samples = []
    for n, shape in [("model.embed_tokens.weight", [4]), ("model.layers.0.input_layernorm.weight", [4]),
                     ("model.layers.0.self_attn.q_proj.bias", [4]), ("transformer.h.0.attn.c_attn.weight", [4])]:
        samples.append({"name": n, "fnv1a32": fnv1a32(n), "first_values_f32": make_weight(n, shape).tolist(),
                        "note": "first 4 flat elements; the rule depends on the name and on being 1-D"})
    doc = {"generator": "tests/core/golden/make_hf_golden.py (independent float64 re-implementation of HF "
                        "transformers forwards; /usr/bin/python3 + torch %s, no transformers)" % torch.__version__,
           "transformers_commit": "00c4411cbe15d4c56d54d3b56d4d171e9c289dac (src/transformers/masking_utils.py, "
                                  "5.x main); the other files read are at the commits in transformers_sources",
           "transformers_sources": TRANSFORMERS_SOURCES,
           "conventions": {
               "sliding_window": "key j visible from query i iff j <= i and i - j < sliding_window "
                                 "(masking_utils.sliding_window_overlay: kv_idx > q_idx - sliding_window)",
               "llama3_rope": "wavelen = 2*pi/inv_freq; wavelen < orig/high: keep; wavelen > orig/low: inv/factor; "
                              "else s = (orig/wavelen - low)/(high - low), inv = (1-s)*inv/factor + s*inv",
               "linear_rope": "inv_freq / factor (accepts 'type' or 'rope_type')",
               "gemma2": "layer l sliding iff l % 2 == 0 when layer_types absent; embeddings * "
                         "float32(sqrt(hidden_size)); RMSNorm x*rsqrt(mean(x^2)+eps)*(1+w); attn scale "
                         "query_pre_attn_scalar^-0.5; scores = cap*tanh(scores/cap) before the mask; logits = "
                         "cap*tanh(logits/cap)",
               "qwen3": "q = RMSNorm_hd(q_proj(x) per head) then RoPE; same for k; v untouched",
               "gpt2": "Conv1D y = x @ W + b, W [in, out]; c_attn output split [q | k | v] each n_embd wide; "
                       "lm_head tied to wte; optional 'transformer.' prefix"},
           "formula": FORMULA, "formula_samples": samples,
           "tolerance_hint": "reference is float64 on float32 weights. The same forwards run in float32 deviate "
                             "by <= ~3e-6 (per-case float32_noise); suggested tolerance 2e-5 absolute on logits and "
                             "hidden. Every feature_switch_delta is >= 1e-4, most >= 1e-2.",
           "cases": out_cases}
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "hf_golden.json")
    with open(path, "w") as f:
        json.dump(doc, f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {path} ({os.path.getsize(path)} bytes)")


if __name__ == "__main__":
    main()
