#include "core/cpu_tensor_memory.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

namespace ganpo {
namespace {

// A storage counts from its allocation to its release, whatever holds it; the peak keeps the
// largest sum since the last reset.
TEST(CpuTensorMemory, CountsLiveStoragesAndTheirPeak) {
  count_cpu_tensor_memory();
  ASSERT_TRUE(counting_cpu_tensor_memory());
  const int64_t base = cpu_tensor_memory().allocated_bytes;
  reset_cpu_tensor_peak();
  {
    auto a = torch::empty({1000}, torch::kFloat32);   // 4000 bytes
    auto b = torch::empty({250}, torch::kFloat64);    // 2000 bytes
    EXPECT_EQ(cpu_tensor_memory().allocated_bytes - base, 6000);
    auto view = a.slice(0, 0, 10);                    // no storage of its own
    a = torch::Tensor();
    EXPECT_EQ(cpu_tensor_memory().allocated_bytes - base, 6000) << "the view keeps a's storage";
  }
  EXPECT_EQ(cpu_tensor_memory().allocated_bytes, base);
  EXPECT_EQ(cpu_tensor_memory().peak_bytes - base, 6000);
  reset_cpu_tensor_peak();
  EXPECT_EQ(cpu_tensor_memory().peak_bytes, base);
  // What a computation keeps for its backward pass is counted too: x * y keeps both.
  const auto x = torch::ones({500}, torch::requires_grad()), y = torch::ones({500}, torch::requires_grad());
  const int64_t before = cpu_tensor_memory().allocated_bytes;
  auto z = (x * 2.0) * (y * 3.0);
  EXPECT_EQ(cpu_tensor_memory().allocated_bytes - before, 3 * 2000);
}

}  // namespace
}  // namespace ganpo
