// Prints a run's progress to the terminal: one line per logged step (step/total, loss,
// tokens/s, ETA), evaluations, checkpoints, warnings and the final status.
#pragma once

#include <chrono>
#include <string>

#include "core/run_observer.h"

namespace ganpo::cli {

class ConsoleProgress final : public RunObserver {
public:
  explicit ConsoleProgress(std::string label) : label_(std::move(label)) {}
  void on_start(int64_t total, int64_t first, const std::map<std::string, std::string>& info) override;
  void on_status(const std::string& status, const std::string& message) override;
  void on_log(const std::string& level, const std::string& text) override;
  void on_metrics(int64_t step, const std::map<std::string, double>& metrics) override;
  void on_eval(int64_t step, const EvalReport& report) override;
  void on_checkpoint(int64_t step, const std::string& path, const std::map<std::string, double>&) override;

private:
  std::string label_;
  int64_t total_ = 0, first_ = 0;
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
};

std::string format_duration(double seconds);  // "1h02m", "3m07s", "42s"

}  // namespace ganpo::cli
