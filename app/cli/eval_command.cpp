#include <algorithm>
#include <cstdio>

#include <nlohmann/json.hpp>

#include "app/cli/commands.h"
#include "core/batching.h"
#include "core/cpu_job.h"
#include "core/checkpoint.h"
#include "core/dataset_files.h"
#include "core/evaluation.h"
#include "core/lists_task.h"
#include "core/text/chat_template.h"
#include "core/trainer.h"

namespace ganpo::cli {

int eval_command(const EvalArgs& args) {
  if (args.pairs.empty() && args.builtin.empty()) {
    std::fprintf(stderr, "ganpo eval: give --pairs FILE and/or --builtin lists\n");
    return 2;
  }
  if (!args.builtin.empty() && args.builtin != "lists") {
    std::fprintf(stderr, "ganpo eval: --builtin must be \"lists\", got \"%s\"\n", args.builtin.c_str());
    return 2;
  }
  const torch::Device device(resolve_device(args.device));
  std::unique_ptr<CpuJob> cpu;  // threads and lanes on the CPU, as a training run gets them
  if (device.is_cpu()) cpu = std::make_unique<CpuJob>();
  ParallelLanes* lanes = cpu ? cpu->lanes() : nullptr;
  auto policy = load_model_folder(args.checkpoint, device);
  auto reference = load_model_folder(args.reference, device);
  nlohmann::json report;
  if (!args.pairs.empty()) {
    auto loaded = load_preference_file(args.pairs, "skip");
    // Conversational rows in the policy's chat template, as training renders them.
    const bool conversational = std::any_of(loaded.rows.begin(), loaded.rows.end(),
                                            [](const PreferenceExample& ex) { return ex.conversational(); });
    if (conversational && policy.tokenizer->uses_chat_template())
      apply_chat_template(loaded.rows, ChatTemplate::from_model_folder(args.checkpoint, args.chat_template), args.pairs);
    std::vector<TokenizedPair> pairs;
    for (const auto& ex : loaded.rows)
      pairs.push_back(tokenize_pair(*policy.tokenizer, ex, args.max_length, args.max_prompt_length));
    ObjectiveConfig objective;
    objective.loss_type = args.loss_type;
    objective.beta = args.beta;
    objective.simpo_gamma = args.simpo_gamma;
    auto metrics = preference_eval(policy.model, reference.model, pairs, objective, policy.tokenizer->pad_id(), 32, lanes);
    report["preference"] = metrics;
    report["skipped_lines"] = loaded.bad_lines.size();
    if (!args.json) {
      std::printf("preference evaluation on %zu pairs (%zu bad lines skipped)\n", pairs.size(), loaded.bad_lines.size());
      for (const auto& [k, v] : metrics) std::printf("  %-26s %.4f\n", k.c_str(), v);
    }
  }
  if (!args.builtin.empty()) {
    JudgeEvalOptions options;
    options.temperatures = args.temperatures;
    options.max_new_tokens = args.max_new_tokens;
    options.seed = args.seed;
    auto prompts = lists::make_eval_prompts(args.num_prompts, args.seed);
    auto rows = judge_eval(policy.model, reference.model, *policy.tokenizer, prompts, options, lanes);
    report["judge"] = win_rates_to_json(rows);
    if (!args.json) std::printf("judge evaluation, %zu prompts per temperature\n%s", prompts.size(),
                                format_win_rate_table(rows).c_str());
  }
  if (args.json) std::printf("%s\n", report.dump(2).c_str());
  return 0;
}

}  // namespace ganpo::cli
