// Evaluation of a policy against its reference.
//
// Preference evaluation scores held-out pairs as TRL's DPOTrainer does at eval time (the base
// loss, rewards, margins, accuracies, log-probs; no adversarial term). Judge evaluation samples
// policy and reference on prompts of the built-in task at several temperatures and reports
// mean judge scores and the policy's win rate (win 1, tie 0.5) overall and per length bucket.
#pragma once

#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <map>
#include <string>
#include <vector>

#include "core/batching.h"
#include "core/config.h"
#include "core/model/causal_lm.h"
#include "core/parallel_lanes.h"
#include "core/tokenizer.h"

namespace ganpo {

// `lanes` (optional) runs the policy's and the reference's passes side by side.
// Keys: eval_loss, eval_rewards/chosen, eval_rewards/rejected, eval_rewards/margins,
// eval_rewards/accuracies, eval_logps/chosen, eval_logps/rejected, eval_pairs.
std::map<std::string, double> preference_eval(CausalLM& policy, CausalLM& reference,
                                              const std::vector<TokenizedPair>& pairs,
                                              const ObjectiveConfig& objective, int64_t pad_id,
                                              int64_t batch_size, ParallelLanes* lanes = nullptr);

// SFT: eval_loss = mean negative log-likelihood per completion token.
std::map<std::string, double> sft_eval(CausalLM& model, const std::vector<TokenizedSft>& rows,
                                       int64_t pad_id, int64_t batch_size);

struct WinRateRow {
  double temperature = 0.0;
  std::string bucket;  // "all" | "short" | "medium" | "long"
  int64_t prompts = 0;
  double policy_score = 0.0;     // mean judge score
  double reference_score = 0.0;
  double win_rate = 0.0;         // policy beats reference: 1, tie: 0.5
};

struct JudgeEvalOptions {
  std::vector<double> temperatures{0.7, 1.0, 1.3};
  int64_t max_new_tokens = 96;
  double top_p = 1.0;
  uint64_t seed = 1234;
  int64_t batch_size = 64;
};

// prompts: built-in lists prompts (others are skipped).
std::vector<WinRateRow> judge_eval(CausalLM& policy, CausalLM& reference, const Tokenizer& tok,
                                   const std::vector<std::string>& prompts,
                                   const JudgeEvalOptions& options, ParallelLanes* lanes = nullptr);

std::string format_win_rate_table(const std::vector<WinRateRow>& rows);
nlohmann::json win_rates_to_json(const std::vector<WinRateRow>& rows);

}  // namespace ganpo
