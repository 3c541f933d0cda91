// AdamW as PyTorch defines it (decoupled weight decay), with one pass over memory per parameter
// tensor: the same update and the same saved state as torch::optim::AdamW, whose checkpoints
// (optimizer.pt) load into this one and the other way round.
//
// LibTorch's C++ AdamW updates each tensor with seven operations and allocates the denominator,
// about twenty passes over parameter-sized memory per step. Here, per element at step t:
//
//   m <- b1 m + (1 - b1) g
//   v <- b2 v + (1 - b2) g^2
//   p <- p (1 - lr wd) - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
//
// On the CPU (float32, contiguous) that is one loop reading p, g, m, v and writing p, m, v once,
// split over the intra-op threads. Elsewhere (CUDA) the tensors are updated together through
// multi-tensor operations (_foreach_*): a handful of kernel launches per step for all parameters
// instead of seven per tensor. amsgrad is not supported (the trainer never asks for it).
#pragma once

#include <torch/torch.h>

#include <vector>

namespace ganpo {

class FusedAdamW : public torch::optim::AdamW {
public:
  enum class Kernel { automatic, foreach };  // automatic: the one-pass loop where it applies

  FusedAdamW(std::vector<torch::Tensor> params, torch::optim::AdamWOptions options, Kernel kernel = Kernel::automatic);
  // Groups with options of their own (weight decay on some tensors only); options: the defaults.
  FusedAdamW(std::vector<torch::optim::OptimizerParamGroup> groups, torch::optim::AdamWOptions options,
             Kernel kernel = Kernel::automatic);

  torch::Tensor step(LossClosure closure = nullptr) override;

private:
  Kernel kernel_;
};

}  // namespace ganpo
