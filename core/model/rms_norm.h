// RMSNorm as one autograd node: y = x / sqrt(mean(x^2) + eps) * w, or * (1 + w) for Gemma's
// norms, computed as the operations LibTorch would run one by one (the same values, float32 in
// and out of autocast) but keeping for the backward pass only its input and one scale per row.
// Written out, the norm keeps three tensors of the input's size per call (x^2, which LibTorch
// 1.13's mean keeps, x / rms for the weight's gradient, and the output where a product keeps
// it): with a norm before attention and one before the MLP, that is 4 d of a Llama layer's
// ~12 d + 4 d_ff values per token, 8 d of Gemma 2's with its four.
//
// Backward, with n = x r, r = (mean(x^2) + eps)^-1/2 per row and gn = dy * w:
//   dx = r (gn - n mean(gn n))        dw = sum over rows of dy n
#pragma once

#include <torch/torch.h>

namespace ganpo {

// x [..., d] (float32, or bf16 where autocast made it so; float64 stays float64), weight [d]
// float32. Returns float32 [..., d] as the written-out form does: the scale, the products and
// the output in float32.
torch::Tensor rms_norm(const torch::Tensor& x, const torch::Tensor& weight, double eps, bool plus_one);

}  // namespace ganpo
