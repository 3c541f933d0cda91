// A study's report from stored runs: arms read back from the runs' configs, means and intervals
// over completed seeds only, and GANPO-on minus GANPO-off paired by seed, equal to the stored
// numbers computed by hand.
#include "db/study_report.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include "core/eval/eval_report.h"
#include "db/study_queue.h"

namespace fs = std::filesystem;
using namespace ganpo;

TEST(StudyReport, ArmsMeansAndPairedDifferencesFromStoredRuns) {
  const fs::path dir = fs::temp_directory_path() / ("ganpo_study_report_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  {
    RunStore store = RunStore::open((dir / "w.sqlite").string());
    const std::string text =
        "name = \"r\"\nseeds = [1, 2, 3]\n[base]\n[grid]\n\"data.label_noise\" = [0.0, 0.2]\n\"ganpo.enabled\" = [false, true]\n";
    const int64_t study = create_study(store, "r", text, expand_study(study_from_toml(text, ".", "s"), (dir / "o").string()));
    const auto ids = study_run_ids(store, study);
    ASSERT_EQ(ids.size(), 12u);  // noise 0: off x3, on x3; noise 0.2: off x3, on x3
    // Accuracy: GANPO on is better by 0.05 at noise 0 (every seed), mixed at noise 0.2.
    const double acc[12] = {0.60, 0.62, 0.64, 0.65, 0.67, 0.69, 0.50, 0.55, 0.52, 0.53, 0.51, 0.56};
    for (size_t i = 0; i < ids.size(); ++i) {
      store.set_status(ids[i], RunStatus::completed);
      store.add_eval(ids[i], 10, "eval", "{}",
                     nlohmann::json{{"eval_rewards/accuracies", acc[i]}, {"eval_pairs", 8}}.dump());
      // Logging windows: a slow warm-up first, a short noisy last one; the run's step time is the
      // median of its windows, 0.5.
      // (The last window's 0.9 stood for the run before; the mean of the windows is 0.85.)
      store.append_metrics({{0, ids[i], 2, "step_time_s", 2.0, 0, std::nullopt},
                            {0, ids[i], 4, "step_time_s", 0.4, 0, std::nullopt},
                            {0, ids[i], 6, "step_time_s", 0.5, 0, std::nullopt},
                            {0, ids[i], 8, "step_time_s", 0.45, 0, std::nullopt},
                            {0, ids[i], 10, "step_time_s", 0.9, 0, std::nullopt},
                            {0, ids[i], 10, "loss", 0.3, 0, std::nullopt}});
    }
    store.set_status(ids[11], RunStatus::failed);  // noise 0.2, GANPO on, seed 3 did not finish
    store.database().exec("UPDATE runs SET attempts = 2 WHERE id = " + std::to_string(ids[11]));  // none left

    const StudyReport report = study_report(store, study);
    ASSERT_EQ(report.arms.size(), 4u);
    const ArmResult& off0 = report.arms[0];
    EXPECT_EQ(off0.arm, "data.label_noise=0, ganpo.enabled=false");
    EXPECT_EQ(off0.seeds, (std::vector<int64_t>{1, 2, 3}));
    EXPECT_EQ(off0.metrics.count("loss"), 0u) << "held-out numbers and throughput only";
    EXPECT_NEAR(off0.metrics.at("step_time_s").mean, 0.5, 1e-12);
    EXPECT_NEAR(off0.metrics.at("eval_rewards/accuracies").mean, 0.62, 1e-12);
    EXPECT_EQ(report.arms[3].unfinished, 1);
    EXPECT_EQ(report.arms[3].failed, 1);
    // With an attempt left it is retried: still to run.
    store.database().exec("UPDATE runs SET attempts = 1 WHERE id = " + std::to_string(ids[11]));
    EXPECT_EQ(study_report(store, study).arms[3].failed, 0);
    EXPECT_EQ(report.arms[3].metrics.at("eval_rewards/accuracies").n, 2);

    ASSERT_EQ(report.ganpo_vs_base.size(), 2u);
    const PairedResult& clean = report.ganpo_vs_base[0];
    EXPECT_EQ(clean.baseline, "data.label_noise=0, ganpo.enabled=false");
    const Interval d = clean.differences.at("eval_rewards/accuracies");
    EXPECT_NEAR(d.mean, 0.05, 1e-12);
    EXPECT_TRUE(d.excludes_zero());
    const PairedResult& noisy = report.ganpo_vs_base[1];
    EXPECT_EQ(noisy.seeds, (std::vector<int64_t>{1, 2})) << "paired only where both completed";
    EXPECT_NEAR(noisy.differences.at("eval_rewards/accuracies").mean, (0.53 - 0.50 + 0.51 - 0.55) / 2, 1e-12);
    EXPECT_FALSE(noisy.differences.at("eval_rewards/accuracies").excludes_zero());

    // Headline numbers: accuracy in each of the two pairs (not the step time); all: not eval_pairs
    // either, 8 in every run, so its difference is 0 at every seed and nothing was tested.
    EXPECT_EQ(count_verdicts(report, true).tested, 2);
    EXPECT_EQ(count_verdicts(report, true).called, 1);
    EXPECT_EQ(count_verdicts(report, false).tested, 2);
    const nlohmann::json j = report_to_json(report);
    EXPECT_EQ(j["ganpo_vs_base"][0]["differences"]["eval_rewards/accuracies"]["called"], true);
    EXPECT_EQ(j["state"], "active");
    EXPECT_EQ(j["arms"][3]["running"], 0) << "failed for good: not running";
  }
  fs::remove_all(dir);
}

// A run whose final evaluation has no finite accuracy (it diverged) lacks that number for its seed:
// an earlier checkpoint's evaluation does not stand in for it, and the interval says n.
TEST(StudyReport, OnlyTheNewestEvaluationCounts) {
  const fs::path dir = fs::temp_directory_path() / ("ganpo_study_report_newest_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  {
    RunStore store = RunStore::open((dir / "w.sqlite").string());
    const std::string text = "name = \"r\"\nseeds = [1, 2, 3]\n[base]\n[grid]\n\"ganpo.enabled\" = [false, true]\n";
    const int64_t study = create_study(store, "r", text, expand_study(study_from_toml(text, ".", "s"), (dir / "o").string()));
    const auto ids = study_run_ids(store, study);
    ASSERT_EQ(ids.size(), 6u);  // off x3, on x3
    const double acc[6] = {0.60, 0.62, 0.64, 0.70, 0.71, 0.75};
    for (size_t i = 0; i < ids.size(); ++i) {
      store.set_status(ids[i], RunStatus::completed);
      store.add_eval(ids[i], 10, "eval", "{}", nlohmann::json{{"eval_rewards/accuracies", acc[i]}}.dump());
    }
    // GANPO on, seed 1: its step-20 evaluation diverged.
    store.add_eval(ids[3], 20, "eval", "{}", nlohmann::json{{"eval_rewards/accuracies", nullptr}}.dump());
    const StudyReport report = study_report(store, study);
    ASSERT_EQ(report.arms.size(), 2u);
    const Interval on = report.arms[1].metrics.at("eval_rewards/accuracies");
    EXPECT_EQ(on.n, 2);
    EXPECT_NEAR(on.mean, (0.71 + 0.75) / 2, 1e-12) << "not seed 1's step-10 value";
    ASSERT_EQ(report.ganpo_vs_base.size(), 1u);
    EXPECT_EQ(report.ganpo_vs_base[0].seeds.size(), 3u);
    EXPECT_EQ(report.ganpo_vs_base[0].differences.at("eval_rewards/accuracies").n, 2);
  }
  fs::remove_all(dir);
}

// A share's interval lies within what a share can be: two seeds' accuracies of 0.4 and 0.9 give
// a t interval of 0.65 +- 3.18, cut to [0, 1]; their on-minus-off differences of 0.5 and -0.5 one
// cut to [-1, 1]. Other numbers (the margins) keep theirs whole.
TEST(StudyReport, AShareIntervalStaysWithinItsBounds) {
  const fs::path dir = fs::temp_directory_path() / ("ganpo_study_report_share_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  {
    RunStore store = RunStore::open((dir / "w.sqlite").string());
    const std::string text = "name = \"r\"\nseeds = [1, 2]\n[base]\n[grid]\n\"ganpo.enabled\" = [false, true]\n";
    const int64_t study = create_study(store, "r", text, expand_study(study_from_toml(text, ".", "s"), (dir / "o").string()));
    const auto ids = study_run_ids(store, study);
    ASSERT_EQ(ids.size(), 4u);  // off x2, on x2
    const double acc[4] = {0.4, 0.9, 0.9, 0.4};
    for (size_t i = 0; i < ids.size(); ++i) {
      store.set_status(ids[i], RunStatus::completed);
      store.add_eval(ids[i], 10, "eval", "{}",
                     nlohmann::json{{"eval_rewards/accuracies", acc[i]}, {"eval_rewards/margins", acc[i] * 10}}.dump());
    }
    const StudyReport report = study_report(store, study);
    ASSERT_EQ(report.arms.size(), 2u);
    const Interval a = report.arms[0].metrics.at("eval_rewards/accuracies");
    EXPECT_NEAR(a.mean, 0.65, 1e-12);
    EXPECT_EQ(a.low, 0.0);
    EXPECT_EQ(a.high, 1.0);
    const Interval m = report.arms[0].metrics.at("eval_rewards/margins");
    EXPECT_LT(m.low, 0.0) << "not a share: its interval is not cut";
    ASSERT_EQ(report.ganpo_vs_base.size(), 1u);
    const Interval d = report.ganpo_vs_base[0].differences.at("eval_rewards/accuracies");
    EXPECT_NEAR(d.mean, 0.0, 1e-12);
    EXPECT_EQ(d.low, -1.0);
    EXPECT_EQ(d.high, 1.0);
    EXPECT_FALSE(d.excludes_zero());
  }
  fs::remove_all(dir);
}

// A grid over a key of a table inside a table ([model.lora]) keeps its arms apart.
TEST(StudyReport, ArmsOfANestedKeyStayApart) {
  const fs::path dir = fs::temp_directory_path() / ("ganpo_study_report_nested_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  {
    RunStore store = RunStore::open((dir / "w.sqlite").string());
    const std::string text = "name = \"lora\"\nseeds = [1, 2]\n[base.model]\ncheckpoint = \"base\"\n[grid]\n"
                             "\"model.lora.r\" = [4, 16]\n";
    const int64_t study = create_study(store, "lora", text, expand_study(study_from_toml(text, ".", "s"), (dir / "o").string()));
    const auto ids = study_run_ids(store, study);
    ASSERT_EQ(ids.size(), 4u);
    for (const int64_t id : ids) store.set_status(id, RunStatus::completed);
    const StudyReport report = study_report(store, study);
    ASSERT_EQ(report.arms.size(), 2u);
    EXPECT_EQ(report.arms[0].arm, "model.lora.r=4");
    EXPECT_EQ(report.arms[1].arm, "model.lora.r=16");
    EXPECT_EQ(report.arms[0].seeds, (std::vector<int64_t>{1, 2}));
  }
  fs::remove_all(dir);
}

// Judge evaluations stored as typed reports: per arm the win rate against the reference and the
// response length, and GANPO on against GANPO off head to head on the same prompts, per seed.
TEST(StudyReport, JudgeNumbersAndHeadToHeadWinRatesFromStoredReports) {
  const fs::path dir = fs::temp_directory_path() / ("ganpo_study_report_judge_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  {
    RunStore store = RunStore::open((dir / "w.sqlite").string());
    const std::string text = "name = \"j\"\nseeds = [1, 2]\n[base]\n[grid]\n\"ganpo.enabled\" = [false, true]\n";
    const int64_t study = create_study(store, "j", text, expand_study(study_from_toml(text, ".", "s"), (dir / "o").string()));
    const auto ids = study_run_ids(store, study);
    ASSERT_EQ(ids.size(), 4u);  // off seed 1, off seed 2, on seed 1, on seed 2
    // Per-prompt policy scores on 4 prompts at T=1.0; the reference scores 0.5 everywhere.
    const std::vector<std::vector<double>> policy = {
        {0.5, 0.5, 0.0, 1.0}, {0.0, 0.0, 0.5, 0.5},   // off
        {1.0, 0.5, 0.5, 1.0}, {1.0, 0.0, 0.5, 0.25}}; // on
    for (size_t i = 0; i < ids.size(); ++i) {
      JudgeEvaluation e;
      e.task = "arithmetic";
      e.prompts_digest = digest_of_prompts({"p1", "p2", "p3", "p4"});
      e.buckets = {"short", "medium", "long", "long"};
      JudgeSamples s;
      s.temperature = 1.0;
      s.policy_score = policy[i];
      s.reference_score = {0.5, 0.5, 0.5, 0.5};
      s.policy_length = {3, 3, 3, static_cast<int64_t>(3 + i)};
      s.reference_length = {3, 3, 3, 3};
      e.samples = {s};
      e.summarize();
      EvalReport r = EvalReport::of({{"eval_rewards/accuracies", 0.5}});
      r.judge = e;
      store.set_status(ids[i], RunStatus::completed);
      store.add_eval(ids[i], 10, "eval", "{}", to_json(r).dump());
    }
    const StudyReport report = study_report(store, study);
    ASSERT_EQ(report.arms.size(), 2u);
    // Win rate vs the reference (0.5 everywhere): off {.5,.5,0,1} -> (.5+.5+0+1)/4 = 0.5 and
    // {0,0,.5,.5} -> 0.25; on {1,.5,.5,1} -> 0.75 and {1,0,.5,.25} -> 0.375.
    EXPECT_NEAR(report.arms[0].metrics.at("judge/win_rate@1.0").mean, (0.5 + 0.25) / 2, 1e-12);
    EXPECT_NEAR(report.arms[1].metrics.at("judge/win_rate@1.0").mean, (0.75 + 0.375) / 2, 1e-12);
    EXPECT_NEAR(report.arms[1].metrics.at("judge/policy_length@1.0").mean, ((3 + 3 + 3 + 5) / 4.0 + (3 + 3 + 3 + 6) / 4.0) / 2, 1e-12);
    ASSERT_EQ(report.ganpo_vs_base.size(), 1u);
    const PairedResult& p = report.ganpo_vs_base[0];
    EXPECT_NEAR(p.differences.at("judge/win_rate@1.0").mean, (0.75 - 0.5 + 0.375 - 0.25) / 2, 1e-12);
    // Head to head, seed 1: on {1,.5,.5,1} vs off {.5,.5,0,1}: win, tie, win, tie = 3/4;
    // seed 2: on {1,0,.5,.25} vs off {0,0,.5,.5}: win, tie, tie, loss = 2/4.
    const Interval h = p.win_rate_vs_baseline.at("judge/win_rate_vs_base@1.0");
    EXPECT_EQ(h.n, 2);
    EXPECT_NEAR(h.mean, (0.75 + 0.5) / 2, 1e-12);
    // Two seeds: the t interval's half width is t(0.975, 1) * s / sqrt(2) = 12.7062047362 * 0.125,
    // 0.625 +- 1.588, cut to the [0, 1] a win rate lies in.
    EXPECT_EQ(h.low, 0.0);
    EXPECT_EQ(h.high, 1.0);
    const Interval uncut = mean_interval({0.75, 0.5});
    EXPECT_NEAR(uncut.low, 0.625 - 12.7062047362 * 0.125, 1e-8);
    EXPECT_NEAR(uncut.high, 0.625 + 12.7062047362 * 0.125, 1e-8);
    EXPECT_FALSE(h.excludes(0.5));
    const nlohmann::json j = report_to_json(report);
    EXPECT_EQ(j["ganpo_vs_base"][0]["win_rate_vs_baseline"]["judge/win_rate_vs_base@1.0"]["called"], false);
  }
  fs::remove_all(dir);
}

// Where an arm's runs stand, one text for the CLI, the HTML report and the Study tab.
TEST(StudyReport, AnArmsSeedsSayWhereItsOtherRunsStand) {
  ArmResult a;
  a.seeds = {1, 2};
  EXPECT_EQ(arm_seeds_text(a, "active"), "2");
  a.unfinished = 4;
  a.running = 1;
  a.failed = 1;
  EXPECT_EQ(arm_seeds_text(a, "active"), "2 (1 running, 2 queued, 1 failed or stopped)");
  EXPECT_EQ(arm_seeds_text(a, "paused"), "2 (1 running, 2 queued: study paused, 1 failed or stopped)");
  EXPECT_EQ(arm_seeds_text(a, "cancelled"), "2 (1 running, 2 not run: study cancelled, 1 failed or stopped)");
  a.blocked = 2;  // queued behind a stage that failed: they never start, whatever the state
  EXPECT_EQ(arm_seeds_text(a, "active"), "2 (1 running, 2 blocked by a failed or stopped stage, 1 failed or stopped)");
}
