// Crash and fault safety of a real worker: `ganpo train` killed with SIGKILL at each named fault
// point (core/fault_points.h) while it steps, writes a checkpoint or commits to SQLite, then
// resumed; and a checkpoint write that fails for want of space (a file-size limit). After each
// kill the workspace passes PRAGMA integrity_check, the recorded steps are a gap-free prefix with
// no step twice, every recorded checkpoint folder is complete, the resume starts from a complete
// checkpoint, and the finished run's weights are bit-identical to an uninterrupted run's.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tests/support/cli_runner.h"

#include "core/atomic_folder.h"
#include "db/run_store.h"

namespace fs = std::filesystem;
using ganpo::RunStatus;
using ganpo::RunStore;
using ganpo::test::run_cli;

namespace {

const bool kPrivateWorkspace = ganpo::test::use_private_workspace();
constexpr int64_t kSteps = 30;

std::string read_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

class CrashSafety : public ::testing::Test {
protected:
  void SetUp() override {
    dir_ = ganpo::test::fresh_test_dir("ganpo-crash");
    db_ = (dir_ / "workspace.sqlite").string();
  }
  void TearDown() override {
    if (!HasFailure()) fs::remove_all(dir_);
  }

  // DPO + GANPO on the tiny model from scratch, one thread (bitwise reproducible), a checkpoint
  // every 5 steps: every piece of trainer state (optimizer, critics, EMA means, RNG, data cursor)
  // crosses each resume.
  fs::path write_config(const std::string& name) {
    const fs::path p = dir_ / (name + ".toml");
    std::ofstream(p) << "name = \"" << name << "\"\nstage = \"preference\"\nseed = 7\noutput_dir = \""
                     << (dir_ / name).string() << "\"\n[model]\npreset = \"tiny\"\n[data]\nbuiltin = \"lists\"\n"
                     << "builtin_train_size = 200\nbuiltin_eval_size = 16\n[ganpo]\ncritic_hidden = 32\n"
                     << "critic_layers = 1\ncritic_heads = 2\ncritic_max_len = 256\n[train]\nmax_steps = " << kSteps
                     << "\nper_device_train_batch_size = 4\nlogging_steps = 1\nsave_steps = 5\nnum_threads = 1\n"
                     << "[sampling]\nevery_steps = 0\nnum_prompts = 1\nmax_new_tokens = 8\n"
                     << "[eval]\njudge_at_end = false\n";
    return p;
  }

  // The checks after a kill, on the workspace as the dead worker left it.
  void expect_consistent_after_kill(int64_t run_id) {
    auto store = RunStore::open(db_);  // notices the dead worker
    auto& db = store.database();
    EXPECT_EQ(db.query_text("PRAGMA integrity_check"), "ok");
    const auto run = store.run(run_id);
    ASSERT_TRUE(run);
    EXPECT_EQ(run->status, RunStatus::failed);
    const std::string id = std::to_string(run_id);
    EXPECT_EQ(db.query_int("SELECT COUNT(*) FROM (SELECT 1 FROM metrics WHERE run_id = " + id +
                           " GROUP BY step, key HAVING COUNT(*) > 1)"),
              0);
    const int64_t steps = db.query_int("SELECT COUNT(DISTINCT step) FROM metrics WHERE run_id = " + id);
    if (steps > 0) {
      EXPECT_EQ(db.query_int("SELECT MIN(step) FROM metrics WHERE run_id = " + id), 1);
      EXPECT_EQ(db.query_int("SELECT MAX(step) FROM metrics WHERE run_id = " + id), steps) << "gap in recorded steps";
    }
    for (const auto& c : store.checkpoints(run_id))
      EXPECT_EQ(ganpo::incomplete_reason(c.path), "") << "recorded checkpoint " << c.path;
  }

  fs::path dir_;
  std::string db_;
};

}  // namespace

TEST_F(CrashSafety, KilledAtEveryFaultPointResumesToTheSameWeights) {
  const fs::path reference_config = write_config("reference");
  auto reference = run_cli("train --db " + db_ + " --config " + reference_config.string());
  ASSERT_EQ(reference.exit_code, 0) << reference.output;
  const std::string reference_weights = read_bytes(dir_ / "reference" / "final" / "model.safetensors");
  ASSERT_FALSE(reference_weights.empty());

  const std::vector<std::string> points = {"step.done:7", "checkpoint.files_written:2",
                                           "checkpoint.marker_written:2", "checkpoint.renamed:2",
                                           "store.batch_written:9"};
  int64_t run_id = 1;
  for (const auto& point : points) {
    SCOPED_TRACE("GANPO_KILL_AT=" + point);
    ++run_id;
    const std::string name = "killed-" + std::to_string(run_id);
    const fs::path config = write_config(name);
    auto killed = run_cli("train --db " + db_ + " --config " + config.string(), "GANPO_KILL_AT=" + point);
    ASSERT_TRUE(killed.killed_by_sigkill) << "the worker was not killed:\n" << killed.output;
    expect_consistent_after_kill(run_id);
    if (point.rfind("checkpoint.files_written", 0) == 0) {
      // The half-written folder is there under its temporary name, without its marker.
      EXPECT_TRUE(fs::is_directory(dir_ / name / "checkpoint-10.tmp"));
      EXPECT_NE(ganpo::incomplete_reason((dir_ / name / "checkpoint-10.tmp").string()), "");
      EXPECT_FALSE(fs::exists(dir_ / name / "checkpoint-10"));
    }

    // The resume continues from the newest checkpoint the workspace recorded (complete, as
    // checked above), never from the folder the kill left half-written.
    const auto recorded = RunStore::open(db_).checkpoints(run_id);
    ASSERT_FALSE(recorded.empty()) << "the kill came before the first checkpoint";
    auto resumed = run_cli("runs --db " + db_ + " resume " + std::to_string(run_id));
    ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
    const auto from = resumed.output.find("continuing from ");
    ASSERT_NE(from, std::string::npos) << resumed.output;
    const std::string folder = resumed.output.substr(from + 16, resumed.output.find('\n', from) - from - 16);
    EXPECT_EQ(folder, recorded.back().path) << resumed.output;
    EXPECT_EQ(folder.find(".tmp"), std::string::npos) << folder;

    auto store = RunStore::open(db_);
    EXPECT_EQ(store.run(run_id)->status, RunStatus::completed);
    EXPECT_EQ(store.database().query_text("PRAGMA integrity_check"), "ok");
    EXPECT_EQ(store.database().query_int("SELECT COUNT(DISTINCT step) FROM metrics WHERE run_id = " +
                                         std::to_string(run_id)),
              kSteps);
    EXPECT_FALSE(fs::exists(dir_ / name / "checkpoint-10.tmp"));
    EXPECT_TRUE(read_bytes(dir_ / name / "final" / "model.safetensors") == reference_weights)
        << "final weights differ from the uninterrupted run's";
  }
}

// The system's out-of-memory killer ends a process without a word. A worker ended while it tries
// its longest training rows (after its first step, so that memory they would run out of runs out
// there) has said so first, kept in the workspace before the try, and the run's failure names
// memory as the likely cause, with what would need less.
TEST_F(CrashSafety, AWorkerKilledWhileTryingItsLongestRowsFailsNamingMemory) {
  const fs::path config = write_config("killed-trying");
  const std::string toml = read_bytes(config);
  std::ofstream(config) << "device = \"cpu\"\n" << toml;  // (a GPU run's try says so itself)
  auto killed = run_cli("train --db " + db_ + " --config " + config.string(), "GANPO_KILL_AT=step.longest_rows");
  ASSERT_TRUE(killed.killed_by_sigkill) << "the worker was not killed:\n" << killed.output;
  expect_consistent_after_kill(1);
  const auto run = RunStore::open(db_).run(1);
  EXPECT_NE(run->error.find("stopped without reporting: it was killed, crashed, or the machine went down; last recorded "
                            "step 1. It stopped while trying its longest training rows ahead (its last log line), which "
                            "a run does after its first step so that memory they would run out of runs out then: the "
                            "system's out-of-memory killer most likely ended it"),
            std::string::npos)
      << run->error;
  EXPECT_NE(run->error.find("a clone of it from its last checkpoint can ask for less: "), std::string::npos) << run->error;
  EXPECT_NE(run->error.find("[info] memory: trying a micro-batch of the 4 longest training rows ahead (up to "),
            std::string::npos)
      << run->error;
}

TEST_F(CrashSafety, IncompleteCheckpointIsRefusedWithTheReason) {
  const fs::path config = write_config("run");
  auto killed = run_cli("train --db " + db_ + " --config " + config.string(), "GANPO_KILL_AT=step.done:12");
  ASSERT_TRUE(killed.killed_by_sigkill) << killed.output;
  const fs::path checkpoint = dir_ / "run" / "checkpoint-10";
  ASSERT_EQ(ganpo::incomplete_reason(checkpoint.string()), "");

  // Everything the worker created is private to the user (0600 files, 0700 folders).
  std::vector<fs::path> created{db_, dir_ / "run"};
  for (const auto& e : fs::recursive_directory_iterator(dir_ / "run")) created.push_back(e.path());
  for (const auto& p : created) {
    const auto perms = fs::status(p).permissions();
    EXPECT_EQ(perms & (fs::perms::group_all | fs::perms::others_all), fs::perms::none) << p;
  }

  // Its checkpoint folders gone (moved, a drive not mounted): refused, every recorded step kept.
  const auto recorded_steps = [&] {
    return RunStore::open(db_).database().query_int("SELECT COUNT(*) FROM metrics WHERE run_id = 1");
  };
  const int64_t steps_before = recorded_steps();
  ASSERT_GT(steps_before, 0);
  fs::rename(dir_ / "run", dir_ / "run-moved");
  auto gone = run_cli("runs --db " + db_ + " resume 1");
  EXPECT_EQ(gone.exit_code, 2) << gone.output;
  EXPECT_NE(gone.output.find("checkpoint folder " + checkpoint.string() + " (step 10) is gone; starting again from "
                             "step 0 would delete its recorded steps"),
            std::string::npos)
      << gone.output;
  EXPECT_EQ(recorded_steps(), steps_before);
  EXPECT_EQ(RunStore::open(db_).checkpoints(1).size(), 2u);
  fs::rename(dir_ / "run-moved", dir_ / "run");

  // A truncated optimizer state: the marker's size no longer matches.
  fs::resize_file(checkpoint / "trainer_state" / "optimizer.pt", 100);
  auto resumed = run_cli("runs --db " + db_ + " resume 1");
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_NE(resumed.output.find("skipping " + checkpoint.string() + ": trainer_state/optimizer.pt has 100 bytes"),
            std::string::npos)
      << resumed.output;
  EXPECT_NE(resumed.output.find("continuing from " + (dir_ / "run" / "checkpoint-5").string()), std::string::npos)
      << resumed.output;

  // Without its marker a checkpoint is neither resumed from nor loaded as a model.
  fs::remove(dir_ / "run" / "checkpoint-5" / ganpo::kCompleteMarker);
  auto no_db = run_cli("train --no-db --config " + config.string() + " --resume " + (dir_ / "run" / "checkpoint-5").string());
  EXPECT_NE(no_db.exit_code, 0) << no_db.output;
  EXPECT_NE(no_db.output.find("is not a complete checkpoint: it has no complete.json"), std::string::npos)
      << no_db.output;
  std::ofstream(dir_ / "prompts.jsonl") << "{\"prompt\": \"x\"}\n";
  auto generate = run_cli("generate --checkpoint " + (dir_ / "run" / "checkpoint-5").string() + " --prompts " +
                          (dir_ / "prompts.jsonl").string() + " --out " + (dir_ / "out.jsonl").string());
  EXPECT_NE(generate.exit_code, 0) << generate.output;
  EXPECT_NE(generate.output.find("is not a complete checkpoint"), std::string::npos) << generate.output;
}

TEST_F(CrashSafety, FullDiskDuringACheckpointFailsTheRunWithAdviceAndLeavesItResumable) {
  const fs::path config = write_config("full");
  // Files larger than 2 MB cannot be written (EFBIG, as ENOSPC on a full disk): the tiny
  // model's 3.6 MB weights fail at the first checkpoint, the workspace's few KB do not.
  auto full = run_cli("train --db " + db_ + " --config " + config.string(), "ulimit -f 2048 &&");
  EXPECT_NE(full.exit_code, 0) << full.output;
  EXPECT_FALSE(full.killed_by_sigkill) << full.output;
  auto store = RunStore::open(db_);
  EXPECT_EQ(store.database().query_text("PRAGMA integrity_check"), "ok");
  const auto run = store.run(1);
  ASSERT_TRUE(run);
  EXPECT_EQ(run->status, RunStatus::failed);
  EXPECT_NE(run->error.find("cannot write " + (dir_ / "full" / "checkpoint-5").string()), std::string::npos) << run->error;
  EXPECT_NE(run->error.find("free on its disk; free space there, then resume the run"), std::string::npos) << run->error;
  EXPECT_FALSE(fs::exists(dir_ / "full" / "checkpoint-5.tmp")) << "the partial folder is removed to free its space";
  EXPECT_FALSE(fs::exists(dir_ / "full" / "checkpoint-5"));
  EXPECT_TRUE(store.checkpoints(1).empty());

  // With the space back, the same run resumes (from step 0: it had no checkpoint) and completes.
  auto resumed = run_cli("runs --db " + db_ + " resume 1");
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_EQ(RunStore::open(db_).run(1)->status, RunStatus::completed);
}

TEST_F(CrashSafety, AWorkspaceMovedAwayMidRunStopsTheWorkerWithAdvice) {
  const fs::path config = write_config("moved");
  const pid_t worker = ganpo::test::spawn_cli({"train", "--db", db_, "--config", config.string()}, dir_ / "worker.log");
  {
    auto store = RunStore::open(db_);
    ASSERT_TRUE(ganpo::test::wait_for([&] { return store.run(1) && store.run(1)->last_step.value_or(0) >= 3; },
                                      "the run past step 3"));
  }
  // Someone moves the workspace file away: the worker's SQLite handle would write on unseen.
  const std::string moved = db_ + ".moved";
  fs::rename(db_, moved);
  int status = 0;
  ASSERT_TRUE(ganpo::test::wait_for([&] { return ::waitpid(worker, &status, WNOHANG) == worker; }, "the worker stops"));
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) != 0);
  std::ifstream in(dir_ / "worker.log");
  const std::string log((std::istreambuf_iterator<char>(in)), {});
  EXPECT_NE(log.find("was deleted, moved or replaced while the run was recording into it"), std::string::npos) << log;

  // Put back, the run resumes and completes.
  fs::rename(moved, db_);
  auto resumed = run_cli("runs --db " + db_ + " resume 1");
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  auto store = RunStore::open(db_);
  EXPECT_EQ(store.run(1)->status, RunStatus::completed);
  EXPECT_EQ(store.database().query_text("PRAGMA integrity_check"), "ok");
}

// train.auto_find_batch_size in a real worker: an allocation refused after step 12 (GANPO_OOM_AT)
// sends the stage back to checkpoint-10 with half the micro-batch and twice the accumulation. The
// run completes in its row, each step recorded once with no gap, the change is in its log, and
// its checkpoints from there on say the batch found.
TEST_F(CrashSafety, OutOfMemoryWithAutoFindBatchSizeGoesOnFromTheNewestCheckpoint) {
  const fs::path config = write_config("auto");
  auto r = run_cli("train --db " + db_ + " --config " + config.string() + " --set train.auto_find_batch_size=true",
                   "GANPO_OOM_AT=step.done:12");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto store = RunStore::open(db_);
  EXPECT_EQ(store.run(1)->status, RunStatus::completed);
  auto& db = store.database();
  EXPECT_EQ(db.query_int("SELECT COUNT(*) FROM (SELECT 1 FROM metrics WHERE run_id = 1 GROUP BY step, key "
                         "HAVING COUNT(*) > 1)"),
            0);
  EXPECT_EQ(db.query_int("SELECT COUNT(DISTINCT step) FROM metrics WHERE run_id = 1"), kSteps);
  EXPECT_EQ(db.query_int("SELECT MAX(step) FROM metrics WHERE run_id = 1"), kSteps);
  const std::string warning =
      db.query_text("SELECT text FROM events WHERE run_id = 1 AND level = 'warning' AND text LIKE '%auto_find%'");
  EXPECT_NE(warning.find("This machine's RAM ran out of memory while training after step 12. "), std::string::npos)
      << warning;
  EXPECT_NE(warning.find("train.auto_find_batch_size: the stage goes on with 2 rows a micro-batch x 2 accumulation "
                         "steps"),
            std::string::npos)
      << warning;
  EXPECT_NE(warning.find("from " + (dir_ / "auto" / "checkpoint-10").string() + ". C++: std::bad_alloc"),
            std::string::npos)
      << warning;
  EXPECT_NE(r.output.find("train.auto_find_batch_size: the stage goes on"), std::string::npos) << "on the console too";
  EXPECT_NE(r.output.find("batch: 4 rows a micro-batch x 1 accumulation step = 4 rows per optimizer step"),
            std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("batch: 2 rows a micro-batch x 2 accumulation steps = 4 rows per optimizer step"),
            std::string::npos)
      << r.output;
  const auto state = nlohmann::json::parse(std::ifstream(dir_ / "auto" / "checkpoint-15" / "trainer_state" / "state.json"));
  EXPECT_EQ(state.at("per_device_train_batch_size"), 2);
  EXPECT_EQ(state.at("gradient_accumulation_steps"), 2);
  // The files in output_dir keep one row per step as well: steps 11-12 of the first attempt went
  // when the stage went on from checkpoint-10.
  std::ifstream metrics(dir_ / "auto" / "metrics.jsonl");
  std::vector<int64_t> steps;
  for (std::string line; std::getline(metrics, line);) steps.push_back(nlohmann::json::parse(line).at("step"));
  ASSERT_EQ(steps.size(), static_cast<size_t>(kSteps));
  for (int64_t i = 0; i < kSteps; ++i) EXPECT_EQ(steps[static_cast<size_t>(i)], i + 1);
}
