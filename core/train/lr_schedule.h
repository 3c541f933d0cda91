// Learning-rate schedules as pure functions of the optimizer step (TRL / HF names):
// "constant", "linear" (to 0 at the last step) and "cosine" (half wave to 0), each with a
// linear warmup over ceil(warmup_ratio x total_steps) steps.
#pragma once

#include <cstdint>
#include <string>

namespace ganpo {

int64_t warmup_steps(double warmup_ratio, int64_t total_steps);
// Multiplier in [0, 1] for optimizer step `step` (0-based: the step about to be taken).
double lr_multiplier(const std::string& type, int64_t step, int64_t total_steps, int64_t warmup);

}  // namespace ganpo
