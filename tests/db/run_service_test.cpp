// The run service on a real workspace file: what a created run stores, deleting with and without
// files (never a folder that is not a run's, never a run a worker holds), and control commands.
#include "db/run_service.h"

#include "core/error.h"
#include "core/eval/eval_report.h"
#include "core/tasks/task.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
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

  // The same config again: its own folder beside the first's, never the first's (which holds
  // that run's checkpoints and final weights); a folder on disk no run owns is passed over too.
  fs::create_directories(fs::absolute("mine-3"));
  const int64_t again = service.create(c, options), third = service.create(c, options);
  EXPECT_EQ(stored_config(store, again).output_dir, fs::absolute("mine-2").string());
  EXPECT_EQ(stored_config(store, third).output_dir, fs::absolute("mine-4").string());
  options.keep_output_dir = true;  // `ganpo train --config --resume`: goes on in the run's folder
  EXPECT_EQ(stored_config(store, service.create(c, options)).output_dir, fs::absolute("mine").string());
  fs::remove_all(fs::absolute("mine-3"));
}

// The "-N" search in a workspace of many runs: the runs are found by their folder (an index,
// RunStore::another_run_writes_to), whichever way the new config spells it, through a link too.
TEST_F(RunServiceTest, ANewRunFindsTheFolderTakenAmongManyRunsHoweverItIsSpelled) {
  RunStore store = open();
  const fs::path root = fs::canonical(dir_);  // (as a link would resolve)
  {
    ganpo::sql::Transaction txn(store.database());
    for (int i = 0; i < 3000; ++i)
      store.create_run("r", "preference",
                       nlohmann::json{{"output_dir", (root / "runs" / ("r" + std::to_string(i))).string()}}.dump());
    txn.commit();
  }
  RunService service(store);
  RunConfig c;
  c.output_dir = (root / "runs" / "." / "x" / ".." / "r2999").string();
  EXPECT_EQ(stored_config(store, service.create(c)).output_dir, (root / "runs" / "r2999-2").string());
  c.output_dir = (root / "runs" / "r17" / "").string();
  EXPECT_EQ(stored_config(store, service.create(c)).output_dir, (root / "runs" / "r17-2").string());
  fs::create_directories(root / "runs" / "r5");
  fs::create_directory_symlink(root / "runs" / "r5", dir_ / "alias");
  c.output_dir = (root / "alias").string();
  EXPECT_EQ(stored_config(store, service.create(c)).output_dir, (root / "alias-2").string())
      << "a link to another run's folder is that folder";
  // The other way round: a run stored through a link (runs-link -> runs), this one the real path.
  fs::create_directory_symlink(root / "runs", dir_ / "runs-link");
  store.create_run("linked", "preference", nlohmann::json{{"output_dir", (root / "runs-link" / "q").string()}}.dump());
  c.output_dir = (root / "runs" / "q").string();
  EXPECT_EQ(stored_config(store, service.create(c)).output_dir, (root / "runs" / "q-2").string())
      << "a run stored through a link writes to the folder the link leads to";
  c.output_dir = (root / "runs" / "new").string();
  EXPECT_EQ(stored_config(store, service.create(c)).output_dir, c.output_dir);
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
  // The hint names this workspace, which is not the default one, so it can be pasted as it is.
  EXPECT_NE(service.control(id, "stop").find("ganpo runs resume " + std::to_string(id) + " --db " + store.path()),
            std::string::npos);
}

TEST_F(RunServiceTest, EvaluatingACheckpointUsesTheRunsReferenceTaskAndObjective) {
  RunStore store = open();
  RunService service(store);
  RunConfig c;
  c.data.builtin = "arithmetic";
  c.model.checkpoint = (dir_ / "sft" / "final").string();
  c.objective.loss_type = "simpo";
  c.eval.judge_command = "my-judge --strict";
  c.eval.judge_timeout_s = 90;  // the judge's time reaches the evaluation too
  const int64_t id = service.create(c);
  CheckpointEvalOptions options;
  options.temperatures = {0.5, 1.0};
  options.num_prompts = 12;
  const auto plan = service.plan_checkpoint_eval(id, "/runs/x/checkpoint-20", options, dir_.string());
  ASSERT_EQ(plan.refused, "");
  const std::string pairs = (dir_ / ("ganpo-held-out-arithmetic-uid" + std::to_string(::getuid()) + ".jsonl")).string();
  const std::vector<std::string> expected{"eval", "--checkpoint", "/runs/x/checkpoint-20", "--reference", c.model.checkpoint,
                                          "--json", "--pairs", pairs, "--builtin", "arithmetic", "--temperatures", "0.5,1.0",
                                          "--num-prompts", "12", "--max-new-tokens", "96", "--seed", "1234",
                                          "--judge-command", "my-judge --strict", "--judge-timeout", "90.0", "--loss-type", "simpo", "--beta", "0.0",
                                          "--simpo-gamma", "1.4"};
  EXPECT_EQ(plan.arguments, expected);
  // The held-out pairs of the task, written once, one JSON object per line.
  std::ifstream in(pairs);
  int lines = 0;
  for (std::string line; std::getline(in, line); ++lines) EXPECT_TRUE(nlohmann::json::parse(line).contains("chosen"));
  EXPECT_EQ(lines, 200);
  EXPECT_EQ(nlohmann::json::parse(plan.params_json)["builtin"], "arithmetic");

  // A data file without a held-out file and without a built-in task: nothing to evaluate on.
  RunConfig file_run;
  file_run.data.builtin = "";
  file_run.data.train = "/data/pairs.jsonl";
  file_run.model.checkpoint = "/models/ref";
  const auto refused = service.plan_checkpoint_eval(service.create(file_run), "/x", options, dir_.string());
  EXPECT_NE(refused.refused.find("name a held-out file"), std::string::npos) << refused.refused;
  // With a judge command and the held-out prompts the run wrote: judged on those prompts.
  file_run.eval.judge_command = "my-judge";
  file_run.output_dir = (dir_ / "file-run").string();
  fs::create_directories(file_run.output_dir);
  write_eval_prompts((dir_ / "file-run" / kJudgePromptsFile).string(), {{"Say hi.", "", "short"}});
  const auto judged = service.plan_checkpoint_eval(service.create(file_run), "/x", options, dir_.string());
  ASSERT_EQ(judged.refused, "");
  const auto& args = judged.arguments;
  const auto at = std::find(args.begin(), args.end(), "--prompts");
  ASSERT_NE(at, args.end());
  EXPECT_EQ(*(at + 1), (dir_ / "file-run" / kJudgePromptsFile).string());
  EXPECT_NE(std::find(args.begin(), args.end(), "my-judge"), args.end());
  RunConfig no_reference;  // fresh weights: no reference folder
  EXPECT_NE(service.plan_checkpoint_eval(service.create(no_reference), "/x", options, dir_.string()).refused.find("no reference"),
            std::string::npos);

  // What the worker printed is stored as the typed report; anything else is refused.
  EXPECT_THROW(service.store_checkpoint_eval(id, 20, plan.params_json, "Segmentation fault"), Error);
  EXPECT_THROW(service.store_checkpoint_eval(id, 20, plan.params_json, "{}"), Error);
  EXPECT_TRUE(store.evals(id).empty());
  service.store_checkpoint_eval(id, 20, plan.params_json, R"({"preference": {"eval_loss": 0.25}, "skipped_lines": 0})");
  ASSERT_EQ(store.evals(id).size(), 1u);
  EXPECT_EQ(eval_report_from_text(store.evals(id)[0].result_json).preference.at("eval_loss"), 0.25);
  EXPECT_EQ(store.evals(id)[0].checkpoint_step, 20);
}

// A folder another run still uses (the same output_dir, one around it such as output_dir = ".",
// or a checkpoint a clone starts from), one that holds the workspace, or a link: the run's rows
// go, the folder stays and says why. Once no other run uses it, deleting the last one removes it.
TEST_F(RunServiceTest, RemoveKeepsAFolderAnotherRunTheWorkspaceOrALinkStillUses) {
  RunStore store = open();
  RunService service(store);
  const auto run_folder = [&](const fs::path& dir) {
    fs::create_directories(dir / "checkpoint-5");
    std::ofstream(dir / "config.toml") << "\n";
  };
  RunConfig c;
  c.output_dir = (dir_ / "runs" / "exp").string();
  const int64_t first = service.create(c), second = service.create(c);
  // One folder, two configs (as builds before "-2" stored a config trained twice).
  store.set_config(second, store.run(first)->config_json);
  run_folder(c.output_dir);
  RemoveRunResult r = service.remove(first, true);
  EXPECT_TRUE(r.removed);
  EXPECT_FALSE(r.folder_removed);
  EXPECT_NE(r.folder_kept.find("run " + std::to_string(second) + " (run) writes to " + c.output_dir), std::string::npos)
      << r.folder_kept;
  EXPECT_TRUE(fs::exists(fs::path(c.output_dir) / "checkpoint-5"));

  // A clone starting from one of its checkpoints keeps it too.
  RunConfig clone;
  clone.output_dir = (dir_ / "runs" / "clone").string();
  clone.model.checkpoint = (fs::path(c.output_dir) / "checkpoint-5").string();
  const int64_t cloned = service.create(clone);
  r = service.remove(second, true);
  EXPECT_NE(r.folder_kept.find("run " + std::to_string(cloned) + " (run) starts from " + clone.model.checkpoint),
            std::string::npos)
      << r.folder_kept;
  EXPECT_TRUE(fs::exists(clone.model.checkpoint));

  // output_dir = the folder around the others' (".") and the workspace: neither goes.
  RunConfig around;
  around.output_dir = dir_.string();
  run_folder(dir_);
  r = service.remove(service.create(around), true);
  EXPECT_FALSE(r.folder_removed);
  EXPECT_NE(r.folder_kept.find("holds this workspace"), std::string::npos) << r.folder_kept;
  around.output_dir = (dir_ / "runs").string();
  r = service.remove(service.create(around), true);
  EXPECT_NE(r.folder_kept.find("writes to " + clone.output_dir), std::string::npos) << r.folder_kept;
  EXPECT_TRUE(fs::exists(dir_ / "runs" / "exp"));

  // A run inside another's folder (that one's output_dir = "." around it) is its own to delete.
  RunConfig outer, inner;
  outer.output_dir = (dir_ / "outer").string();
  inner.output_dir = (dir_ / "outer" / "inner").string();
  run_folder(outer.output_dir);
  run_folder(inner.output_dir);
  service.create(outer);
  r = service.remove(service.create(inner), true);
  EXPECT_TRUE(r.folder_removed) << r.folder_kept;
  EXPECT_TRUE(fs::exists(fs::path(outer.output_dir) / "config.toml"));

  // A link: removing it would free nothing; what it points to stays.
  RunConfig linked;
  linked.output_dir = (dir_ / "link").string();
  run_folder(dir_ / "target");
  fs::create_directory_symlink(dir_ / "target", linked.output_dir);
  r = service.remove(service.create(linked), true);
  EXPECT_NE(r.folder_kept.find("is a symbolic link"), std::string::npos) << r.folder_kept;
  EXPECT_TRUE(fs::exists(dir_ / "target" / "config.toml"));
  linked.output_dir += "/";  // with a trailing slash too (a path ending in / follows the link)
  r = service.remove(service.create(linked), true);
  EXPECT_NE(r.folder_kept.find("is a symbolic link"), std::string::npos) << r.folder_kept;
  EXPECT_TRUE(fs::exists(dir_ / "target" / "config.toml"));

  // A parent and its clone deleted in one action: the clone does not keep the parent's folder.
  RunConfig parent;
  parent.output_dir = (dir_ / "parent").string();
  run_folder(parent.output_dir);
  RunConfig child;
  child.model.checkpoint = (fs::path(parent.output_dir) / "checkpoint-5").string();
  const int64_t parent_id = service.create(parent), child_id = service.create(child);
  r = service.remove(parent_id, true, "", {parent_id, child_id});
  EXPECT_TRUE(r.folder_removed) << r.folder_kept;
  EXPECT_TRUE(service.remove(child_id, true, "", {parent_id, child_id}).removed);

  // The last run of a folder takes it along.
  r = service.remove(cloned, true);
  EXPECT_EQ(r.folder_kept, "it does not exist") << "the clone never wrote its folder";
  r = service.remove(service.create(c), true);
  EXPECT_TRUE(r.folder_removed) << r.folder_kept;
  EXPECT_FALSE(fs::exists(c.output_dir));
}
