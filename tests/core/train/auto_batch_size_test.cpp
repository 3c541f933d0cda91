// train.auto_find_batch_size's next batch: the rows per optimizer step are kept exactly.
#include "core/train/auto_batch_size.h"

#include <gtest/gtest.h>

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

}  // namespace
}  // namespace ganpo
