#include "ui/compare_results.h"

#include <algorithm>

#include <nlohmann/json.hpp>

namespace ganpo::ui {
namespace {

bool starts_with_eval(const std::string& key) { return key.rfind("eval_", 0) == 0; }

void take_metrics(const nlohmann::json& obj, std::map<std::string, double>& out) {
  if (!obj.is_object()) return;
  for (auto it = obj.begin(); it != obj.end(); ++it)
    if (starts_with_eval(it.key()) && it.value().is_number()) out[it.key()] = it.value().get<double>();
}

// Win rates of judge rows; "all" rows replace per-bucket ones of the same temperature.
void take_judge(const nlohmann::json& rows, const nlohmann::json& params, std::map<double, double>& out) {
  std::map<double, double> any_bucket, all_bucket;
  auto take_row = [&](const nlohmann::json& r) {
    if (!r.is_object() || !r.contains("win_rate") || !r["win_rate"].is_number()) return;
    const nlohmann::json* t = nullptr;
    if (r.contains("temperature") && r["temperature"].is_number()) t = &r["temperature"];
    else if (params.is_object() && params.contains("temperature") && params["temperature"].is_number()) t = &params["temperature"];
    if (!t) return;
    const double temperature = t->get<double>(), rate = r["win_rate"].get<double>();
    if (!r.contains("bucket") || r["bucket"] == "all") all_bucket[temperature] = rate;
    else any_bucket.emplace(temperature, rate);
  };
  if (rows.is_array()) for (const auto& r : rows) take_row(r);
  else take_row(rows);
  for (const auto& [t, rate] : any_bucket) out[t] = rate;
  for (const auto& [t, rate] : all_bucket) out[t] = rate;
}

}  // namespace

const std::vector<std::string>& compare_result_keys() {
  static const std::vector<std::string> keys{"eval_loss", "eval_rewards/accuracies", "eval_rewards/margins"};
  return keys;
}

CompareResults collect_compare_results(const std::vector<EvalRow>& evals, const std::vector<MetricRow>& latest) {
  CompareResults r;
  for (const MetricRow& m : latest)
    if (starts_with_eval(m.key)) r.metrics[m.key] = m.value;
  std::vector<const EvalRow*> ordered;
  for (const EvalRow& e : evals) ordered.push_back(&e);
  std::stable_sort(ordered.begin(), ordered.end(), [](const EvalRow* a, const EvalRow* b) {
    return a->checkpoint_step != b->checkpoint_step ? a->checkpoint_step < b->checkpoint_step : a->id < b->id;
  });
  for (const EvalRow* e : ordered) {
    const auto result = nlohmann::json::parse(e->result_json, nullptr, false);
    const auto params = nlohmann::json::parse(e->params_json, nullptr, false);
    if (result.is_discarded()) continue;
    if (result.is_array()) {
      take_judge(result, params, r.win_rates);
      continue;
    }
    take_metrics(result, r.metrics);
    if (result.is_object() && result.contains("preference")) take_metrics(result["preference"], r.metrics);
    if (result.is_object() && result.contains("judge")) take_judge(result["judge"], params, r.win_rates);
    else if (result.is_object() && result.contains("win_rate")) take_judge(result, params, r.win_rates);
  }
  return r;
}

}  // namespace ganpo::ui
