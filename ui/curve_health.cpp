#include "ui/curve_health.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>

namespace ganpo::ui {
namespace {

const SeriesView* find(const CurveSet& curves, const char* key) {
  auto it = curves.find(key);
  return it == curves.end() || it->second.size == 0 ? nullptr : &it->second;
}

// The last `window` finite points with step > after_step (oldest first).
struct Window {
  std::vector<double> x, y;
};
Window recent(const SeriesView& s, size_t window, int64_t after_step) {
  Window w;
  for (size_t i = s.size; i-- > 0 && w.y.size() < window;) {
    if (s.steps[i] <= after_step) break;
    if (!std::isfinite(s.values[i])) continue;
    w.x.push_back(static_cast<double>(s.steps[i]));
    w.y.push_back(s.values[i]);
  }
  std::reverse(w.x.begin(), w.x.end());
  std::reverse(w.y.begin(), w.y.end());
  return w;
}

double mean(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return v.empty() ? 0.0 : s / static_cast<double>(v.size());
}

double stddev(const std::vector<double>& v) {
  const double m = mean(v);
  double s = 0;
  for (double x : v) s += (x - m) * (x - m);
  return v.size() < 2 ? 0.0 : std::sqrt(s / static_cast<double>(v.size() - 1));
}

// Least-squares slope of y over x.
double slope(const Window& w) {
  const double mx = mean(w.x), my = mean(w.y);
  double sxy = 0, sxx = 0;
  for (size_t i = 0; i < w.x.size(); ++i) {
    sxy += (w.x[i] - mx) * (w.y[i] - my);
    sxx += (w.x[i] - mx) * (w.x[i] - mx);
  }
  return sxx > 0 ? sxy / sxx : 0.0;
}

// The least-squares slope's t statistic: slope / its standard error (residuals' variance over n - 2).
double slope_t(const Window& w) {
  const double k = slope(w), mx = mean(w.x), my = mean(w.y);
  double residuals = 0, sxx = 0;
  for (size_t i = 0; i < w.x.size(); ++i) {
    const double r = w.y[i] - my - k * (w.x[i] - mx);
    residuals += r * r;
    sxx += (w.x[i] - mx) * (w.x[i] - mx);
  }
  const double se = std::sqrt(residuals / static_cast<double>(w.x.size() - 2) / sxx);
  const double inf = std::numeric_limits<double>::infinity();
  return se > 0 ? k / se : (k < 0 ? -inf : k > 0 ? inf : 0.0);
}

// A curve is "falling" when its fitted drop across the window exceeds the spread of its values
// and the slope is far from what noise gives (t below -4). The drop alone fired on flat noise:
// log-probs of chosen and rejected move together, and re-read at every poll of a live run, both
// "fell" about once in 150 reads.
bool falling(const SeriesView& s, const HealthOptions& o) {
  Window w = recent(s, o.window, std::numeric_limits<int64_t>::min());
  if (w.y.size() < o.min_points) return false;
  const double k = slope(w);
  const double drop = -k * (w.x.back() - w.x.front());
  return k < 0 && drop > stddev(w.y) && slope_t(w) < -4.0;
}

// Whether a curve sits at chance after warmup: its recent mean within the band of 0.5, and not
// moving: a fitted change across the window beyond the band with a slope noise does not give
// (|t| above 3) is a curve rising or falling through 0.5, not stuck there. (The change alone
// would miss noisy stuck curves: per-log accuracies of small batches scatter by 0.15-0.2.)
// nullopt: too few points after warmup to judge.
std::optional<bool> at_chance(const SeriesView& s, const HealthOptions& o) {
  Window w = recent(s, o.window, o.warmup_steps);
  if (w.y.size() < o.min_points) return std::nullopt;
  const double drift = slope(w) * (w.x.back() - w.x.front());
  const bool moving = std::fabs(drift) > o.chance_band && std::fabs(slope_t(w)) > 3.0;
  return std::fabs(mean(w.y) - 0.5) <= o.chance_band && !moving;
}

std::string format_step(int64_t step) { return std::to_string(step); }

}  // namespace

std::vector<HealthFinding> check_curve_health(const CurveSet& curves, const HealthOptions& o) {
  std::vector<HealthFinding> out;

  // Loss non-finite since step N: the trailing run of NaN/Inf values, when the last value is one.
  // (A run's trainer records the step whose term went non-finite, then fails: that term's curve
  // ends with it, whichever the term was.)
  for (const char* key : {"loss", "opo_loss", "grad_norm", "adv/loss", "critic/loss_chosen", "critic/loss_rejected"}) {
    const SeriesView* s = find(curves, key);
    if (!s || std::isfinite(s->values[s->size - 1])) continue;
    size_t first = s->size - 1;
    while (first > 0 && !std::isfinite(s->values[first - 1])) --first;
    const double v = s->values[s->size - 1];
    const char* what = std::isnan(v) ? "NaN" : (v > 0 ? "+Inf" : "-Inf");
    out.push_back({"loss_nan", std::string(key) + " is " + what + " since step " + format_step(s->steps[first])});
    break;  // the terms usually fail together; one line says it
  }

  // Critics at chance: both critic accuracies (whichever exist) average ~0.5 after warmup.
  {
    int critics = 0, at_chance_count = 0;
    for (const char* key : {"critic/acc_chosen", "critic/acc_rejected"})
      if (const SeriesView* s = find(curves, key))
        if (const auto chance = at_chance(*s, o)) ++critics, at_chance_count += *chance;
    if (critics > 0 && at_chance_count == critics)
      out.push_back({"critic_chance", "critic accuracy ~50%: the critics cannot tell policy from reference latents"});
  }

  if (const SeriesView* s = find(curves, "rewards/accuracies"); s && at_chance(*s, o).value_or(false))
    out.push_back({"accuracy_stuck", "accuracy stuck at 0.5: the policy does not separate chosen from rejected"});

  {
    const SeriesView* c = find(curves, "logps/chosen");
    const SeriesView* r = find(curves, "logps/rejected");
    if (c && r && falling(*c, o) && falling(*r, o))
      out.push_back({"logps_falling", "both chosen and rejected log-probs falling"});
  }
  return out;
}

std::string health_summary(const std::vector<HealthFinding>& findings) {
  if (findings.empty()) return "healthy";
  std::string s;
  for (const auto& f : findings) {
    if (!s.empty()) s += "; ";
    s += f.message;
  }
  return s;
}

}  // namespace ganpo::ui
