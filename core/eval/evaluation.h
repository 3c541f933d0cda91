// Evaluation of a policy against its reference.
//
// Preference evaluation scores held-out pairs as TRL's DPOTrainer does at eval time (the base
// loss, rewards, margins, accuracies, log-probs; no adversarial term). Judge evaluation samples
// policy and reference on a task's evaluation prompts at several temperatures, has a judge score
// every completion, and returns the typed judge part of an EvalReport (core/eval/eval_report.h):
// per-prompt scores and lengths, mean scores and win rates overall and per length bucket.
#pragma once

#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "core/batching.h"
#include "core/config.h"
#include "core/eval/eval_report.h"
#include "core/eval/external_judge.h"
#include "core/model/causal_lm.h"
#include "core/parallel_lanes.h"
#include "core/train/reference_logps.h"
#include "core/tasks/task.h"
#include "core/tokenizer.h"

namespace ganpo {

// `share_prompts` (train.prefix_sharing) runs each prompt once for both responses where a batch
// allows it (sequence_scoring.h); `lanes` (optional) runs the policy's and the reference's
// passes side by side. With
// `reference_logps` (train.precompute_ref_log_probs: the reference's log-probs of pairs[i] at i)
// the reference does not run.
// Keys: eval_loss, eval_rewards/chosen, eval_rewards/rejected, eval_rewards/margins,
// eval_rewards/accuracies, eval_logps/chosen, eval_logps/rejected, eval_pairs.
std::map<std::string, double> preference_eval(CausalLM& policy, CausalLM& reference,
                                              const std::vector<TokenizedPair>& pairs,
                                              const ObjectiveConfig& objective, int64_t pad_id,
                                              int64_t batch_size, bool share_prompts,
                                              ParallelLanes* lanes = nullptr,
                                              const PairLogps* reference_logps = nullptr);

// SFT: eval_loss = mean negative log-likelihood per completion token, over eval_tokens tokens.
std::map<std::string, double> sft_eval(CausalLM& model, const std::vector<TokenizedSft>& rows,
                                       int64_t pad_id, int64_t batch_size);

struct JudgeEvalOptions {
  std::vector<double> temperatures{0.5, 0.7, 1.0, 1.3, 1.5};
  int64_t max_new_tokens = 96;
  double top_p = 1.0;
  int64_t top_k = 0;  // 0: off
  uint64_t seed = 1234;
  int64_t batch_size = 64;
  bool bf16_autocast = false;  // decode under CUDA's bf16 autocast (SamplingOptions::bf16_autocast)
  bool cache_casts = true;     // SamplingOptions::cache_casts
  // Asked before each temperature (data-parallel: before each round of jobs); true ends the
  // evaluation with an Error saying so.
  std::function<bool()> stop;
  // Data parallelism: the sampling jobs (one per temperature and model) are dealt out over
  // `world` processes, job i to rank i % world, in rounds of `world` jobs, and `gather_texts` (a
  // collective: every rank's strings, in rank order) brings every completion to every rank. A job
  // draws exactly what one process draws, so the report does not depend on the world size. Rank
  // 0 alone judges; the others return the evaluation without samples. `stop` is asked once per
  // round on every rank and must give every rank the same answer.
  int rank = 0, world = 1;
  std::function<std::vector<std::vector<std::string>>(const std::vector<std::string>&)> gather_texts;
};

// Scores completions of their prompts, in input order: a task's judge or an external command
// (core/eval/external_judge.h). Throws (e.g. JudgeError) when it cannot.
using JudgeFunction = std::function<std::vector<double>(const std::vector<JudgeRow>& rows)>;
// A built-in task's exact judge; a prompt the task did not make scores 0.
JudgeFunction task_judge(const Task& task);

// Samples the policy and the reference on every prompt at each temperature (the same seeds for
// every run, so runs compare prompt by prompt), judges every completion once, and returns the
// per-prompt scores and lengths with their summary rows. `task` and `judge_name` label the report.
JudgeEvaluation judge_eval(CausalLM& policy, CausalLM& reference, const Tokenizer& tok,
                           const std::vector<EvalPrompt>& prompts, const JudgeFunction& judge,
                           const JudgeEvalOptions& options, const std::string& task, const std::string& judge_name,
                           ParallelLanes* lanes = nullptr);

// The summary rows as a fixed-width table for a terminal.
std::string format_judge_table(const JudgeEvaluation& evaluation);

}  // namespace ganpo
