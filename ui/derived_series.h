// Derived series: curves the dashboard computes from logged ones instead of reading them from the
// store. One table lists them (the lambda x adversarial share of the loss, and the EMA score gaps
// UX.md asks for: how far above the policy's latents each critic scores the reference's), each
// with the logged keys it needs and how its value follows from theirs. StepJoin pairs the inputs'
// points of the same step as they stream in, so a derived point appears once every input of its
// step has arrived, whichever poll brought it. Pure code, no widgets.
#pragma once

#include <QString>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "ui/metric_feed.h"

namespace ganpo::ui {

// What a derived value may depend on beyond its inputs (read from the run's config).
struct DerivedContext {
  double adv_weight = 1.0;  // lambda
};

struct DerivedCurve {
  const char* key;                  // drawn under this key, in the chart the catalog gives it
  std::vector<std::string> inputs;  // logged keys, all needed at the same step
  double (*value)(const std::vector<double>& in, const DerivedContext& ctx);  // in: inputs' values, in order
};

// Every derived curve, in display order.
const std::vector<DerivedCurve>& derived_curves();

// Joins the points of several keys by step. Points of a step that some input has not reached wait
// (at most kMaxWaiting steps per input; a step older than one already joined never completes: the
// feed brings rows in order, so it is dropped).
class StepJoin {
public:
  static constexpr size_t kMaxWaiting = 256;
  explicit StepJoin(std::vector<std::string> inputs) : inputs_(std::move(inputs)), waiting_(inputs_.size()) {}
  // The steps completed by this batch: for each, the inputs' points in input order.
  std::vector<std::vector<MetricPoint>> add(const MetricBatch& batch);
  void clear();
  const std::vector<std::string>& inputs() const { return inputs_; }

private:
  std::vector<std::string> inputs_;
  std::vector<std::map<int64_t, MetricPoint>> waiting_;  // per input: step -> point
};

// The derived points this batch completes, by derived key (in derived_curves() order). joins holds
// one StepJoin per derived curve; it is filled on first use and keeps the steps still waiting.
MetricBatch derive_points(const MetricBatch& batch, std::vector<StepJoin>& joins, const DerivedContext& ctx);

}  // namespace ganpo::ui
