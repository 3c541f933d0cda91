// The evaluation report: a round trip through the stored JSON, summary rows worked out by hand
// from per-prompt scores, older stored formats read, garbage read as nothing, and win rates of
// one run's policy over another's prompt by prompt.
#include "core/eval/eval_report.h"

#include <gtest/gtest.h>

#include <cmath>

#include <nlohmann/json.hpp>

namespace ganpo {
namespace {

JudgeEvaluation judged(std::vector<double> policy, std::vector<double> reference) {
  JudgeEvaluation e;
  e.task = "arithmetic";
  e.judge = "built-in";
  e.prompts_digest = digest_of_prompts({"a", "b", "c", "d"});
  e.buckets = {"short", "short", "medium", "long"};
  e.max_new_tokens = 32;
  e.seed = 7;
  e.top_p = 0.9;
  e.top_k = 0;
  JudgeSamples s;
  s.temperature = 0.7;
  s.policy_score = std::move(policy);
  s.reference_score = std::move(reference);
  s.policy_length = {4, 6, 8, 10};
  s.reference_length = {2, 2, 2, 2};
  e.samples.push_back(s);
  e.summarize();
  return e;
}

TEST(EvalReport, SummaryRowsFromPerPromptScoresByHand) {
  const auto e = judged({1.0, 0.5, 0.25, 0.0}, {0.5, 0.5, 0.5, 0.5});
  ASSERT_EQ(e.rows.size(), 4u);  // all, short, medium, long
  const auto& all = e.rows[0];
  EXPECT_EQ(all.bucket, "all");
  EXPECT_EQ(all.prompts, 4);
  EXPECT_DOUBLE_EQ(all.policy_score, 1.75 / 4);
  EXPECT_DOUBLE_EQ(all.reference_score, 0.5);
  EXPECT_DOUBLE_EQ(all.win_rate, (1 + 0.5 + 0 + 0) / 4);  // a win, a tie, two losses
  EXPECT_DOUBLE_EQ(all.policy_length, 7.0);
  EXPECT_DOUBLE_EQ(all.reference_length, 2.0);
  EXPECT_EQ(e.rows[1].bucket, "short");
  EXPECT_EQ(e.rows[1].prompts, 2);
  EXPECT_DOUBLE_EQ(e.rows[1].win_rate, 0.75);
  EXPECT_DOUBLE_EQ(e.rows[1].policy_length, 5.0);
  EXPECT_EQ(e.rows[3].bucket, "long");
  EXPECT_DOUBLE_EQ(e.rows[3].win_rate, 0.0);
}

TEST(EvalReport, RoundTripsThroughItsJson) {
  EvalReport r;
  r.preference = {{"eval_loss", 0.5}, {"eval_rewards/accuracies", 0.75}};
  r.skipped_lines = 2;
  r.judge = judged({1.0, 0.5, 0.25, 0.0}, {0.5, 0.5, 0.5, 0.5});
  const EvalReport back = eval_report_from_text(to_json(r).dump());
  EXPECT_EQ(back.preference, r.preference);
  EXPECT_EQ(back.skipped_lines, 2);
  ASSERT_TRUE(back.judge);
  EXPECT_EQ(back.judge->task, "arithmetic");
  EXPECT_EQ(back.judge->prompts_digest, r.judge->prompts_digest);
  EXPECT_EQ(back.judge->buckets, r.judge->buckets);
  EXPECT_EQ(back.judge->seed, 7u);
  EXPECT_EQ(back.judge->top_p, r.judge->top_p);
  EXPECT_EQ(back.judge->top_k, r.judge->top_k);
  ASSERT_TRUE(back.judge->top_p.has_value());
  EXPECT_DOUBLE_EQ(*back.judge->top_p, 0.9);
  ASSERT_EQ(back.judge->samples.size(), 1u);
  EXPECT_EQ(back.judge->samples[0].policy_score, r.judge->samples[0].policy_score);
  EXPECT_EQ(back.judge->samples[0].policy_length, r.judge->samples[0].policy_length);
  EXPECT_EQ(to_json(back), to_json(r));
  const auto flat = flatten(back);
  EXPECT_DOUBLE_EQ(flat.at("judge/win_rate@0.7"), 0.375);
  EXPECT_DOUBLE_EQ(flat.at("judge/policy_length@0.7"), 7.0);
  EXPECT_DOUBLE_EQ(flat.at("judge/win_rate@0.7/short"), 0.75);
  EXPECT_DOUBLE_EQ(flat.at("eval_loss"), 0.5);
  // A failed judge is kept with its message.
  EvalReport failed = EvalReport::of({{"eval_loss", 1.0}});
  failed.judge_error = "the judge exited with status 3";
  EXPECT_EQ(eval_report_from_text(to_json(failed).dump()).judge_error, failed.judge_error);
  // A judge's message cut inside a character is stored with U+FFFD, not an exception.
  failed.judge_error = "garbage \xE2\x82";
  const std::string text = to_json_text(failed);
  EXPECT_EQ(eval_report_from_text(text).judge_error, "garbage \xEF\xBF\xBD");
}

TEST(EvalReport, ReadsOlderRowsAndNothingFromGarbage) {
  // The trainer's flat rows.
  auto flat = eval_report_from_text(R"({"eval_loss": 0.4, "eval_rewards/margins": 1.5, "note": 3})");
  EXPECT_EQ(flat.preference, (std::map<std::string, double>{{"eval_loss", 0.4}, {"eval_rewards/margins", 1.5}}));
  EXPECT_FALSE(flat.judge);
  // `ganpo eval` reports with summary rows only.
  auto rows = eval_report_from_text(
      R"({"preference": {"eval_loss": 0.3}, "skipped_lines": 1,
          "judge": [{"temperature": 1.0, "bucket": "all", "prompts": 9, "policy_score": 0.6,
                     "reference_score": 0.5, "win_rate": 0.55}]})");
  EXPECT_DOUBLE_EQ(rows.preference.at("eval_loss"), 0.3);
  ASSERT_TRUE(rows.judge);
  ASSERT_EQ(rows.judge->rows.size(), 1u);
  EXPECT_DOUBLE_EQ(rows.judge->rows[0].win_rate, 0.55);
  EXPECT_TRUE(rows.judge->samples.empty());
  EXPECT_DOUBLE_EQ(flatten(rows).at("judge/win_rate@1.0"), 0.55);
  // A bare array of rows.
  EXPECT_TRUE(eval_report_from_text(R"([{"temperature": 0.7, "win_rate": 0.5}])").judge);
  for (const char* garbage : {"", "nonsense", "[1,2]", "null", R"({"judge": 5})", R"({"judge": {"samples": 3}})",
                              R"({"preference": [1], "judge": {"samples": [{"temperature": "hot"}]}})"})
    EXPECT_TRUE(eval_report_from_text(garbage).empty()) << garbage;
  // Per-prompt scores that do not pair up with the prompts are dropped, not misread.
  auto bad = nlohmann::json::parse(to_json(EvalReport{{}, 0, judged({1, 1, 1, 1}, {0, 0, 0, 0}), ""}).dump());
  bad["judge"]["samples"][0]["policy_score"].erase(0);
  EXPECT_FALSE(eval_report_from_json(bad).judge && !eval_report_from_json(bad).judge->samples.empty());
}

TEST(EvalReport, PolicyWinRateComparesTwoRunsPromptByPrompt) {
  const auto a = judged({1.0, 0.5, 0.25, 0.0}, {0, 0, 0, 0});
  const auto b = judged({0.5, 0.5, 0.5, 0.5}, {0, 0, 0, 0});
  EXPECT_DOUBLE_EQ(*policy_win_rate(a, b, 0.7), (1 + 0.5 + 0 + 0) / 4);
  EXPECT_DOUBLE_EQ(*policy_win_rate(b, a, 0.7), (0 + 0.5 + 1 + 1) / 4);
  EXPECT_FALSE(policy_win_rate(a, b, 1.0));  // not evaluated at this temperature
  auto other = b;
  other.prompts_digest = digest_of_prompts({"a", "b", "c", "e"});
  EXPECT_FALSE(policy_win_rate(a, other, 0.7));  // other prompts
  auto nucleus = b;
  nucleus.top_p = 0.5;
  EXPECT_FALSE(policy_win_rate(a, nucleus, 0.7));  // drawn with another top_p
  auto older = b;
  older.top_p.reset();
  older.top_k.reset();
  EXPECT_TRUE(policy_win_rate(a, older, 0.7)) << "a report that did not record them compares";
  EXPECT_NE(digest_of_prompts({"ab", "c"}), digest_of_prompts({"a", "bc"}));
  EXPECT_EQ(read_number("0.25"), 0.25);
  EXPECT_EQ(read_number("-3"), -3.0);
  for (const char* bad : {"", "0,5", "1.0x", "hot", " 1"}) EXPECT_FALSE(read_number(bad)) << bad;
  EXPECT_EQ(temperature_label(1.0), "1.0");
  EXPECT_EQ(temperature_label(0.5), "0.5");
  EXPECT_EQ(temperature_label(1.3), "1.3");
}

}  // namespace
}  // namespace ganpo
