// The evaluation report: one typed value for every evaluation a run stores, parsed in one place.
//
// An evaluation has held-out preference numbers (TRL's eval_* keys) and, when the run's task has
// a judge, a judge evaluation: the policy and the reference sampled on fixed prompts at several
// temperatures, each completion judged. The judge part keeps every prompt's scores and
// completion lengths (tokens), so two runs evaluated on the same prompts (equal digest) compare
// prompt by prompt, e.g. GANPO on against GANPO off, without sampling again; its summary rows
// (mean scores, win rate against the reference, mean lengths, per length bucket) are derived
// from them. to_json writes the run store's evals rows; eval_report_from_json is the one reader,
// and also reads older rows (flat {"eval_loss": ..} objects, {"preference", "judge": [rows]}
// reports of `ganpo eval`, bare judge arrays). No torch here.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace ganpo {

struct JudgeSummaryRow {
  double temperature = 0.0;
  std::string bucket;             // "all" | "short" | "medium" | "long"
  int64_t prompts = 0;
  double policy_score = 0.0;      // mean judge score
  double reference_score = 0.0;
  double win_rate = 0.0;          // policy beats reference: 1, tie: 0.5
  double policy_length = -1.0;    // mean completion tokens; -1 when not recorded
  double reference_length = -1.0;
};

// One temperature's per-prompt results, in prompt order.
struct JudgeSamples {
  double temperature = 0.0;
  std::vector<double> policy_score, reference_score;
  std::vector<int64_t> policy_length, reference_length;
};

struct JudgeEvaluation {
  std::string task;            // "lists", "arithmetic", or the data file the prompts came from
  std::string judge;           // "built-in" or the judge command
  std::string prompts_digest;  // of the prompts in order; per-prompt results compare only when equal
  std::vector<std::string> buckets;  // per prompt
  int64_t max_new_tokens = 0;
  uint64_t seed = 0;
  // The nucleus and top-k filters the completions were drawn with (1.0 and 0: off); unknown in
  // reports written before they were recorded.
  std::optional<double> top_p;
  std::optional<int64_t> top_k;
  std::vector<JudgeSamples> samples;  // per temperature; empty in older reports
  std::vector<JudgeSummaryRow> rows;  // derived from samples (or as stored by older reports)

  // Fills `rows` from `samples` and `buckets`.
  void summarize();
  const JudgeSamples* at(double temperature) const;
};

struct EvalReport {
  std::map<std::string, double> preference;  // eval_loss, eval_rewards/accuracies, ...
  int64_t skipped_lines = 0;                  // unreadable held-out lines skipped
  std::optional<JudgeEvaluation> judge;
  std::string judge_error;                    // why the judge evaluation failed, if it did
  bool empty() const { return preference.empty() && !judge && judge_error.empty(); }
  // A report of held-out numbers only (the trainer's periodic evaluations).
  static EvalReport of(std::map<std::string, double> held_out) {
    EvalReport r;
    r.preference = std::move(held_out);
    return r;
  }
};

nlohmann::json to_json(const EvalReport& report);
// to_json as text; bytes that are not UTF-8 (a judge's message cut mid-character) become U+FFFD
// rather than an exception.
std::string to_json_text(const EvalReport& report, int indent = -1);
// Never throws: whatever cannot be read is left out (an empty report for garbage).
EvalReport eval_report_from_json(const nlohmann::json& j);
EvalReport eval_report_from_text(const std::string& json_text);

// Every number of a report under one flat name, for tables and the study report:
// the preference keys as they are, and per temperature T (as "%g") and bucket B
//   judge/policy_score@T, judge/reference_score@T, judge/win_rate@T, judge/policy_length@T,
//   judge/reference_length@T, and judge/win_rate@T/B, judge/policy_score@T/B for the buckets.
std::map<std::string, double> flatten(const EvalReport& report);
std::string temperature_label(double temperature);  // 0.5 -> "0.5", 1 -> "1.0"

// The fraction of prompts on which a's policy scores above b's (ties count one half), at one
// temperature; nullopt unless both hold per-prompt scores for it on the same prompts, judged by
// the same judge with the same token budget and sampling seed.
std::optional<double> policy_win_rate(const JudgeEvaluation& a, const JudgeEvaluation& b, double temperature);

// A number written locale-free ("0.25", "-3", "1e-3"); nullopt for anything else, never throws.
std::optional<double> read_number(const std::string& text);

// FNV-1a over the prompts (each followed by a NUL), as hex.
std::string digest_of_prompts(const std::vector<std::string>& prompts);

}  // namespace ganpo
