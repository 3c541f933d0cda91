// Compare results: the final evaluation figures of one run for the Compare tab's results table,
// read from the run store's evals rows (typed reports, core/eval/eval_report.h) and the run's
// newest eval_* metrics (those logged at the newest step any was). The newest eval row with
// held-out figures gives them all (never one figure from one evaluation beside another's), the
// newest judged one gives the win rates (the "all" bucket, or the only rows an older report
// has); each says the step it evaluated, so a table can show where the two come from different
// checkpoints. Pure functions, no Qt.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "db/run_store.h"

namespace ganpo::ui {

struct CompareResults {
  std::map<std::string, double> metrics;  // eval_* key -> final value
  std::map<double, double> win_rates;     // sampling temperature -> win rate vs the reference
  std::optional<int64_t> metrics_step;    // the step the metrics are of
  std::optional<int64_t> win_rates_step;  // the checkpoint step the win rates are of
};

// The metric columns the results table always shows, in order.
const std::vector<std::string>& compare_result_keys();

CompareResults collect_compare_results(const std::vector<EvalRow>& evals, const std::vector<MetricRow>& latest);

}  // namespace ganpo::ui
