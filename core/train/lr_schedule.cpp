#include "core/train/lr_schedule.h"

#include <algorithm>
#include <cmath>

namespace ganpo {

int64_t warmup_steps(double warmup_ratio, int64_t total_steps) {
  return static_cast<int64_t>(std::ceil(warmup_ratio * static_cast<double>(total_steps)));
}

double lr_multiplier(const std::string& type, int64_t step, int64_t total, int64_t warmup) {
  if (step < warmup) return static_cast<double>(step + 1) / static_cast<double>(warmup + 1);
  if (type == "constant") return 1.0;
  const double progress = std::clamp(
      static_cast<double>(step - warmup) / static_cast<double>(std::max<int64_t>(1, total - warmup)),
      0.0, 1.0);
  if (type == "cosine") return 0.5 * (1.0 + std::cos(M_PI * progress));
  return 1.0 - progress;  // linear
}

}  // namespace ganpo
