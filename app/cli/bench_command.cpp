#include <malloc.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

#include "app/cli/commands.h"
#include "core/cpu_runtime.h"
#include "core/cpu_tensor_memory.h"
#include "core/error.h"
#include "core/memory_estimate.h"
#include "core/model/architectures.h"
#include "core/train/trainer.h"

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
    // A line without step figures (an evaluation's) is not a step; a run that fails (a loss gone
    // non-finite) says why through the trainer, not as a missing key here.
    for (const char* key : {"step_time_s", "tokens_per_s", "model_tflops"})
      if (!m.count(key)) return;
    step_times.push_back(m.at("step_time_s"));
    tokens_per_s.push_back(m.at("tokens_per_s"));
    model_tflops.push_back(m.at("model_tflops"));
    // Each log line covers one step (logging_steps = 1): FLOP/s x seconds is the step's FLOPs.
    model_tflop_per_step.push_back(m.at("model_tflops") * m.at("step_time_s"));
    if (m.count("mfu")) mfu.push_back(m.at("mfu"));
    // The allocator's peak restarts at each log line, so the run's peak is the largest.
    if (m.count("memory/cuda_peak_mb")) cuda_peak_mb = std::max(cuda_peak_mb, m.at("memory/cuda_peak_mb"));
    if (m.count("memory/cpu_tensor_peak_mb")) cpu_tensor_peak_mb = std::max(cpu_tensor_peak_mb, m.at("memory/cpu_tensor_peak_mb"));
  }
  std::vector<double> step_times, tokens_per_s, model_tflops, model_tflop_per_step, mfu;
  double cuda_peak_mb = -1, cpu_tensor_peak_mb = -1;
  std::string cpu_threads;  // the trainer's CPU plan; empty on CUDA
};

double median(std::vector<double> v) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

struct Figures {
  double step_time_s = 0, tokens_per_s = 0, model_tflops = 0;  // medians over the measured steps
  double model_tflop_per_step = 0;  // the model FLOPs of a step (core/model_flops.h), median
  double min_step_time_s = 0;  // the fastest step: on a shared machine the figure that repeats best
  std::vector<double> step_times_s;  // every measured step, in order
  double mfu = -1;                     // -1: the device's peak is unknown (CPUs)
  int64_t cuda_peak_bytes = -1;        // -1: not a CUDA run
  int64_t cpu_tensor_peak_bytes = -1;  // -1: not a CPU run; the peak of live tensors the run added
  std::string cpu_threads;
  int64_t peak_rss_growth_bytes = -1;  // -1: not measured (no /proc)
};

// A field of /proc/self/status in bytes ("VmRSS", "VmHWM"); -1 when it cannot be read.
int64_t proc_status_bytes(const std::string& field) {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line))
    if (line.rfind(field + ":", 0) == 0) return std::stoll(line.substr(field.size() + 1)) * 1024;  // "...  123 kB"
  return -1;
}

// The process's peak resident memory starts again from what it holds now (Linux: clear_refs 5).
bool reset_peak_rss() {
  std::ofstream clear("/proc/self/clear_refs");
  clear << "5";
  return static_cast<bool>(clear.flush());
}

// The memory estimate of the New Run dialog for this config, with the model folder's own shape.
MemoryEstimate estimate_of(RunConfig config) {
  config.device = resolve_device(config.device);
  if (config.model.checkpoint.empty()) return estimate_training_memory(config);
  const std::string path = config.model.checkpoint + "/config.json";
  std::ifstream in(path);
  if (!in) throw Error("cannot read " + path + " for the memory estimate");
  return estimate_training_memory(config, read_hf_config(nlohmann::json::parse(in), path));
}

Figures measure(RunConfig config, int64_t steps) {
  constexpr int64_t kWarmupSteps = 2;  // allocator and thread-pool warm-up, not measured
  config.train.max_steps = steps + kWarmupSteps;
  config.train.logging_steps = 1;
  StepTimes times;
  TrainerOptions options;
  options.benchmark = true;
  ::malloc_trim(0);  // what the previous variant freed goes back to the system, not into this one's figure
  const bool peak_reset = reset_peak_rss();
  const int64_t rss_before = proc_status_bytes("VmRSS");
  const int64_t tensors_before = cpu_tensor_memory().allocated_bytes;
  Trainer trainer(config, times, options);
  auto result = trainer.run();
  const int64_t peak = proc_status_bytes("VmHWM");
  if (result.status != "completed") throw Error("benchmark run " + result.status + ": " + result.message);
  times.step_times.erase(times.step_times.begin(), times.step_times.begin() + kWarmupSteps);
  times.tokens_per_s.erase(times.tokens_per_s.begin(), times.tokens_per_s.begin() + kWarmupSteps);
  times.model_tflops.erase(times.model_tflops.begin(), times.model_tflops.begin() + kWarmupSteps);
  times.model_tflop_per_step.erase(times.model_tflop_per_step.begin(), times.model_tflop_per_step.begin() + kWarmupSteps);
  if (!times.mfu.empty()) times.mfu.erase(times.mfu.begin(), times.mfu.begin() + kWarmupSteps);
  Figures f;
  f.step_time_s = median(times.step_times);
  f.step_times_s = times.step_times;
  if (!times.step_times.empty()) f.min_step_time_s = *std::min_element(times.step_times.begin(), times.step_times.end());
  f.tokens_per_s = median(times.tokens_per_s);
  f.model_tflops = median(times.model_tflops);
  f.model_tflop_per_step = median(times.model_tflop_per_step);
  if (!times.mfu.empty()) f.mfu = median(times.mfu);
  f.cpu_threads = times.cpu_threads;
  f.peak_rss_growth_bytes = peak_reset && peak >= 0 && rss_before >= 0 ? peak - rss_before : -1;
  if (times.cuda_peak_mb >= 0) f.cuda_peak_bytes = static_cast<int64_t>(times.cuda_peak_mb * 1024.0 * 1024.0);
  if (times.cpu_tensor_peak_mb >= 0)
    f.cpu_tensor_peak_bytes = static_cast<int64_t>(times.cpu_tensor_peak_mb * 1024.0 * 1024.0) - tensors_before;
  return f;
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
  if (config.train.num_processes > 1)
    std::fprintf(stderr, "ganpo bench: train.num_processes = %lld: the bench measures one process (one rank's step "
                         "without the gradient all-reduce); a data-parallel run's own dashboard shows the world's speed\n",
                 static_cast<long long>(config.train.num_processes));
  if (config.train.auto_find_batch_size)
    std::fprintf(stderr, "ganpo bench: train.auto_find_batch_size does not apply here: the bench measures the batch it "
                         "is given (%lld rows a micro-batch) and a step that runs out of memory ends it\n",
                 static_cast<long long>(config.train.per_device_train_batch_size));
  // The kernel set decides most of a CPU step's time: say when the environment holds it back.
  const std::string slow_blas = blas_kernel_warning();
  if (!slow_blas.empty() && resolve_device(config.device) == "cpu") std::fprintf(stderr, "ganpo bench: %s\n", slow_blas.c_str());
  // Live CPU tensors are counted from here (core/cpu_tensor_memory.h), for the estimate's figure.
  if (resolve_device(config.device) == "cpu") count_cpu_tensor_memory();
  nlohmann::json report = {{"stage", config.stage}, {"steps", args.steps},
                           {"device", resolve_device(config.device)}, {"model", model_label(config)}};
  // Each variant: its speed, the dialog's memory estimate for it and the growth of the process's
  // peak resident memory while it ran (CPU; on CUDA the device's memory is what counts).
  auto figures = [](const Figures& f, const RunConfig& c) {
    return nlohmann::json{{"median_step_time_s", f.step_time_s},
                          {"min_step_time_s", f.min_step_time_s},
                          {"step_times_s", f.step_times_s},
                          {"tokens_per_s", f.tokens_per_s},
                          {"model_tflops", f.model_tflops},
                          {"model_tflop_per_step", f.model_tflop_per_step},
                          {"mfu", f.mfu},
                          {"memory_estimate_bytes", estimate_of(c).step_total_bytes},
                          {"peak_rss_growth_bytes", f.peak_rss_growth_bytes},
                          {"cuda_peak_bytes", f.cuda_peak_bytes},
                          {"cpu_tensor_peak_bytes", f.cpu_tensor_peak_bytes}};
  };
  if (config.stage == "sft") {
    auto f = measure(config, args.steps);
    report["sft"] = figures(f, config);
    report["cpu_threads"] = f.cpu_threads;
  } else {
    config.ganpo.enabled = false;
    auto off = measure(config, args.steps);
    report["ganpo_off"] = figures(off, config);
    config.ganpo.enabled = true;
    auto on = measure(config, args.steps);
    report["ganpo_on"] = figures(on, config);
    report["step_time_ratio"] = off.step_time_s > 0 ? on.step_time_s / off.step_time_s : 0.0;
    // What the critics' matrix products add to the step by count: what the step-time ratio would
    // be if the critics ran at the policy's FLOP rate.
    report["model_flops_ratio"] = off.model_tflop_per_step > 0 ? on.model_tflop_per_step / off.model_tflop_per_step : 0.0;
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
  auto mib = [](const nlohmann::json& bytes) { return static_cast<double>(bytes.get<int64_t>()) / (1024.0 * 1024.0); };
  for (const char* key : {"sft", "ganpo_off", "ganpo_on"}) {
    if (!report.contains(key)) continue;
    const auto& r = report[key];
    std::printf("  %-10s median step %.4f s (fastest %.4f s), %.0f tokens/s, %.3g model TFLOP/s", key,
                r["median_step_time_s"].get<double>(), r["min_step_time_s"].get<double>(), r["tokens_per_s"].get<double>(),
                r["model_tflops"].get<double>());
    if (r["mfu"].get<double>() >= 0) std::printf(" (MFU %.1f %%)", 100.0 * r["mfu"].get<double>());
    std::printf("; memory estimate %.0f MiB", mib(r["memory_estimate_bytes"]));
    if (r["cuda_peak_bytes"].get<int64_t>() >= 0) std::printf(", CUDA peak allocated %.0f MiB", mib(r["cuda_peak_bytes"]));
    if (r["cpu_tensor_peak_bytes"].get<int64_t>() >= 0) std::printf(", peak tensors %.0f MiB", mib(r["cpu_tensor_peak_bytes"]));
    if (r["peak_rss_growth_bytes"].get<int64_t>() >= 0) std::printf(", peak RSS grew %.0f MiB", mib(r["peak_rss_growth_bytes"]));
    std::printf("\n");
  }
  if (report.contains("step_time_ratio"))
    std::printf("  GANPO / base step-time ratio: %.3f (model FLOPs ratio %.3f: the critics' matrix products)\n",
                report["step_time_ratio"].get<double>(), report["model_flops_ratio"].get<double>());
  return 0;
}

}  // namespace ganpo::cli
