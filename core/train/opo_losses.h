// The base offline preference-optimization losses (L_OPO) and response log-probabilities.
//
// DPO ("sigmoid"), SimPO, IPO and hinge exactly as ../shared/GANPO.md section 1 writes them,
// each averaged over the batch. Rewards are beta x (log pi_theta - log pi_ref) of the whole
// response, as TRL logs them, whatever the loss.
#pragma once

#include <torch/torch.h>

#include <string>

namespace ganpo {

struct ResponseLogps {
  torch::Tensor sum;    // [N] sum of log pi(y_t | x, y_<t) over response tokens
  torch::Tensor count;  // [N] number of response tokens (float)
};

// logits [N, T - logits_from, V]: logits[:, i] predicts input_ids[:, logits_from + i + 1];
// response_mask [N, T] marks the response tokens at their own positions (none before
// logits_from + 1).
ResponseLogps response_logps(const torch::Tensor& logits, const torch::Tensor& input_ids,
                             const torch::Tensor& response_mask, int64_t logits_from = 0);

struct OpoInputs {
  torch::Tensor policy_chosen, policy_rejected;        // [B] summed log-probs
  torch::Tensor reference_chosen, reference_rejected;  // [B] summed log-probs
  torch::Tensor chosen_length, rejected_length;        // [B] response token counts
};

struct OpoTerms {
  torch::Tensor loss;              // [] batch mean
  torch::Tensor chosen_rewards;    // [B] beta x log-ratio, detached
  torch::Tensor rejected_rewards;  // [B]
};

// loss_type: "sigmoid" | "simpo" | "ipo" | "hinge"; gamma is SimPO's margin.
OpoTerms opo_loss(const std::string& loss_type, double beta, double gamma, const OpoInputs& in);

}  // namespace ganpo
