#include "core/chunked_logps.h"

#include <algorithm>

#include "core/bf16_autocast.h"
#include "core/config.h"
#include "core/error.h"

namespace ganpo {
namespace {

// One chunk's logits in float32, capped when the model caps them: z [c, V]; with a cap, also
// tanh(raw / cap) [c, V] for the backward pass (else undefined). With a low-rank part (down
// [c, r], up [V, r]; r = 0: none) the raw logits are h w^T + down up^T.
std::pair<torch::Tensor, torch::Tensor> chunk_logits(const torch::Tensor& h, const torch::Tensor& w, double cap,
                                                     const torch::Tensor& down, const torch::Tensor& up) {
  auto z = torch::mm(h, w.t());  // [c, V]
  if (down.size(1) > 0) z.addmm_(down, up.t());
  z = z.to(torch::kFloat32);
  if (cap <= 0) return {z, {}};
  auto t = torch::tanh(z.div_(cap));
  return {t * cap, t};
}

constexpr int64_t kWeightGradientGroup = 4;

struct ChunkedTokenLogps : torch::autograd::Function<ChunkedTokenLogps> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, torch::Tensor hidden, torch::Tensor weight,
                               torch::Tensor targets, double cap, int64_t chunk, torch::Tensor down, torch::Tensor up) {
    // The products' dtype: bf16 where the plain head would run under bf16 autocast.
    const auto compute = bf16_autocast_for(hidden) ? torch::kBFloat16 : hidden.scalar_type();
    const auto w = weight.to(compute);  // [V, d]
    const auto low_down = down.to(compute), low_up = up.to(compute);  // [M, r], [V, r] (r = 0: none)
    const int64_t M = hidden.size(0);
    auto out = torch::empty({M}, hidden.options().dtype(torch::kFloat32));  // [M]
    auto lse = torch::empty({M}, hidden.options().dtype(torch::kFloat32));  // [M]
    for (int64_t at = 0; at < M; at += chunk) {
      const int64_t c = std::min(chunk, M - at);
      auto [z, t] = chunk_logits(hidden.narrow(0, at, c).to(compute), w, cap,
                                 low_down.narrow(0, at, c), low_up);  // [c, V]
      auto l = torch::logsumexp(z, -1);                                          // [c]
      lse.narrow(0, at, c).copy_(l);
      out.narrow(0, at, c).copy_(z.gather(1, targets.narrow(0, at, c).unsqueeze(1)).squeeze(1) - l);
    }
    ctx->save_for_backward({hidden, weight, targets, lse, down, up});
    ctx->saved_data["cap"] = cap;
    ctx->saved_data["chunk"] = chunk;
    ctx->saved_data["compute"] = static_cast<int64_t>(compute);
    return out;
  }

  // d logp / d z = onehot(target) - softmax(z); through the cap, times 1 - tanh^2.
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_out) {
    const auto saved = ctx->get_saved_variables();
    const auto &hidden = saved[0], &weight = saved[1], &targets = saved[2], &lse = saved[3];
    const auto &down = saved[4], &up = saved[5];  // the low-rank part (r = 0: none)
    const double cap = ctx->saved_data["cap"].toDouble();
    const int64_t chunk = ctx->saved_data["chunk"].toInt();
    const auto compute = static_cast<torch::ScalarType>(ctx->saved_data["compute"].toInt());
    const auto g = grad_out[0].to(torch::kFloat32);  // [M]
    const bool want_h = ctx->needs_input_grad(0), want_w = ctx->needs_input_grad(1);
    const bool low = down.size(1) > 0, want_down = low && ctx->needs_input_grad(3), want_up = low && ctx->needs_input_grad(4);  // (tensor inputs only)
    const auto w = weight.to(compute);  // [V, d]
    const auto low_down = down.to(compute), low_up = up.to(compute);  // [M, r], [V, r]
    // The low-rank part's gradients: down's by rows as h's, up's [V, r] summed in float32.
    torch::Tensor grad_down = want_down ? torch::empty_like(down) : torch::Tensor();
    torch::Tensor grad_up = want_up ? torch::zeros(up.sizes(), up.options().dtype(torch::kFloat32)) : torch::Tensor();
    const int64_t M = hidden.size(0);
    torch::Tensor grad_h = want_h ? torch::empty_like(hidden) : torch::Tensor();
    torch::Tensor grad_w = want_w ? torch::zeros(weight.sizes(), weight.options().dtype(torch::kFloat32)) : torch::Tensor();
    // In a low precision (bf16) the weight's gradient cannot be summed in float32 inside the
    // product, and each product writes a [V, d] temporary: the chunks' gradients of the logits and
    // their hidden states gather in kWeightGradientGroup chunks' rows, one product per group.
    const bool grouped = want_w && compute != torch::kFloat32;
    const int64_t group_rows = grouped ? std::min(M, chunk * kWeightGradientGroup) : 0;
    torch::Tensor group_d, group_h;  // [group_rows, V], [group_rows, d], in the products' dtype
    if (grouped) {
      group_d = torch::empty({group_rows, weight.size(0)}, hidden.options().dtype(compute));
      group_h = torch::empty({group_rows, hidden.size(1)}, hidden.options().dtype(compute));
    }
    int64_t filled = 0;
    auto flush = [&] {
      if (filled > 0) grad_w.add_(torch::mm(group_d.narrow(0, 0, filled).t(), group_h.narrow(0, 0, filled)));
      filled = 0;
    };
    for (int64_t at = 0; at < M; at += chunk) {
      const int64_t c = std::min(chunk, M - at);
      const auto h = hidden.narrow(0, at, c).to(compute);  // [c, d]
      const auto gc = g.narrow(0, at, c).unsqueeze(1);    // [c, 1]
      const auto down_c = low_down.narrow(0, at, c);  // [c, r]
      auto [z, t] = chunk_logits(h, w, cap, down_c, low_up);  // [c, V]
      auto dz = z.sub_(lse.narrow(0, at, c).unsqueeze(1)).exp_().mul_(gc).neg_();  // -g softmax(z)
      dz.scatter_add_(1, targets.narrow(0, at, c).unsqueeze(1), gc);              // + g onehot
      if (t.defined()) dz.mul_(t.mul_(t).neg_().add_(1));  // 1 - tanh^2, in t's memory
      if (grouped && filled + c > group_rows) flush();
      const auto d = grouped ? group_d.narrow(0, filled, c).copy_(dz) : dz.to(compute);  // [c, V]
      if (want_h) {  // [c, d]
        auto rows = grad_h.narrow(0, at, c);
        if (rows.scalar_type() == compute) torch::mm_out(rows, d, w);
        else rows.copy_(torch::mm(d, w));
      }
      if (want_down) grad_down.narrow(0, at, c).copy_(torch::mm(d, low_up));  // [c, r]
      if (want_up) {  // [V, r]
        if (compute == torch::kFloat32) grad_up.addmm_(d.t(), down_c);
        else grad_up.add_(torch::mm(d.t(), down_c));
      }
      if (grouped) {
        group_h.narrow(0, filled, c).copy_(h);
        filled += c;
      } else if (want_w) {
        grad_w.addmm_(d.t(), h);  // [V, d], summed in float32 by the product itself
      }
    }
    if (grouped) flush();
    return {grad_h,
            want_w ? grad_w.to(weight.scalar_type()) : torch::Tensor(),
            torch::Tensor(),
            torch::Tensor(),
            torch::Tensor(),
            grad_down,
            want_up ? grad_up.to(up.scalar_type()) : torch::Tensor()};
  }
};

}  // namespace

torch::Tensor chunked_token_logps(const torch::Tensor& hidden, const torch::Tensor& weight, const torch::Tensor& targets,
                                  double final_softcap, int64_t chunk_rows, const HeadLowRank& low_rank) {
  GANPO_ASSERT(hidden.dim() == 2 && weight.dim() == 2 && hidden.size(1) == weight.size(1),
               "chunked_token_logps: hidden [M, d] and weight [V, d]");
  GANPO_ASSERT(low_rank.down.defined() == low_rank.up.defined() &&
                   (!low_rank.down.defined() || (low_rank.down.size(0) == hidden.size(0) && low_rank.up.size(0) == weight.size(0) &&
                                                 low_rank.down.size(1) == low_rank.up.size(1))),
               "chunked_token_logps: a low-rank part down [M, r] and up [V, r]");
  GANPO_ASSERT(targets.dim() == 1 && targets.size(0) == hidden.size(0), "chunked_token_logps: one target per row");
  const int64_t chunk = chunk_rows > 0 ? chunk_rows : chunked_logps_rows(weight.size(0), hidden.is_cuda());
  // (No low-rank part: width 0, which the products skip; an autograd input must be a defined tensor.)
  const bool low = low_rank.down.defined();
  return ChunkedTokenLogps::apply(hidden, weight, targets, final_softcap, chunk,
                                  low ? low_rank.down : torch::empty({hidden.size(0), 0}, hidden.options()),
                                  low ? low_rank.up : torch::empty({weight.size(0), 0}, weight.options()));
}

}  // namespace ganpo
