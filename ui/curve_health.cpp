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

// A curve is "falling" when its fitted drop across the window exceeds the spread of its values,
// so noise around a flat line does not count.
bool falling(const SeriesView& s, const HealthOptions& o) {
  Window w = recent(s, o.window, std::numeric_limits<int64_t>::min());
  if (w.y.size() < o.min_points) return false;
  const double k = slope(w);
  const double drop = -k * (w.x.back() - w.x.front());
  return k < 0 && drop > stddev(w.y);
}

std::optional<double> chance_mean(const SeriesView& s, const HealthOptions& o) {
  Window w = recent(s, o.window, o.warmup_steps);
  if (w.y.size() < o.min_points) return std::nullopt;
  return mean(w.y);
}

std::string format_step(int64_t step) { return std::to_string(step); }

}  // namespace

std::vector<HealthFinding> check_curve_health(const CurveSet& curves, const HealthOptions& o) {
  std::vector<HealthFinding> out;

  // Loss non-finite since step N: the trailing run of NaN/Inf values, when the last value is one.
  for (const char* key : {"loss", "opo_loss"}) {
    const SeriesView* s = find(curves, key);
    if (!s || std::isfinite(s->values[s->size - 1])) continue;
    size_t first = s->size - 1;
    while (first > 0 && !std::isfinite(s->values[first - 1])) --first;
    const double v = s->values[s->size - 1];
    const char* what = std::isnan(v) ? "NaN" : (v > 0 ? "+Inf" : "-Inf");
    out.push_back({"loss_nan", std::string(key) + " is " + what + " since step " + format_step(s->steps[first])});
    break;  // loss and opo_loss usually fail together; one line says it
  }

  // Critics at chance: both critic accuracies (whichever exist) average ~0.5 after warmup.
  {
    std::vector<double> means;
    for (const char* key : {"critic/acc_chosen", "critic/acc_rejected"})
      if (const SeriesView* s = find(curves, key))
        if (auto m = chance_mean(*s, o)) means.push_back(*m);
    if (!means.empty() && std::all_of(means.begin(), means.end(),
                                      [&](double m) { return std::fabs(m - 0.5) <= o.chance_band; }))
      out.push_back({"critic_chance", "critic accuracy ~50%: the critics cannot tell policy from reference latents"});
  }

  if (const SeriesView* s = find(curves, "rewards/accuracies"))
    if (auto m = chance_mean(*s, o); m && std::fabs(*m - 0.5) <= o.chance_band)
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
