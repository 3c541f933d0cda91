#include "core/train/grad_clip.h"

#include <cmath>

#include <torch/torch.h>

namespace ganpo {

torch::Tensor clip_grad_norm_on_device(const std::vector<torch::Tensor>& parameters, double max_norm) {
  std::vector<torch::Tensor> grads, norms;
  for (const auto& p : parameters)
    if (p.grad().defined()) grads.push_back(p.grad());
  if (grads.empty())
    return torch::zeros({}, parameters.empty() ? torch::TensorOptions() : parameters.front().options());
  for (const auto& g : grads) norms.push_back(g.detach().norm(2));
  auto total = norms.size() == 1 ? norms[0] : torch::stack(norms).norm(2);  // []
  if (std::isinf(max_norm)) return total;  // a scale of min(1, inf) = 1: nothing to do
  const auto scale = torch::clamp(max_norm / (total + 1e-6), c10::nullopt, 1.0);
  torch::NoGradGuard no_grad;
  for (auto& g : grads) g.mul_(scale);
  return total;
}

}  // namespace ganpo
