// The arithmetic task: prompts read back exactly, the judge's four checks on hand-worked answers,
// and every generated faulty answer scoring below the right one.
#include "core/tasks/arithmetic_task.h"

#include <gtest/gtest.h>

#include <random>

namespace ganpo::arithmetic {
namespace {

Problem problem(int64_t a, Op op, int64_t b) {
  Problem p;
  p.a = a, p.op = op, p.b = b;
  return p;
}

TEST(ArithmeticTask, PromptsReadBackExactlyAndNothingElseParses) {
  std::mt19937_64 rng(5);
  for (int i = 0; i < 500; ++i) {
    const Problem p = random_problem(rng);
    ASSERT_GE(p.answer(), 0);
    const auto back = parse_prompt(render_prompt(p));
    ASSERT_TRUE(back) << render_prompt(p);
    EXPECT_EQ(render_prompt(*back), render_prompt(p));
  }
  EXPECT_EQ(render_prompt(problem(348, Op::Add, 27)), "Compute 348 + 27. Answer with the number only.");
  EXPECT_TRUE(parse_prompt("  Compute 9 * 7. Answer with the number only.\n"));
  for (const char* other : {"Compute 3 + 4.", "Compute 03 + 4. Answer with the number only.",
                            "Compute 3 / 4. Answer with the number only.", "Compute 3 - 4. Answer with the number only.",
                            "Compute 3  + 4. Answer with the number only.", "Compute  + 4. Answer with the number only.",
                            "List 3 fruits in any order, separated by commas, in lower case.", ""})
    EXPECT_FALSE(parse_prompt(other)) << other;
}

TEST(ArithmeticTask, JudgeScoresTheFourChecksByHand) {
  const Problem p = problem(348, Op::Add, 27);  // 375
  EXPECT_DOUBLE_EQ(judge(p, "375").score, 1.0);
  EXPECT_DOUBLE_EQ(judge(p, " 375\n").score, 1.0);
  // One digit wrong: number only, right length, wrong value, 2 of 3 digits.
  EXPECT_DOUBLE_EQ(judge(p, "385").score, (1 + 1 + 0 + 2.0 / 3) / 4);
  // Words around the right number: only "number only" fails.
  const auto wordy = judge(p, "The answer is 375.");
  EXPECT_FALSE(wordy.number_only);
  EXPECT_TRUE(wordy.right_value);
  EXPECT_DOUBLE_EQ(wordy.score, 0.75);
  // A dropped digit: aligned from the right, "37" matches none of "75".
  EXPECT_DOUBLE_EQ(judge(p, "37").score, (1 + 0 + 0 + 0.0 / 3) / 4);
  // A repeated digit: "3775" vs "375" from the right: 5=5, 7=7, 7!=3 -> 2 of 4.
  EXPECT_DOUBLE_EQ(judge(p, "3775").score, (1 + 0 + 0 + 2.0 / 4) / 4);
  EXPECT_DOUBLE_EQ(judge(p, "no idea").score, 0.0);
  EXPECT_DOUBLE_EQ(judge(p, "").score, 0.0);
  EXPECT_DOUBLE_EQ(judge(problem(9, Op::Multiply, 7), "63").score, 1.0);
  EXPECT_DOUBLE_EQ(judge(problem(1000, Op::Subtract, 1000), "0").score, 1.0);
}

TEST(ArithmeticTask, FaultyAnswersAreWrongAndScoreBelowTheRightOne) {
  std::mt19937_64 rng(11);
  for (int i = 0; i < 2000; ++i) {
    const Problem p = random_problem(rng);
    const std::string bad = faulty_answer(p, 1 + i % 2, rng);
    const auto j = judge(p, bad);
    EXPECT_FALSE(j.right_value && j.number_only) << render_prompt(p) << " -> " << bad;
    EXPECT_LT(j.score, 1.0) << render_prompt(p) << " -> " << bad;
  }
}

TEST(ArithmeticTask, BucketsFollowTheAnswersDigits) {
  EXPECT_EQ(bucket_of(problem(4, Op::Add, 5)), 0);      // 9
  EXPECT_EQ(bucket_of(problem(40, Op::Add, 50)), 0);    // 90
  EXPECT_EQ(bucket_of(problem(400, Op::Add, 50)), 1);   // 450
  EXPECT_EQ(bucket_of(problem(999, Op::Multiply, 9)), 2);  // 8991
  EXPECT_EQ(bucket_of(problem(9999, Op::Add, 9999)), 2);   // 19998
}

}  // namespace
}  // namespace ganpo::arithmetic
