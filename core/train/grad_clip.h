// Gradient clipping that leaves the total norm on the gradients' device: the same operations as
// LibTorch's torch::nn::utils::clip_grad_norm_ (per-tensor 2-norms, the norm of their stack,
// every gradient scaled by min(1, max_norm / (norm + 1e-6))), whose double result reads the norm
// back to the host and so waits for the device in the middle of every step. The trainer reads
// the norm with the other metrics at the next log line.
#pragma once

#include <vector>

#include <torch/types.h>

namespace ganpo {

// The total 2-norm of the defined gradients before clipping, a 0-dim tensor on their device
// (0 when no parameter has a gradient). max_norm = infinity scales nothing.
torch::Tensor clip_grad_norm_on_device(const std::vector<torch::Tensor>& parameters, double max_norm);

}  // namespace ganpo
