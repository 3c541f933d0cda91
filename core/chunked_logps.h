// Token log-probs through the output head without its [M, V] logits: the head's product, the
// soft-cap, the log-softmax and the pick of each target run over chunks of positions, and the
// backward pass computes each chunk's logits again from the saved hidden states (the idea of
// Liger's fused linear cross-entropy and of Apple's cut cross-entropy, here with a plain ATen
// loop). What a scored position costs in memory falls from the logits and their gradient
// (8 bytes per vocabulary entry in float32, 12 under bf16 autocast) to one chunk of them; the
// price is one more head product per position, in the backward pass.
//
// Under bf16 autocast (CUDA) the products run in bf16 as the plain head's do, with the weight cast
// once per call instead of once per chunk; the log-softmax, the soft-cap and the results are
// float32, and the weight's gradient is summed over the chunks in float32.
#pragma once

#include <torch/torch.h>

namespace ganpo {

// A low-rank part of the head's logits, down up^T: a LoRA adapter on the head, down = scale *
// dropout(hidden) A^T [M, r] and up = B [V, r]. Both undefined: none.
struct HeadLowRank {
  torch::Tensor down, up;
};

// hidden [M, d] (after the final norm), weight [V, d] (the head's, or the tied embedding),
// targets [M] int64 in [0, V). final_softcap > 0 caps the logits as cap * tanh(z / cap) first
// (Gemma 2). Returns log p(target | position) for every row, [M] float32, differentiable in
// hidden, weight and the low-rank part. chunk_rows <= 0 takes chunked_logps_rows(V, on CUDA)
// (core/config.h: about 128 MiB of float32 logits on a GPU, 32 MiB on the CPU).
torch::Tensor chunked_token_logps(const torch::Tensor& hidden, const torch::Tensor& weight, const torch::Tensor& targets,
                                  double final_softcap, int64_t chunk_rows = 0, const HeadLowRank& low_rank = {});

}  // namespace ganpo
