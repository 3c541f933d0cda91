#include "core/train/auto_batch_size.h"

namespace ganpo {

int64_t smaller_micro_batch(int64_t rows, int64_t now) {
  for (int64_t b = now / 2; b >= 1; --b)
    if (rows % b == 0) return b;
  return 0;
}

std::optional<SmallerBatch> with_smaller_training_batch(const RunConfig& config) {
  const TrainConfig& t = config.train;
  const int64_t rows = t.per_device_train_batch_size * t.gradient_accumulation_steps;
  const int64_t b = smaller_micro_batch(rows, t.per_device_train_batch_size);
  if (b == 0) return std::nullopt;
  SmallerBatch out{config, {}};
  out.config.train.per_device_train_batch_size = b;
  out.config.train.gradient_accumulation_steps = rows / b;
  out.change = std::to_string(b) + (b == 1 ? " row" : " rows") + " a micro-batch x " + std::to_string(rows / b) +
               " accumulation steps (train.per_device_train_batch_size " + std::to_string(t.per_device_train_batch_size) +
               " -> " + std::to_string(b) + ", train.gradient_accumulation_steps " +
               std::to_string(t.gradient_accumulation_steps) + " -> " + std::to_string(rows / b) + "; " +
               std::to_string(rows) + " rows per optimizer step, as before)";
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

}  // namespace ganpo
