#include "core/model/rms_norm.h"

namespace ganpo {
namespace {

// The norm's factors in the written-out form's order, so the forward values are the same bits.
torch::ScalarType compute_type(const torch::Tensor& x) { return c10::promoteTypes(x.scalar_type(), torch::kFloat32); }

torch::Tensor row_scale(const torch::Tensor& x, double eps) {  // [..., 1], float32 or wider
  return torch::rsqrt(x.to(compute_type(x)).pow(2).mean(-1, true) + eps);
}

struct RmsNorm : torch::autograd::Function<RmsNorm> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, torch::Tensor x, torch::Tensor weight,
                               double eps, bool plus_one) {
    auto r = row_scale(x, eps);                                          // [..., 1]
    auto normed = x * r;                                                 // [..., d] float32
    auto y = plus_one ? normed * (1.0 + weight) : normed * weight;       // [..., d]
    ctx->save_for_backward({x, weight, r});
    ctx->saved_data["plus_one"] = plus_one;
    return y;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_out) {
    const auto saved = ctx->get_saved_variables();
    const auto &x = saved[0], &weight = saved[1], &r = saved[2];
    const bool plus_one = ctx->saved_data["plus_one"].toBool();
    const auto& dy = grad_out[0];                           // [..., d]
    const auto n = x.to(compute_type(x)) * r;               // [..., d], as in the forward pass
    torch::Tensor dx, dw;
    if (ctx->needs_input_grad(0)) {
      auto gn = dy * (plus_one ? 1.0 + weight : weight);    // [..., d]
      auto dot = (gn * n).mean(-1, true);                   // [..., 1]
      dx = gn.sub_(n * dot).mul_(r).to(x.scalar_type());    // [..., d]
    }
    if (ctx->needs_input_grad(1)) dw = (dy * n).reshape({-1, n.size(-1)}).sum(0).to(weight.scalar_type());  // [d]
    return {dx, dw, torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

torch::Tensor rms_norm(const torch::Tensor& x, const torch::Tensor& weight, double eps, bool plus_one) {
  return RmsNorm::apply(x, weight, eps, plus_one);
}

}  // namespace ganpo
