// Bf16Autocast's thread state: CUDA's autocast on while one lives and everything restored after;
// autocast's cast cache off, but for a decoding region (cache_casts) that is the outermost and
// runs without gradients. (On the CPU these flags change no number: core/bf16_autocast.h turns
// on CUDA's autocast only; tests/core/gpu/cuda_test.cpp decodes under it.) The testing aid
// Bf16OnCpuForTests turns on the CPU's bf16 autocast beside it.
#include "core/bf16_autocast.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

namespace ganpo {
namespace {

TEST(Bf16Autocast, OnWhileItLivesAndEverythingRestoredAfter) {
  const bool cache_before = at::autocast::is_autocast_cache_enabled();
  {
    const Bf16Autocast off(false);
    EXPECT_FALSE(cuda_autocast_enabled());
    EXPECT_EQ(at::autocast::is_autocast_cache_enabled(), cache_before);
  }
  {
    const Bf16Autocast on(true);
    EXPECT_TRUE(cuda_autocast_enabled());
    EXPECT_FALSE(at::autocast::is_autocast_cache_enabled()) << "a training region never caches casts";
    {
      const Bf16Autocast nested(true);
      EXPECT_TRUE(cuda_autocast_enabled());
    }
    EXPECT_TRUE(cuda_autocast_enabled()) << "an inner region's end leaves the outer one on";
  }
  EXPECT_FALSE(cuda_autocast_enabled());
  EXPECT_EQ(at::autocast::is_autocast_cache_enabled(), cache_before);
}

TEST(Bf16Autocast, CastsAreCachedOnlyInAnOutermostRegionWithoutGradients) {
  const bool cache_before = at::autocast::is_autocast_cache_enabled();
  {
    const Bf16Autocast with_gradients(true, /*cache_casts=*/true);
    EXPECT_FALSE(at::autocast::is_autocast_cache_enabled()) << "gradients on: no cache";
  }
  {
    torch::NoGradGuard no_grad;
    {
      const Bf16Autocast decoding(true, /*cache_casts=*/true);
      EXPECT_TRUE(at::autocast::is_autocast_cache_enabled());
    }
    {
      const Bf16Autocast outer(true);
      const Bf16Autocast inner(true, /*cache_casts=*/true);
      EXPECT_FALSE(at::autocast::is_autocast_cache_enabled()) << "inside another region: no cache";
    }
    {
      const Bf16Autocast off(false, /*cache_casts=*/true);
      EXPECT_EQ(at::autocast::is_autocast_cache_enabled(), cache_before) << "off: nothing changes";
    }
  }
  EXPECT_EQ(at::autocast::is_autocast_cache_enabled(), cache_before);
  EXPECT_FALSE(cuda_autocast_enabled());
}

TEST(Bf16Autocast, TheTestingAidAutocastsTheCpuToo) {
  const auto x = torch::randn({4, 8}), w = torch::randn({8, 8});
  {
    const Bf16Autocast cuda_only(true);
    EXPECT_FALSE(bf16_autocast_for(x));
    EXPECT_EQ(torch::mm(x, w).scalar_type(), torch::kFloat32) << "without the aid the CPU computes in float32";
  }
  {
    const Bf16OnCpuForTests aid;
    EXPECT_TRUE(Bf16OnCpuForTests::active());
    EXPECT_FALSE(bf16_autocast_for(x)) << "only inside a Bf16Autocast";
    {
      const Bf16Autocast on(true);
      EXPECT_TRUE(bf16_autocast_for(x));
      EXPECT_TRUE(cuda_autocast_enabled());
      EXPECT_EQ(torch::mm(x, w).scalar_type(), torch::kBFloat16);
      EXPECT_EQ(torch::linear(x, w).scalar_type(), torch::kBFloat16);
      {
        const Bf16Autocast nested(true);
        EXPECT_TRUE(bf16_autocast_for(x));
      }
      EXPECT_TRUE(bf16_autocast_for(x)) << "an inner region's end leaves the outer one on";
    }
    {
      const Bf16Autocast off(false);
      EXPECT_FALSE(bf16_autocast_for(x));
    }
    EXPECT_FALSE(bf16_autocast_for(x));
    EXPECT_EQ(torch::mm(x, w).scalar_type(), torch::kFloat32);
  }
  EXPECT_FALSE(Bf16OnCpuForTests::active());
  const Bf16Autocast after(true);
  EXPECT_FALSE(bf16_autocast_for(x)) << "the aid ended with its guard";
}

}  // namespace
}  // namespace ganpo
