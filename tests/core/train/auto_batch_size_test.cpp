// train.auto_find_batch_size's next batch: the rows per optimizer step are kept exactly.
#include "core/train/auto_batch_size.h"

#include <gtest/gtest.h>

#include "core/memory_estimate.h"
#include "tests/support/expect_contains.h"

namespace ganpo {
namespace {

TEST(AutoBatchSize, TheNextMicroBatchDividesTheRowsOfAStep) {
  EXPECT_EQ(smaller_micro_batch(8, 8), 4);
  EXPECT_EQ(smaller_micro_batch(8, 4), 2);
  EXPECT_EQ(smaller_micro_batch(6, 6), 3);
  EXPECT_EQ(smaller_micro_batch(6, 3), 1);    // 1.5 is no batch; 1 divides 6
  EXPECT_EQ(smaller_micro_batch(10, 5), 2);   // 5 x 2 rows: then 2 x 5
  EXPECT_EQ(smaller_micro_batch(12, 12), 6);
  EXPECT_EQ(smaller_micro_batch(7, 7), 1);    // a prime: 1 x 7
  EXPECT_EQ(smaller_micro_batch(4, 1), 0);    // nothing below 1
}

TEST(AutoBatchSize, TrainingKeepsTheRowsEvaluationHalves) {
  RunConfig c;
  c.train.per_device_train_batch_size = 6;
  c.train.gradient_accumulation_steps = 2;
  auto smaller = with_smaller_training_batch(c);
  ASSERT_TRUE(smaller);
  EXPECT_EQ(smaller->config.train.per_device_train_batch_size, 3);
  EXPECT_EQ(smaller->config.train.gradient_accumulation_steps, 4);
  EXPECT_EQ(smaller->change, "3 rows a micro-batch x 4 accumulation steps (train.per_device_train_batch_size 6 -> 3, "
                             "train.gradient_accumulation_steps 2 -> 4; 12 rows per optimizer step, as before)");
  EXPECT_EQ(smaller->config.train.per_device_eval_batch_size, 0) << "the evaluation batch is left as it was";
  EXPECT_EQ(with_smaller_training_batch(c, 4)->change,
            "3 rows a micro-batch x 4 accumulation steps (train.per_device_train_batch_size 6 -> 3, "
            "train.gradient_accumulation_steps 2 -> 4; 12 rows per optimizer step in each of the 4 processes, 48 in "
            "all, as before)");
  c.train.per_device_train_batch_size = 1;
  EXPECT_FALSE(with_smaller_training_batch(c));

  // Where unset, the evaluation batch is the training batch, at least 8: its half is set.
  auto eval = with_smaller_evaluation_batch(c);
  ASSERT_TRUE(eval);
  EXPECT_EQ(eval->config.train.per_device_eval_batch_size, 4);
  EXPECT_EQ(eval->change, "evaluation batches of 4 (train.per_device_eval_batch_size 8 -> 4)");
  c.train.per_device_eval_batch_size = 1;
  EXPECT_FALSE(with_smaller_evaluation_batch(c));
}

// On the CPU the run starts with batches its estimate says fit the free memory: the largest
// micro-batch whose step fits (the rows per step kept), then an evaluation batch that fits.
TEST(AutoBatchSize, BatchesThatFitTheFreeMemory) {
  RunConfig c;
  c.model.preset = "tiny";
  c.data.max_length = 512;
  c.train.per_device_train_batch_size = 16;
  const ModelShape shape = resolve_model_shape(c.model, 259);
  const auto step_at = [&](int64_t micro) {
    RunConfig d = c;
    d.train.per_device_train_batch_size = micro;
    d.train.gradient_accumulation_steps = 16 / micro;
    return estimate_training_memory(d, shape);
  };
  EXPECT_FALSE(batches_that_fit(c, shape, int64_t{1} << 50, 1)) << "fits already";
  // Room for a step of 4 rows, not of 8: 4 rows x 4 steps.
  const int64_t room = (step_at(4).total_bytes + step_at(8).step_total_bytes) / 2;
  ASSERT_LT(step_at(4).total_bytes, step_at(8).step_total_bytes);
  auto fit = batches_that_fit(c, shape, room, 1);
  ASSERT_TRUE(fit);
  EXPECT_EQ(fit->config.train.per_device_train_batch_size, 4);
  EXPECT_EQ(fit->config.train.gradient_accumulation_steps, 4);
  EXPECT_EQ(fit->change, "4 rows a micro-batch x 4 accumulation steps (train.per_device_train_batch_size 16 -> 4, "
                         "train.gradient_accumulation_steps 1 -> 4; 16 rows per optimizer step, as asked), and "
                         "evaluation batches of 8 (train.per_device_eval_batch_size 0 follows the training batch)");
  // Two processes on the machine need twice the room.
  fit = batches_that_fit(c, shape, 2 * room, 2);
  ASSERT_TRUE(fit);
  EXPECT_EQ(fit->config.train.per_device_train_batch_size, 4);
  EXPECT_CONTAINS(fit->change, "16 rows per optimizer step in each of the 2 processes, 32 in all, as asked)");
  // Nothing fits: down to batches of 1.
  fit = batches_that_fit(c, shape, 1, 1);
  ASSERT_TRUE(fit);
  EXPECT_EQ(fit->config.train.per_device_train_batch_size, 1);
  EXPECT_EQ(fit->config.train.gradient_accumulation_steps, 16);
  EXPECT_EQ(eval_batch_size(fit->config.train), 1);
  EXPECT_CONTAINS(fit->change, ", and evaluation batches of 1 (train.per_device_eval_batch_size 16 -> 1)");
}

}  // namespace
}  // namespace ganpo
