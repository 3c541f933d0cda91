#include "app/cli/console_progress.h"

#include <cstdio>

namespace ganpo::cli {

std::string format_duration(double s) {
  char buf[32];
  const long t = static_cast<long>(s + 0.5);
  if (t >= 3600)
    std::snprintf(buf, sizeof buf, "%ldh%02ldm", t / 3600, (t % 3600) / 60);
  else if (t >= 60)
    std::snprintf(buf, sizeof buf, "%ldm%02lds", t / 60, t % 60);
  else
    std::snprintf(buf, sizeof buf, "%lds", t);
  return buf;
}

void ConsoleProgress::on_start(int64_t total, int64_t first, const std::map<std::string, std::string>& info) {
  total_ = total;
  first_ = first;
  start_ = std::chrono::steady_clock::now();
  auto get = [&](const char* k) { auto it = info.find(k); return it == info.end() ? std::string("?") : it->second; };
  std::printf("[%s] %s stage on %s: %lld steps, %s parameters, %s training examples\n", label_.c_str(),
              get("stage").c_str(), get("device").c_str(), static_cast<long long>(total), get("parameters").c_str(),
              get("train_examples").c_str());
  std::printf("[%s] data: %s; held out: %s\n", label_.c_str(), get("train_data").c_str(), get("eval_data").c_str());
  if (auto it = info.find("batch"); it != info.end()) std::printf("[%s] batch: %s\n", label_.c_str(), it->second.c_str());
  if (auto it = info.find("cpu_threads"); it != info.end() && !it->second.empty())
    std::printf("[%s] CPU: %s\n", label_.c_str(), it->second.c_str());
  std::fflush(stdout);
}

void ConsoleProgress::on_status(const std::string& status, const std::string& message) {
  if (status == "running") return;
  std::printf("[%s] %s%s%s\n", label_.c_str(), status.c_str(), message.empty() ? "" : ": ", message.c_str());
  std::fflush(stdout);
}

void ConsoleProgress::on_log(const std::string& level, const std::string& text) {
  if (level == "info") return;  // the run's log has them
  std::fprintf(stderr, "[%s] %s: %s\n", label_.c_str(), level.c_str(), text.c_str());
}

void ConsoleProgress::on_metrics(int64_t step, const std::map<std::string, double>& m) {
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const double done = static_cast<double>(step - first_);
  const double eta = done > 0 ? elapsed / done * static_cast<double>(total_ - step) : 0.0;
  auto get = [&](const char* k) { auto it = m.find(k); return it == m.end() ? 0.0 : it->second; };
  std::printf("[%s] step %lld/%lld | loss %.4f", label_.c_str(), static_cast<long long>(step),
              static_cast<long long>(total_), get("loss"));
  if (m.count("rewards/accuracies")) std::printf(" | acc %.2f", get("rewards/accuracies"));
  if (m.count("critic/acc_chosen"))
    std::printf(" | critic acc %.2f/%.2f", get("critic/acc_chosen"), get("critic/acc_rejected"));
  std::printf(" | %.0f tok/s | ETA %s\n", get("tokens_per_s"), format_duration(eta).c_str());
  std::fflush(stdout);
}

void ConsoleProgress::on_eval(int64_t step, const EvalReport& report) {
  std::printf("[%s] eval at step %lld:", label_.c_str(), static_cast<long long>(step));
  for (const char* k : {"eval_loss", "eval_rewards/accuracies", "eval_rewards/margins"}) {
    auto it = report.preference.find(k);
    if (it != report.preference.end()) std::printf(" %s %.4f", k, it->second);
  }
  std::printf("\n");
  if (report.judge)
    for (const auto& r : report.judge->rows)
      if (r.bucket == "all")
        std::printf("[%s]   judge at T=%s: win rate vs reference %.3f, policy %.3f, reference %.3f%s\n",
                    label_.c_str(), temperature_label(r.temperature).c_str(), r.win_rate, r.policy_score,
                    r.reference_score,
                    r.policy_length >= 0 ? (", length " + std::to_string(static_cast<int>(r.policy_length + 0.5))).c_str() : "");
  if (!report.judge_error.empty()) std::printf("[%s]   judge failed: %s\n", label_.c_str(), report.judge_error.c_str());
  std::fflush(stdout);
}

void ConsoleProgress::on_checkpoint(int64_t step, const std::string& path, const std::map<std::string, double>&) {
  std::printf("[%s] saved %s\n", label_.c_str(), path.c_str());
  std::fflush(stdout);
}

}  // namespace ganpo::cli
