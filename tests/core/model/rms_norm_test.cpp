#include "core/model/rms_norm.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "core/cpu_tensor_memory.h"

namespace ganpo {
namespace {

// The norm written out as LibTorch operations, one node each: what rms_norm replaces.
torch::Tensor written_out(const torch::Tensor& x, const torch::Tensor& w, double eps, bool plus_one) {
  auto normed = x * torch::rsqrt(x.to(torch::kFloat32).pow(2).mean(-1, true) + eps);
  return plus_one ? normed * (1.0 + w) : normed * w;
}

struct Grads {
  torch::Tensor y, dx, dw;
};

Grads run(bool fused, const torch::Tensor& x0, const torch::Tensor& w0, const torch::Tensor& dy, bool plus_one) {
  auto x = x0.clone().requires_grad_(true), w = w0.clone().requires_grad_(true);
  auto y = fused ? rms_norm(x, w, 1e-6, plus_one) : written_out(x, w, 1e-6, plus_one);
  y.backward(dy);
  return {y.detach(), x.grad(), w.grad()};
}

TEST(RmsNorm, GivesTheWrittenOutNormsValuesAndGradients) {
  torch::manual_seed(3);
  for (bool plus_one : {false, true}) {
    SCOPED_TRACE(plus_one ? "(1 + w)" : "w");
    const auto x = torch::randn({3, 5, 48}) * 3.0, w = torch::randn({48}), dy = torch::randn({3, 5, 48});
    const Grads a = run(true, x, w, dy, plus_one), b = run(false, x, w, dy, plus_one);
    EXPECT_TRUE(torch::equal(a.y, b.y)) << "the forward pass computes the same operations in the same order";
    EXPECT_TRUE(torch::allclose(a.dx, b.dx, 1e-5, 1e-6)) << (a.dx - b.dx).abs().max().item<float>();
    EXPECT_TRUE(torch::allclose(a.dw, b.dw, 1e-5, 1e-5)) << (a.dw - b.dw).abs().max().item<float>();
  }
}

TEST(RmsNorm, AFrozenWeightOrInputGetsNoGradient) {
  const auto x = torch::randn({4, 16}).requires_grad_(true), w = torch::randn({16});
  rms_norm(x, w, 1e-5, false).sum().backward();
  EXPECT_TRUE(x.grad().defined());
  EXPECT_FALSE(w.grad().defined());
  const auto x2 = torch::randn({4, 16}), w2 = torch::randn({16}).requires_grad_(true);
  rms_norm(x2, w2, 1e-5, false).sum().backward();
  EXPECT_TRUE(w2.grad().defined());
  EXPECT_FALSE(rms_norm(torch::randn({2, 16}), torch::randn({16}), 1e-5, false).requires_grad());
}

// A bf16 input (queries and keys under autocast, Qwen3's per-head norms) gives a float32 output
// and a bf16 gradient, as the written-out form does by type promotion.
TEST(RmsNorm, ABf16InputGivesAFloat32OutputAndABf16Gradient) {
  torch::manual_seed(4);
  const auto x = torch::randn({6, 32}).to(torch::kBFloat16), w = torch::randn({32}), dy = torch::randn({6, 32});
  const Grads a = run(true, x, w, dy, false), b = run(false, x, w, dy, false);
  EXPECT_EQ(a.y.scalar_type(), torch::kFloat32);
  EXPECT_TRUE(torch::equal(a.y, b.y));
  EXPECT_EQ(a.dx.scalar_type(), torch::kBFloat16);
  EXPECT_TRUE(torch::allclose(a.dx.to(torch::kFloat32), b.dx.to(torch::kFloat32), 1e-2, 1e-2));
  EXPECT_TRUE(torch::allclose(a.dw, b.dw, 1e-4, 1e-4));
}

// What the backward pass keeps, counted by the CPU allocator: the output and one scale per row,
// where the written-out form keeps two more tensors of the input's size.
TEST(RmsNorm, KeepsItsOutputAndOneScalePerRow) {
  count_cpu_tensor_memory();
  const int64_t rows = 64, d = 256, bytes = rows * d * 4;
  const auto x = (torch::randn({rows, d}).requires_grad_(true) * 1.0), w = torch::randn({d}).requires_grad_(true);
  const auto kept = [&](bool fused) {
    const int64_t before = cpu_tensor_memory().allocated_bytes;
    auto y = fused ? rms_norm(x, w, 1e-5, false) : written_out(x, w, 1e-5, false);
    return cpu_tensor_memory().allocated_bytes - before;
  };
  EXPECT_EQ(kept(true), bytes + rows * 4);
  EXPECT_GE(kept(false), 2 * bytes);  // 3 x in LibTorch 1.13, whose mean keeps x^2
}

}  // namespace
}  // namespace ganpo
