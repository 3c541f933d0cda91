#include "db/run_service.h"

#include <sqlite3.h>

#include <nlohmann/json.hpp>

#include "core/run_files.h"
#include "db/run_recorder.h"

namespace ganpo {
namespace fs = std::filesystem;

namespace {

// Letters, digits, - and _ of a run name (at most 40), for its folder.
std::string folder_name(const std::string& name) {
  const std::string safe = safe_file_name(name).substr(0, 40);
  return safe.empty() ? "run" : safe;
}

bool default_output_dir(const std::string& dir) {
  return dir.empty() || dir == RunConfig{}.output_dir || dir == "runs/demo";
}

}  // namespace

bool looks_like_run_folder(const fs::path& dir) {
  return fs::is_directory(dir) &&
         (fs::exists(dir / "metrics.jsonl") || fs::exists(dir / "events.log") || fs::exists(dir / "config.toml"));
}

int64_t RunService::create(RunConfig config, const CreateRunOptions& options) {
  std::optional<sql::Transaction> txn;  // or inside the caller's (a study creates many runs in one)
  if (sqlite3_get_autocommit(store_.database().get()) != 0) txn.emplace(store_.database());
  const int64_t id = store_.create_run(config.name, config.stage, config_to_json(config).dump());
  if (!options.runs_dir.empty() && default_output_dir(config.output_dir))
    config.output_dir = (fs::path(options.runs_dir) / (std::to_string(id) + "-" + folder_name(config.name))).string();
  make_paths_absolute(config);
  resolve_data_source(config.data);
  store_.set_config(id, config_to_json(config).dump());
  if (options.parent_run) store_.set_parent(id, *options.parent_run, options.parent_step.value_or(0));
  if (txn) txn->commit();
  return id;
}

RemoveRunResult RunService::remove(int64_t run_id, bool with_files, const std::string& logs_dir) {
  RemoveRunResult result;
  {
    // Checked and deleted under the write lock, so no driver or worker claims it in between.
    sql::Transaction txn(store_.database());
    const std::optional<RunRow> run = store_.run(run_id);
    if (!run) {
      result.refused = "there is no run " + std::to_string(run_id);
      return result;
    }
    if (worker_attached(*run)) {
      result.refused = "run " + std::to_string(run_id) + " is " + to_string(run->status) + " (worker pid " +
                       std::to_string(run->worker_pid.value_or(0)) + "); stop it first";
      return result;
    }
    sql::Statement waiting(store_.database(),
                           "SELECT COUNT(*) FROM runs WHERE depends_on = ? AND status NOT IN ('completed', 'failed', 'stopped')");
    waiting.bind(1, run_id);
    if (waiting.step() && waiting.col_int(0) > 0) {
      result.refused = "run " + std::to_string(run_id) + " is the shared stage that " + std::to_string(waiting.col_int(0)) +
                       " queued study run(s) start from; cancel the study first (ganpo study cancel ID)";
      return result;
    }
    if (auto cfg = nlohmann::json::parse(run->config_json, nullptr, false); cfg.is_object())
      result.output_dir = cfg.value("output_dir", std::string());
    store_.delete_run(run_id);
    txn.commit();
  }
  result.removed = true;
  if (!with_files) return result;
  if (!logs_dir.empty()) {
    std::error_code ec;
    fs::remove(fs::path(logs_dir) / ("run-" + std::to_string(run_id) + ".log"), ec);
  }
  if (result.output_dir.empty()) return result;
  if (!looks_like_run_folder(result.output_dir)) {
    result.folder_kept = fs::exists(result.output_dir) ? "it does not look like a run's output folder" : "it does not exist";
    return result;
  }
  std::error_code ec;
  fs::remove_all(result.output_dir, ec);
  if (ec)
    result.folder_kept = ec.message();
  else
    result.folder_removed = true;
  return result;
}

std::string RunService::control(int64_t run_id, const std::string& command) {
  if (RunRecorder::parse_control(command) == ControlCommand::None)
    return "unknown command '" + command + "'; use pause, resume, stop, sample or checkpoint";
  const std::optional<RunRow> run = store_.run(run_id);
  if (!run) return "there is no run " + std::to_string(run_id);
  if (!worker_attached(*run))
    return "run " + std::to_string(run_id) + " is " + to_string(run->status) + ", no worker is training it" +
           (is_resumable(run->status) ? "; continue it with: ganpo runs resume " + std::to_string(run_id) : "");
  store_.set_control(run_id, command);
  return "";
}

}  // namespace ganpo
