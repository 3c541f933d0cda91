#include "ui/compare_results.h"

#include <algorithm>

#include "core/eval/eval_report.h"

namespace ganpo::ui {

const std::vector<std::string>& compare_result_keys() {
  static const std::vector<std::string> keys{"eval_loss", "eval_rewards/accuracies", "eval_rewards/margins"};
  return keys;
}

CompareResults collect_compare_results(const std::vector<EvalRow>& evals, const std::vector<MetricRow>& latest) {
  CompareResults r;
  // Without an evaluation row: the eval_* metrics of the newest step any was logged at, and only
  // those (a key last logged at an earlier step is another evaluation's figure, not this one's).
  for (const MetricRow& m : latest)
    if (m.key.rfind("eval_", 0) == 0) r.metrics_step = std::max(r.metrics_step.value_or(m.step), m.step);
  for (const MetricRow& m : latest)
    if (m.key.rfind("eval_", 0) == 0 && m.step == r.metrics_step) r.metrics[m.key] = m.value;
  std::vector<const EvalRow*> ordered;
  for (const EvalRow& e : evals) ordered.push_back(&e);
  std::stable_sort(ordered.begin(), ordered.end(), [](const EvalRow* a, const EvalRow* b) {
    return a->checkpoint_step != b->checkpoint_step ? a->checkpoint_step < b->checkpoint_step : a->id < b->id;
  });
  for (const EvalRow* e : ordered) {
    const EvalReport report = eval_report_from_text(e->result_json);
    if (!report.preference.empty()) {  // this evaluation's figures, all of them
      r.metrics.clear();
      for (const auto& [key, value] : report.preference) r.metrics[key] = value;
      r.metrics_step = e->checkpoint_step;
    }
    if (!report.judge) continue;
    // Win rates of the "all" bucket, or of the only rows an older report has.
    std::map<double, double> any_bucket, all_bucket;
    for (const JudgeSummaryRow& row : report.judge->rows)
      (row.bucket == "all" ? all_bucket[row.temperature] : any_bucket[row.temperature]) = row.win_rate;
    for (const auto& [t, rate] : all_bucket) any_bucket[t] = rate;
    r.win_rates = any_bucket;  // the newest judged evaluation as a whole: no temperature of an older one
    r.win_rates_step = e->checkpoint_step;
  }
  return r;
}

}  // namespace ganpo::ui
