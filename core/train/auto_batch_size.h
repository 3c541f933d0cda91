// train.auto_find_batch_size: the batch a stage tries next after one ran out of memory.
//
// An optimizer step that ran out goes on with a smaller micro-batch and more accumulation, so
// per_device_train_batch_size x gradient_accumulation_steps, the rows of each optimizer step,
// stays what the person chose (transformers halves the batch and lets the step shrink): about
// half the micro-batch, the largest divisor of those rows at or below it. An evaluation or the
// precompute that ran out goes on with half its batch. Nothing here needs LibTorch.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "core/config.h"
#include "core/model/model_shape.h"

namespace ganpo {

struct SmallerBatch {
  RunConfig config;    // the run's config with the smaller batch
  std::string change;  // what changed, for the log: "4 rows a micro-batch x 2 accumulation steps ..."
};

// The largest divisor of `rows` at or below half of `now` (0 where `now` is 1: none smaller).
int64_t smaller_micro_batch(int64_t rows, int64_t now);

// None where the batch is already 1. `processes`: the data-parallel ranks that each take the
// micro-batch (the change then says the rows per optimizer step of each and of all).
std::optional<SmallerBatch> with_smaller_training_batch(const RunConfig& config, int64_t processes = 1);
std::optional<SmallerBatch> with_smaller_evaluation_batch(const RunConfig& config);

// Before a CPU run starts, where Linux may stop a process that asks for more memory than the
// machine has rather than refuse the allocation: the batches lowered as above until the memory
// estimate of a step and of an evaluation fit in `available` bytes for `processes` processes (or
// down to batches of 1; the change then says the rows per optimizer step of each and of all).
// None where they fit already.
std::optional<SmallerBatch> batches_that_fit(const RunConfig& config, const ModelShape& shape, int64_t available,
                                             int processes);

}  // namespace ganpo
