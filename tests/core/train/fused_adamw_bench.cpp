// AdamW step time: LibTorch's torch::optim::AdamW against FusedAdamW's one-pass loop and its
// multi-tensor path, on the parameter shapes of the small preset (6 layers of d 384, a 4144 x
// 384 table; 7.2M parameters). A program that prints figures, not a test:
//   ./build/release/tests/core/fused_adamw_bench [threads]   (default 1, as training runs ATen)
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <vector>

#include <torch/torch.h>

#include "core/train/fused_adamw.h"

namespace {

std::vector<torch::Tensor> small_preset_parameters() {
  torch::manual_seed(0);
  std::vector<torch::Tensor> params;
  for (int layer = 0; layer < 6; ++layer)
    for (const auto& shape : std::vector<std::vector<int64_t>>{{384, 1024}, {1024, 384}, {384, 384}, {384}})
      params.push_back(torch::randn(shape).requires_grad_(true));
  params.push_back(torch::randn({4144, 384}).requires_grad_(true));
  for (auto& p : params) p.mutable_grad() = torch::randn_like(p);
  return params;
}

double milliseconds_per_step(torch::optim::Optimizer& optimizer) {
  constexpr int kWarmup = 3, kSteps = 30;
  for (int i = 0; i < kWarmup; ++i) optimizer.step();
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < kSteps; ++i) optimizer.step();
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() / kSteps;
}

}  // namespace

int main(int argc, char** argv) {
  const int threads = argc > 1 ? std::atoi(argv[1]) : 1;
  torch::set_num_threads(threads);
  const auto options = torch::optim::AdamWOptions(1e-3).weight_decay(0.01);
  int64_t count = 0;
  for (const auto& p : small_preset_parameters()) count += p.numel();
  std::printf("AdamW step, %lld parameters in %zu tensors, %d thread(s):\n", static_cast<long long>(count),
              small_preset_parameters().size(), threads);
  {
    auto params = small_preset_parameters();
    torch::optim::AdamW optimizer(params, options);
    std::printf("  torch::optim::AdamW      %7.2f ms\n", milliseconds_per_step(optimizer));
  }
  for (const auto kernel : {ganpo::FusedAdamW::Kernel::automatic, ganpo::FusedAdamW::Kernel::foreach}) {
    auto params = small_preset_parameters();
    ganpo::FusedAdamW optimizer(params, options, kernel);
    std::printf("  FusedAdamW %-13s %7.2f ms\n", kernel == ganpo::FusedAdamW::Kernel::automatic ? "one pass" : "foreach",
                milliseconds_per_step(optimizer));
  }
  return 0;
}
