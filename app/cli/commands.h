// The `ganpo` subcommands. Each returns the process exit code: 0 success, 1 failure
// (one-line reason printed), 2 bad usage or config, 130 stopped by a signal (checkpoint saved).
#pragma once

#include <string>
#include <vector>

#include "core/config.h"
#include "core/train/trainer.h"

namespace ganpo::cli {

struct TrainArgs {
  std::string config_path;
  std::vector<std::string> overrides;
  std::string resume;
  std::string db;      // workspace database; empty = default_workspace_path()
  int64_t run_id = 0;  // worker mode: train this run of the database (> 0)
  bool no_db = false;  // record to files only
  std::vector<std::string> argv;  // the command line after the program name, for train.num_processes > 1
};
int train_command(const TrainArgs& args);

struct LaunchArgs {
  int nproc_per_node = 1, nnodes = 1, node_rank = 0, master_port = 0;
  std::string master_addr = "127.0.0.1";
  std::vector<std::string> command;  // what each rank runs: train ...
};
// Starts a data-parallel run's processes on this host and waits for them (process_launcher.h).
int launch_command(const LaunchArgs& args);

// Worker mode: claims run_id in the database, trains it from its stored config (from its last
// checkpoint when it has one, or from resume_from when given) and records everything there.
int run_worker(const std::string& db_path, int64_t run_id, const std::string& resume_from = "");

struct RunsArgs {
  std::string db;  // empty = default_workspace_path()
  std::string action;  // list | show | export | delete | tag | resume | control
  int64_t run_id = 0;
  std::string tag, format = "csv", table = "metrics", out, command;
  bool json = false, yes = false, remove = false, files = false;
};
int runs_command(const RunsArgs& args);

struct GenerateArgs {
  std::string checkpoint, prompts, out;
  double temperature = 0.7, top_p = 1.0;
  int64_t top_k = 0, max_new_tokens = 96, batch_size = 32;
  uint64_t seed = 0;
  std::string device = "auto";
  std::string precision = "auto";  // load_model_for_inference (core/checkpoint.h)
};
int generate_command(const GenerateArgs& args);

struct StudyPlanArgs {
  std::string file;
  std::string out;  // where the runs would write; default as `study create`: beside the workspace, studies/<name>
  std::string db;   // workspace whose finished runs give the speed for the duration estimate
  bool json = false;
};
// Expands a study into its runs and validates every one, starting nothing.
int study_plan_command(const StudyPlanArgs& args);

struct StudyArgs {
  std::string db;      // empty = default_workspace_path()
  std::string action;  // create | run | status | pause | resume | cancel
  std::string file, out;
  int64_t study_id = 0;
  int jobs = 0;  // 0 = one per GPU, or one on a CPU
  bool json = false;
  std::string html, csv;  // report: also write these files
};
// create: queue a study's runs; run: drive its queue until nothing is left; status, pause,
// resume, cancel; report: means with intervals per arm and GANPO-on minus -off differences.
int study_command(const StudyArgs& args);

struct InspectArgs {
  std::string model;
  bool json = false;
};
int inspect_command(const InspectArgs& args);

struct LogitsArgs {
  std::string model;
  std::vector<int64_t> ids;
  bool json = false;
};
int logits_command(const LogitsArgs& args);

struct TokenizeArgs {
  std::string tokenizer;
  bool no_special = false;  // encode adds no special tokens; decode drops them
  bool decode = false;
};
int tokenize_command(const TokenizeArgs& args);

struct EvalArgs {
  std::string checkpoint, reference, pairs, builtin;
  std::string prompts;        // JSONL evaluation prompts (a data-file run's judge_prompts.jsonl), judged by --judge-command
  std::string chat_template;  // conversational --pairs: "" = the policy's own template
  std::string judge_command;  // scores completions instead of the task's own judge
  double judge_timeout_s = 600;  // the whole judge call's (eval.judge_timeout_s)
  std::vector<double> temperatures{0.5, 0.7, 1.0, 1.3, 1.5};
  int64_t num_prompts = 150, max_new_tokens = 96, max_length = 200, max_prompt_length = 100;
  int64_t batch_size = 32;  // pairs per batch of the preference evaluation
  std::string loss_type = "sigmoid";
  double beta = 0.0, simpo_gamma = 1.4;
  uint64_t seed = 1234;
  bool json = false;
  std::string device = "auto";
  std::string precision = "auto";  // both models' (load_model_for_inference, core/checkpoint.h)
};
int eval_command(const EvalArgs& args);

struct DemoArgs {
  std::string output_dir = "runs/demo";
  bool quick = false;  // a reduced demo for tests (fewer steps)
  bool json = false;
  std::string db;      // workspace database; empty = default_workspace_path()
  bool no_db = false;  // record to files only
};
int demo_command(const DemoArgs& args);

struct BenchArgs {
  std::string config_path;
  std::vector<std::string> overrides;
  int64_t steps = 20;
  bool json = false;
};
int bench_command(const BenchArgs& args);

// Where a stage is recorded besides its files: a run row of a workspace database.
struct RunRecordTarget {
  std::string db_path;
  int64_t run_id = 0;  // 0 = files only
  int64_t worker_pid = 0;  // the run's worker as its heartbeats say: 0 = this process (RunRecorder::Options)
};

// Runs one stage with its record written to output_dir (and the run store when record names a
// run) and progress printed to the terminal.
TrainResult run_stage(const RunConfig& config, const TrainerOptions& options, const RunRecordTarget& record = {});

// The workspace database path: the given one, else the default.
std::string workspace_path(const std::string& db_option);

// Exit code for a finished stage, after printing its one-line outcome; resume_hint says how to
// continue a stopped run.
int report_result(const char* command, const TrainResult& result, const std::string& resume_hint);

// Loads a config file, applies "section.key=value" overrides and validates; throws ConfigError.
RunConfig load_run_config(const std::string& path, const std::vector<std::string>& overrides);

}  // namespace ganpo::cli
