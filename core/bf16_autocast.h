// Bf16Autocast: train.precision = "bf16" on CUDA. While one lives, forward passes on this thread
// autocast to bf16 while weights, optimiser states, losses and EMA means stay float32
// (softmax / log-softmax autocast to float32). Also what a checkpointed block's recomputation
// re-enters in the backward pass (which runs on another thread), so it computes as the forward
// did. Header-only: LibTorch's autocast API differs before and after 2.4.
// Without autocast's cast cache: that cache (one map per thread in LibTorch 1.13, one for the
// whole process from 2.0 on, emptied by any thread's outermost region ending), keyed by weight,
// keeps the first bf16 copy made in a region. A copy made under no_grad (a checkpointed block's
// forward, the critics' spectral-norm power iteration) has no autograd history (before 2.10), so
// a later use with gradients on (the block's recomputation on the backward thread, the norm's
// sigma) would take it and the weight would get no gradient through it (PyTorch issues 65766,
// 112583). A cast per use costs one pass over the weights, small beside the products.
// Decoding is the exception (cache_casts): without gradients, each weight used once per token,
// a trainable float32 weight's bf16 copy is made once per generate call instead of once per
// token (autocast caches only leaves that require gradients). The copies are what a training
// step's forward keeps until its backward pass (one per product; core/generate.h says when a
// run turns it off); only an outermost region without gradients takes the cache, emptied at its
// start and its end, so no copy made elsewhere is used in it and none of its own outlives it.
// Testing aid (Bf16OnCpuForTests): the CPU's bf16 autocast beside CUDA's, so that a bf16 run on a
// machine without a GPU computes its products in bf16 too.
#pragma once

#include <atomic>

#include <ATen/autocast_mode.h>
#include <ATen/core/Tensor.h>
#include <c10/core/GradMode.h>
#include <torch/version.h>

namespace ganpo {

namespace autocast_detail {
inline std::atomic<bool>& cpu_too() {
  static std::atomic<bool> on{false};
  return on;
}
}  // namespace autocast_detail

// Testing aid: while one lives (process-wide), every Bf16Autocast also turns on the CPU's
// autocast to bf16. A run on the CPU with train.precision = "bf16" (TrainerOptions::
// bf16_storage_on_cpu) then computes its products in bf16 as a CUDA run does, and the bf16
// path's dtypes meet as they will on a GPU: a product of a bf16 activation with a float32 tensor
// outside autocast's lists, or a bf16 result written into a float32 buffer, fails here too.
// The CPU's lists are not CUDA's: LibTorch 1.13 runs softmax, log-softmax, logsumexp, norms and
// sums of a bf16 input in bf16 on the CPU, where CUDA's autocast computes them in float32, so a
// CPU bf16 run's numbers are only near a CUDA run's (tests compare them with a tolerance).
class Bf16OnCpuForTests {
public:
  Bf16OnCpuForTests() : before_(autocast_detail::cpu_too().exchange(true)) {}
  ~Bf16OnCpuForTests() { autocast_detail::cpu_too() = before_; }
  Bf16OnCpuForTests(const Bf16OnCpuForTests&) = delete;
  Bf16OnCpuForTests& operator=(const Bf16OnCpuForTests&) = delete;
  static bool active() { return autocast_detail::cpu_too().load(); }

private:
  bool before_;
};

class Bf16Autocast {
public:
  explicit Bf16Autocast(bool on, bool cache_casts = false) : on_(on), cpu_(on && Bf16OnCpuForTests::active()) {
    if (!on_) return;
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
    was_enabled_ = at::autocast::is_autocast_enabled(at::kCUDA);
    dtype_before_ = at::autocast::get_autocast_dtype(at::kCUDA);
    at::autocast::set_autocast_enabled(at::kCUDA, true);
    at::autocast::set_autocast_dtype(at::kCUDA, at::kBFloat16);
    if (cpu_) {
      cpu_was_enabled_ = at::autocast::is_autocast_enabled(at::kCPU);
      cpu_dtype_before_ = at::autocast::get_autocast_dtype(at::kCPU);
      at::autocast::set_autocast_enabled(at::kCPU, true);
      at::autocast::set_autocast_dtype(at::kCPU, at::kBFloat16);
    }
#else
    was_enabled_ = at::autocast::is_enabled();
    dtype_before_ = at::autocast::get_autocast_gpu_dtype();
    at::autocast::set_enabled(true);
    at::autocast::set_autocast_gpu_dtype(at::kBFloat16);
    if (cpu_) {
      cpu_was_enabled_ = at::autocast::is_cpu_enabled();
      cpu_dtype_before_ = at::autocast::get_autocast_cpu_dtype();
      at::autocast::set_cpu_enabled(true);
      at::autocast::set_autocast_cpu_dtype(at::kBFloat16);
    }
#endif
    cache_before_ = at::autocast::is_autocast_cache_enabled();  // per thread
    const bool outermost = at::autocast::increment_nesting() == 1;
    const bool caching = cache_casts && outermost && !c10::GradMode::is_enabled();
    if (caching) at::autocast::clear_cache();
    at::autocast::set_autocast_cache_enabled(caching);
  }
  ~Bf16Autocast() {
    if (!on_) return;
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    at::autocast::set_autocast_cache_enabled(cache_before_);
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
    at::autocast::set_autocast_dtype(at::kCUDA, dtype_before_);
    at::autocast::set_autocast_enabled(at::kCUDA, was_enabled_);
    if (cpu_) {
      at::autocast::set_autocast_dtype(at::kCPU, cpu_dtype_before_);
      at::autocast::set_autocast_enabled(at::kCPU, cpu_was_enabled_);
    }
#else
    at::autocast::set_autocast_gpu_dtype(dtype_before_);
    at::autocast::set_enabled(was_enabled_);
    if (cpu_) {
      at::autocast::set_autocast_cpu_dtype(cpu_dtype_before_);
      at::autocast::set_cpu_enabled(cpu_was_enabled_);
    }
#endif
  }
  Bf16Autocast(const Bf16Autocast&) = delete;
  Bf16Autocast& operator=(const Bf16Autocast&) = delete;

private:
  bool on_, cpu_;
  bool was_enabled_ = false, cpu_was_enabled_ = false, cache_before_ = true;
  at::ScalarType dtype_before_ = at::kBFloat16, cpu_dtype_before_ = at::kBFloat16;
};

// Whether CUDA autocast is on for this thread (as Bf16Autocast turns it on).
inline bool cuda_autocast_enabled() {
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
  return at::autocast::is_autocast_enabled(at::kCUDA);
#else
  return at::autocast::is_enabled();
#endif
}

// Whether the CPU's autocast to bf16 is on for this thread (Bf16OnCpuForTests).
inline bool cpu_bf16_autocast_enabled() {
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
  return at::autocast::is_autocast_enabled(at::kCPU) && at::autocast::get_autocast_dtype(at::kCPU) == at::kBFloat16;
#else
  return at::autocast::is_cpu_enabled() && at::autocast::get_autocast_cpu_dtype() == at::kBFloat16;
#endif
}

// Whether this thread's products on x's device autocast to bf16: CUDA's under Bf16Autocast, the
// CPU's under the testing aid too.
inline bool bf16_autocast_for(const at::Tensor& x) {
  return x.is_cuda() ? cuda_autocast_enabled() : x.is_cpu() && cpu_bf16_autocast_enabled();
}

}  // namespace ganpo
