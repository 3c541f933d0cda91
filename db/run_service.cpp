#include "db/run_service.h"

#include <sqlite3.h>
#include <unistd.h>

#include <set>

#include <nlohmann/json.hpp>

#include "core/dataset_files.h"
#include "core/eval/eval_report.h"
#include "core/error.h"
#include "core/run_files.h"
#include "core/tasks/task.h"
#include "db/run_recorder.h"

namespace ganpo {
namespace fs = std::filesystem;

namespace {

// Letters, digits, - and _ of a run name (at most 40), for its folder.
std::string folder_name(const std::string& name) {
  const std::string safe = safe_file_name(name).substr(0, 40);
  return safe.empty() ? "run" : safe;
}


// A built-in task's held-out pairs as the eval worker reads them (TRL JSONL), from a seed of their
// own (the same pairs for every checkpoint of every run), written afresh for this user through a
// temporary file, so a stale or foreign file is never read.
std::string write_held_out_pairs(const Task& task, const std::string& scratch_dir) {
  constexpr int64_t kPairs = 200;
  constexpr uint64_t kSeed = 987654321ULL;
  const fs::path path = fs::path(scratch_dir) / ("ganpo-held-out-" + task.name() + "-uid" + std::to_string(::getuid()) + ".jsonl");
  const fs::path tmp = path.string() + ".tmp-" + std::to_string(::getpid());
  write_preference_jsonl(task.preference_pairs(kPairs, 0.0, kSeed), tmp.string());
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) {
    fs::remove(tmp, ec);
    throw Error("cannot write " + path.string() + ": " + ec.message());
  }
  return path.string();
}

// Whether `inner` is `outer` or lies inside it (both lexically normal, absolute).
bool lies_within(const fs::path& inner, const fs::path& outer) {
  auto o = outer.begin(), i = inner.begin();
  for (; o != outer.end() && !o->empty(); ++o, ++i)
    if (i == inner.end() || *i != *o) return false;
  return true;
}

// Why run `run_id`'s output folder must stay although its run is deleted ("" = it may go): it is a
// link (removing it would free nothing), it holds the workspace, or another run (not deleted in
// the same action) writes to it or inside it (two configs with one output_dir; output_dir = "."
// around the others) or starts from a checkpoint inside it (a clone, a study's shared stage).
std::string folder_in_use(RunStore& store, int64_t run_id, const fs::path& output_dir,
                          const std::set<int64_t>& also_deleted) {
  if (fs::is_symlink(output_dir))
    return "it is a symbolic link (to " + output_folder_key(output_dir.string()) + "); remove what it points to yourself";
  const std::string dir = output_folder_key(output_dir.string());
  if (lies_within(output_folder_key(store.path()), dir)) return "it holds this workspace (" + store.path() + ")";
  // (Index range reads of the runs' resolved folders: no other run's config is read.)
  for (const RunStore::FolderUser& other : store.runs_using_folder(dir)) {
    if (other.id == run_id || also_deleted.count(other.id)) continue;
    return "run " + std::to_string(other.id) + " (" + other.name + ") " + (other.writes ? "writes to " : "starts from ") +
           other.path + "; delete that run first, or remove the folder yourself";
  }
  return "";
}

// Whether a run other than run_id writes to dir, however either spells it (an index lookup of
// its resolved form, schema v7: no other run's config is read).
bool folder_taken(RunStore& store, int64_t run_id, const std::string& dir) {
  return store.another_run_writes_to(run_id, output_folder_key(dir));
}

}  // namespace

bool looks_like_run_folder(const fs::path& dir) {
  return fs::is_directory(dir) &&
         (fs::exists(dir / "metrics.jsonl") || fs::exists(dir / "events.log") || fs::exists(dir / "config.toml"));
}

int64_t RunService::create(RunConfig config, const CreateRunOptions& options) {
  if (!config.pipeline.empty())
    throw ConfigError("the config chains " + std::to_string(config.pipeline.size() + 1) +
                      " stages ([[pipeline]]): it is queued as a study of one run per stage (queue_study), not as one run");
  std::optional<sql::Transaction> txn;  // or inside the caller's (a study creates many runs in one)
  if (sqlite3_get_autocommit(store_.database().get()) != 0) txn.emplace(store_.database());
  const int64_t id = store_.create_run(config.name, config.stage, config_to_json(config).dump());
  if (!options.runs_dir.empty() && is_default_output_dir(config.output_dir))
    config.output_dir = (fs::path(options.runs_dir) / (std::to_string(id) + "-" + folder_name(config.name))).string();
  make_paths_absolute(config);
  // A config trained again (the same file, another seed) would write into the first run's
  // folder, replacing its checkpoints and final weights: this run writes beside it, "-2", "-3".
  if (!options.keep_output_dir && folder_taken(store_, id, config.output_dir)) {
    std::string base = fs::path(config.output_dir).lexically_normal().string();
    if (base.size() > 1 && base.back() == '/') base.pop_back();
    for (int n = 2;; ++n)
      if (const std::string next = base + "-" + std::to_string(n); !folder_taken(store_, id, next) && !fs::exists(next)) {
        config.output_dir = next;
        break;
      }
  }
  resolve_data_source(config.data);
  store_.set_config(id, config_to_json(config).dump());
  if (options.parent_run) store_.set_parent(id, *options.parent_run, options.parent_step.value_or(0));
  if (txn) txn->commit();
  return id;
}

RemoveRunResult RunService::remove(int64_t run_id, bool with_files, const std::string& logs_dir,
                                   const std::set<int64_t>& also_deleted) {
  RemoveRunResult result;
  fs::path folder;
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
    // "out/" names the folder as "out" does: with the slash, a link would be followed.
    folder = fs::path(result.output_dir).lexically_normal();
    if (!folder.has_filename()) folder = folder.parent_path();
    if (with_files && !result.output_dir.empty())
      result.folder_kept = folder_in_use(store_, run_id, folder, also_deleted);
    store_.delete_run(run_id);
    txn.commit();
  }
  result.removed = true;
  if (!with_files) return result;
  if (!logs_dir.empty()) {
    std::error_code ec;
    fs::remove(fs::path(logs_dir) / ("run-" + std::to_string(run_id) + ".log"), ec);
  }
  if (result.output_dir.empty() || !result.folder_kept.empty()) return result;
  if (!looks_like_run_folder(folder)) {
    result.folder_kept = fs::exists(folder) ? "it does not look like a run's output folder" : "it does not exist";
    return result;
  }
  std::error_code ec;
  fs::remove_all(folder, ec);
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
           (is_resumable(run->status) ? "; continue it with: ganpo runs resume " + std::to_string(run_id) + store_.db_option()
                                      : "");
  store_.set_control(run_id, command);
  return "";
}

CheckpointEvalPlan RunService::plan_checkpoint_eval(int64_t run_id, const std::string& checkpoint,
                                                    const CheckpointEvalOptions& options, const std::string& scratch_dir) {
  CheckpointEvalPlan plan;
  const std::optional<RunRow> run = store_.run(run_id);
  if (!run) {
    plan.refused = "there is no run " + std::to_string(run_id);
    return plan;
  }
  RunConfig config;
  try {
    config = config_from_json(nlohmann::json::parse(run->config_json));
  } catch (const std::exception& e) {
    plan.refused = "run " + std::to_string(run_id) + " has no readable config: " + e.what();
    return plan;
  }
  const std::string reference = config.model.reference.empty() ? config.model.checkpoint : config.model.reference;
  if (reference.empty()) {
    plan.refused = "this run has no reference model folder (model.reference or model.checkpoint) to evaluate against";
    return plan;
  }
  const Task* task = uses_builtin_task(config.data) ? find_builtin_task(builtin_task_name(config.data)) : nullptr;
  std::string pairs;
  if (options.preference_pairs) {
    if (!config.data.eval.empty()) pairs = config.data.eval;
    else if (task) pairs = write_held_out_pairs(*task, scratch_dir);
  }
  // A data file's judge is eval.judge_command, on the held-out prompts the run wrote.
  std::string prompts_file;
  if (!task && !config.eval.judge_command.empty()) {
    const fs::path p = fs::path(config.output_dir) / kJudgePromptsFile;
    if (fs::is_regular_file(p)) prompts_file = p.string();
  }
  if (!task && pairs.empty() && prompts_file.empty()) {
    plan.refused = !config.data.eval.empty()
                       ? "this run trains on a data file, which has no built-in judge: tick the held-out pairs to "
                         "evaluate its checkpoints on " + config.data.eval
                       : "this run trains on " + config.data.train +
                             " without a held-out file (data.eval) and has no built-in task whose prompts a judge "
                             "knows: name a held-out file in the run's config to evaluate its checkpoints";
    return plan;
  }
  auto& a = plan.arguments;
  a = {"eval", "--checkpoint", checkpoint, "--reference", reference, "--json"};
  nlohmann::json params{{"checkpoint", checkpoint}, {"reference", reference}, {"pairs", pairs.empty() ? nlohmann::json() : nlohmann::json(pairs)}};
  if (!pairs.empty()) a.insert(a.end(), {"--pairs", pairs});
  if (task || !prompts_file.empty()) {
    std::string temps;
    for (double t : options.temperatures) temps += (temps.empty() ? "" : ",") + temperature_label(t);
    if (task) {
      a.insert(a.end(), {"--builtin", task->name()});
      params["builtin"] = task->name();
    } else {
      a.insert(a.end(), {"--prompts", prompts_file});
      params["prompts"] = prompts_file;
    }
    a.insert(a.end(), {"--temperatures", temps, "--num-prompts", std::to_string(options.num_prompts), "--max-new-tokens",
                       std::to_string(options.max_new_tokens), "--seed", std::to_string(options.seed)});
    if (!config.eval.judge_command.empty())
      a.insert(a.end(), {"--judge-command", config.eval.judge_command, "--judge-timeout",
                         nlohmann::json(config.eval.judge_timeout_s).dump()});
    params.update({{"temperatures", options.temperatures}, {"num_prompts", options.num_prompts},
                   {"max_new_tokens", options.max_new_tokens}, {"seed", options.seed}});
  }
  // Held-out numbers with the run's own objective, as its training evaluations have them.
  a.insert(a.end(), {"--loss-type", config.objective.loss_type, "--beta", nlohmann::json(config.objective.beta).dump(),
                     "--simpo-gamma", nlohmann::json(config.objective.simpo_gamma).dump()});
  plan.params_json = params.dump();
  return plan;
}

int64_t RunService::store_checkpoint_eval(int64_t run_id, int64_t step, const std::string& params_json,
                                          const std::string& worker_stdout) {
  const nlohmann::json j = nlohmann::json::parse(worker_stdout, nullptr, false);
  const EvalReport report = eval_report_from_json(j);
  if (!j.is_object() || report.empty())
    throw Error("the evaluation printed no report (" + std::to_string(worker_stdout.size()) + " bytes of output)");
  return store_.add_eval(run_id, step, "eval", params_json, to_json_text(report));
}

bool is_default_output_dir(const std::string& dir) {
  return dir.empty() || dir == RunConfig{}.output_dir || dir == "runs/demo";
}

}  // namespace ganpo
