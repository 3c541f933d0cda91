#include "core/train/auto_batch_size.h"

#include <algorithm>

#include "core/memory_estimate.h"

namespace ganpo {

namespace {

// "2 rows a micro-batch x 2 accumulation steps (train.per_device_train_batch_size 4 -> 2, ...;
// 4 rows per optimizer step, <rows_are>)"
std::string training_batch_change(const TrainConfig& from, const TrainConfig& to, const char* rows_are,
                                  int64_t processes = 1) {
  const int64_t b = to.per_device_train_batch_size, ga = to.gradient_accumulation_steps;
  return std::to_string(b) + (b == 1 ? " row" : " rows") + " a micro-batch x " + std::to_string(ga) +
         " accumulation steps (train.per_device_train_batch_size " + std::to_string(from.per_device_train_batch_size) +
         " -> " + std::to_string(b) + ", train.gradient_accumulation_steps " +
         std::to_string(from.gradient_accumulation_steps) + " -> " + std::to_string(ga) + "; " + std::to_string(b * ga) +
         " rows per optimizer step" +
         (processes > 1 ? " in each of the " + std::to_string(processes) + " processes, " +
                              std::to_string(b * ga * processes) + " in all"
                        : std::string()) +
         ", " + rows_are + ")";
}

}  // namespace

int64_t smaller_micro_batch(int64_t rows, int64_t now) {
  for (int64_t b = now / 2; b >= 1; --b)
    if (rows % b == 0) return b;
  return 0;
}

std::optional<SmallerBatch> with_smaller_training_batch(const RunConfig& config, int64_t processes) {
  const TrainConfig& t = config.train;
  const int64_t rows = t.per_device_train_batch_size * t.gradient_accumulation_steps;
  const int64_t b = smaller_micro_batch(rows, t.per_device_train_batch_size);
  if (b == 0) return std::nullopt;
  SmallerBatch out{config, {}};
  out.config.train.per_device_train_batch_size = b;
  out.config.train.gradient_accumulation_steps = rows / b;
  out.change = training_batch_change(t, out.config.train, "as before", processes);
  // An evaluation batch left at 0 follows the training batch (at least 8).
  if (eval_batch_size(out.config.train) != eval_batch_size(t))
    out.change += ", and evaluation batches of " + std::to_string(eval_batch_size(out.config.train)) +
                  " (train.per_device_eval_batch_size 0 follows the training batch)";
  return out;
}

std::optional<SmallerBatch> with_smaller_evaluation_batch(const RunConfig& config) {
  const int64_t now = eval_batch_size(config.train);
  if (now <= 1) return std::nullopt;
  SmallerBatch out{config, {}};
  out.config.train.per_device_eval_batch_size = now / 2;
  out.change = "evaluation batches of " + std::to_string(now / 2) + " (train.per_device_eval_batch_size " +
               std::to_string(now) + " -> " + std::to_string(now / 2) + ")";
  return out;
}

std::optional<SmallerBatch> batches_that_fit(const RunConfig& config, const ModelShape& shape, int64_t available,
                                             int processes) {
  RunConfig c = config;
  const auto more_than_available = [&](int64_t bytes) {
    return static_cast<double>(bytes) * std::max(processes, 1) > static_cast<double>(available);
  };
  for (;;) {
    const MemoryEstimate e = estimate_training_memory(c, shape);
    std::optional<SmallerBatch> smaller;
    if (more_than_available(e.step_total_bytes)) smaller = with_smaller_training_batch(c);
    if (!smaller && more_than_available(e.evaluation_total_bytes)) smaller = with_smaller_evaluation_batch(c);
    if (!smaller) break;
    c = std::move(smaller->config);
  }
  const TrainConfig &from = config.train, &to = c.train;
  const bool train_changed = to.per_device_train_batch_size != from.per_device_train_batch_size;
  const bool eval_changed = eval_batch_size(to) != eval_batch_size(from);
  if (!train_changed && !eval_changed) return std::nullopt;
  SmallerBatch out{c, {}};
  if (train_changed) out.change = training_batch_change(from, to, "as asked", processes);
  if (eval_changed)
    out.change += std::string(train_changed ? ", and " : "") + "evaluation batches of " + std::to_string(eval_batch_size(to)) +
                  (to.per_device_eval_batch_size == 0
                       ? std::string(" (train.per_device_eval_batch_size 0 follows the training batch)")
                       : " (train.per_device_eval_batch_size " + std::to_string(eval_batch_size(from)) + " -> " +
                             std::to_string(eval_batch_size(to)) + ")");
  return out;
}

}  // namespace ganpo
