#include "core/train/opo_losses.h"

#include "core/error.h"

namespace ganpo {

ResponseLogps response_logps(const torch::Tensor& logits, const torch::Tensor& input_ids,
                             const torch::Tensor& response_mask, int64_t logits_from) {
  const auto T = input_ids.size(1);
  GANPO_ASSERT(logits.size(1) == T - logits_from, "logits do not cover positions logits_from..T-1");
  auto pred = logits.slice(1, 0, T - 1 - logits_from).to(torch::kFloat32);  // [N, T-1-from, V]
  auto targets = input_ids.slice(1, logits_from + 1, T);                     // [N, T-1-from]
  auto mask = response_mask.slice(1, logits_from + 1, T).to(torch::kFloat32);
  // gather - logsumexp avoids materialising a second [N, T, V] log-softmax tensor.
  auto token_logp = pred.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch::logsumexp(pred, -1);
  return {(token_logp * mask).sum(-1), mask.sum(-1)};
}

OpoTerms opo_loss(const std::string& loss_type, double beta, double gamma, const OpoInputs& in) {
  auto chosen_ratio = in.policy_chosen - in.reference_chosen;
  auto rejected_ratio = in.policy_rejected - in.reference_rejected;
  torch::Tensor losses;
  if (loss_type == "sigmoid") {
    losses = -torch::log_sigmoid(beta * (chosen_ratio - rejected_ratio));
  } else if (loss_type == "simpo") {
    auto w = in.policy_chosen / in.chosen_length.clamp_min(1.0);
    auto l = in.policy_rejected / in.rejected_length.clamp_min(1.0);
    losses = -torch::log_sigmoid(beta * w - beta * l - gamma);
  } else if (loss_type == "ipo") {
    auto hw = chosen_ratio / in.chosen_length.clamp_min(1.0);
    auto hl = rejected_ratio / in.rejected_length.clamp_min(1.0);
    losses = (hw - hl - 1.0 / (2.0 * beta)).pow(2);
  } else if (loss_type == "hinge") {
    losses = torch::relu(1.0 - beta * (chosen_ratio - rejected_ratio));
  } else {
    GANPO_ASSERT(false, "unknown loss_type " + loss_type);
  }
  return {losses.mean(), (beta * chosen_ratio).detach(), (beta * rejected_ratio).detach()};
}

}  // namespace ganpo
