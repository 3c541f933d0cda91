// The training worker end to end: `ganpo train` processes recording into a workspace file,
// killed with SIGKILL, controlled through the control field, resumed, listed and exported with
// `ganpo runs`.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <thread>

#include <nlohmann/json.hpp>

#include "tests/support/cli_runner.h"

#include "core/config.h"
#include "db/run_store.h"

namespace fs = std::filesystem;
using ganpo::RunStatus;
using ganpo::RunStore;

namespace {

using ganpo::test::run_cli;
using ganpo::test::spawn_cli;
using ganpo::test::wait_for;
const bool kPrivateWorkspace = ganpo::test::use_private_workspace();

std::string read_text(const fs::path& p) {
  std::ifstream in(p);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

class WorkerEndToEnd : public ::testing::Test {
protected:
  void SetUp() override {
    dir_ = ganpo::test::fresh_test_dir("ganpo-worker-e2e");
    db_ = (dir_ / "workspace.sqlite").string();
  }
  void TearDown() override {
    if (!HasFailure()) fs::remove_all(dir_);
  }

  // A tiny SFT run: a few hundredths of a second per step on two cores.
  fs::path write_config(const std::string& name, int64_t max_steps, int64_t save_steps) {
    const fs::path p = dir_ / (name + ".toml");
    std::ofstream(p) << "name = \"" << name << "\"\nstage = \"sft\"\noutput_dir = \"" << (dir_ / name).string()
                     << "\"\n[model]\npreset = \"tiny\"\n[data]\nbuiltin = \"lists\"\nbuiltin_train_size = 400\n"
                     << "builtin_eval_size = 16\n[train]\nmax_steps = " << max_steps
                     << "\nper_device_train_batch_size = 4\nlogging_steps = 1\nsave_steps = " << save_steps
                     << "\nnum_threads = 1\n[sampling]\nnum_prompts = 2\nmax_new_tokens = 12\n";
    return p;
  }

  fs::path dir_;
  std::string db_;
};

std::vector<nlohmann::json> read_jsonl(const fs::path& p) {
  std::vector<nlohmann::json> rows;
  std::ifstream in(p);
  std::string line;
  while (std::getline(in, line))
    if (!line.empty()) rows.push_back(nlohmann::json::parse(line));
  return rows;
}

}  // namespace

TEST_F(WorkerEndToEnd, KilledWorkerLosesNothingCommittedAndResumesWithoutDuplicates) {
  constexpr int64_t kSteps = 160;
  const fs::path config = write_config("killed", kSteps, 10);
  const pid_t worker = spawn_cli({"train", "--db", db_, "--config", config.string()}, dir_ / "worker.log");
  auto store = RunStore::open(db_);
  int64_t seen_step = 0;
  ASSERT_TRUE(wait_for(
      [&] {
        auto run = store.run(1);
        if (!run || run->status != RunStatus::running || store.checkpoints(1).empty()) return false;
        seen_step = run->last_step.value_or(0);
        return seen_step >= 25;
      },
      "run 1 running past step 25 with a checkpoint"))
      << read_text(dir_ / "worker.log");
  ASSERT_EQ(::kill(worker, SIGKILL), 0);
  int status = 0;
  ::waitpid(worker, &status, 0);
  ASSERT_TRUE(WIFSIGNALED(status));

  // Reopening notices the dead worker.
  auto after = RunStore::open(db_);
  auto run = after.run(1);
  ASSERT_TRUE(run);
  EXPECT_EQ(run->status, RunStatus::failed);
  EXPECT_NE(run->error.find("ganpo runs resume 1"), std::string::npos) << run->error;
  EXPECT_EQ(after.database().query_text("PRAGMA integrity_check"), "ok");

  // Every step committed before the kill is there with every metric, equal to the worker's own
  // metrics.jsonl (flushed line by line), and the recorded steps are a gap-free prefix.
  const auto lines = read_jsonl(dir_ / "killed" / "metrics.jsonl");
  std::map<int64_t, std::map<std::string, double>> in_db;
  for (const auto& m : after.metrics_after(1, 0)) in_db[m.step][m.key] = m.value;
  ASSERT_GE(static_cast<int64_t>(in_db.size()), seen_step);
  int64_t expected_step = 1;
  for (const auto& [step, metrics] : in_db) {
    ASSERT_EQ(step, expected_step++) << "gap in recorded steps";
    ASSERT_LE(static_cast<size_t>(step), lines.size());
    const auto& line = lines[static_cast<size_t>(step - 1)];
    ASSERT_EQ(line["step"], step);
    EXPECT_EQ(metrics.size() + 1, line.size()) << "every metric of step " << step;
    for (const auto& [key, value] : metrics)
      if (line[key].is_number()) {
        EXPECT_DOUBLE_EQ(value, line[key].get<double>()) << key << " at " << step;
      }
  }

  // Resume in the same run row: finishes, and no step is recorded twice.
  auto resumed = run_cli("runs --db " + db_ + " resume 1");
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_NE(resumed.output.find("continuing from"), std::string::npos) << resumed.output;
  auto done = RunStore::open(db_);
  EXPECT_EQ(done.run(1)->status, RunStatus::completed);
  EXPECT_EQ(done.run(1)->last_step, kSteps);
  auto& db = done.database();
  EXPECT_EQ(db.query_int("SELECT COUNT(*) FROM (SELECT 1 FROM metrics GROUP BY run_id, step, key HAVING COUNT(*) > 1)"), 0);
  EXPECT_EQ(db.query_int("SELECT COUNT(DISTINCT step) FROM metrics WHERE run_id = 1"), kSteps);
  EXPECT_EQ(db.query_int("SELECT MIN(step) FROM metrics WHERE run_id = 1"), 1);
  EXPECT_EQ(db.query_int("SELECT COUNT(*) FROM (SELECT 1 FROM samples GROUP BY run_id, step, prompt_index HAVING COUNT(*) > 1)"), 0);
  EXPECT_EQ(db.query_int("SELECT COUNT(*) FROM (SELECT 1 FROM checkpoints WHERE path NOT LIKE '%final' GROUP BY run_id, step HAVING COUNT(*) > 1)"), 0);
  EXPECT_EQ(db.query_text("PRAGMA integrity_check"), "ok");

  // A completed run is not resumed again.
  auto again = run_cli("runs --db " + db_ + " resume 1");
  EXPECT_EQ(again.exit_code, 2);
  EXPECT_NE(again.output.find("already completed"), std::string::npos) << again.output;
}

TEST_F(WorkerEndToEnd, ControlCommandsReachARunningWorker) {
  const fs::path config = write_config("controlled", 100000, 0);
  // Worker mode: the run row exists first, with its config as JSON (as the GUI inserts it),
  // then the worker takes it.
  auto missing = run_cli("train --db " + db_ + " --run 99");
  EXPECT_EQ(missing.exit_code, 2) << missing.output;
  EXPECT_NE(missing.output.find("no run 99"), std::string::npos) << missing.output;
  int64_t id = 0;
  {
    ganpo::RunConfig c = ganpo::load_config_file(config.string());
    auto store = RunStore::open(db_);
    id = store.create_run(c.name, c.stage, ganpo::config_to_json(c).dump());
  }
  const pid_t worker = spawn_cli({"train", "--db", db_, "--run", std::to_string(id)}, dir_ / "worker.log");
  auto store = RunStore::open(db_);
  auto step_now = [&] { return store.run(id)->last_step.value_or(0); };
  auto control = [&](const std::string& c) {
    auto r = run_cli("runs --db " + db_ + " control " + std::to_string(id) + " " + c);
    EXPECT_EQ(r.exit_code, 0) << r.output;
  };
  ASSERT_TRUE(wait_for([&] { return store.run(id)->status == RunStatus::running && step_now() >= 3; }, "worker running"))
      << read_text(dir_ / "worker.log");
  EXPECT_EQ(store.run(id)->worker_pid, worker);

  control("sample");
  ASSERT_TRUE(wait_for([&] { return store.sample_steps(id).size() >= 2; }, "samples after 'sample'"));
  EXPECT_GT(store.sample_steps(id).back(), 0) << "a sample row at the step the command arrived";

  control("checkpoint");
  ASSERT_TRUE(wait_for([&] { return !store.checkpoints(id).empty(); }, "checkpoint after 'checkpoint'"));
  EXPECT_TRUE(fs::is_directory(fs::path(store.checkpoints(id)[0].path) / "trainer_state"));

  control("pause");
  ASSERT_TRUE(wait_for([&] { return store.run(id)->status == RunStatus::paused; }, "status paused"));
  const int64_t paused_at = step_now();
  // The paused worker's writer still beats (every 2 s when idle): two new beats show the worker
  // has been alive and paused for a while, however fast this machine is.
  for (int beat = 0; beat < 2; ++beat) {
    const double seen = store.run(id)->heartbeat_at.value_or(0);
    ASSERT_TRUE(wait_for([&] { return store.run(id)->heartbeat_at.value_or(0) > seen; }, "a heartbeat while paused"));
  }
  EXPECT_EQ(step_now(), paused_at) << "no steps while paused";
  EXPECT_EQ(::waitpid(worker, nullptr, WNOHANG), 0) << "the paused worker is alive";

  control("resume");
  ASSERT_TRUE(wait_for([&] { return store.run(id)->status == RunStatus::running && step_now() > paused_at; },
                       "steps again after 'resume'"));

  control("stop");
  int status = 0;
  ASSERT_TRUE(wait_for([&] { return ::waitpid(worker, &status, WNOHANG) == worker; }, "worker exit after 'stop'"));
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 130) << read_text(dir_ / "worker.log");
  auto run = store.run(id);
  EXPECT_EQ(run->status, RunStatus::stopped);
  const auto checkpoints = store.checkpoints(id);
  ASSERT_GE(checkpoints.size(), 2u);
  EXPECT_EQ(checkpoints.back().step, run->last_step) << "stop saves a checkpoint at the last step";

  // Control of a run with no worker is refused with advice.
  auto refused = run_cli("runs --db " + db_ + " control " + std::to_string(id) + " pause");
  EXPECT_EQ(refused.exit_code, 2);
  EXPECT_NE(refused.output.find("ganpo runs resume"), std::string::npos) << refused.output;
}

TEST_F(WorkerEndToEnd, RunsCommandsListShowTagExportDelete) {
  const fs::path config = write_config("listed", 12, 0);
  // The default workspace follows XDG_DATA_HOME.
  const fs::path xdg = dir_ / "xdg";
  ::setenv("XDG_DATA_HOME", xdg.c_str(), 1);
  auto trained = run_cli("train --config " + config.string());
  ASSERT_EQ(trained.exit_code, 0) << trained.output;
  const std::string ws = (xdg / "ganpo-workbench" / "workspace.sqlite").string();
  ASSERT_TRUE(fs::exists(ws)) << trained.output;

  auto list = run_cli("runs list");
  ASSERT_EQ(list.exit_code, 0) << list.output;
  EXPECT_NE(list.output.find("listed"), std::string::npos) << list.output;
  EXPECT_NE(list.output.find("completed"), std::string::npos) << list.output;
  EXPECT_NE(list.output.find("12/12"), std::string::npos) << list.output;

  EXPECT_EQ(run_cli("runs tag 1 baseline").exit_code, 0);
  EXPECT_EQ(run_cli("runs tag 1 tiny").exit_code, 0);
  EXPECT_EQ(run_cli("runs tag 1 baseline --remove").exit_code, 0);
  // A line break or tab in a tag broke the table of `runs list`: refused where it is set.
  for (const char* bad : {"\"$(printf 'a\\nb')\"", "\"$(printf 'a\\tb')\"", "a,b"}) {
    auto refused = run_cli(std::string("runs tag 1 ") + bad);
    EXPECT_EQ(refused.exit_code, 2) << bad << ": " << refused.output;
    EXPECT_NE(refused.output.find("without commas, line breaks or tabs"), std::string::npos) << refused.output;
  }
  auto shown = run_cli("runs show 1 --json");
  ASSERT_EQ(shown.exit_code, 0) << shown.output;
  auto j = nlohmann::json::parse(shown.output);
  EXPECT_EQ(j["tags"], "tiny");
  EXPECT_EQ(j["status"], "completed");
  EXPECT_EQ(j["config"]["output_dir"], (dir_ / "listed").string()) << "paths are stored absolute";
  EXPECT_TRUE(j["latest_metrics"].contains("loss"));

  const fs::path csv = dir_ / "metrics.csv";
  auto exported = run_cli("runs export 1 --format csv --out " + csv.string());
  ASSERT_EQ(exported.exit_code, 0) << exported.output;
  std::ifstream in(csv);
  std::string header;
  std::getline(in, header);
  EXPECT_EQ(header.rfind("step,wall_time,", 0), 0u) << header;
  int rows = 0;
  for (std::string line; std::getline(in, line);) ++rows;
  EXPECT_EQ(rows, 12);
  auto jsonl = run_cli("runs export 1 --format jsonl --table samples");
  ASSERT_EQ(jsonl.exit_code, 0) << jsonl.output;
  EXPECT_NE(jsonl.output.find("\"policy\""), std::string::npos);
  // An unknown format or table is bad usage (2), named with the choices.
  auto xlsx = run_cli("runs export 1 --format xlsx");
  EXPECT_EQ(xlsx.exit_code, 2) << xlsx.output;
  EXPECT_NE(xlsx.output.find("csv"), std::string::npos) << xlsx.output;
  EXPECT_EQ(run_cli("runs export 1 --table losses").exit_code, 2);
  // A folder as --out is refused with an example, and nothing is written beside it.
  const fs::path folder = dir_ / "exports";
  fs::create_directories(folder);
  auto into_folder = run_cli("runs export 1 --format csv --out " + folder.string());
  EXPECT_EQ(into_folder.exit_code, 1) << into_folder.output;
  EXPECT_NE(into_folder.output.find("is a folder; give the path of the file to write"), std::string::npos)
      << into_folder.output;
  EXPECT_FALSE(fs::exists(folder.string() + ".part"));
  EXPECT_TRUE(fs::is_empty(folder));

  auto no_prompt = run_cli("runs delete 1 < /dev/null");
  EXPECT_EQ(no_prompt.exit_code, 2) << "without a terminal, delete needs --yes";
  auto deleted = run_cli("runs delete 1 --yes --files");
  ASSERT_EQ(deleted.exit_code, 0) << deleted.output;
  EXPECT_FALSE(fs::exists(dir_ / "listed"));
  // An id the workspace does not hold is bad usage (2) for every command taking one; show, export,
  // delete, tag and control said 1 where resume, train --run and the study commands said 2.
  for (const char* args : {"runs show 1", "runs export 1", "runs delete 1 --yes", "runs tag 1 x", "runs control 1 stop",
                           "runs resume 1", "train --run 1", "study status 1", "study report 1"}) {
    auto gone = run_cli(args);
    EXPECT_EQ(gone.exit_code, 2) << args << ": " << gone.output;
    EXPECT_NE(gone.output.find(std::string(args).rfind("study", 0) == 0 ? "no study 1" : "no run 1"), std::string::npos)
        << args << ": " << gone.output;
  }
}

TEST_F(WorkerEndToEnd, UnusableWorkspaceGivesAdviceBeforeTraining) {
  const fs::path config = write_config("nodb", 5, 0);
  { std::ofstream(dir_ / "not-a-db.sqlite") << "this is a text file, not SQLite\n"; }
  auto r = run_cli("train --db " + (dir_ / "not-a-db.sqlite").string() + " --config " + config.string());
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("not an SQLite database"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("--no-db"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(dir_ / "nodb" / "metrics.jsonl")) << "no training started";
  auto files_only = run_cli("train --no-db --config " + config.string());
  EXPECT_EQ(files_only.exit_code, 0) << files_only.output;
  EXPECT_TRUE(fs::exists(dir_ / "nodb" / "metrics.jsonl"));
}
