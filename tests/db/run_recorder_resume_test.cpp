// RunRecorder across processes and attempts: a writer process and a reader process on one
// workspace, a resumed stage that records no step twice, the failure note, the idle heartbeat.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <stdexcept>
#include <thread>

#include "db/run_recorder.h"

namespace fs = std::filesystem;
using ganpo::RunRecorder;
using ganpo::RunStatus;
using ganpo::RunStore;

namespace {

class RecorderAcrossRunsTest : public ::testing::Test {
protected:
  void SetUp() override {
    static int counter = 0;
    dir_ = fs::temp_directory_path() /
           ("ganpo_rec_runs_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::remove_all(dir_);
    path_ = (dir_ / "workspace.sqlite").string();
    run_id_ = RunStore::open(path_).create_run("rec", "preference", "{}");
  }
  void TearDown() override { fs::remove_all(dir_); }

  fs::path dir_;
  std::string path_;
  int64_t run_id_ = 0;
};

// Polls until ready() holds; a generous deadline against hangs, not a timing assertion.
bool eventually(const std::function<bool()>& ready) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(2);
  while (!ready()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return true;
}

void record_steps(RunRecorder& rec, int64_t from, int64_t to) {
  for (int64_t step = from; step <= to; ++step) {
    rec.on_metrics(step, {{"loss", 1.0 / static_cast<double>(step)}, {"lr", 1e-4}});
    if (step % 5 == 0) rec.on_samples(step, {{0, "p", "policy", "reference", 0.5, 0.25}});
    if (step % 5 == 0) rec.on_eval(step, ganpo::EvalReport::of({{"eval_loss", 0.5}}));
  }
}

}  // namespace

TEST_F(RecorderAcrossRunsTest, ResumedStageRecordsNoStepTwice) {
  {
    RunRecorder first(path_, run_id_);
    first.on_start(20, 0, {});
    record_steps(first, 1, 13);  // checkpoint at 10, then the worker died at 13
    first.on_checkpoint(10, "/ckpt-10", {});
  }
  {
    RunRecorder second(path_, run_id_);
    second.on_start(20, 10, {});  // resumed from the checkpoint at step 10
    record_steps(second, 11, 20);
    second.on_checkpoint(20, "/ckpt-20", {});
  }
  auto store = RunStore::open(path_);
  auto& db = store.database();
  EXPECT_EQ(db.query_int("SELECT COUNT(*) FROM (SELECT step, key FROM metrics GROUP BY run_id, step, key "
                         "HAVING COUNT(*) > 1)"),
            0);
  EXPECT_EQ(db.query_int("SELECT COUNT(*) FROM metrics"), 40);
  EXPECT_EQ(store.sample_steps(run_id_), (std::vector<int64_t>{5, 10, 15, 20}));
  EXPECT_EQ(store.evals(run_id_).size(), 4u);
  ASSERT_EQ(store.checkpoints(run_id_).size(), 2u);
  EXPECT_EQ(store.run(run_id_)->total_steps, 20);
  EXPECT_EQ(store.run(run_id_)->last_step, 20);
  // A fresh start (first step 0) in the same run row starts the record over.
  {
    RunRecorder again(path_, run_id_);
    again.on_start(20, 0, {});
    record_steps(again, 1, 3);
  }
  EXPECT_EQ(store.series(run_id_, "loss").size(), 3u);
}

TEST_F(RecorderAcrossRunsTest, FailedStatusKeepsTheLastLogLines) {
  {
    RunRecorder rec(path_, run_id_);
    for (int i = 1; i <= 15; ++i) rec.on_log("info", "step " + std::to_string(i));
    rec.on_log("error", "loss is NaN at step 15 (term: opo_loss)");
    rec.on_status("failed", "loss is NaN at step 15 (term: opo_loss)");
  }
  auto run = RunStore::open(path_).run(run_id_);
  EXPECT_EQ(run->status, RunStatus::failed);
  EXPECT_EQ(run->error.rfind("loss is NaN at step 15 (term: opo_loss)\n--- last log lines ---\n", 0), 0u)
      << run->error;
  EXPECT_NE(run->error.find("[info] step 15\n[error] loss is NaN"), std::string::npos) << run->error;
  EXPECT_EQ(run->error.find("step 5\n"), std::string::npos) << "only the last 10 lines";
}

TEST_F(RecorderAcrossRunsTest, IdleWriterStillBeats) {
  RunRecorder::Options opt;
  opt.heartbeat_interval = std::chrono::milliseconds(20);
  RunRecorder rec(path_, run_id_, opt);
  auto reader = RunStore::open(path_);
  const auto beat = [&] { return reader.run(run_id_)->heartbeat_at.value_or(0); };
  ASSERT_TRUE(eventually([&] { return beat() > 0; })) << "a heartbeat arrives with nothing to record";
  const double first = beat();
  ASSERT_TRUE(eventually([&] { return beat() != first; })) << "and another after it";
  EXPECT_GT(beat(), first);
  EXPECT_EQ(reader.run(run_id_)->worker_pid, ::getpid());
}

// A writer process logs thousands of steps while this process reads every 100 ms through its
// own connection. Neither side may see SQLITE_BUSY (it would surface as an error), and the
// reader's view only grows. Halfway, the writer waits on a pipe until the reader has read the
// half it committed three times, so the two provably overlap whatever the machine's speed.
TEST_F(RecorderAcrossRunsTest, WriterProcessAndReaderProcessNeverSeeBusy) {
  constexpr int kSteps = 6000, kMetrics = 20, kHalf = kSteps / 2, kReadsAtHalf = 3;
  const std::string writer_report = (dir_ / "writer_report.txt").string();
  int release[2];
  ASSERT_EQ(::pipe(release), 0);
  std::fflush(nullptr);
  const pid_t writer = ::fork();
  ASSERT_GE(writer, 0);
  if (writer == 0) {
    // The child: no gtest here, only an exit code and a report file.
    ::close(release[1]);
    std::string error;
    try {
      RunRecorder::Options opt;
      opt.max_delay = std::chrono::milliseconds(50);
      RunRecorder rec(path_, run_id_, opt);
      rec.on_start(kSteps, 0, {});
      for (int step = 1; step <= kSteps; ++step) {
        std::map<std::string, double> m;
        for (int k = 0; k < kMetrics; ++k) m["metric_" + std::to_string(k)] = step + k;
        rec.on_metrics(step, m);
        if (step % 50 == 0) std::this_thread::sleep_for(std::chrono::milliseconds(30));
        if (step == kHalf) {
          rec.flush();
          char go = 0;
          if (::read(release[0], &go, 1) != 1) throw std::runtime_error("the reader never released the writer");
        }
      }
      rec.flush();
      error = rec.last_error();
    } catch (const std::exception& e) {
      error = e.what();
    }
    std::ofstream(writer_report) << error;
    ::_exit(error.empty() ? 0 : 1);
  }

  ::close(release[0]);
  std::string reader_error;
  int64_t reads = 0, last_id = 0, last_step = 0, rows = 0, last_count = 0, reads_at_half = 0;
  bool monotone = true, released = false;
  const auto half_deadline = std::chrono::steady_clock::now() + std::chrono::minutes(2);
  try {
    auto store = RunStore::open(path_);
    for (;;) {
      int status = 0;
      const bool writer_done = ::waitpid(writer, &status, WNOHANG) == writer;
      for (const auto& r : store.metrics_after(run_id_, last_id)) {
        if (r.id <= last_id || r.step < last_step) monotone = false;
        last_id = r.id;
        last_step = r.step;
        ++rows;
      }
      const int64_t count = static_cast<int64_t>(store.series(run_id_, "metric_0").size());
      if (count < last_count) monotone = false;
      last_count = count;
      store.decimated_series(run_id_, "metric_3", 1, kSteps, 200);
      store.runs_changed_since(0);
      ++reads;
      if (!released && count == kHalf && ++reads_at_half >= kReadsAtHalf) {
        if (::write(release[1], "g", 1) != 1) throw std::runtime_error("cannot release the writer");
        released = true;
      }
      if (!released && std::chrono::steady_clock::now() > half_deadline)  // a guard against hangs
        throw std::runtime_error("the writer's first half never showed: " + std::to_string(count) + " steps seen");
      if (writer_done) {
        EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "writer: " << [&] {
          std::ifstream in(writer_report);
          return std::string(std::istreambuf_iterator<char>(in), {});
        }();
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    for (const auto& r : store.metrics_after(run_id_, last_id)) rows += r.id > last_id;
  } catch (const std::exception& e) {
    reader_error = e.what();
    ::kill(writer, SIGKILL);
    ::waitpid(writer, nullptr, 0);
  }
  ::close(release[1]);
  EXPECT_EQ(reader_error, "");
  EXPECT_TRUE(monotone);
  EXPECT_TRUE(released) << "the reader saw the writer's first half, committed, while the writer waited";
  EXPECT_EQ(reads_at_half, kReadsAtHalf);
  EXPECT_GT(reads, kReadsAtHalf) << "and read on while the writer wrote the rest";
  EXPECT_EQ(rows, kSteps * kMetrics);
  std::printf("[ figures  ] writer process: %d steps x %d metrics; reader process: %lld reads, 0 busy errors\n",
              kSteps, kMetrics, static_cast<long long>(reads));
}
