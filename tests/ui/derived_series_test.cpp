// Derived dashboard curves: StepJoin pairs the inputs' points of one step whichever poll brings
// them, forgets steps that can no longer complete, and the table's values are the formulas of
// GANPO.md (lambda x L_adv / L; mu_w[A] - mu_w[P]; mu_l[B] - mu_l[P]).
#include <gtest/gtest.h>

#include "ui/chart_catalog.h"
#include "ui/derived_series.h"

using namespace ganpo::ui;

namespace {

std::vector<MetricPoint> points(std::initializer_list<std::pair<int64_t, double>> steps) {
  std::vector<MetricPoint> out;
  for (auto [step, value] : steps) out.push_back({step, value, 1.7e9 + step, step * 10.0});
  return out;
}

}  // namespace

TEST(StepJoin, PairsTheInputsOfAStepAcrossPolls) {
  StepJoin join({"adv/loss", "loss"});
  // The first poll brings adv/loss of steps 1-3 and loss of step 1 only (a query cut mid-step).
  auto done = join.add({{"adv/loss", points({{1, 0.7}, {2, 0.6}, {3, 0.5}})}, {"loss", points({{1, 2.0}})}});
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0][0].step, 1);
  EXPECT_EQ(done[0][0].value, 0.7);
  EXPECT_EQ(done[0][1].value, 2.0);
  done = join.add({{"loss", points({{2, 1.9}, {3, 1.8}})}});
  ASSERT_EQ(done.size(), 2u);
  EXPECT_EQ(done[0][0].step, 2);
  EXPECT_EQ(done[1][0].step, 3);
  EXPECT_EQ(done[1][1].value, 1.8);
  EXPECT_TRUE(join.add({}).empty());
}

TEST(StepJoin, AStepBehindAJoinedOneIsDroppedAndWaitingIsBounded) {
  StepJoin join({"a", "b"});
  // Step 4 of "a" never gets its "b" (logged at other steps); step 5 joins: 4 is dropped.
  EXPECT_TRUE(join.add({{"a", points({{4, 1.0}, {5, 2.0}})}}).empty());
  ASSERT_EQ(join.add({{"b", points({{5, 3.0}})}}).size(), 1u);
  EXPECT_TRUE(join.add({{"b", points({{4, 9.0}})}}).empty()) << "step 4 of a was forgotten";
  // A run without one of the inputs (no GANPO: no adv/loss) keeps at most kMaxWaiting steps.
  StepJoin lonely({"adv/loss", "loss"});
  std::vector<MetricPoint> many;
  for (int64_t s = 1; s <= 10000; ++s) many.push_back({s, 1.0, 0, 0});
  EXPECT_TRUE(lonely.add({{"loss", many}}).empty());
  // The oldest were let go: an adv/loss of step 1 finds no partner, one of step 10000 does.
  EXPECT_TRUE(lonely.add({{"adv/loss", points({{1, 0.5}})}}).empty());
  EXPECT_EQ(lonely.add({{"adv/loss", points({{10000, 0.5}})}}).size(), 1u);
}

// One poll may bring a whole run (up to 200,000 rows): every complete step of it is joined, far
// more than the steps kept waiting.
TEST(StepJoin, ABatchOfManyCompleteStepsYieldsEveryStep) {
  StepJoin join({"adv/loss", "loss"});
  std::vector<MetricPoint> adv, loss;
  for (int64_t s = 1; s <= 1000; ++s) {
    adv.push_back({s, 0.5, 0, 0});
    loss.push_back({s, 2.0, 0, 0});
  }
  const auto done = join.add({{"adv/loss", adv}, {"loss", loss}});
  ASSERT_EQ(done.size(), 1000u);
  EXPECT_EQ(done.front()[0].step, 1);
  EXPECT_EQ(done.back()[1].step, 1000);
}

TEST(StepJoin, AStepWrittenAgainTakesItsNewValue) {
  StepJoin join({"a", "b"});
  join.add({{"a", points({{7, 1.0}})}});
  join.add({{"a", points({{7, 2.0}})}});  // a rewound run wrote step 7 again before b came
  const auto done = join.add({{"b", points({{7, 5.0}})}});
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0][0].value, 2.0);
}

TEST(DerivedCurves, ValuesAreTheShareAndTheEmaGaps) {
  std::vector<StepJoin> joins;
  const DerivedContext ctx{0.25};
  MetricBatch batch = {{"adv/loss", points({{3, 0.8}})},
                       {"loss", points({{3, 2.0}})},
                       {"ema/w_ref_chosen", points({{3, 0.9}})},
                       {"ema/w_policy_chosen", points({{3, -0.4}})},
                       {"ema/w_ref_rejected", points({{3, 0.1}})},
                       {"ema/l_ref_rejected", points({{3, 0.6}})},
                       {"ema/l_policy_rejected", points({{3, 0.7}})},
                       {"ema/l_ref_chosen", points({{3, -1.0}})}};
  const MetricBatch out = derive_points(batch, joins, ctx);
  ASSERT_EQ(out.size(), 3u);
  EXPECT_DOUBLE_EQ(out.at(kAdvShareKey).at(0).value, 0.25 * 0.8 / 2.0);
  EXPECT_DOUBLE_EQ(out.at(kEmaGapChosenKey).at(0).value, 0.9 - -0.4);
  EXPECT_DOUBLE_EQ(out.at(kEmaGapRejectedKey).at(0).value, 0.6 - 0.7);
  EXPECT_EQ(out.at(kEmaGapChosenKey).at(0).step, 3);
  EXPECT_EQ(out.at(kEmaGapChosenKey).at(0).wall_time, 1.7e9 + 3);
  // Every derived key has a chart of its own kind; the gaps share one with a line at 0.
  const ChartSpec gap = chart_spec_for_key(kEmaGapChosenKey);
  EXPECT_EQ(gap.group, "Adversarial");
  EXPECT_EQ(gap.id, chart_spec_for_key(kEmaGapRejectedKey).id);
  EXPECT_NE(gap.id, chart_spec_for_key("ema/w_ref_chosen").id);
  EXPECT_TRUE(gap.zero_line);
  EXPECT_FALSE(chart_spec_for_key(kAdvShareKey).zero_line);
}
