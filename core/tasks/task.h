// Tasks: what a run trains on and how its outputs are judged, behind one interface.
//
// A task generates (from a seed) an SFT corpus, preference pairs with optional label noise, and
// fixed evaluation prompts, each tagged with an answer-length bucket; its judge scores a
// response to one of its own prompts in [0, 1]. The built-in tasks are registered here by name
// (`data.builtin`): "lists" (constrained lists, core/tasks/lists_task.h), "arithmetic" (exact
// sums, differences and products, core/tasks/arithmetic_task.h) and "mixed" (half of each).
// Data files are the other source of a run's data; their judge, when they have one, is an
// external command (core/eval/external_judge.h, `eval.judge_command`). Front ends list tasks
// from builtin_tasks() and never name one. No torch here.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/text_examples.h"

namespace ganpo {

// One evaluation prompt: what the model is given, what a judge is given (empty = the same), and
// the expected answer's length bucket ("short" | "medium" | "long").
struct EvalPrompt {
  std::string prompt;
  std::string judge_prompt;
  std::string bucket;
  const std::string& for_judge() const { return judge_prompt.empty() ? prompt : judge_prompt; }
};

class Task {
public:
  virtual ~Task() = default;
  virtual std::string name() const = 0;
  virtual std::string description() const = 0;  // one line, for the New Run dialog and logs
  // `perfect_fraction` of the completions perfect, the rest with a few faults.
  virtual std::vector<SftExample> sft_corpus(int64_t n, double perfect_fraction, uint64_t seed) const = 0;
  // chosen = the higher-scoring answer, swapped with probability `label_noise`.
  virtual std::vector<PreferenceExample> preference_pairs(int64_t n, double label_noise, uint64_t seed) const = 0;
  // Balanced across the three length buckets; distinct while the task has enough prompts.
  virtual std::vector<EvalPrompt> eval_prompts(int64_t n, uint64_t seed) const = 0;
  // The response's score in [0, 1] (1 = every constraint met); nullopt for a prompt this task did
  // not generate.
  virtual std::optional<double> judge(const std::string& prompt, const std::string& response) const = 0;
};

// Every built-in task, in the order the New Run dialog lists them.
const std::vector<const Task*>& builtin_tasks();
// nullptr when no built-in task has this name.
const Task* find_builtin_task(const std::string& name);
// Throws ConfigError naming the known tasks.
const Task& builtin_task(const std::string& name);
// The score of the first built-in task that recognises the prompt; nullopt when none does (the
// playground judges whatever prompt a person types this way).
std::optional<double> judge_builtin_prompt(const std::string& prompt, const std::string& response);

// Length buckets by the number of answer units (list items, answer digits).
const char* length_bucket_name(int index);  // 0 "short", 1 "medium", 2 "long"

// Evaluation prompts as JSON Lines, {"prompt", "judge_prompt", "bucket"} per line. A run on a
// data file writes the held-out prompts its final judge evaluation uses (kJudgePromptsFile in its
// output folder), so its checkpoints are judged on the same prompts later (`ganpo eval --prompts`).
inline constexpr const char* kJudgePromptsFile = "judge_prompts.jsonl";
void write_eval_prompts(const std::string& path, const std::vector<EvalPrompt>& prompts);
// Throws DataError naming the file and line of anything that is not such a row.
std::vector<EvalPrompt> read_eval_prompts(const std::string& path);
// The same from the file's text; `path` names it in messages.
std::vector<EvalPrompt> parse_eval_prompts(const std::string& text, const std::string& path);

}  // namespace ganpo
