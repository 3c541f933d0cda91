// Study queues end to end: `ganpo study create` queues a study's runs in a real workspace and
// `ganpo study run` drivers (real processes, starting real workers) run them: two drivers at
// once never start a run twice, a driver killed mid-study loses nothing and a new one finishes
// it, and a failing shared stage is retried once and then blocks the arms that start from it.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

#include "db/run_store.h"
#include "db/study_queue.h"
#include "tests/support/cli_runner.h"

namespace fs = std::filesystem;
using namespace ganpo;
using ganpo::test::run_cli;
using ganpo::test::spawn_cli;
using ganpo::test::wait_for;

namespace {

const bool kPrivateWorkspace = ganpo::test::use_private_workspace();

// A stage and two arms x two seeds of a few steps on the tiny model.
std::string small_study(const std::string& stage_set = "{ stage = \"sft\" }") {
  return R"(name = "queue"
seeds = [1, 2]
[base]
[base.model]
preset = "tiny"
[base.data]
builtin_train_size = 32
builtin_eval_size = 8
max_length = 160
max_prompt_length = 100
[base.train]
max_steps = 2
per_device_train_batch_size = 4
[base.sampling]
num_prompts = 2
max_new_tokens = 8
[base.eval]
num_prompts = 6
temperatures = "1.0"
[grid]
"ganpo.enabled" = [false, true]
[[stage]]
name = "sft"
set = )" + stage_set + "\n";
}

class StudyQueue : public ::testing::Test {
protected:
  void SetUp() override {
    dir_ = ganpo::test::fresh_test_dir("ganpo-study-queue");
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string db() const { return (dir_ / "w.sqlite").string(); }
  int64_t create(const std::string& text) {
    std::ofstream(dir_ / "study.toml") << text;
    const auto r = run_cli("study create " + (dir_ / "study.toml").string() + " --db " + db());
    EXPECT_EQ(r.exit_code, 0) << r.output;
    return 1;
  }
  // Every run's attempts and how often its worker reported "running".
  void expect_each_run_started_once() {
    RunStore store = RunStore::open(db());
    for (int64_t id : study_run_ids(store, 1)) {
      sql::Statement s(store.database(),
                       "SELECT attempts, (SELECT COUNT(*) FROM events e WHERE e.run_id = runs.id AND "
                       "e.text LIKE 'status: running%') FROM runs WHERE id = ?");
      s.bind(1, id);
      ASSERT_TRUE(s.step());
      EXPECT_EQ(s.col_int(0), 1) << "run " << id << " was claimed once";
      EXPECT_EQ(s.col_int(1), 1) << "run " << id << " started training once";
      EXPECT_EQ(store.run(id)->status, RunStatus::completed) << "run " << id;
    }
  }
  fs::path dir_;
};

TEST_F(StudyQueue, TwoDriversAtOnceStartEveryRunExactlyOnce) {
  create(small_study());
  test::CliOutcome a, b;
  std::thread first([&] { a = run_cli("study run 1 --jobs 2 --db " + db()); });
  std::thread second([&] { b = run_cli("study run 1 --jobs 2 --db " + db()); });
  first.join();
  second.join();
  EXPECT_EQ(a.exit_code, 0) << a.output;
  EXPECT_EQ(b.exit_code, 0) << b.output;
  EXPECT_NE(a.output.find("5 runs: 5 completed"), std::string::npos) << a.output;
  expect_each_run_started_once();
  // The arms started from the shared stage's final/.
  RunStore store = RunStore::open(db());
  const auto arm = store.run(5);
  ASSERT_TRUE(arm.has_value());
  EXPECT_NE(arm->config_json.find("stage-sft/final"), std::string::npos) << arm->config_json;

  // The report reads the arms back: two arms of two seeds, GANPO on paired with off.
  const auto report = run_cli("study report 1 --json --db " + db());
  ASSERT_EQ(report.exit_code, 0) << report.output;
  const auto j = nlohmann::json::parse(report.output);
  ASSERT_EQ(j["arms"].size(), 2u);
  EXPECT_EQ(j["arms"][1]["arm"], "ganpo.enabled=true");
  EXPECT_EQ(j["arms"][1]["seeds"].size(), 2u);
  EXPECT_TRUE(j["arms"][0]["metrics"].contains("eval_rewards/accuracies")) << report.output;
  ASSERT_EQ(j["ganpo_vs_base"].size(), 1u);
  EXPECT_EQ(j["ganpo_vs_base"][0]["seeds"].size(), 2u);
}

TEST_F(StudyQueue, ADriverKilledMidStudyIsFinishedByANewOne) {
  create(small_study());
  const pid_t driver = spawn_cli({"study", "run", "1", "--db", db()}, dir_ / "driver.log");
  ASSERT_TRUE(wait_for(
      [&] {
        RunStore store = RunStore::open(db());
        return store.run(2) && store.run(2)->status != RunStatus::queued;  // past the shared stage
      },
      "the first driver to start an arm"));
  ::kill(driver, SIGKILL);
  ::waitpid(driver, nullptr, 0);
  const auto r = run_cli("study run 1 --db " + db());
  EXPECT_EQ(r.exit_code, 0) << r.output;
  expect_each_run_started_once();
  const auto status = run_cli("study status 1 --db " + db());
  EXPECT_NE(status.output.find("5 runs: 5 completed"), std::string::npos) << status.output;
}

TEST_F(StudyQueue, AFailingStageIsRetriedOnceThenBlocksItsArms) {
  // The stage reads a training file that is not there: it fails at start, every time.
  create(small_study("{ stage = \"sft\", \"data.builtin\" = \"\", \"data.train\" = \"" + (dir_ / "missing.jsonl").string() +
                     "\" }"));
  const auto r = run_cli("study run 1 --db " + db());
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("4 blocked by a failed or stopped stage"), std::string::npos) << r.output;
  RunStore store = RunStore::open(db());
  EXPECT_EQ(store.run(1)->status, RunStatus::failed);
  sql::Statement s(store.database(), "SELECT attempts FROM runs WHERE id = 1");
  ASSERT_TRUE(s.step());
  EXPECT_EQ(s.col_int(0), kStudyMaxAttempts) << "retried once";
  for (int64_t id = 2; id <= 5; ++id) EXPECT_EQ(store.run(id)->status, RunStatus::queued) << "never started";
  // The report's arms say so too, not "queued".
  const auto report = run_cli("study report 1 --db " + db());
  EXPECT_NE(report.output.find("seeds 0 (2 blocked by a failed or stopped stage)"), std::string::npos) << report.output;
  EXPECT_EQ(report.output.find("queued"), std::string::npos) << report.output;
}

// A driver killed while its stage trains leaves the worker training (workers have sessions of
// their own); `ganpo study cancel` stops it with no driver alive to pass the stop on.
TEST_F(StudyQueue, ACancelStopsARunWhoseDriverIsGone) {
  create(small_study("{ stage = \"sft\", \"train.max_steps\" = 100000 }"));
  const pid_t driver = spawn_cli({"study", "run", "1", "--db", db()}, dir_ / "driver.log");
  const auto stage = [&] { return RunStore::open(db()).run(1); };
  ASSERT_TRUE(wait_for([&] { const auto r = stage(); return r && r->status == RunStatus::running; },
                       "the driver to start the stage"));
  ::kill(driver, SIGKILL);
  ::waitpid(driver, nullptr, 0);
  const auto r = run_cli("study cancel 1 --db " + db());
  EXPECT_EQ(r.exit_code, 0) << r.output;
  const bool stopped = wait_for([&] { const auto s = stage(); return s && s->status == RunStatus::stopped; },
                                "the stage's worker to stop");
  if (!stopped)
    if (const auto s = stage(); s && s->worker_pid) ::kill(static_cast<pid_t>(*s->worker_pid), SIGKILL);
  const auto status = run_cli("study status 1 --db " + db());
  EXPECT_NE(status.output.find("1 stopped"), std::string::npos) << status.output;
}

// A stopped run of an active study (a person stopped it, or its worker took a cancel's stop and
// was still saving when a resume came) waits for the next resume: the status says how.
TEST_F(StudyQueue, StoppedRunsOfAnActiveStudyNameTheResumeThatContinuesThem) {
  create(small_study("{ stage = \"sft\" }"));
  {
    RunStore store = RunStore::open(db());
    store.set_status(1, RunStatus::stopped);
  }
  const auto status = run_cli("study status 1 --db " + db());
  EXPECT_NE(status.output.find("1 stopped"), std::string::npos) << status.output;
  EXPECT_NE(status.output.find("the stopped runs go back in the queue with: ganpo study resume 1 --db " + db() +
                               ", and continue from their checkpoints when the queue runs (ganpo study run 1 --db " + db()),
            std::string::npos)
      << status.output;
  ASSERT_EQ(run_cli("study resume 1 --db " + db()).exit_code, 0);
  EXPECT_EQ(RunStore::open(db()).run(1)->status, RunStatus::queued);
  EXPECT_EQ(run_cli("study status 1 --db " + db()).output.find("continue from their checkpoints"), std::string::npos);
}

// A run config with a [[pipeline]] trains as a study of one arm: `ganpo train --config` queues it,
// trains the stage and then the config from the stage's final weights, in this one process.
TEST_F(StudyQueue, ATrainedPipelineIsOneRunPerStageInOrder) {
  std::ofstream(dir_ / "pipeline.toml") << R"(name = "chain"
[model]
preset = "tiny"
[data]
builtin_train_size = 32
builtin_eval_size = 8
max_length = 160
max_prompt_length = 100
[train]
max_steps = 2
per_device_train_batch_size = 4
[sampling]
num_prompts = 2
max_new_tokens = 8
[eval]
num_prompts = 6
temperatures = "1.0"
[[pipeline]]
name = "sft"
set = { stage = "sft", "train.max_steps" = 3, "ganpo.enabled" = false }
)";
  const auto r = run_cli("train --config " + (dir_ / "pipeline.toml").string() + " --db " + db());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("pipeline 'chain': 2 runs queued as study 1"), std::string::npos) << r.output;
  RunStore store = RunStore::open(db());
  ASSERT_EQ(study_run_ids(store, 1), (std::vector<int64_t>{1, 2}));
  const auto sft = store.run(1), pref = store.run(2);
  EXPECT_EQ(sft->status, RunStatus::completed);
  EXPECT_EQ(sft->stage, "sft");
  EXPECT_EQ(sft->last_step, 3);
  EXPECT_EQ(pref->status, RunStatus::completed);
  EXPECT_EQ(pref->stage, "preference");
  EXPECT_EQ(pref->name, "chain");
  EXPECT_LT(*sft->finished_at, *pref->started_at) << "the stage first";
  const auto config = nlohmann::json::parse(pref->config_json);
  EXPECT_EQ(config["model"]["checkpoint"], (dir_ / "studies" / "chain" / "stage-sft" / "final").string());
  EXPECT_FALSE(config.contains("pipeline")) << "each stored run is one stage";
  EXPECT_TRUE(fs::exists(dir_ / "studies" / "chain" / "base__seed-42" / "final"));

  // Files only: the same chain under the config's output folder.
  const auto files = run_cli("train --no-db --config " + (dir_ / "pipeline.toml").string() + " --set output_dir=" +
                             (dir_ / "files").string());
  ASSERT_EQ(files.exit_code, 0) << files.output;
  EXPECT_TRUE(fs::exists(dir_ / "files" / "stage-sft" / "final"));
  EXPECT_TRUE(fs::exists(dir_ / "files" / "base__seed-42" / "final"));
}

}  // namespace
