// The `ganpo` subcommands. Each returns the process exit code: 0 success, 1 failure
// (one-line reason printed), 2 bad usage or config, 130 stopped by a signal (checkpoint saved).
#pragma once

#include <string>
#include <vector>

#include "core/config.h"
#include "core/trainer.h"

namespace ganpo::cli {

struct TrainArgs {
  std::string config_path;
  std::vector<std::string> overrides;
  std::string resume;
};
int train_command(const TrainArgs& args);

struct GenerateArgs {
  std::string checkpoint, prompts, out;
  double temperature = 0.7, top_p = 1.0;
  int64_t top_k = 0, max_new_tokens = 96, batch_size = 32;
  uint64_t seed = 0;
  std::string device = "auto";
};
int generate_command(const GenerateArgs& args);

struct EvalArgs {
  std::string checkpoint, reference, pairs, builtin;
  std::vector<double> temperatures{0.7, 1.0, 1.3};
  int64_t num_prompts = 150, max_new_tokens = 96, max_length = 200, max_prompt_length = 100;
  std::string loss_type = "sigmoid";
  double beta = 0.0, simpo_gamma = 1.4;
  uint64_t seed = 1234;
  bool json = false;
  std::string device = "auto";
};
int eval_command(const EvalArgs& args);

struct DemoArgs {
  std::string output_dir = "runs/demo";
  bool quick = false;  // a reduced demo for tests (fewer steps)
  bool json = false;
};
int demo_command(const DemoArgs& args);

struct BenchArgs {
  std::string config_path;
  std::vector<std::string> overrides;
  int64_t steps = 20;
  bool json = false;
};
int bench_command(const BenchArgs& args);

// Runs one stage with its record written to output_dir and progress printed to the terminal.
TrainResult run_stage(const RunConfig& config, const TrainerOptions& options);

// Loads a config file, applies "section.key=value" overrides and validates; throws ConfigError.
RunConfig load_run_config(const std::string& path, const std::vector<std::string>& overrides);

}  // namespace ganpo::cli
