// Philox dropout: the generator against Random123's published known answers, the mask's keep
// rate and scale, masks that do not depend on the thread count, a backward pass that multiplies
// by the same mask, and a generator state that repeats the draws.
#include "core/counter_dropout.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <array>
#include <cmath>

namespace ganpo {
namespace {

using Words = std::array<uint32_t, 4>;

TEST(CounterDropout, PhiloxGivesRandom123sKnownAnswers) {
  EXPECT_EQ(philox4x32_10({0, 0, 0, 0}, {0, 0}), (Words{0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}));
  EXPECT_EQ(philox4x32_10({0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}, {0xffffffff, 0xffffffff}),
            (Words{0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}));
  EXPECT_EQ(philox4x32_10({0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}, {0xa4093822, 0x299f31d0}),
            (Words{0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}));
}

// Element i against word i % 4 of block i / 4, over enough elements for the eight-block vector
// loop (where the CPU has AVX2), its ragged end and a partial last block.
TEST(CounterDropout, ElementIKeepsWhereWordIIsAboveTheThreshold) {
  const uint64_t seed = 0x0123456789abcdefULL;
  const uint32_t threshold = 0x40000000;  // p = 1/4
  const int64_t n = 4 * 8 * 5 + 4 * 3 + 2;
  auto x = torch::arange(1, n + 1, torch::kFloat32);
  auto out = philox_dropout_mask_apply(x, seed, threshold, 2.0f);
  const float* o = out.data_ptr<float>();
  int64_t kept = 0;
  for (int64_t i = 0; i < n; ++i) {
    const auto block = philox4x32_10({static_cast<uint32_t>(i / 4), 0, 0, 0},
                                     {static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32)});
    const bool keep = block[i % 4] >= threshold;
    kept += keep;
    ASSERT_EQ(o[i], keep ? 2.0f * static_cast<float>(i + 1) : 0.0f) << "element " << i;
  }
  EXPECT_GT(kept, 0);
  EXPECT_LT(kept, n);
}

TEST(CounterDropout, KeepsOneMinusPOfTheElementsScaledByItsInverse) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(7);
  const int64_t n = 1 << 20;
  for (double p : {0.1, 0.5}) {
    auto out = ganpo::dropout(torch::ones({n}), p, true, gen);
    const double kept = (out > 0).sum().item<double>() / n;
    // Binomial standard deviation sqrt(p (1 - p) / n) is at most 5e-4 here: 6 of them.
    EXPECT_NEAR(kept, 1.0 - p, 3e-3) << "p = " << p;
    EXPECT_NEAR(out.masked_select(out > 0).mean().item<double>(), 1.0 / (1.0 - p), 1e-6);
    EXPECT_NEAR(out.mean().item<double>(), 1.0, 6 * std::sqrt(p / (1 - p) / n));
  }
  auto x = torch::randn({64, 33});
  EXPECT_TRUE(ganpo::dropout(x, 0.0, true, gen).equal(x));
  EXPECT_TRUE(ganpo::dropout(x, 0.3, false, gen).equal(x));
}

TEST(CounterDropout, TheMaskIsTheSameForAnyThreadCount) {
  const int threads = at::get_num_threads();
  auto x = torch::randn({3, 70001});  // several parallel tasks, a ragged last block
  auto draw = [&](int n) {
    at::set_num_threads(n);
    return ganpo::dropout(x, 0.2, true, at::make_generator<at::CPUGeneratorImpl>(11));
  };
  auto one = draw(1), two = draw(2), four = draw(4);
  at::set_num_threads(threads);
  EXPECT_TRUE(one.equal(two));
  EXPECT_TRUE(one.equal(four));
}

TEST(CounterDropout, BackwardMultipliesByTheSameMask) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(3);
  auto x = (torch::rand({40, 50}) + 0.5).requires_grad_(true);  // no zeros: out / x is the mask
  auto w = torch::randn({40, 50});
  auto out = ganpo::dropout(x.transpose(0, 1), 0.3, true, gen);  // a non-contiguous input
  (out * w.transpose(0, 1)).sum().backward();
  auto mask = (out / x.transpose(0, 1)).detach().transpose(0, 1);
  EXPECT_TRUE(torch::allclose(x.grad(), w * mask, 1e-6, 1e-6));
  EXPECT_TRUE(((mask == 0) | (mask - 1.0 / 0.7).abs().lt(1e-5)).all().item<bool>());
}

TEST(CounterDropout, AGeneratorStateRepeatsTheDrawsAndEachCallDrawsAnew) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(5);
  auto x = torch::ones({1000});
  torch::Tensor state;
  {
    std::lock_guard<std::mutex> lock(gen.mutex());
    state = gen.get_state();
  }
  auto first = ganpo::dropout(x, 0.5, true, gen), second = ganpo::dropout(x, 0.5, true, gen);
  EXPECT_FALSE(first.equal(second));
  {
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_state(state);
  }
  EXPECT_TRUE(ganpo::dropout(x, 0.5, true, gen).equal(first));
  EXPECT_TRUE(ganpo::dropout(x, 0.5, true, gen).equal(second));
}

TEST(CounterDropout, OtherTensorsGoThroughTorchsDropout) {
  auto x = torch::ones({4096}, torch::kFloat64);
  auto out = ganpo::dropout(x, 0.5, true);
  EXPECT_EQ(out.scalar_type(), torch::kFloat64);
  EXPECT_TRUE(((out == 0) | (out == 2)).all().item<bool>());
}

}  // namespace
}  // namespace ganpo
