// A study's answer from its stored runs: per arm (one grid point), the mean of every held-out
// number (the runs' typed evaluation reports, flattened: preference accuracy and margins, judge
// scores, win rates against the reference and response lengths per temperature and length
// bucket; and eval_* metrics) and of the step time and tokens/s (each run's median over its
// logging windows) over its completed seeds with a 95% t interval (core/study_stats.h; a share's
// cut to [0, 1], a difference of shares to [-1, 1]); and for every arm with GANPO on, against its matched arm with GANPO off
// (same other grid values, paired by seed): the paired difference of every number, called only
// when its interval excludes 0, and the head-to-head win rate of the two policies on the same
// judge prompts, called only when its interval excludes 0.5. Arms are read back from the runs'
// stored configs and the study's grid, so the report is what was stored, nothing recomputed.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/study_stats.h"
#include "db/run_store.h"

namespace ganpo {

struct ArmResult {
  std::string arm;                          // "objective.loss_type=simpo, ganpo.enabled=true"
  std::vector<std::pair<std::string, std::string>> values;  // grid key -> value, as the grid spells it
  std::vector<int64_t> completed_run_ids;   // in seed order
  std::vector<int64_t> seeds;
  int64_t unfinished = 0;                   // runs of the arm that did not complete
  int64_t failed = 0;                       // of those, stopped or failed with no attempt left (the rest will run)
  int64_t running = 0;                      // of those, held by a worker now
  int64_t blocked = 0;                      // of those, queued behind a stage that failed or stopped (never start)
  std::map<std::string, Interval> metrics;  // key -> mean and interval over seeds
};

struct PairedResult {
  std::string arm, baseline;                    // GANPO on, and the matched GANPO off
  std::vector<int64_t> seeds;                   // seeds both completed
  std::map<std::string, Interval> differences;  // arm - baseline per metric
  // "judge/win_rate_vs_base@T": how often the arm's policy out-scores the baseline's on the same
  // judge prompt, per seed, with its interval; called when the interval excludes 0.5.
  std::map<std::string, Interval> win_rate_vs_baseline;
};

struct StudyReport {
  int64_t study_id = 0;
  std::string name;
  std::string state;  // the study's: "active", "paused" or "cancelled"
  std::vector<ArmResult> arms;
  std::vector<PairedResult> ganpo_vs_base;
  int64_t runs = 0, completed = 0;  // of the study, shared stages included
  double wall_seconds = 0;          // first start to last finish of its runs
};

StudyReport study_report(RunStore& store, int64_t study_id);
// An arm's seeds and where its other runs stand, as the CLI, the HTML report and the Study tab
// show them: "3", "2 (1 running, 1 queued)", "1 (2 not run: study cancelled)",
// "2 (1 failed or stopped)", "0 (3 blocked by a failed or stopped stage)".
std::string arm_seeds_text(const ArmResult& arm, const std::string& study_state);

// The numbers the answer leads with (the CLI, the HTML report and the Study tab): held-out
// accuracy and margin, judge win rate and response length per temperature (all buckets), step time.
bool is_headline_metric(const std::string& key);
// The plain verdict on an interval, called only when it excludes the null value: GANPO on minus
// off (null 0: "higher with GANPO" / "lower with GANPO") or head to head (null 0.5: "GANPO judged
// better" / "GANPO judged worse"); otherwise "no difference shown (interval contains 0)", or, from
// one seed, "no verdict from one seed (no interval)".
bool verdict_called(const Interval& i, bool head_to_head);
std::string verdict_text(const Interval& i, bool head_to_head);
nlohmann::json report_to_json(const StudyReport& report);

// How many of the answer's verdicts could be chance: the numbers tested (each pair's differences,
// its headline ones only where headline_only, and its head-to-head win rates; each over two seeds
// or more; not the step time or tokens/s, which the critics change by design) and how many of them
// are called. At 95 % each, where GANPO changed nothing about 5 % of
// the numbers tested would be called anyway.
struct VerdictCount {
  int64_t tested = 0, called = 0;
  double by_chance() const { return 0.05 * static_cast<double>(tested); }
};
VerdictCount count_verdicts(const StudyReport& report, bool headline_only);
// That, in one sentence for the report's readers; empty when nothing was tested.
std::string multiplicity_note(const VerdictCount& count);

}  // namespace ganpo
