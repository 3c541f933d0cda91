#include "core/train/fused_adamw.h"

#include <ATen/Parallel.h>

#include <cmath>
#include <map>
#include <sstream>
#include <string>
#include <type_traits>

namespace ganpo {
namespace {

using torch::optim::AdamWOptions;
using torch::optim::AdamWParamState;

// What the update of one tensor at its step count needs, in float32 as the elements are.
struct Coefficients {
  float decay;          // 1 - lr wd
  float b1, one_minus_b1;
  float b2, one_minus_b2;
  float step_size;      // lr / (1 - b1^t)
  float inv_sqrt_bc2;   // 1 / sqrt(1 - b2^t)
  float eps;
};

Coefficients coefficients(const AdamWOptions& o, int64_t step) {
  const double b1 = std::get<0>(o.betas()), b2 = std::get<1>(o.betas());
  const double bc1 = 1 - std::pow(b1, static_cast<double>(step));
  const double bc2 = 1 - std::pow(b2, static_cast<double>(step));
  return {static_cast<float>(1 - o.lr() * o.weight_decay()),
          static_cast<float>(b1), static_cast<float>(1 - b1),
          static_cast<float>(b2), static_cast<float>(1 - b2),
          static_cast<float>(o.lr() / bc1),
          static_cast<float>(1 / std::sqrt(bc2)),
          static_cast<float>(o.eps())};
}

// Vectorised because this file is compiled with -fno-math-errno (v is never negative, so the
// square root never sets errno); see core/CMakeLists.txt.
void update_range(float* __restrict p, const float* __restrict g, float* __restrict m, float* __restrict v,
                  int64_t begin, int64_t end, const Coefficients c) {
  for (int64_t i = begin; i < end; ++i) {
    const float gi = g[i];
    const float mi = c.b1 * m[i] + c.one_minus_b1 * gi;
    const float vi = c.b2 * v[i] + c.one_minus_b2 * gi * gi;
    m[i] = mi;
    v[i] = vi;
    p[i] = p[i] * c.decay - c.step_size * mi / (std::sqrt(vi) * c.inv_sqrt_bc2 + c.eps);
  }
}

bool one_pass_applies(const torch::Tensor& p, const torch::Tensor& g, const AdamWParamState& s) {
  auto plain = [](const torch::Tensor& t) {
    return t.device().is_cpu() && t.scalar_type() == torch::kFloat32 && t.is_contiguous();
  };
  return plain(p) && plain(g) && plain(s.exp_avg()) && plain(s.exp_avg_sq());
}

void update_one_pass(torch::Tensor& p, const torch::Tensor& g, AdamWParamState& s, const Coefficients& c) {
  float* pp = p.data_ptr<float>();
  const float* gp = g.data_ptr<float>();
  float* mp = s.exp_avg().data_ptr<float>();
  float* vp = s.exp_avg_sq().data_ptr<float>();
  // 32k elements per task: below that, handing work to threads costs more than it saves. (ATen's
  // parallel_for is OpenMP in its header: this file is compiled with -fopenmp, or it runs serially.)
  at::parallel_for(0, p.numel(), 32768, [&](int64_t begin, int64_t end) { update_range(pp, gp, mp, vp, begin, end, c); });
  // Written through raw pointers: the version counters move as an in-place operation's would, so
  // whatever is keyed on them sees the change (autograd's checks, DoRA's kept factor).
  for (const torch::Tensor* t : {&p, &s.exp_avg(), &s.exp_avg_sq()}) t->unsafeGetTensorImpl()->bump_version();
}

// Tensors that share a step count (all of them, unless some had no gradient on some step).
struct ForeachGroup {
  std::vector<torch::Tensor> params, grads, exp_avgs, exp_avg_sqs;
};

void update_foreach(ForeachGroup& t, const Coefficients& c) {
  at::_foreach_mul_(t.params, c.decay);
  at::_foreach_mul_(t.exp_avgs, c.b1);
  at::_foreach_add_(t.exp_avgs, t.grads, c.one_minus_b1);
  at::_foreach_mul_(t.exp_avg_sqs, c.b2);
  at::_foreach_addcmul_(t.exp_avg_sqs, t.grads, t.grads, c.one_minus_b2);
  auto denom = at::_foreach_sqrt(t.exp_avg_sqs);
  at::_foreach_mul_(denom, c.inv_sqrt_bc2);
  at::_foreach_add_(denom, c.eps);
  at::_foreach_addcdiv_(t.params, t.exp_avgs, denom, -c.step_size);
}

// The key torch::optim keeps a parameter's state under: its TensorImpl's address, as a string up
// to LibTorch 2.0 (what c10::guts::to_string gave) and as the pointer itself later.
template <typename Key>
Key param_state_key(const torch::Tensor& p) {
  if constexpr (std::is_same_v<Key, std::string>) {
    std::ostringstream key;
    key << p.unsafeGetTensorImpl();
    return key.str();
  } else {
    return p.unsafeGetTensorImpl();
  }
}

}  // namespace

FusedAdamW::FusedAdamW(std::vector<torch::Tensor> params, AdamWOptions options, Kernel kernel)
    : torch::optim::AdamW(std::move(params), options), kernel_(kernel) {
  TORCH_CHECK(!options.amsgrad(), "FusedAdamW does not implement amsgrad");
}

FusedAdamW::FusedAdamW(std::vector<torch::optim::OptimizerParamGroup> groups, AdamWOptions options, Kernel kernel)
    : torch::optim::AdamW(std::move(groups), options), kernel_(kernel) {
  for (const auto& group : param_groups_)
    TORCH_CHECK(!static_cast<const AdamWOptions&>(group.options()).amsgrad(), "FusedAdamW does not implement amsgrad");
}

torch::Tensor FusedAdamW::step(LossClosure closure) {
  torch::NoGradGuard no_grad;
  torch::Tensor loss;
  if (closure) {
    at::AutoGradMode enable_grad(true);
    loss = closure();
  }
  for (auto& group : param_groups_) {
    const auto& options = static_cast<const AdamWOptions&>(group.options());
    std::map<int64_t, ForeachGroup> foreach_groups;  // by step count
    for (auto& p : group.params()) {
      if (!p.grad().defined()) continue;
      const torch::Tensor& grad = p.grad();
      TORCH_CHECK(!grad.is_sparse(), "FusedAdamW does not support sparse gradients");
      // The same state, under the same key, as torch::optim::AdamW keeps: checkpoints interchange.
      auto& slot = state_[param_state_key<decltype(state_)::key_type>(p)];
      if (!slot) {
        auto fresh = std::make_unique<AdamWParamState>();
        fresh->step(0);
        fresh->exp_avg(torch::zeros_like(p, torch::MemoryFormat::Preserve));
        fresh->exp_avg_sq(torch::zeros_like(p, torch::MemoryFormat::Preserve));
        slot = std::move(fresh);
      }
      auto& state = static_cast<AdamWParamState&>(*slot);
      state.step(state.step() + 1);
      if (kernel_ == Kernel::automatic && one_pass_applies(p, grad, state)) {
        update_one_pass(p, grad, state, coefficients(options, state.step()));
      } else {
        auto& t = foreach_groups[state.step()];
        t.params.push_back(p);
        t.grads.push_back(grad);
        t.exp_avgs.push_back(state.exp_avg());
        t.exp_avg_sqs.push_back(state.exp_avg_sq());
      }
    }
    for (auto& [step, tensors] : foreach_groups) update_foreach(tensors, coefficients(options, step));
  }
  return loss;
}

}  // namespace ganpo
