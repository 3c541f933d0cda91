#include "ui/derived_series.h"

#include "ui/chart_catalog.h"

namespace ganpo::ui {

const std::vector<DerivedCurve>& derived_curves() {
  static const std::vector<DerivedCurve> curves = {
      // How much of the objective the regularizer contributes: lambda * L_adv / L.
      {kAdvShareKey, {"adv/loss", "loss"},
       [](const std::vector<double>& in, const DerivedContext& ctx) { return ctx.adv_weight * in[0] / in[1]; }},
      // D_w's running mean on reference-chosen latents minus on the policy's chosen ones (mu_w[A] -
      // mu_w[P]); the generator term pulls it toward 0, where the critic cannot tell them apart.
      {kEmaGapChosenKey, {"ema/w_ref_chosen", "ema/w_policy_chosen"},
       [](const std::vector<double>& in, const DerivedContext&) { return in[0] - in[1]; }},
      // The same for D_l on rejected latents: mu_l[B] - mu_l[P].
      {kEmaGapRejectedKey, {"ema/l_ref_rejected", "ema/l_policy_rejected"},
       [](const std::vector<double>& in, const DerivedContext&) { return in[0] - in[1]; }},
  };
  return curves;
}

std::vector<std::vector<MetricPoint>> StepJoin::add(const MetricBatch& batch) {
  for (size_t i = 0; i < inputs_.size(); ++i) {
    auto it = batch.find(inputs_[i]);
    if (it == batch.end()) continue;
    for (const MetricPoint& p : it->second) waiting_[i][p.step] = p;  // a step written again replaces
  }
  std::vector<std::vector<MetricPoint>> out;
  if (waiting_.empty()) return out;
  for (auto it = waiting_[0].begin(); it != waiting_[0].end();) {
    const int64_t step = it->first;
    std::vector<MetricPoint> points{it->second};
    for (size_t i = 1; i < inputs_.size(); ++i) {
      auto other = waiting_[i].find(step);
      if (other == waiting_[i].end()) break;
      points.push_back(other->second);
    }
    if (points.size() < inputs_.size()) {
      ++it;
      continue;
    }
    for (size_t i = 1; i < inputs_.size(); ++i) waiting_[i].erase(step);
    it = waiting_[0].erase(it);
    out.push_back(std::move(points));
  }
  if (!out.empty()) {
    // Rows arrive in step order (a rewound run is read again from its first row), so a step below
    // the newest joined one that is still incomplete never will be.
    const int64_t newest = out.back().front().step;
    for (auto& w : waiting_) w.erase(w.begin(), w.lower_bound(newest));
  }
  // Joined first, then bounded: a batch of many complete steps yields them all.
  for (auto& w : waiting_)
    while (w.size() > kMaxWaiting) w.erase(w.begin());
  return out;
}

MetricBatch derive_points(const MetricBatch& batch, std::vector<StepJoin>& joins, const DerivedContext& ctx) {
  const auto& curves = derived_curves();
  if (joins.empty())
    for (const DerivedCurve& d : curves) joins.emplace_back(d.inputs);
  MetricBatch out;
  for (size_t i = 0; i < curves.size(); ++i) {
    std::vector<MetricPoint> points;
    for (const std::vector<MetricPoint>& step : joins[i].add(batch)) {
      std::vector<double> in;
      for (const MetricPoint& p : step) in.push_back(p.value);
      MetricPoint p = step.front();  // step, wall time and tokens of the first input's row
      p.value = curves[i].value(in, ctx);
      points.push_back(p);
    }
    if (!points.empty()) out[curves[i].key] = std::move(points);
  }
  return out;
}

void StepJoin::clear() {
  for (auto& w : waiting_) w.clear();
}

}  // namespace ganpo::ui
