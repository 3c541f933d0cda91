// The duration estimate's speed, measured on a real workspace's finished runs: the median of
// run_work() over wall time for completed runs only, the built-in figure when there are none,
// and queue_study storing a self-contained study that reads back as the same runs.
#include "db/run_speed.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include "core/error.h"
#include "core/run_work.h"
#include "db/run_service.h"
#include "db/study_queue.h"

namespace fs = std::filesystem;
using namespace ganpo;

namespace {

class RunSpeed : public ::testing::Test {
protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("ganpo_run_speed_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string db() const { return (dir_ / "w.sqlite").string(); }
  // A run with this config that ran from t0 to t1 and ended with `status`.
  static void add_run(RunStore& store, const RunConfig& c, double t0, double t1, const char* status) {
    const int64_t id = RunService(store).create(c);
    // One span of a worker, t0 to t1, as the store records it.
    sql::Statement s(store.database(),
                     "UPDATE runs SET status = ?1, started_at = ?2, span_started_at = ?2, finished_at = ?3 WHERE id = ?4");
    s.bind(1, std::string(status)).bind(2, t0).bind(3, t1).bind(4, id).run();
  }
  fs::path dir_;
};

RunConfig small(int64_t steps, const char* stage = "preference") {
  RunConfig c;
  c.stage = stage;
  c.train.max_steps = steps;
  c.train.per_device_train_batch_size = 4;
  return c;
}

}  // namespace

TEST(RunWork, ScalesWithStepsAndKnowsWhatEachStageComputes) {
  const RunWork sft = run_work(small(100, "sft")), pref = run_work(small(100)), twice = run_work(small(200));
  EXPECT_EQ(sft.steps, 100);
  EXPECT_GT(pref.train, sft.train) << "chosen and rejected, the reference, the critics";
  EXPECT_DOUBLE_EQ(twice.train, 2 * pref.train);
  EXPECT_EQ(sft.eval, 0) << "no judge evaluation after SFT";
  EXPECT_GT(pref.eval, 0);
  RunConfig off = small(100);
  off.ganpo.enabled = false;
  EXPECT_LT(run_work(off).train, pref.train);
  RunConfig epochs = small(-1);
  epochs.data.builtin = "lists";
  epochs.data.builtin_train_size = 400;
  epochs.train.num_train_epochs = 2;
  EXPECT_EQ(run_work(epochs).steps, 200) << "2 epochs of 400 examples in batches of 4";
}

TEST_F(RunSpeed, TheMedianOfFinishedRunsOrTheBuiltInFigure) {
  RunStore store = RunStore::open(db());
  WorkSpeed none = measured_work_speed(store);
  EXPECT_EQ(none.runs, 0);
  EXPECT_DOUBLE_EQ(none.work_per_second, reference_work_per_second());
  EXPECT_NE(estimate_duration({small(10)}, none).basis.find("built-in"), std::string::npos);

  const double w = run_work(small(100)).total();
  add_run(store, small(100), 1000, 1010, "completed");  // w / 10
  add_run(store, small(100), 2000, 2020, "completed");  // w / 20
  add_run(store, small(100), 3000, 3040, "completed");  // w / 40
  add_run(store, small(100), 4000, 4001, "failed");     // not a finished run
  add_run(store, small(100), 5000, 5001, "stopped");
  add_run(store, small(100), 6000, 9000, "completed");  // started twice: a second span, maybe another speed
  // A run stopped for an hour between its two spans: its speed is its work over the 10 s held.
  add_run(store, small(100), 20000, 20005, "completed");
  sql::Statement resumed(store.database(), "UPDATE runs SET active_seconds = 5, started_at = 16400 WHERE id = 7");
  resumed.run();
  sql::Statement twice(store.database(), "UPDATE runs SET attempts = 2 WHERE id = 6");
  twice.run();
  const WorkSpeed speed = measured_work_speed(store);
  EXPECT_EQ(speed.runs, 4);
  EXPECT_DOUBLE_EQ(speed.work_per_second, w / 10) << "the median of w / 10, w / 10 (not w / 3605), w / 20, w / 40";
  const DurationEstimate e = estimate_duration({small(100), small(200)}, speed);
  EXPECT_NEAR(e.seconds, 10 + 10 * run_work(small(200)).total() / w, 1e-6);
  EXPECT_NE(e.basis.find("4 finished run(s)"), std::string::npos) << e.basis;
}

TEST_F(RunSpeed, QueuedStudiesAreStoredSelfContainedAndInAFolderOfTheirOwn) {
  RunStore store = RunStore::open(db());
  RunConfig base = small(3);
  base.name = "chain";
  base.pipeline = {{"sft", {"stage=sft"}}};
  const QueuedStudy a = queue_study(store, db(), study_of_pipeline(base));
  const QueuedStudy b = queue_study(store, db(), study_of_pipeline(base));
  EXPECT_EQ(a.folder, (dir_ / "studies" / "chain").string());
  EXPECT_EQ(b.folder, (dir_ / "studies" / "chain-2").string()) << "a second study of the name gets its own folder";
  // A folder named by the user that already holds files is refused, not mixed.
  EXPECT_THROW(queue_study(store, db(), study_of_pipeline(base), a.folder), ConfigError);
  ASSERT_EQ(a.runs.size(), 2u);
  const auto row = find_study(store, a.id);
  ASSERT_TRUE(row);
  const StudySpec stored = study_from_toml(row->spec_toml, "/elsewhere", "stored");
  const auto again = expand_study(stored, a.folder);
  ASSERT_EQ(again.size(), a.runs.size());
  for (size_t i = 0; i < again.size(); ++i) EXPECT_EQ(config_to_toml(again[i].config), config_to_toml(a.runs[i].config));
}
