#!/usr/bin/env python3
"""The eager PyTorch step that `ganpo bench` is compared with (issue 13).

One preference optimizer step written as a TRL user would write it: a Hugging Face style
decoder (Llama or GPT-2 block) whose forward returns logits over every position and the final
hidden states, DPOTrainer's concatenated forward of [chosen; rejected] for the policy and again
under no_grad for the reference, log-probs by log_softmax + gather over the response tokens, the
DPO sigmoid loss, and GANPO's reference-script critics: torch.nn.TransformerEncoderLayer
(pre-norm, GELU, batch_first) behind spectrally normalised linears (torch.nn.utils.spectral_norm),
six critic forwards on detached latents with the relativistic EMA means, the critic AdamW step,
then the policy's adversarial term with the critics frozen, gradient clipping and torch.optim.AdamW.
The shapes are those of the workbench's model presets; weights are random (timing only).

  usage: bench-eager.py [--arch llama|gpt2] [--d-model 384 --layers 6 --heads 6 ...]
                        [--batch 8 --prompt-len 64 --response-len 192] [--ganpo off|on|both]
                        [--threads N] [--device cpu|cuda] [--dtype fp32|bf16] [--steps 4]
         bench-eager.py --write-data FILE --rows N --prompt-len P --response-len R
The second form writes TRL-format pairs (prompt / chosen / rejected, ASCII) that the workbench's
byte tokenizer turns into exactly P prompt and R response tokens, so `ganpo bench` on that file
trains on the same shapes as this script's random ids (packaging/bench-vs-eager.sh runs both).
Prints one JSON object: median step seconds and tokens/s per variant (and the peak CUDA memory
allocated on a GPU).
"""
import argparse
import json
import math
import random
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


# ---- the policy / reference model (HF Llama or GPT-2 block, eager) ------------------------------
class RMSNorm(nn.Module):
    def __init__(self, d, eps=1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        var = x.pow(2).mean(-1, keepdim=True)
        return self.weight * (x * torch.rsqrt(var + self.eps))


def rotate_half(x):
    x1, x2 = x.chunk(2, -1)
    return torch.cat((-x2, x1), -1)


class Attention(nn.Module):
    def __init__(self, a):
        super().__init__()
        self.h, self.kv, self.hd = a.heads, a.kv_heads, a.d_model // a.heads
        bias = a.arch == "gpt2"
        self.q_proj = nn.Linear(a.d_model, self.h * self.hd, bias=bias)
        self.k_proj = nn.Linear(a.d_model, self.kv * self.hd, bias=bias)
        self.v_proj = nn.Linear(a.d_model, self.kv * self.hd, bias=bias)
        self.o_proj = nn.Linear(self.h * self.hd, a.d_model, bias=bias)

    def forward(self, x, cos, sin, mask):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.h, self.hd).transpose(1, 2)  # [B, H, T, hd]
        k = self.k_proj(x).view(B, T, self.kv, self.hd).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.kv, self.hd).transpose(1, 2)
        if cos is not None:
            q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        if self.kv != self.h:
            k = k.repeat_interleave(self.h // self.kv, 1)
            v = v.repeat_interleave(self.h // self.kv, 1)
        if hasattr(F, "scaled_dot_product_attention"):  # transformers on torch >= 2.1, rows without padding
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:  # transformers' "eager" attention
            scores = q @ k.transpose(-2, -1) / math.sqrt(self.hd) + mask
            out = torch.softmax(scores.float(), -1).to(q.dtype) @ v
        return self.o_proj(out.transpose(1, 2).reshape(B, T, -1))


class Block(nn.Module):
    def __init__(self, a):
        super().__init__()
        norm = (lambda: nn.LayerNorm(a.d_model)) if a.arch == "gpt2" else (lambda: RMSNorm(a.d_model))
        self.input_layernorm, self.post_attention_layernorm = norm(), norm()
        self.self_attn = Attention(a)
        self.gpt2 = a.arch == "gpt2"
        if self.gpt2:
            self.up_proj = nn.Linear(a.d_model, a.d_ff)
            self.down_proj = nn.Linear(a.d_ff, a.d_model)
        else:
            self.gate_proj = nn.Linear(a.d_model, a.d_ff, bias=False)
            self.up_proj = nn.Linear(a.d_model, a.d_ff, bias=False)
            self.down_proj = nn.Linear(a.d_ff, a.d_model, bias=False)

    def forward(self, x, cos, sin, mask):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask)
        h = self.post_attention_layernorm(x)
        if self.gpt2:
            return x + self.down_proj(F.gelu(self.up_proj(h), approximate="tanh"))
        return x + self.down_proj(F.silu(self.gate_proj(h)) * self.up_proj(h))


class CausalLM(nn.Module):
    def __init__(self, a):
        super().__init__()
        self.embed_tokens = nn.Embedding(a.vocab, a.d_model)
        self.embed_positions = nn.Embedding(a.max_len, a.d_model) if a.arch == "gpt2" else None
        self.layers = nn.ModuleList(Block(a) for _ in range(a.layers))
        self.norm = nn.LayerNorm(a.d_model) if a.arch == "gpt2" else RMSNorm(a.d_model)
        self.lm_head = nn.Linear(a.d_model, a.vocab, bias=False)
        self.lm_head.weight = self.embed_tokens.weight  # tied, as the presets are
        hd = a.d_model // a.heads
        self.register_buffer("inv_freq", 1.0 / (10000.0 ** (torch.arange(0, hd, 2).float() / hd)), persistent=False)
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.normal_(p, std=0.02)

    def forward(self, ids):
        """ids [N, T] -> logits [N, T, V] and hidden states after the final norm [N, T, d]."""
        N, T = ids.shape
        x = self.embed_tokens(ids)
        pos = torch.arange(T, device=ids.device)
        cos = sin = None
        if self.embed_positions is not None:
            x = x + self.embed_positions(pos)
        else:
            freqs = torch.outer(pos.float(), self.inv_freq)
            emb = torch.cat((freqs, freqs), -1)
            cos, sin = emb.cos().to(x.dtype), emb.sin().to(x.dtype)
        # HF's 4-D additive causal mask (no padding: the bench's rows all have length T).
        mask = torch.full((T, T), float("-inf"), device=ids.device, dtype=x.dtype).triu(1)
        for layer in self.layers:
            x = layer(x, cos, sin, mask)
        hidden = self.norm(x)
        return self.lm_head(hidden), hidden


# ---- GANPO's critics (the authors' reference script) -------------------------------------------
class Critic(nn.Module):
    def __init__(self, d_in, a):
        super().__init__()
        sn = nn.utils.spectral_norm
        h = a.critic_hidden
        self.input_proj = sn(nn.Linear(d_in, h))
        self.pos = nn.Parameter(torch.randn(1, a.critic_max_len, h) * 0.02)
        layer = nn.TransformerEncoderLayer(h, a.critic_heads, 4 * h, dropout=0.1, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, a.critic_layers, enable_nested_tensor=False)
        self.head = nn.Sequential(sn(nn.Linear(h, h)), nn.GELU(), sn(nn.Linear(h, 1)))

    def forward(self, latents, attention_mask):
        x = self.input_proj(latents) + self.pos[:, : latents.size(1)]
        x = self.encoder(x, src_key_padding_mask=attention_mask == 0)
        m = attention_mask.unsqueeze(-1).to(x.dtype)
        return self.head((x * m).sum(1) / m.sum(1).clamp_min(1.0)).squeeze(-1)


def bce(z, target):
    return F.softplus(-z).mean() if target else F.softplus(z).mean()


class Ganpo:
    """Two critics, six EMA means (momentum 0.9), the critic phase and the adversarial term."""

    def __init__(self, d_in, a, device, lr):
        self.d_w, self.d_l = Critic(d_in, a).to(device), Critic(d_in, a).to(device)
        self.opt = torch.optim.AdamW(list(self.d_w.parameters()) + list(self.d_l.parameters()), lr=lr)
        self.mu = {}

    def ema(self, key, scores):
        m = scores.detach().float().mean()
        self.mu[key] = m if key not in self.mu else 0.9 * self.mu[key] + 0.1 * m

    def critic_step(self, A, Bl, Pw, Pl, mask_c, mask_r):
        self.d_w.train(), self.d_l.train()
        A, Bl, Pw, Pl = A.detach(), Bl.detach(), Pw.detach(), Pl.detach()
        w_a, w_b, w_p = self.d_w(A, mask_c), self.d_w(Bl, mask_r), self.d_w(Pw, mask_c)
        l_b, l_a, l_p = self.d_l(Bl, mask_r), self.d_l(A, mask_c), self.d_l(Pl, mask_r)
        for k, s in (("w_a", w_a), ("w_b", w_b), ("w_p", w_p), ("l_a", l_a), ("l_b", l_b), ("l_p", l_p)):
            self.ema(k, s)
        mu = self.mu
        loss_w = 0.25 * (bce(w_a - mu["w_p"], 1) + bce(w_p - mu["w_a"], 0) + bce(w_p - mu["w_b"], 1) + bce(w_b - mu["w_p"], 0))
        loss_l = 0.25 * (bce(l_b - mu["l_p"], 1) + bce(l_p - mu["l_b"], 0) + bce(l_p - mu["l_a"], 1) + bce(l_a - mu["l_p"], 0))
        self.opt.zero_grad(set_to_none=True)
        (loss_w + loss_l).backward()
        self.opt.step()

    def adversarial(self, Pw, Pl, mask_c, mask_r):
        self.d_w.eval(), self.d_l.eval()
        for p in list(self.d_w.parameters()) + list(self.d_l.parameters()):
            p.requires_grad_(False)
        g_w = bce(self.d_w(Pw, mask_c) - self.mu["w_a"], 1)
        g_l = bce(self.d_l(Pl, mask_r) - self.mu["l_b"], 1)
        for p in list(self.d_w.parameters()) + list(self.d_l.parameters()):
            p.requires_grad_(True)
        return 0.5 * (g_w + g_l)


# ---- one TRL-style step --------------------------------------------------------------------------
def concatenated_logps(model, ids, loss_mask):
    """DPOTrainer.concatenated_forward: per-row summed log-probs of the response tokens."""
    logits, hidden = model(ids)
    logits, labels, mask = logits[:, :-1].float(), ids[:, 1:], loss_mask[:, 1:]
    per_token = torch.gather(logits.log_softmax(-1), 2, labels.unsqueeze(-1)).squeeze(-1)
    return (per_token * mask).sum(-1), hidden


def make_batch(a, device):
    T = a.prompt_len + a.response_len
    ids = torch.randint(0, a.vocab, (2 * a.batch, T), device=device)  # [chosen; rejected]
    loss_mask = torch.zeros(2 * a.batch, T, device=device)
    loss_mask[:, a.prompt_len:] = 1
    attention = torch.ones(2 * a.batch, T, device=device)
    return ids, loss_mask, attention


def run_variant(a, ganpo_on, device, dtype):
    torch.manual_seed(0)
    policy = CausalLM(a).to(device)
    reference = CausalLM(a).to(device)
    reference.load_state_dict(policy.state_dict())
    reference.eval().requires_grad_(False)
    opt = torch.optim.AdamW(policy.parameters(), lr=5e-5)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    ganpo = Ganpo(a.d_model, a, device, lr=2.5e-5) if ganpo_on else None
    B = a.batch
    autocast = torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=dtype == "bf16")
    times = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for step in range(a.steps + 2):  # two warm-up steps
        ids, loss_mask, attention = make_batch(a, device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with autocast:
            pol_logps, pol_hidden = concatenated_logps(policy, ids, loss_mask)
            with torch.no_grad():
                ref_logps, ref_hidden = concatenated_logps(reference, ids, loss_mask)
            ratio = (pol_logps[:B] - ref_logps[:B]) - (pol_logps[B:] - ref_logps[B:])
            loss = -F.logsigmoid(0.1 * ratio).mean()
            if ganpo is not None:
                A, Bl, Pw, Pl = ref_hidden[:B], ref_hidden[B:], pol_hidden[:B], pol_hidden[B:]
                mc, mr = attention[:B], attention[B:]
                ganpo.critic_step(A, Bl, Pw, Pl, mc, mr)
                loss = loss + ganpo.adversarial(Pw, Pl, mc, mr)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        float(loss)  # TRL logs the loss every step: one host sync
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step >= 2:
            times.append(time.perf_counter() - t0)
    median = statistics.median(times)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else -1
    return {"median_step_time_s": median, "min_step_time_s": min(times), "step_times_s": [round(t, 4) for t in times],
            "tokens_per_s": 2 * B * (a.prompt_len + a.response_len) / median, "cuda_peak_bytes": peak}


def write_data(a):
    rng = random.Random(0)
    letters = "abcdefghijklmnopqrstuvwxyz"
    text = lambda n: "".join(rng.choice(letters) for _ in range(n))
    with open(a.write_data, "w") as f:
        for _ in range(a.rows):
            # The byte tokenizer frames a prompt as BOS + text + "\n" and a response as text + EOS.
            row = {"prompt": text(a.prompt_len - 2), "chosen": text(a.response_len - 1), "rejected": text(a.response_len - 1)}
            f.write(json.dumps(row) + "\n")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--arch", choices=["llama", "gpt2"], default="llama")
    p.add_argument("--d-model", type=int, default=384)
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--heads", type=int, default=6)
    p.add_argument("--kv-heads", type=int, default=0, help="0: as --heads")
    p.add_argument("--d-ff", type=int, default=0, help="0: the workbench's default (8/3 d rounded to 64; 4 d for gpt2)")
    p.add_argument("--vocab", type=int, default=259, help="259: the byte tokenizer of the presets")
    p.add_argument("--max-len", type=int, default=1024)
    p.add_argument("--batch", type=int, default=8, help="pairs per step")
    p.add_argument("--prompt-len", type=int, default=64)
    p.add_argument("--response-len", type=int, default=192)
    p.add_argument("--critic-hidden", type=int, default=512)
    p.add_argument("--critic-layers", type=int, default=2)
    p.add_argument("--critic-heads", type=int, default=8)
    p.add_argument("--critic-max-len", type=int, default=2048)
    p.add_argument("--ganpo", choices=["off", "on", "both"], default="both")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--write-data", default="")
    p.add_argument("--rows", type=int, default=64)
    a = p.parse_args()
    if a.write_data:
        write_data(a)
        return
    a.kv_heads = a.kv_heads or a.heads
    if not a.d_ff:
        a.d_ff = 4 * a.d_model if a.arch == "gpt2" else (a.d_model * 8 // 3 + 63) // 64 * 64
    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    report = {"torch": torch.__version__, "device": str(device), "threads": torch.get_num_threads(), "dtype": a.dtype}
    if a.ganpo in ("off", "both"):
        report["ganpo_off"] = run_variant(a, False, device, a.dtype)
    if a.ganpo in ("on", "both"):
        report["ganpo_on"] = run_variant(a, True, device, a.dtype)
    json.dump(report, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
