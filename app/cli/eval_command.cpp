#include <algorithm>
#include <cstdio>

#include <nlohmann/json.hpp>

#include "app/cli/commands.h"
#include "core/batching.h"
#include "core/bf16_autocast.h"
#include "core/cpu_job.h"
#include "core/checkpoint.h"
#include "core/dataset_files.h"
#include "core/error.h"
#include "core/eval/evaluation.h"
#include "core/eval/external_judge.h"
#include "core/out_of_memory.h"
#include "core/tasks/task.h"
#include "core/text/chat_template.h"
#include "core/train/trainer.h"

namespace ganpo::cli {

namespace {

// Both models on the device (then `loaded` is true), the preference evaluation of the pairs and the
// judge's evaluation.
int evaluate_models(const EvalArgs& args, const torch::Device& device, const std::vector<EvalPrompt>& file_prompts,
                    const Task* task, bool& loaded) {
  std::unique_ptr<CpuJob> cpu;  // threads and lanes on the CPU, as a training run gets them
  if (device.is_cpu()) cpu = std::make_unique<CpuJob>();
  ParallelLanes* lanes = cpu ? cpu->lanes() : nullptr;
  auto policy = load_model_for_inference(args.checkpoint, device, args.precision);
  auto reference = load_model_for_inference(args.reference, device, args.precision);
  loaded = true;
  // Both models' passes under bf16 autocast when either runs in bf16, as a bf16 run's evaluations;
  // the other's projections are then kept in bf16 too, which under autocast changes no number
  // (every product rounds its weight to bf16) and halves what decoding reads.
  const bool bf16 = policy.bf16_autocast || reference.bf16_autocast;
  for (LoadedModel* m : {&policy, &reference})
    if (bf16 && !m->bf16_autocast) {
      m->model->store_projections_in_bf16(/*exact_only=*/m->model->lora().r > 0);
      m->bf16_autocast = true;
    }
  // As a run scores (train.chunked_logps' default): the chunked head above 100k vocabulary entries.
  for (auto* m : {&policy.model, &reference.model})
    (*m)->set_chunked_logps(uses_chunked_logps(TrainConfig{}, (*m)->shape().vocab_size));
  EvalReport report;
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
    {
      const Bf16Autocast autocast(bf16);
      report.preference = preference_eval(policy.model, reference.model, pairs, objective, policy.tokenizer->pad_id(), args.batch_size,
                                          /*share_prompts=*/true, lanes);
    }
    report.skipped_lines = static_cast<int64_t>(loaded.bad_lines.size());
    if (!args.json) {
      std::printf("preference evaluation on %zu pairs (%zu bad lines skipped)\n", pairs.size(), loaded.bad_lines.size());
      for (const auto& [k, v] : report.preference) std::printf("  %-26s %.4f\n", k.c_str(), v);
    }
  }
  if (task || !file_prompts.empty()) {
    JudgeEvalOptions options;
    options.temperatures = args.temperatures;
    options.max_new_tokens = args.max_new_tokens;
    options.seed = args.seed;
    options.bf16_autocast = bf16;
    std::vector<EvalPrompt> prompts = file_prompts;
    if (task) prompts = task->eval_prompts(args.num_prompts, args.seed);
    else if (static_cast<int64_t>(prompts.size()) > args.num_prompts) prompts.resize(static_cast<size_t>(args.num_prompts));
    const std::string task_name = task ? task->name() : "data file";
    JudgeFunction judge = task ? task_judge(*task) : JudgeFunction{};
    std::string judge_name = "built-in";
    if (!args.judge_command.empty()) {
      judge = [&args](const std::vector<JudgeRow>& rows) { return run_judge_command(args.judge_command, rows, args.judge_timeout_s); };
      judge_name = args.judge_command;
    }
    try {
      report.judge = judge_eval(policy.model, reference.model, *policy.tokenizer, prompts, judge, options, task_name,
                                judge_name, lanes);
      if (!args.json)
        std::printf("judge evaluation on the %s task, %zu prompts per temperature\n%s", task_name.c_str(),
                    prompts.size(), format_judge_table(*report.judge).c_str());
    } catch (const JudgeError& e) {
      report.judge_error = e.what();
      std::fprintf(stderr, "ganpo eval: the judge failed: %s\n", e.what());
    }
  }
  if (args.json) std::printf("%s\n", to_json_text(report, 2).c_str());
  return report.judge_error.empty() ? 0 : 1;
}

}  // namespace

int eval_command(const EvalArgs& args) {
  if (args.pairs.empty() && args.builtin.empty() && args.prompts.empty()) {
    std::fprintf(stderr, "ganpo eval: give --pairs FILE and/or --builtin TASK (or --prompts FILE with --judge-command)\n");
    return 2;
  }
  if (!args.prompts.empty() && !args.builtin.empty()) {
    std::fprintf(stderr, "ganpo eval: --prompts and --builtin both name the judge's prompts; give one\n");
    return 2;
  }
  if (!args.prompts.empty() && args.judge_command.empty()) {
    std::fprintf(stderr, "ganpo eval: prompts from a file have no built-in judge; give --judge-command CMD to score them\n");
    return 2;
  }
  std::vector<EvalPrompt> file_prompts;
  if (!args.prompts.empty()) {
    try {
      file_prompts = read_eval_prompts(args.prompts);
    } catch (const Error& e) {
      std::fprintf(stderr, "ganpo eval: %s\n", e.what());
      return 2;
    }
  }
  const Task* task = args.builtin.empty() ? nullptr : find_builtin_task(args.builtin);
  if (!args.builtin.empty() && !task) {
    std::string known;
    for (const Task* t : builtin_tasks()) known += (known.empty() ? "" : ", ") + t->name();
    std::fprintf(stderr, "ganpo eval: --builtin must be a built-in task (%s), got \"%s\"\n", known.c_str(),
                 args.builtin.c_str());
    return 2;
  }
  const torch::Device device(resolve_device(args.device));
  bool loaded = false;
  std::string detail;  // what the allocator said, where memory ran out
  bool host = false;   // C++'s allocator refused (std::bad_alloc), not LibTorch's
  try {
    return evaluate_models(args, device, file_prompts, task, loaded);
  } catch (const c10::Error& e) {
    if (!is_out_of_memory(e)) throw;
    detail = e.what_without_backtrace();
  } catch (const std::bad_alloc& e) {
    detail = e.what(), host = true;
  }
  const std::string bf16 = device.is_cuda() && args.precision != "bf16" ? ", or --precision bf16" : "";
  const std::string message =
      loaded ? out_of_memory_message(device.str(), "evaluating",
                                     "lower --batch-size (now " + std::to_string(args.batch_size) +
                                         ") for the pairs, --num-prompts (now " + std::to_string(args.num_prompts) +
                                         ") or --max-new-tokens (now " + std::to_string(args.max_new_tokens) +
                                         ") for the judge's generations" + bf16,
                                     detail, host)
             : out_of_memory_message(device.str(), "loading " + args.checkpoint + " and " + args.reference,
                                     "use smaller models" + bf16, detail, host);
  std::fprintf(stderr, "ganpo eval: %s\n", message.c_str());
  return 1;
}

}  // namespace ganpo::cli
