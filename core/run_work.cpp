#include "core/run_work.h"

#include <algorithm>
#include <cmath>

#include "core/memory_estimate.h"
#include "core/model/model_shape.h"

namespace ganpo {

RunWork run_work(const RunConfig& c) {
  RunWork w;
  const double policy = static_cast<double>(parameter_count(resolve_model_shape(c.model, kByteTokenizerVocab)));
  const int64_t rows = std::max<int64_t>(1, c.train.per_device_train_batch_size) *
                       std::max<int64_t>(1, c.train.gradient_accumulation_steps);
  const double length = static_cast<double>(std::max<int64_t>(1, c.data.max_length));
  const double tokens = static_cast<double>(rows) * length;
  if (c.train.max_steps > 0) {
    w.steps = c.train.max_steps;
  } else {
    const int64_t examples = uses_builtin_task(c.data) ? c.data.builtin_train_size : 4000;
    w.steps = static_cast<int64_t>(std::ceil(std::max(0.0, c.train.num_train_epochs) * static_cast<double>(examples) /
                                             static_cast<double>(rows)));
  }
  double per_step = 0;
  if (c.stage == "sft") {
    per_step = 6 * policy * tokens;
  } else {
    per_step = 6 * policy * 2 * tokens + 2 * policy * 2 * tokens;
    if (c.ganpo.enabled) {
      const ModelShape shape = resolve_model_shape(c.model, kByteTokenizerVocab);
      const double critic = static_cast<double>(critic_parameter_count(c.ganpo, shape.d_model));
      const double critic_tokens = static_cast<double>(rows) * std::min<double>(length, static_cast<double>(c.ganpo.critic_max_len));
      per_step += 2 * 6 * critic * 3 * critic_tokens;
    }
    if (c.eval.judge_at_end) {
      size_t temperatures = 1;
      try {
        temperatures = parse_temperatures(c.eval.temperatures).size();
      } catch (const std::exception&) {
      }
      const int64_t new_tokens = c.eval.max_new_tokens > 0 ? c.eval.max_new_tokens : c.sampling.max_new_tokens;
      w.eval = 2 * policy * static_cast<double>(new_tokens) * static_cast<double>(c.eval.num_prompts) *
               static_cast<double>(temperatures) * 2;
    }
  }
  w.train = per_step * static_cast<double>(w.steps);
  return w;
}

double reference_work_per_second() {
  // Measured: `ganpo demo` (the demo pipeline's two runs: SFT 520 steps, then DPO + GANPO 160
  // steps and its judge evaluation of 120 prompts at 3 temperatures) took 3m39s on this
  // project's 2-core Debian 12 machine; run_work() of its two runs is 1.76e13.
  return 1.76e13 / 219.0;
}

}  // namespace ganpo
