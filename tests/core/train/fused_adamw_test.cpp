// FusedAdamW against LibTorch's own AdamW: the same parameters after several steps (with weight
// decay, a changing learning rate and a tensor that misses a gradient on one step), for the
// one-pass CPU loop and for the multi-tensor path the GPU takes; and saved state that loads in
// either direction.
#include "core/train/fused_adamw.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <sstream>
#include <string>
#include <vector>

namespace ganpo {
namespace {

using Kernel = FusedAdamW::Kernel;

torch::optim::AdamWOptions adamw_options() {
  return torch::optim::AdamWOptions(1e-2).betas({0.9, 0.95}).eps(1e-6).weight_decay(0.1);
}

// Parameters of a few shapes (one above the one-pass loop's 32k-element task size).
std::vector<torch::Tensor> adamw_params(uint64_t seed) {
  torch::manual_seed(seed);
  std::vector<torch::Tensor> params;
  for (const auto& shape : std::vector<std::vector<int64_t>>{{300, 200}, {7}, {3, 5, 2}, {1}})
    params.push_back(torch::randn(shape).requires_grad_(true));
  return params;
}

// Deterministic gradients for step `step`; the second tensor has none at step 2.
void set_adamw_grads(std::vector<torch::Tensor>& params, int64_t step) {
  for (size_t i = 0; i < params.size(); ++i) {
    if (i == 1 && step == 2) {
      params[i].mutable_grad() = torch::Tensor();
      continue;
    }
    torch::manual_seed(static_cast<uint64_t>(1000 * step + static_cast<int64_t>(i)));
    params[i].mutable_grad() = torch::randn(params[i].sizes()) * (1.0 + static_cast<double>(step));
  }
}

void set_adamw_lr(torch::optim::Optimizer& opt, double lr) {
  for (auto& group : opt.param_groups()) static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr);
}

void expect_params_close(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b, const std::string& what) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    const double err = (a[i] - b[i]).abs().max().item<double>();
    EXPECT_LT(err, 1e-6) << what << ": parameter " << i;
  }
}

class FusedAdamWTest : public ::testing::TestWithParam<Kernel> {};

TEST_P(FusedAdamWTest, UpdatesLikeTorchAdamW) {
  auto expected = adamw_params(3), actual = adamw_params(3);
  torch::optim::AdamW reference(expected, adamw_options());
  FusedAdamW fused(actual, adamw_options(), GetParam());
  for (int64_t step = 1; step <= 6; ++step) {
    const double lr = step < 4 ? 1e-2 : 3e-3;  // a schedule moves the rate between steps
    set_adamw_lr(reference, lr);
    set_adamw_lr(fused, lr);
    set_adamw_grads(expected, step);
    set_adamw_grads(actual, step);
    reference.step();
    fused.step();
    expect_params_close(actual, expected, "step " + std::to_string(step));
  }
  // The parameters did move: the comparison is not between two untouched sets.
  EXPECT_GT((actual[0] - adamw_params(3)[0]).abs().max().item<double>(), 1e-3);
}

// A step changes each parameter in place and moves its version counter as an in-place operation
// does, so what is kept keyed on it (DoRA's factor for no-grad passes) is computed again.
TEST_P(FusedAdamWTest, AStepMovesEachParametersVersion) {
  auto params = adamw_params(5);
  FusedAdamW fused(params, adamw_options(), GetParam());
  std::vector<int64_t> before;
  for (const auto& p : params) before.push_back(p._version());
  set_adamw_grads(params, 1);
  fused.step();
  for (size_t i = 0; i < params.size(); ++i) EXPECT_GT(params[i]._version(), before[i]) << "parameter " << i;
}

// Saved state interchanges with torch::optim::AdamW's (checkpoints written before FusedAdamW,
// and after), including the per-tensor step counts that differ after a missed gradient.
TEST_P(FusedAdamWTest, SavedStateLoadsIntoTorchAdamWAndBack) {
  auto run_two_then_one = [&](bool fused_first) {
    auto params = adamw_params(9);
    std::stringstream saved;
    {
      std::unique_ptr<torch::optim::Optimizer> first;
      if (fused_first) first = std::make_unique<FusedAdamW>(params, adamw_options(), GetParam());
      else first = std::make_unique<torch::optim::AdamW>(params, adamw_options());
      for (int64_t step = 1; step <= 2; ++step) {
        set_adamw_grads(params, step);
        first->step();
      }
      torch::save(*first, saved);
    }
    std::unique_ptr<torch::optim::Optimizer> second;
    if (fused_first) second = std::make_unique<torch::optim::AdamW>(params, adamw_options());
    else second = std::make_unique<FusedAdamW>(params, adamw_options(), GetParam());
    torch::load(*second, saved);
    set_adamw_grads(params, 3);
    second->step();
    return params;
  };
  auto uninterrupted = adamw_params(9);
  torch::optim::AdamW reference(uninterrupted, adamw_options());
  for (int64_t step = 1; step <= 3; ++step) {
    set_adamw_grads(uninterrupted, step);
    reference.step();
  }
  expect_params_close(run_two_then_one(true), uninterrupted, "FusedAdamW's state loaded into torch's AdamW");
  expect_params_close(run_two_then_one(false), uninterrupted, "torch's AdamW state loaded into FusedAdamW");
}

INSTANTIATE_TEST_SUITE_P(Kernels, FusedAdamWTest, ::testing::Values(Kernel::automatic, Kernel::foreach),
                         [](const auto& info) { return info.param == Kernel::automatic ? "OnePass" : "Foreach"; });

}  // namespace
}  // namespace ganpo
