// Compare results: the final evaluation figures of one run for the Compare tab's results table,
// read from the run store's evals rows and the run's newest eval_* metrics. Eval rows of the
// trainer hold flat {"eval_loss": ..} objects; reports of `ganpo eval` hold {"preference": {..},
// "judge": [{temperature, bucket, prompts, policy_score, reference_score, win_rate}, ..]}
// (core/evaluation.h win_rates_to_json); a bare judge array or a single {"win_rate": ..} object
// with the temperature in params_json are read too. The newest eval row wins; win rates are those
// of the "all" bucket (or the only rows when there are no buckets). Pure functions, no Qt.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "db/run_store.h"

namespace ganpo::ui {

struct CompareResults {
  std::map<std::string, double> metrics;  // eval_* key -> final value
  std::map<double, double> win_rates;     // sampling temperature -> win rate vs the reference
};

// The metric columns the results table always shows, in order.
const std::vector<std::string>& compare_result_keys();

CompareResults collect_compare_results(const std::vector<EvalRow>& evals, const std::vector<MetricRow>& latest);

}  // namespace ganpo::ui
