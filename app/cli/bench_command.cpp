#include <algorithm>
#include <cstdio>

#include <nlohmann/json.hpp>

#include "app/cli/commands.h"
#include "core/error.h"
#include "core/trainer.h"

namespace ganpo::cli {
namespace {

// The model a bench measured: the folder it loaded, else the preset (or "custom" shape).
std::string model_label(const RunConfig& config) {
  if (!config.model.checkpoint.empty()) return config.model.checkpoint;
  return config.model.preset.empty() ? "custom" : config.model.preset;
}

class StepTimes final : public RunObserver {
public:
  void on_start(int64_t, int64_t, const std::map<std::string, std::string>& info) override {
    auto it = info.find("cpu_threads");
    if (it != info.end()) cpu_threads = it->second;
  }
  void on_metrics(int64_t, const std::map<std::string, double>& m) override {
    step_times.push_back(m.at("step_time_s"));
    tokens_per_s.push_back(m.at("tokens_per_s"));
  }
  std::vector<double> step_times, tokens_per_s;
  std::string cpu_threads;  // the trainer's CPU plan; empty on CUDA
};

double median(std::vector<double> v) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

struct Figures {
  double step_time_s = 0, tokens_per_s = 0;
  std::string cpu_threads;
};

Figures measure(RunConfig config, int64_t steps) {
  constexpr int64_t kWarmupSteps = 2;  // allocator and thread-pool warm-up, not measured
  config.train.max_steps = steps + kWarmupSteps;
  config.train.logging_steps = 1;
  StepTimes times;
  TrainerOptions options;
  options.benchmark = true;
  Trainer trainer(config, times, options);
  auto result = trainer.run();
  if (result.status != "completed") throw Error("benchmark run " + result.status + ": " + result.message);
  times.step_times.erase(times.step_times.begin(), times.step_times.begin() + kWarmupSteps);
  times.tokens_per_s.erase(times.tokens_per_s.begin(), times.tokens_per_s.begin() + kWarmupSteps);
  return {median(times.step_times), median(times.tokens_per_s), times.cpu_threads};
}

}  // namespace

int bench_command(const BenchArgs& args) {
  RunConfig config;
  try {
    config = load_run_config(args.config_path, args.overrides);
  } catch (const ConfigError& e) {
    std::fprintf(stderr, "ganpo bench: invalid config: %s\n", e.what());
    return 2;
  }
  nlohmann::json report = {{"stage", config.stage}, {"steps", args.steps},
                           {"device", resolve_device(config.device)}, {"model", model_label(config)}};
  if (config.stage == "sft") {
    auto f = measure(config, args.steps);
    report["sft"] = {{"median_step_time_s", f.step_time_s}, {"tokens_per_s", f.tokens_per_s}};
    report["cpu_threads"] = f.cpu_threads;
  } else {
    config.ganpo.enabled = false;
    auto off = measure(config, args.steps);
    config.ganpo.enabled = true;
    auto on = measure(config, args.steps);
    report["ganpo_off"] = {{"median_step_time_s", off.step_time_s}, {"tokens_per_s", off.tokens_per_s}};
    report["ganpo_on"] = {{"median_step_time_s", on.step_time_s}, {"tokens_per_s", on.tokens_per_s}};
    report["step_time_ratio"] = off.step_time_s > 0 ? on.step_time_s / off.step_time_s : 0.0;
    report["cpu_threads"] = on.cpu_threads;
  }
  if (args.json) {
    std::printf("%s\n", report.dump(2).c_str());
    return 0;
  }
  std::printf("%s stage, %s model, %lld measured steps on %s\n", config.stage.c_str(),
              model_label(config).c_str(), static_cast<long long>(args.steps),
              report["device"].get<std::string>().c_str());
  if (!report["cpu_threads"].get<std::string>().empty())
    std::printf("  threads: %s (train.num_threads = %lld)\n", report["cpu_threads"].get<std::string>().c_str(),
                static_cast<long long>(config.train.num_threads));
  for (const char* key : {"sft", "ganpo_off", "ganpo_on"})
    if (report.contains(key))
      std::printf("  %-10s median step %.4f s, %.0f tokens/s\n", key, report[key]["median_step_time_s"].get<double>(),
                  report[key]["tokens_per_s"].get<double>());
  if (report.contains("step_time_ratio"))
    std::printf("  GANPO / base step-time ratio: %.3f\n", report["step_time_ratio"].get<double>());
  return 0;
}

}  // namespace ganpo::cli
