#include "core/parallel_lanes.h"

#include "core/bf16_autocast.h"

#include <atomic>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <torch/torch.h>

namespace ganpo {
namespace {

CpuThreads two_lanes() { return plan_cpu_threads(2, 2, 1); }

TEST(ParallelLanes, OneLaneRunsTheSideJobFirstOnTheCaller) {
  ParallelLanes lanes;
  lanes.set_plan(plan_cpu_threads(1, 1, 1));
  std::vector<std::string> order;
  const auto caller = std::this_thread::get_id();
  std::thread::id a_thread, b_thread;
  lanes.run([&] { order.push_back("a"), a_thread = std::this_thread::get_id(); },
            [&] { order.push_back("b"), b_thread = std::this_thread::get_id(); });
  EXPECT_EQ(order, (std::vector<std::string>{"b", "a"}));
  EXPECT_EQ(a_thread, caller);
  EXPECT_EQ(b_thread, caller);
}

// The two closures wait for each other, which only finishes when they run at the same time.
TEST(ParallelLanes, TwoLanesRunBothAtOnceOnTwoThreads) {
  ParallelLanes lanes;
  lanes.set_plan(two_lanes());
  for (int round = 0; round < 20; ++round) {
    std::atomic<int> arrived{0};
    std::thread::id a_thread, b_thread;
    auto meet = [&](std::thread::id& id) {
      id = std::this_thread::get_id();
      arrived.fetch_add(1);
      while (arrived.load() < 2) std::this_thread::yield();
    };
    lanes.run([&] { meet(a_thread); }, [&] { meet(b_thread); });
    EXPECT_EQ(arrived.load(), 2);
    EXPECT_EQ(a_thread, std::this_thread::get_id());
    EXPECT_NE(b_thread, a_thread);
  }
}

TEST(ParallelLanes, ErrorsFromEitherLaneReachTheCaller) {
  ParallelLanes lanes;
  lanes.set_plan(two_lanes());
  bool a_ran = false;
  try {
    lanes.run([&] { a_ran = true; }, [] { throw std::runtime_error("side failed"); });
    FAIL() << "no exception";
  } catch (const std::runtime_error& e) {
    EXPECT_STREQ(e.what(), "side failed");
  }
  EXPECT_TRUE(a_ran);
  bool b_ran = false;
  EXPECT_THROW(lanes.run([] { throw std::logic_error("main failed"); }, [&] { b_ran = true; }), std::logic_error);
  EXPECT_TRUE(b_ran);  // b finished before run() returned
  // The lanes still work after a failure. (Each lane writes its own variable: two lanes that
  // shared one would race, which ThreadSanitizer caught in an earlier version of this test.)
  int from_a = 0, from_b = 0;
  lanes.run([&] { from_a = 1; }, [&] { from_b = 2; });
  EXPECT_EQ(from_a + from_b, 3);
}

TEST(ParallelLanes, BlasPoolIsNarrowedWhileBothRunAndRestoredAfter) {
  if (!blas_info().thread_control) GTEST_SKIP() << "BLAS thread count not controllable";
  ParallelLanes lanes;
  lanes.set_plan(two_lanes());
  apply_cpu_threads(two_lanes());
  int inside = -1;
  lanes.run([&] { inside = blas_threads(); }, [] {});
  EXPECT_EQ(inside, 1);
  EXPECT_EQ(blas_threads(), 2);
  apply_cpu_threads(plan_cpu_threads(1, 1, 1));
}

// A forward + backward on the side lane, with gradients on (grad mode is per thread), equals the
// same on the caller.
TEST(ParallelLanes, AutogradWorksOnTheSideLane) {
  ParallelLanes lanes;
  lanes.set_plan(two_lanes());
  torch::manual_seed(3);
  auto w1 = torch::randn({8, 8}, torch::requires_grad());
  auto w2 = w1.detach().clone().requires_grad_(true);
  auto x = torch::randn({4, 8});
  lanes.run([&] { torch::mm(x, w1).tanh().sum().backward(); }, [&] { torch::mm(x, w2).tanh().sum().backward(); });
  EXPECT_TRUE(torch::equal(w1.grad(), w2.grad()));
}

// Autocast's state is per thread: under the testing aid's CPU bf16 autocast the side lane
// computes as the caller does, and plainly when the caller does.
TEST(ParallelLanes, TheSideLaneComputesUnderTheCallersCpuBf16Autocast) {
  ParallelLanes lanes;
  lanes.set_plan(two_lanes());
  const auto x = torch::randn({4, 8}), w = torch::randn({8, 8});
  torch::ScalarType a_dtype = torch::kDouble, b_dtype = torch::kDouble;
  auto both = [&] {
    lanes.run([&] { a_dtype = torch::mm(x, w).scalar_type(); }, [&] { b_dtype = torch::mm(x, w).scalar_type(); });
  };
  const Bf16OnCpuForTests aid;
  {
    const Bf16Autocast autocast(true);
    both();
    EXPECT_EQ(a_dtype, torch::kBFloat16);
    EXPECT_EQ(b_dtype, torch::kBFloat16);
  }
  both();
  EXPECT_EQ(a_dtype, torch::kFloat32);
  EXPECT_EQ(b_dtype, torch::kFloat32);
}

}  // namespace
}  // namespace ganpo
