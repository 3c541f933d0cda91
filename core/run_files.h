// Writes a run's record as plain files in its output_dir, for tools that read files:
// config.toml (resolved), metrics.jsonl ({"step": N, "<metric>": value, ...} per log line),
// eval.jsonl, samples.jsonl (one row per prompt per sampling step) and events.log.
// Lines are flushed as written so a crash loses nothing already reported. A stage that starts
// at step S (a resume, or train.auto_find_batch_size going on from a checkpoint) trains every
// step after S again: the jsonl files then keep only their rows of steps up to S, as the run
// store does (RunStore::rewind), so each step has one row; a step whose evaluation or samples are
// done again (on_redo) drops its earlier rows of them. events.log keeps every line.
#pragma once

#include <fstream>
#include <functional>
#include <string>
#include <string_view>

#include <nlohmann/json_fwd.hpp>

#include "core/config.h"
#include "core/run_observer.h"

namespace ganpo {

class RunFilesWriter final : public RunObserver {
public:
  // Creates output_dir; appends when resuming (append = true), else starts fresh files. Holds
  // output_dir/train.lock (flock) while it lives: a second process training into the same folder
  // (another workspace, --no-db, a second terminal) is refused with the first one's pid, rather
  // than both writing every file twice over. The lock goes with the process, however it ends
  // (on a file system without flock there is no guard).
  RunFilesWriter(const RunConfig& config, bool append);
  ~RunFilesWriter() override;
  void on_start(int64_t total_steps, int64_t first_step, const std::map<std::string, std::string>& info) override;
  void on_log(const std::string& level, const std::string& text) override;
  void on_metrics(int64_t step, const std::map<std::string, double>& metrics) override;
  void on_eval(int64_t step, const EvalReport& report) override;
  void on_samples(int64_t step, const std::vector<SampleRecord>& samples) override;
  void on_redo(int64_t step, bool evaluation, bool samples) override;

private:
  // Rewrites a jsonl file with only the rows whose step `keep` accepts (whole lines that parse; a
  // line a crash cut short goes too) and reopens it to append; `dropped` names the others in a
  // warning where the file cannot be rewritten.
  void keep_rows(std::ofstream& file, const std::string& name, const std::function<bool(int64_t)>& keep,
                 const std::string& dropped);

  std::string dir_;
  int lock_fd_ = -1;
  std::ofstream metrics_, eval_, samples_, events_;
};

// {"step": step, k: v...}; NaN and Inf are written as strings ("NaN", "Infinity") so the
// line stays valid JSON.
std::string metrics_line(int64_t step, const std::map<std::string, double>& metrics);
// A metric value as JSON: the number, or "NaN" / "Infinity" / "-Infinity".
nlohmann::json json_number(double value);
// JSON text that never throws: bytes that are not UTF-8 (a tiny model's samples can hold any
// byte) become U+FFFD.
std::string json_text(const nlohmann::json& value, int indent = -1);
std::string json_text(const nlohmann::ordered_json& value, int indent = -1);

// Writes text to path (replacing it) and closes it; throws ganpo::Error naming the path and the
// system's reason when any byte could not be written (a full disk), so the caller may trust the
// file's size afterwards.
void write_text_file(const std::string& path, const std::string& text);

// `text` as part of a file or folder name: letters, digits and the characters in `keep` stay,
// anything else becomes '_' (run folders, study arm folders).
std::string safe_file_name(std::string_view text, std::string_view keep = "-_");

}  // namespace ganpo
