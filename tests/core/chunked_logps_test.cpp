#include "core/chunked_logps.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

namespace ganpo {
namespace {

// The log-probs of the full logits, as the plain head computes them.
torch::Tensor full_logps(const torch::Tensor& h, const torch::Tensor& w, const torch::Tensor& targets, double cap) {
  auto z = torch::mm(h, w.t());
  if (cap > 0) z = torch::tanh(z / cap) * cap;
  return torch::log_softmax(z, -1).gather(1, targets.unsqueeze(1)).squeeze(1);
}

// Values and gradients (hidden and weight, under an uneven upstream gradient) equal the full
// logits' for chunks of one row, of a size that does not divide the rows, of all rows and of
// more, with and without a soft-cap (a cap of 2 saturates tanh, so its derivative matters).
TEST(ChunkedLogps, ValuesAndGradientsEqualTheFullLogits) {
  torch::manual_seed(11);
  const int64_t M = 23, d = 16, V = 50;
  const auto h0 = torch::randn({M, d}), w0 = torch::randn({V, d}) * 0.5;
  const auto targets = torch::randint(V, {M}, torch::kLong);
  const auto upstream = torch::randn({M});
  for (double cap : {0.0, 2.0, 30.0}) {
    auto h = h0.clone().requires_grad_(true), w = w0.clone().requires_grad_(true);
    auto expected = full_logps(h, w, targets, cap);
    (expected * upstream).sum().backward();
    const auto gh = h.grad().clone(), gw = w.grad().clone();
    for (int64_t chunk : {int64_t{1}, int64_t{7}, M, int64_t{100}, int64_t{0}}) {
      SCOPED_TRACE("cap " + std::to_string(cap) + ", chunk " + std::to_string(chunk));
      h.mutable_grad().zero_();
      w.mutable_grad().zero_();
      auto got = chunked_token_logps(h, w, targets, cap, chunk);
      ASSERT_EQ(got.sizes(), (std::vector<int64_t>{M}));
      EXPECT_EQ(got.scalar_type(), torch::kFloat32);
      EXPECT_TRUE(torch::allclose(got, expected, 1e-5, 1e-5)) << (got - expected).abs().max();
      (got * upstream).sum().backward();
      EXPECT_TRUE(torch::allclose(h.grad(), gh, 1e-5, 1e-6)) << (h.grad() - gh).abs().max();
      EXPECT_TRUE(torch::allclose(w.grad(), gw, 1e-5, 1e-6)) << (w.grad() - gw).abs().max();
    }
  }
}

// A low-rank part (a LoRA adapter on the head: down [M, r], up [V, r]) adds down up^T to the
// logits: values and the gradients of hidden, down and up equal the full logits' h w^T + down up^T,
// with a frozen weight (LoRA's base), with and without a cap; in bf16 within its rounding.
TEST(ChunkedLogps, ALowRankPartEqualsItsFullLogits) {
  torch::manual_seed(17);
  const int64_t M = 23, d = 16, V = 50, r = 3;
  const auto h0 = torch::randn({M, d}), w = torch::randn({V, d}) * 0.5;
  const auto down0 = torch::randn({M, r}), up0 = torch::randn({V, r}) * 0.3;
  const auto targets = torch::randint(V, {M}, torch::kLong);
  const auto upstream = torch::randn({M});
  for (double cap : {0.0, 2.0}) {
    auto h = h0.clone().requires_grad_(true), down = down0.clone().requires_grad_(true), up = up0.clone().requires_grad_(true);
    auto z = torch::mm(h, w.t()) + torch::mm(down, up.t());
    if (cap > 0) z = torch::tanh(z / cap) * cap;
    const auto expected = torch::log_softmax(z, -1).gather(1, targets.unsqueeze(1)).squeeze(1);
    (expected * upstream).sum().backward();
    const auto gh = h.grad().clone(), gdown = down.grad().clone(), gup = up.grad().clone();
    for (int64_t chunk : {int64_t{1}, int64_t{7}, int64_t{100}}) {
      SCOPED_TRACE("cap " + std::to_string(cap) + ", chunk " + std::to_string(chunk));
      h.mutable_grad().zero_();
      down.mutable_grad().zero_();
      up.mutable_grad().zero_();
      auto got = chunked_token_logps(h, w, targets, cap, chunk, {down, up});
      EXPECT_TRUE(torch::allclose(got, expected, 1e-5, 1e-5)) << (got - expected).abs().max();
      (got * upstream).sum().backward();
      EXPECT_TRUE(torch::allclose(h.grad(), gh, 1e-5, 1e-6)) << (h.grad() - gh).abs().max();
      EXPECT_TRUE(torch::allclose(down.grad(), gdown, 1e-5, 1e-6)) << (down.grad() - gdown).abs().max();
      EXPECT_TRUE(torch::allclose(up.grad(), gup, 1e-5, 1e-6)) << (up.grad() - gup).abs().max();
    }
  }
  // Without the low-rank part the same call is the head alone.
  EXPECT_TRUE(torch::allclose(chunked_token_logps(h0, w, targets, 0.0, 7),
                              torch::log_softmax(torch::mm(h0, w.t()), -1).gather(1, targets.unsqueeze(1)).squeeze(1), 1e-5, 1e-5));
  // bf16: the up's gradient summed over chunks in float32.
  const auto bf = [](const torch::Tensor& t) { return t.to(torch::kBFloat16); };
  auto down = bf(down0).requires_grad_(true), up = bf(up0).requires_grad_(true);
  (chunked_token_logps(bf(h0), bf(w), targets, 0.0, 2, {down, up}) * upstream).sum().backward();
  auto down_f = bf(down0).to(torch::kFloat32).requires_grad_(true), up_f = bf(up0).to(torch::kFloat32).requires_grad_(true);
  const auto z = torch::mm(bf(h0).to(torch::kFloat32), bf(w).to(torch::kFloat32).t()) + torch::mm(down_f, up_f.t());
  (torch::log_softmax(z, -1).gather(1, targets.unsqueeze(1)).squeeze(1) * upstream).sum().backward();
  EXPECT_EQ(up.grad().scalar_type(), torch::kBFloat16);
  EXPECT_TRUE(torch::allclose(up.grad().to(torch::kFloat32), up_f.grad(), 3e-2, 3e-2)) << (up.grad().to(torch::kFloat32) - up_f.grad()).abs().max();
  EXPECT_TRUE(torch::allclose(down.grad().to(torch::kFloat32), down_f.grad(), 3e-2, 3e-2));
}

// In bf16 (the products' dtype under autocast; here bf16 tensors on the CPU) the weight's gradient
// is gathered over groups of chunks and summed in float32: with 23 rows in chunks of 2 (three
// groups, the last one short) it equals one pass over all rows, within bf16 rounding.
TEST(ChunkedLogps, Bf16WeightGradientsGatheredOverGroupsOfChunks) {
  torch::manual_seed(13);
  const int64_t M = 23, d = 16, V = 50;
  const auto h0 = torch::randn({M, d}).to(torch::kBFloat16), w0 = (torch::randn({V, d}) * 0.5).to(torch::kBFloat16);
  const auto targets = torch::randint(V, {M}, torch::kLong);
  const auto upstream = torch::randn({M});
  auto grads = [&](int64_t chunk) {
    auto h = h0.clone().requires_grad_(true), w = w0.clone().requires_grad_(true);
    (chunked_token_logps(h, w, targets, 0.0, chunk) * upstream).sum().backward();
    return std::pair{h.grad().to(torch::kFloat32), w.grad().to(torch::kFloat32)};
  };
  const auto [gh_one, gw_one] = grads(M);
  const auto [gh, gw] = grads(2);
  EXPECT_EQ(w0.scalar_type(), torch::kBFloat16);
  EXPECT_TRUE(torch::allclose(gh, gh_one, 1e-2, 1e-2)) << (gh - gh_one).abs().max();
  EXPECT_TRUE(torch::allclose(gw, gw_one, 1e-2, 1e-2)) << (gw - gw_one).abs().max();
  // And against float32 on the same (bf16-valued) inputs.
  auto hf = h0.to(torch::kFloat32).requires_grad_(true), wf = w0.to(torch::kFloat32).requires_grad_(true);
  (full_logps(hf, wf, targets, 0.0) * upstream).sum().backward();
  EXPECT_TRUE(torch::allclose(gw, wf.grad(), 3e-2, 3e-2)) << (gw - wf.grad()).abs().max();
}

// A frozen head (the reference; LoRA's base) gets no gradient; the hidden states still do.
// No rows: no log-probs, and nothing to backpropagate.
TEST(ChunkedLogps, AFrozenWeightGetsNoGradientAndNoRowsGiveNothing) {
  torch::manual_seed(12);
  auto h = torch::randn({5, 8}).requires_grad_(true);
  const auto w = torch::randn({20, 8});
  const auto targets = torch::randint(20, {5}, torch::kLong);
  chunked_token_logps(h, w, targets, 0.0, 2).sum().backward();
  ASSERT_TRUE(h.grad().defined());
  EXPECT_FALSE(w.grad().defined());
  auto hr = h.detach().clone().requires_grad_(true);
  full_logps(hr, w, targets, 0.0).sum().backward();
  EXPECT_TRUE(torch::allclose(h.grad(), hr.grad(), 1e-5, 1e-6));

  auto none = chunked_token_logps(torch::zeros({0, 8}).requires_grad_(true), w, torch::zeros({0}, torch::kLong), 0.0);
  EXPECT_EQ(none.numel(), 0);
  EXPECT_EQ(none.sum().item<float>(), 0.0f);
}

}  // namespace
}  // namespace ganpo
