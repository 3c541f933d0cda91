// Curve health: reads a run's metric curves the way an experienced practitioner would and says
// in one line what looks wrong ("critic accuracy ~50%: ...", "loss is NaN since step 812"), or
// that nothing does. Pure functions over read-only views of the series, so the dashboard can run
// them after every live batch without copying, and tests can feed synthetic curves.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace ganpo::ui {

// A read-only view of one metric curve in step order (steps and values of equal length).
struct SeriesView {
  const int64_t* steps = nullptr;
  const double* values = nullptr;
  size_t size = 0;
};

inline SeriesView view_of(const std::vector<int64_t>& steps, const std::vector<double>& values) {
  return {steps.data(), values.data(), std::min(steps.size(), values.size())};
}

// Metric key (as logged by the trainer) -> curve.
using CurveSet = std::map<std::string, SeriesView>;

struct HealthOptions {
  int64_t warmup_steps = 100;   // rules about "stuck" values only look after this step
  size_t window = 50;           // recent points a rule looks at
  size_t min_points = 20;       // fewer recent points than this: the rule stays silent
  double chance_band = 0.05;    // |mean - 0.5| within this counts as "at chance"
};

struct HealthFinding {
  std::string rule;     // stable id: "loss_nan", "critic_chance", "accuracy_stuck", "logps_falling"
  std::string message;  // what the user reads
};

// Every rule that fires, most severe first.
std::vector<HealthFinding> check_curve_health(const CurveSet& curves, const HealthOptions& options = {});

// The health line: the findings joined by "; ", or "healthy" when there are none.
std::string health_summary(const std::vector<HealthFinding>& findings);

}  // namespace ganpo::ui
