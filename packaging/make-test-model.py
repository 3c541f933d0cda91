#!/usr/bin/env python3
"""Writes a random Hugging Face model folder (config.json + safetensors) for benchmarks.

Only the standard library and numpy (Debian's python3-numpy): no torch, no transformers. The
weights are random normal(0, 0.02) (norms 1), so the folder loads and runs but says nothing;
it exists to measure load time, peak memory and step time at real sizes, e.g. the ~1B Llama
(`--preset llama-1b`) or a tiny model with Llama 3's real 128k vocabulary (`--preset tiny-128k`,
add `--tokenizer-from DIR` to copy tokenizer.json / tokenizer_config.json next to it).

  python3 packaging/make-test-model.py --preset llama-1b --dtype bfloat16 --out /tmp/llama-1b
"""
import argparse
import json
import os
import shutil
import struct

import numpy as np

PRESETS = {
    # ~1.2B parameters: Llama 3.2 1B's shape (GQA 32/8, tied 128k vocabulary).
    "llama-1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                     num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
                     tie_word_embeddings=True),
    # A tiny transformer on Llama 3's vocabulary: the head and embedding dominate.
    "tiny-128k": dict(hidden_size=128, intermediate_size=384, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=4, vocab_size=128256,
                      tie_word_embeddings=True),
}


def llama_tensors(c):
    d, f, v = c["hidden_size"], c["intermediate_size"], c["vocab_size"]
    hd = d // c["num_attention_heads"]
    q, kv = c["num_attention_heads"] * hd, c["num_key_value_heads"] * hd
    yield "model.embed_tokens.weight", (v, d)
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        yield p + "input_layernorm.weight", (d,)
        yield p + "self_attn.q_proj.weight", (q, d)
        yield p + "self_attn.k_proj.weight", (kv, d)
        yield p + "self_attn.v_proj.weight", (kv, d)
        yield p + "self_attn.o_proj.weight", (d, q)
        yield p + "post_attention_layernorm.weight", (d,)
        yield p + "mlp.gate_proj.weight", (f, d)
        yield p + "mlp.up_proj.weight", (f, d)
        yield p + "mlp.down_proj.weight", (d, f)
    yield "model.norm.weight", (d,)
    if not c["tie_word_embeddings"]:
        yield "lm_head.weight", (v, d)


def to_bytes(a, dtype):
    a = a.astype(np.float32)
    if dtype == "float32":
        return a.tobytes(), "F32"
    if dtype == "float16":
        return a.astype(np.float16).tobytes(), "F16"
    bits = a.view(np.uint32)  # bfloat16: round to nearest even on the upper 16 bits
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
    return rounded.tobytes(), "BF16"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS), required=True)
    ap.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="bfloat16")
    ap.add_argument("--out", required=True)
    ap.add_argument("--tokenizer-from", help="copy tokenizer.json and tokenizer_config.json from this folder")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    c = dict(PRESETS[args.preset])
    config = dict(architectures=["LlamaForCausalLM"], model_type="llama", hidden_act="silu",
                  max_position_embeddings=8192, rms_norm_eps=1e-5, rope_theta=500000.0,
                  rope_scaling=None, attention_bias=False, mlp_bias=False, bos_token_id=128000,
                  eos_token_id=128001, torch_dtype=args.dtype, **c)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)

    rng = np.random.default_rng(args.seed)
    tensors = list(llama_tensors(c))
    width = {"float32": 4, "float16": 2, "bfloat16": 2}[args.dtype]
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, shape in tensors:
        n = int(np.prod(shape)) * width
        header[name] = {"dtype": {"float32": "F32", "float16": "F16", "bfloat16": "BF16"}[args.dtype],
                        "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    text = json.dumps(header).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    path = os.path.join(args.out, "model.safetensors")
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for name, shape in tensors:
            if len(shape) == 1:
                a = np.ones(shape, np.float32)
            else:
                a = rng.standard_normal(shape, dtype=np.float32) * 0.02
            f.write(to_bytes(a, args.dtype)[0])
    if args.tokenizer_from:
        for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
            src = os.path.join(args.tokenizer_from, name)
            if os.path.exists(src):
                shutil.copy(src, args.out)
    params = sum(int(np.prod(s)) for _, s in tensors)
    print(f"wrote {args.out}: {params / 1e9:.3f} B parameters, {os.path.getsize(path) / 1e9:.2f} GB of {args.dtype}")


if __name__ == "__main__":
    main()
