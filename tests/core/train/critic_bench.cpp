// Time of GANPO's critic work per micro-batch, and of the dropout it draws, on the shapes of
// packaging/bench-vs-eager.sh's default (8 pairs of 256 tokens, hidden states of 384, critics 128
// wide, 2 layers, 4 heads, dropout 0.1). The fastest of many repetitions is printed beside the
// median: on a shared machine the minimum is the figure that repeats. A program, not a test:
//   ./build/release/tests/core/critic_bench [threads] [pairs] [tokens]   (default 1 8 256)
// The threads as a CPU run plans them (core/cpu_runtime.h): BLAS gets them, ATen's pool one.
#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <vector>

#include <torch/torch.h>

#include "core/counter_dropout.h"
#include "core/cpu_runtime.h"
#include "core/train/critic.h"

namespace {

struct Timing {
  double min_ms, median_ms;
};

Timing time_it(const std::function<void()>& work, int reps) {
  for (int i = 0; i < 2; ++i) work();
  std::vector<double> ms;
  for (int i = 0; i < reps; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    work();
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(ms.begin(), ms.end());
  return {ms.front(), ms[ms.size() / 2]};
}

void print(const char* what, const Timing& t) { std::printf("  %-52s %9.2f ms  (median %.2f)\n", what, t.min_ms, t.median_ms); }

}  // namespace

int main(int argc, char** argv) {
  const int threads = argc > 1 ? std::atoi(argv[1]) : 1;
  const int64_t B = argc > 2 ? std::atoll(argv[2]) : 8, T = argc > 3 ? std::atoll(argv[3]) : 256, d = 384;
  // As a CPU run sets its process up: the allocator, and the cores to BLAS (ATen's intra-op pool
  // at one thread; the two critics run one after the other here, no lanes).
  ganpo::tune_allocator_for_tensors();
  ganpo::apply_cpu_threads(ganpo::plan_cpu_threads(threads, ganpo::available_cpu_cores(), 1));
  torch::manual_seed(0);
  ganpo::GanpoConfig config;
  config.critic_hidden = 128;
  config.critic_layers = 2;
  config.critic_heads = 4;
  config.critic_max_len = std::max<int64_t>(T, 256);
  config.critic_dropout = 0.1;
  const int64_t h = config.critic_hidden, heads = config.critic_heads, N = 3 * B;
  std::printf("critic work per micro-batch: %lld pairs x %lld tokens, d %lld, critics %lld x %lld (%lld heads), "
              "dropout %.1f, %d thread(s); fastest of the repetitions\n",
              static_cast<long long>(B), static_cast<long long>(T), static_cast<long long>(d), static_cast<long long>(h),
              static_cast<long long>(config.critic_layers), static_cast<long long>(heads), config.critic_dropout, threads);

  // Dropout on the largest tensor a critic layer draws for: attention probabilities [3B, heads, T, T].
  auto gen = at::make_generator<at::CPUGeneratorImpl>(1);
  auto probs = torch::rand({N, heads, T, T});
  std::printf("dropout of the attention probabilities [%lld, %lld, %lld, %lld]:\n", static_cast<long long>(N),
              static_cast<long long>(heads), static_cast<long long>(T), static_cast<long long>(T));
  print("Philox (ganpo::dropout)", time_it([&] { ganpo::dropout(probs, 0.1, true, gen); }, 20));
  print("Bernoulli mask from a generator, scaled, multiplied", time_it([&] {
          auto keep = at::empty_like(probs).bernoulli_(0.9, gen).div_(0.9);
          (void)(probs * keep);
        }, 20));
  print("torch::dropout", time_it([&] { torch::dropout(probs, 0.1, true); }, 20));

  ganpo::LatentSets sets;
  sets.ref_chosen = torch::randn({B, T, d});
  sets.ref_rejected = torch::randn({B, T, d});
  auto policy_chosen = torch::randn({B, T, d}).requires_grad_(true);
  auto policy_rejected = torch::randn({B, T, d}).requires_grad_(true);
  sets.policy_chosen = policy_chosen;
  sets.policy_rejected = policy_rejected;
  sets.chosen_mask = torch::ones({B, T});
  sets.rejected_mask = torch::ones({B, T});
  for (const double dropout : {config.critic_dropout, 0.0}) {
    auto shape = config;
    shape.critic_dropout = dropout;
    ganpo::GanpoRegularizer regularizer(shape, d, torch::kCPU);
    std::printf("GANPO's critic work (the trainer's calls), critic dropout %.1f:\n", dropout);
    print("critic phase: 2 x 3 critic passes on [B, T, d], backward", time_it([&] {
            regularizer.critic_phase_backward(sets, 1.0, nullptr);
            for (auto& p : regularizer.critic_parameters()) p.mutable_grad() = torch::Tensor();
          }, 10));
    print("policy phase: L_adv (2 frozen critic passes), backward", time_it([&] {
            regularizer.adversarial_term(sets).loss.backward();
            policy_chosen.mutable_grad() = torch::Tensor();
            policy_rejected.mutable_grad() = torch::Tensor();
          }, 10));
  }
  return 0;
}
