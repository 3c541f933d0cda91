// The study queue on a real workspace file: what create_study stores, the startable rule, the
// atomic claim (paused studies, other drivers, attempts), blocked arms, and a shared stage that
// cannot be deleted while arms wait for it.
#include "db/study_queue.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include <nlohmann/json.hpp>

#include "db/run_service.h"

namespace fs = std::filesystem;
using namespace ganpo;

class StudyQueueStore : public ::testing::Test {
protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("ganpo_study_queue_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  // One stage and two arms (seed 1).
  int64_t make_study(RunStore& store) {
    const StudySpec spec = study_from_toml("seeds = [1]\n[base]\n[grid]\n\"ganpo.enabled\" = [false, true]\n"
                                           "[[stage]]\nname = \"sft\"\nset = { stage = \"sft\" }\n",
                                           ".", "s.toml");
    return create_study(store, "s", "", expand_study(spec, (dir_ / "out").string()));
  }
  // Two arms x two seeds, no stage: the first run training, the second claimed by a driver for
  // a worker still starting (this process's pid for both), the others queued.
  int64_t make_running_study(RunStore& store) {
    const StudySpec spec = study_from_toml("seeds = [1, 2]\n[base]\n[grid]\n\"ganpo.enabled\" = [false, true]\n",
                                           ".", "s.toml");
    const int64_t study = create_study(store, "s", "", expand_study(spec, (dir_ / "out").string()));
    const auto ids = study_run_ids(store, study);
    EXPECT_EQ(ids.size(), 4u);
    const int64_t me = ::getpid();
    EXPECT_TRUE(claim_study_run(store, ids[0], me));
    EXPECT_TRUE(store.claim_run(ids[0], me));
    store.set_status(ids[0], RunStatus::running);
    EXPECT_TRUE(claim_study_run(store, ids[1], me));
    return study;
  }
  fs::path dir_;
};

TEST_F(StudyQueueStore, StagesFirstThenArmsThatWaitForThem) {
  RunStore store = RunStore::open((dir_ / "w.sqlite").string());
  const int64_t study = make_study(store);
  const auto ids = study_run_ids(store, study);
  ASSERT_EQ(ids.size(), 3u);
  EXPECT_EQ(next_study_run(store, study), ids[0]) << "arms wait for the stage";
  EXPECT_EQ(study_counts(store, study).queued, 3);

  // A paused study: no claim.
  set_study_state(store, study, StudyState::paused);
  EXPECT_FALSE(claim_study_run(store, ids[0], ::getpid()));
  set_study_state(store, study, StudyState::active);
  ASSERT_TRUE(claim_study_run(store, ids[0], ::getpid()));
  EXPECT_FALSE(claim_study_run(store, ids[0], ::getpid())) << "a claimed run is not startable";
  EXPECT_TRUE(store.claim_run(ids[0], ::getpid())) << "the worker's own claim finds its pid";
  EXPECT_FALSE(store.claim_run(ids[0], ::getpid() + 1)) << "any other claimant is refused";
  EXPECT_EQ(study_counts(store, study).attached, 1);
  EXPECT_FALSE(next_study_run(store, study).has_value()) << "the arms still wait";

  // The stage cannot be deleted while arms wait for it.
  store.set_status(ids[0], RunStatus::failed);
  const RemoveRunResult r = RunService(store).remove(ids[0], false);
  EXPECT_FALSE(r.removed);
  EXPECT_NE(r.refused.find("shared stage"), std::string::npos) << r.refused;

  // Failed once: startable again (the retry); failed twice: the arms are blocked.
  EXPECT_EQ(next_study_run(store, study), ids[0]);
  ASSERT_TRUE(claim_study_run(store, ids[0], ::getpid()));
  store.set_status(ids[0], RunStatus::failed);
  EXPECT_FALSE(next_study_run(store, study).has_value());
  EXPECT_EQ(study_counts(store, study).blocked, 2);

  // Completed: the arms are next, in order.
  store.set_status(ids[0], RunStatus::completed);
  EXPECT_EQ(next_study_run(store, study), ids[1]);
  EXPECT_EQ(study_counts(store, study).completed, 1);
}

// Two stages deep: a stopped first stage blocks the second and every arm after it; resuming the
// study puts the stopped run back in the queue (it continues from its last checkpoint).
TEST_F(StudyQueueStore, BlockedRunsCountEveryStageDownAndResumeRequeuesStoppedRuns) {
  RunStore store = RunStore::open((dir_ / "w.sqlite").string());
  const StudySpec spec = study_from_toml("seeds = [1, 2]\n[base]\n[grid]\n\"ganpo.enabled\" = [false, true]\n"
                                         "[[stage]]\nname = \"sft\"\nset = { stage = \"sft\" }\n"
                                         "[[stage]]\nname = \"sft2\"\nset = { stage = \"sft\" }\n",
                                         ".", "s.toml");
  const int64_t study = create_study(store, "s", "", expand_study(spec, (dir_ / "out").string()));
  const auto ids = study_run_ids(store, study);
  ASSERT_EQ(ids.size(), 2u + 4u);
  ASSERT_TRUE(claim_study_run(store, ids[0], ::getpid()));
  ASSERT_TRUE(store.claim_run(ids[0], ::getpid()));
  set_study_state(store, study, StudyState::cancelled);
  store.set_status(ids[0], RunStatus::stopped);
  StudyCounts c = study_counts(store, study);
  EXPECT_EQ(c.stopped, 1);
  EXPECT_EQ(c.blocked, 5) << "the second stage and the four arms after it";
  EXPECT_FALSE(next_study_run(store, study).has_value());

  set_study_state(store, study, StudyState::active);
  c = study_counts(store, study);
  EXPECT_EQ(c.stopped, 0);
  EXPECT_EQ(c.blocked, 0);
  EXPECT_EQ(next_study_run(store, study), ids[0]) << "the stopped stage is started again";

  // The first stage deleted (its dependents were stopped, so the delete was allowed): the
  // requeued runs after it can never start, and are counted blocked, not queued.
  store.delete_run(ids[0]);
  EXPECT_EQ(study_counts(store, study).blocked, 5);
  EXPECT_FALSE(next_study_run(store, study).has_value());
}

// A cancel asks each run a worker holds to stop through the store, so it needs no live driver:
// a training run gets the stop, and so does a run a driver claimed whose worker has not yet taken
// it (its own claim keeps the stop); queued runs with no worker get nothing, and after a resume a
// claim clears nothing it should not.
TEST_F(StudyQueueStore, CancelAsksEveryAttachedRunToStopWithoutADriver) {
  RunStore store = RunStore::open((dir_ / "w.sqlite").string());
  const int64_t study = make_running_study(store);
  const auto ids = study_run_ids(store, study);
  const int64_t me = ::getpid();

  set_study_state(store, study, StudyState::cancelled);
  EXPECT_EQ(store.take_control(ids[0]), "stop") << "the training run is asked to stop";
  store.set_control(ids[3], "stop");
  ASSERT_TRUE(store.claim_run(ids[3], me + 1));
  EXPECT_EQ(store.take_control(ids[3]), "") << "a claim by hand (runs resume) starts clean";
  EXPECT_EQ(store.take_control(ids[2]), "") << "a queued run with no worker has nothing to stop";
  ASSERT_TRUE(store.claim_run(ids[1], me)) << "the started worker takes its run";
  EXPECT_EQ(store.take_control(ids[1]), "stop") << "and finds the cancel's stop, so it trains no step";
  EXPECT_FALSE(claim_study_run(store, ids[2], me)) << "a cancelled study starts nothing";

  // Resumed: a new claim starts clean.
  store.set_status(ids[1], RunStatus::stopped);
  set_study_state(store, study, StudyState::active);
  ASSERT_TRUE(claim_study_run(store, ids[1], me));
  store.set_control(ids[1], "sample");
  ASSERT_TRUE(store.claim_run(ids[1], me));
  EXPECT_EQ(store.take_control(ids[1]), "") << "an active study's claim clears what was left";
}

// `study resume` right after `study cancel`, before the workers have polled their control: the
// cancel's stop is taken back (the run trains on, instead of stopping and staying stopped in an
// active study, which requeues only the runs already stopped), and a driver's round that read the
// study as cancelled before the resume sends no stop after it.
TEST_F(StudyQueueStore, AResumeBeforeTheWorkersTakeTheCancelsStopKeepsTheirRunsGoing) {
  RunStore store = RunStore::open((dir_ / "w.sqlite").string());
  const int64_t study = make_running_study(store);
  const auto ids = study_run_ids(store, study);
  const int64_t me = ::getpid();

  set_study_state(store, study, StudyState::cancelled);
  ASSERT_EQ(store.run(ids[0])->control, "stop");
  set_study_state(store, study, StudyState::active);
  EXPECT_EQ(store.take_control(ids[0]), "") << "the training run is no longer asked to stop";
  ASSERT_TRUE(store.claim_run(ids[1], me));
  EXPECT_EQ(store.take_control(ids[1]), "") << "nor is the one whose worker was starting";

  stop_runs_of_cancelled_study(store, study);  // a driver's round that saw the cancel
  EXPECT_EQ(store.take_control(ids[0]), "") << "sends nothing once the study is active again";

  set_study_state(store, study, StudyState::cancelled);
  ASSERT_EQ(store.take_control(ids[0]), "stop");  // the worker took the cancel's stop ...
  stop_runs_of_cancelled_study(store, study);
  EXPECT_EQ(store.take_control(ids[0]), "stop") << "... and a cancelled study's driver sends it again";
  EXPECT_EQ(store.take_control(ids[2]), "") << "a queued run with no worker has nothing to stop";

  // A worker that took the stop before the resume still stops: the next resume queues its run.
  store.set_status(ids[0], RunStatus::stopped);
  set_study_state(store, study, StudyState::active);
  EXPECT_EQ(store.run(ids[0])->status, RunStatus::queued);
}

// A study queued again into the same folders (its old runs still in the workspace, the folder
// deleted): its runs keep the folders the stages after them point into, no "-2".
TEST_F(StudyQueueStore, AStudyQueuedAgainKeepsItsFoldersForItsStages) {
  RunStore store = RunStore::open((dir_ / "w.sqlite").string());
  const int64_t first = make_study(store), second = make_study(store);
  const auto a = study_run_ids(store, first), b = study_run_ids(store, second);
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i)
    EXPECT_EQ(nlohmann::json::parse(store.run(a[i])->config_json)["output_dir"],
              nlohmann::json::parse(store.run(b[i])->config_json)["output_dir"]) << i;
}
