// The run service on a real workspace file: what a created run stores, deleting with and without
// files (never a folder that is not a run's, never a run a worker holds), and control commands.
#include "db/run_service.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

namespace fs = std::filesystem;
using namespace ganpo;

class RunServiceTest : public ::testing::Test {
protected:
  void SetUp() override {
    static int counter = 0;
    dir_ = fs::temp_directory_path() / ("ganpo_run_service_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  RunStore open() { return RunStore::open((dir_ / "workspace.sqlite").string()); }
  static RunConfig stored_config(RunStore& store, int64_t id) {
    return config_from_json(nlohmann::json::parse(store.run(id)->config_json));
  }
  fs::path dir_;
};

TEST_F(RunServiceTest, CreateStoresTheConfigItsWorkerWillTrain) {
  RunStore store = open();
  RunService service(store);
  RunConfig c;
  c.name = "DPO / beta 0.1";
  c.data.builtin = "auto";  // no file named: the built-in task
  CreateRunOptions options;
  options.runs_dir = (dir_ / "runs").string();
  const int64_t id = service.create(c, options);
  const RunRow row = *store.run(id);
  EXPECT_EQ(row.status, RunStatus::queued);
  EXPECT_EQ(row.name, "DPO / beta 0.1");
  const RunConfig stored = stored_config(store, id);
  EXPECT_EQ(stored.output_dir, (dir_ / "runs" / (std::to_string(id) + "-DPO___beta_0_1")).string())
      << "a default output folder becomes one of its own beside the workspace";
  EXPECT_EQ(stored.data.builtin, "lists") << "the data source is resolved";

  // An output folder of its own is kept (made absolute); a clone records its origin.
  c.output_dir = "mine";
  options.parent_run = id;
  options.parent_step = 40;
  const int64_t clone = service.create(c, options);
  EXPECT_EQ(stored_config(store, clone).output_dir, fs::absolute("mine").string());
  EXPECT_EQ(store.run(clone)->parent_run_id, id);
  EXPECT_EQ(store.run(clone)->parent_step, 40);
}

TEST_F(RunServiceTest, RemoveKeepsFoldersThatAreNotRunsAndRunsAWorkerHolds) {
  RunStore store = open();
  RunService service(store);
  RunConfig c;
  c.output_dir = (dir_ / "run-a").string();
  const int64_t a = service.create(c);
  fs::create_directories(c.output_dir);
  std::ofstream(fs::path(c.output_dir) / "metrics.jsonl") << "{}\n";
  fs::create_directories(dir_ / "logs");
  std::ofstream(dir_ / "logs" / ("run-" + std::to_string(a) + ".log")) << "log\n";

  // Held by a live worker: refused, nothing touched.
  ASSERT_TRUE(store.claim_run(a, ::getpid()));
  RemoveRunResult r = service.remove(a, true, (dir_ / "logs").string());
  EXPECT_FALSE(r.removed);
  EXPECT_NE(r.refused.find("stop it first"), std::string::npos) << r.refused;
  EXPECT_TRUE(store.run(a).has_value());
  store.set_status(a, RunStatus::stopped);

  r = service.remove(a, true, (dir_ / "logs").string());
  EXPECT_TRUE(r.removed);
  EXPECT_TRUE(r.folder_removed);
  EXPECT_FALSE(store.run(a).has_value());
  EXPECT_FALSE(fs::exists(c.output_dir));
  EXPECT_FALSE(fs::exists(dir_ / "logs" / ("run-" + std::to_string(a) + ".log")));

  // An output_dir that does not look like a run's (a mistyped "/" or home) stays.
  c.output_dir = (dir_ / "precious").string();
  fs::create_directories(c.output_dir);
  std::ofstream(fs::path(c.output_dir) / "thesis.tex") << "\\documentclass{article}\n";
  const int64_t b = service.create(c);
  r = service.remove(b, true);
  EXPECT_TRUE(r.removed);
  EXPECT_FALSE(r.folder_removed);
  EXPECT_NE(r.folder_kept.find("does not look like a run"), std::string::npos) << r.folder_kept;
  EXPECT_TRUE(fs::exists(fs::path(c.output_dir) / "thesis.tex"));

  // Without files: rows only.
  c.output_dir = (dir_ / "run-c").string();
  const int64_t d = service.create(c);
  fs::create_directories(c.output_dir);
  std::ofstream(fs::path(c.output_dir) / "config.toml") << "\n";
  EXPECT_TRUE(service.remove(d, false).removed);
  EXPECT_TRUE(fs::exists(c.output_dir));
  EXPECT_NE(service.remove(9999, true).refused.find("no run 9999"), std::string::npos);
}

TEST_F(RunServiceTest, ControlReachesOnlyARunAWorkerHolds) {
  RunStore store = open();
  RunService service(store);
  const int64_t id = service.create(RunConfig{});
  EXPECT_NE(service.control(id, "pause").find("no worker is training it"), std::string::npos);
  EXPECT_NE(service.control(id, "explode").find("unknown command 'explode'"), std::string::npos);
  ASSERT_TRUE(store.claim_run(id, ::getpid()));
  store.set_status(id, RunStatus::running);
  EXPECT_EQ(service.control(id, "pause"), "");
  EXPECT_EQ(store.run(id)->control, "pause");
  store.set_status(id, RunStatus::failed);
  EXPECT_NE(service.control(id, "stop").find("ganpo runs resume " + std::to_string(id)), std::string::npos);
}
