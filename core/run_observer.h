// How the training engine reports: the RunObserver interface.
//
// The Trainer knows nothing of files, SQLite or Qt. It calls an observer for status changes,
// log lines, metrics, evaluations, samples and checkpoints, and asks it for control commands
// (pause, resume, stop, sample now, checkpoint now) once per optimizer step. ObserverList fans
// one stream out to several observers (files, console, run store).
#pragma once

#include <cstdint>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "core/eval/eval_report.h"

namespace ganpo {

// A live sample that no judge scored. Not -1: an external judge may print any finite number.
inline constexpr double kNoJudgeScore = std::numeric_limits<double>::quiet_NaN();

struct SampleRecord {
  int64_t prompt_index = 0;
  std::string prompt;
  std::string policy;
  std::string reference;
  // Judge scores: a built-in judge's are in [0,1], an external judge's any finite number (-1
  // included); NaN when there is no judge or it failed (kNoJudgeScore).
  double policy_score = kNoJudgeScore;
  double reference_score = kNoJudgeScore;
};

enum class ControlCommand { None, Pause, Resume, Stop, Sample, Checkpoint };

// How the trainer's log line before it tries the longest training rows (after a stage's first
// step; core/train/trainer_state.h) begins: a worker that ends without a word after it was
// likely ended by the system for its memory (the store's failure says so: db/run_store.cpp).
inline constexpr const char* kTryingLongestRowsLog = "memory: trying";

class RunObserver {
public:
  virtual ~RunObserver() = default;
  // status: "running" | "paused" | "completed" | "stopped" | "failed"
  virtual void on_status(const std::string& status, const std::string& message) {}
  // Once the stage is set up: total optimizer steps, first step to run (> 0 after a resume),
  // and facts such as "device", "parameters", "train_examples".
  virtual void on_start(int64_t total_steps, int64_t first_step,
                        const std::map<std::string, std::string>& info) {}
  // level: "info" (the run's log only), "notice" (also worth a line on a console), "warning",
  // "error".
  virtual void on_log(const std::string& level, const std::string& text) {}
  virtual void on_metrics(int64_t step, const std::map<std::string, double>& metrics) {}
  // Held-out numbers, and at the end of a preference stage the judge evaluation too.
  virtual void on_eval(int64_t step, const EvalReport& report) {}
  virtual void on_samples(int64_t step, const std::vector<SampleRecord>& samples) {}
  // A stage resumed from a checkpoint saved before its step's held-out evaluation or live samples
  // (memory ran out there) does them again at `step` (its first): rows an earlier attempt from
  // that checkpoint recorded of them (`evaluation`, `samples`) are to go first.
  virtual void on_redo(int64_t step, bool evaluation, bool samples) {}
  virtual void on_checkpoint(int64_t step, const std::string& path,
                             const std::map<std::string, double>& metrics) {}
  virtual ControlCommand poll_control() { return ControlCommand::None; }
  // Returns once everything reported so far is kept where the observer keeps it (not queued):
  // before work the system may end the process for without a word, so its record says what it
  // was doing.
  virtual void flush() {}
  // Non-empty when the observer can no longer keep the run's record (its disk is full, its
  // workspace became read-only or vanished): the trainer stops the run with this message.
  virtual std::string storage_failure() const { return {}; }
};

class ObserverList final : public RunObserver {
public:
  void add(RunObserver* observer) { observers_.push_back(observer); }
  void on_status(const std::string& s, const std::string& m) override {
    for (auto* o : observers_) o->on_status(s, m);
  }
  void on_start(int64_t total, int64_t first, const std::map<std::string, std::string>& info) override {
    for (auto* o : observers_) o->on_start(total, first, info);
  }
  void on_log(const std::string& l, const std::string& t) override {
    for (auto* o : observers_) o->on_log(l, t);
  }
  void on_metrics(int64_t step, const std::map<std::string, double>& m) override {
    for (auto* o : observers_) o->on_metrics(step, m);
  }
  void on_eval(int64_t step, const EvalReport& r) override {
    for (auto* o : observers_) o->on_eval(step, r);
  }
  void on_samples(int64_t step, const std::vector<SampleRecord>& s) override {
    for (auto* o : observers_) o->on_samples(step, s);
  }
  void on_redo(int64_t step, bool evaluation, bool samples) override {
    for (auto* o : observers_) o->on_redo(step, evaluation, samples);
  }
  void on_checkpoint(int64_t step, const std::string& p, const std::map<std::string, double>& m) override {
    for (auto* o : observers_) o->on_checkpoint(step, p, m);
  }
  void flush() override {
    for (auto* o : observers_) o->flush();
  }
  std::string storage_failure() const override {
    for (auto* o : observers_)
      if (auto f = o->storage_failure(); !f.empty()) return f;
    return {};
  }
  // The first observer with a command wins.
  ControlCommand poll_control() override {
    for (auto* o : observers_)
      if (auto c = o->poll_control(); c != ControlCommand::None) return c;
    return ControlCommand::None;
  }

private:
  std::vector<RunObserver*> observers_;
};

}  // namespace ganpo
