#include <cstdio>

#include "app/cli/commands.h"
#include "app/cli/console_progress.h"
#include "core/error.h"
#include "core/run_files.h"
#include "core/trainer.h"

namespace ganpo::cli {

RunConfig load_run_config(const std::string& path, const std::vector<std::string>& overrides) {
  RunConfig config = load_config_file(path);
  for (const auto& o : overrides) apply_override(config, o);
  validate_or_throw(config);
  return config;
}

TrainResult run_stage(const RunConfig& config, const TrainerOptions& options) {
  RunFilesWriter files(config, /*append=*/!options.resume_from.empty());
  ConsoleProgress console(config.name);
  ObserverList observers;
  observers.add(&files);
  observers.add(&console);
  Trainer trainer(config, observers, options);
  return trainer.run();
}

int train_command(const TrainArgs& args) {
  RunConfig config;
  try {
    config = load_run_config(args.config_path, args.overrides);
  } catch (const ConfigError& e) {
    std::fprintf(stderr, "ganpo train: invalid config: %s\n", e.what());
    return 2;
  }
  install_stop_signal_handlers();
  TrainerOptions options;
  options.resume_from = args.resume;
  const TrainResult result = run_stage(config, options);
  if (result.status == "failed") {
    std::fprintf(stderr, "ganpo train: failed: %s\n", result.message.c_str());
    return 1;
  }
  if (result.status == "stopped") {
    std::printf("stopped at step %lld; continue with: ganpo train --config %s --resume %s\n",
                static_cast<long long>(result.steps), args.config_path.c_str(), result.final_dir.c_str());
    return 130;
  }
  std::printf("completed %lld steps; final model in %s\n", static_cast<long long>(result.steps),
              result.final_dir.c_str());
  return 0;
}

}  // namespace ganpo::cli
