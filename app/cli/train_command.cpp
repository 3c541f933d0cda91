#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "app/cli/commands.h"
#include "app/cli/console_progress.h"
#include "app/cli/process_launcher.h"
#include "core/atomic_folder.h"
#include "core/distributed_env.h"
#include "core/error.h"
#include "core/relaunch_request.h"
#include "core/run_files.h"
#include "core/study_spec.h"
#include "core/train/trainer.h"
#include "db/run_recorder.h"
#include "db/run_service.h"
#include "db/run_store.h"
#include "db/study_queue.h"
#include "db/workspace_path.h"

namespace fs = std::filesystem;

namespace ganpo::cli {

RunConfig load_run_config(const std::string& path, const std::vector<std::string>& overrides) {
  RunConfig config = load_config_file(path);
  for (const auto& o : overrides) apply_override(config, o);
  validate_or_throw(config);
  return config;
}

std::string workspace_path(const std::string& db_option) {
  return db_option.empty() ? default_workspace_path() : db_option;
}

namespace {

// What a data-parallel rank other than 0 says: its warnings and errors, on stderr with its rank
// (rank 0 writes the run's files, store rows and progress).
class RankLog final : public RunObserver {
public:
  explicit RankLog(int rank) : rank_(rank) {}
  void on_log(const std::string& level, const std::string& text) override {
    if (level == "warning" || level == "error") std::fprintf(stderr, "[rank %d] %s: %s\n", rank_, level.c_str(), text.c_str());
  }

private:
  int rank_;
};

// Testing aid: GANPO_FREE_RAM_FOR_TESTS=BYTES[,BYTES...] stands for the free RAM a process reads
// (TrainerOptions::free_ram_for_tests), one value for every rank or one a rank, by RANK.
int64_t free_ram_for_tests(int rank) {
  const char* env = std::getenv("GANPO_FREE_RAM_FOR_TESTS");
  if (env == nullptr || *env == '\0') return -1;
  std::vector<int64_t> values;
  std::istringstream in(env);
  for (std::string v; std::getline(in, v, ',');) {
    char* end = nullptr;
    const long long bytes = std::strtoll(v.c_str(), &end, 10);
    if (v.empty() || *end != '\0' || bytes < 0)
      throw ConfigError("GANPO_FREE_RAM_FOR_TESTS = \"" + std::string(env) + "\": give bytes, one number for every "
                        "rank or one a rank, separated by commas");
    values.push_back(bytes);
  }
  return values.empty() ? -1 : values[std::min(static_cast<size_t>(rank), values.size() - 1)];
}

}  // namespace

TrainResult run_stage(const RunConfig& config, const TrainerOptions& options_in, const RunRecordTarget& record) {
  TrainerOptions options = options_in;
  if (!options.distributed) options.distributed = read_distributed_env();
  if (options.free_ram_for_tests < 0) options.free_ram_for_tests = free_ram_for_tests(options.distributed->rank);
  if (options.distributed->rank > 0) {
    RankLog quiet(options.distributed->rank);
    return Trainer(config, quiet, options).run();
  }
  RunFilesWriter files(config, /*append=*/!options.resume_from.empty());
  ConsoleProgress console(config.name);
  std::unique_ptr<RunRecorder> recorder;
  if (record.run_id > 0) {
    RunRecorder::Options recorder_options;
    recorder_options.worker_pid = record.worker_pid;
    recorder = std::make_unique<RunRecorder>(record.db_path, record.run_id, recorder_options);
  }
  ObserverList observers;
  observers.add(&files);
  observers.add(&console);
  if (recorder) observers.add(recorder.get());
  Trainer trainer(config, observers, options);
  TrainResult result = trainer.run();
  if (recorder) {
    recorder->flush();
    if (!recorder->last_error().empty())
      std::fprintf(stderr, "warning: some records may be missing from %s: %s\n", record.db_path.c_str(),
                   recorder->last_error().c_str());
  }
  return result;
}

int report_result(const char* command, const TrainResult& result, const std::string& resume_hint) {
  const int rank = read_distributed_env().rank;  // the other ranks of a data-parallel run say only why they failed
  if (result.status == "failed") {
    std::fprintf(stderr, "%s%s: failed: %s\n", rank > 0 ? ("[rank " + std::to_string(rank) + "] ").c_str() : "", command,
                 result.message.c_str());
    return 1;
  }
  if (result.status == "relaunch") return kRelaunchExitCode;  // (its warning is on the console already)
  if (rank > 0) return result.status == "stopped" ? 130 : 0;
  if (result.status == "stopped") {
    std::printf("stopped at step %lld; continue with: %s\n", static_cast<long long>(result.steps), resume_hint.c_str());
    return 130;
  }
  std::printf("completed %lld steps; final model in %s\n", static_cast<long long>(result.steps),
              result.final_dir.c_str());
  return 0;
}

namespace {

// The newest checkpoint of the run that can be resumed from (its folder still has
// trainer_state/ and its completion marker); empty when there is none. Says which newer ones
// it passed over and why.
std::string last_resumable_checkpoint(RunStore& store, int64_t run_id) {
  auto rows = store.checkpoints(run_id);
  for (auto it = rows.rbegin(); it != rows.rend(); ++it) {
    if (!fs::is_directory(fs::path(it->path) / "trainer_state")) continue;
    const std::string why = incomplete_reason(it->path);
    if (why.empty()) return it->path;
    std::printf("run %lld: skipping %s: %s\n", static_cast<long long>(run_id), it->path.c_str(), why.c_str());
  }
  return "";
}

}  // namespace

namespace {

// Claims the run for `pid` (the process that trains it, or the launcher of its ranks); when
// another worker holds it, says which and how to stop it.
bool claim_or_explain(RunStore& store, int64_t run_id, int64_t pid) {
  if (store.claim_run(run_id, pid)) return true;
  const auto now = store.run(run_id);
  std::fprintf(stderr,
               "ganpo: run %lld is already being trained by worker pid %lld on %s (status %s); "
               "stop it first with: ganpo runs control %lld stop\n",
               static_cast<long long>(run_id), static_cast<long long>(now ? now->worker_pid.value_or(0) : 0),
               now ? now->worker_host.c_str() : "?", now ? to_string(now->status) : "?", static_cast<long long>(run_id));
  return false;
}

// train.num_processes > 1 and no launcher around this process: it has claimed the run and
// becomes the launcher of the run's ranks, each a worker of the same run (rank 0 records the
// run in the launcher's name: the launcher stays its worker until the last rank has ended). A
// rank that fails stops the others; its exit is added to the run's events, and the run is
// marked failed with it unless rank 0 already recorded why.
int launch_worker_ranks(const std::string& db_path, int64_t run_id, const std::string& resume_from, int64_t processes) {
  LaunchPlan plan;
  plan.nproc_per_node = static_cast<int>(processes);
  plan.command = {"train", "--db", db_path, "--run", std::to_string(run_id)};
  if (!resume_from.empty()) plan.command.insert(plan.command.end(), {"--resume", resume_from});
  std::printf("run %lld: starting %lld processes (train.num_processes)\n", static_cast<long long>(run_id),
              static_cast<long long>(processes));
  std::fflush(stdout);
  const LaunchOutcome outcome = launch_processes(plan);
  if (outcome.failed_rank < 0) return outcome.exit_code;
  try {
    RunStore store = RunStore::open(db_path);
    const auto row = store.run(run_id);
    // Only while the run is still this launcher's: had it been taken as dead meanwhile and
    // started again by another worker, that worker's run is not touched.
    if (!row || row->worker_pid != static_cast<int64_t>(::getpid()) || row->worker_host != local_host_name()) {
      std::fprintf(stderr, "ganpo: run %lld has another worker now; this launcher's failure is not recorded there\n",
                   static_cast<long long>(run_id));
    } else {
      // A rank the system killed says nothing: where rank 0 was trying its longest training rows
      // (its last log line: it was the one killed) or held half the machine's memory, the
      // out-of-memory killer is the likely cause. (Rank 0 says so itself where another rank was.)
      // (A rank the launcher would have started again for its memory has its message say so.)
      const std::string cause =
          outcome.message + (outcome.killed_by == SIGKILL && !outcome.asked_again ? store.memory_kill_hint(*row) : "");
      const std::string others = outcome.asked_again ? "" : "; the other ranks were stopped";
      store.add_event(run_id, "error", "data-parallel launcher: " + cause + others);
      if (row->status != RunStatus::failed && row->status != RunStatus::completed)
        store.set_status(run_id, RunStatus::failed, cause + others + ". Resume the run from its last checkpoint");
    }
  } catch (const Error& e) {
    std::fprintf(stderr, "ganpo: run %lld: could not record the failure: %s\n", static_cast<long long>(run_id), e.what());
  }
  std::fprintf(stderr, "ganpo train: failed: %s\n", outcome.message.c_str());
  return outcome.exit_code;
}

}  // namespace

int run_worker(const std::string& db_path, int64_t run_id, const std::string& resume_from) {
  const DistributedEnv env = read_distributed_env();
  RunStore store = RunStore::open(db_path);  // also marks runs of dead workers failed
  const auto row = store.run(run_id);
  if (!row) {
    std::fprintf(stderr, "ganpo: no run %lld in %s; `ganpo runs list --db %s` lists the runs\n",
                 static_cast<long long>(run_id), db_path.c_str(), db_path.c_str());
    return 2;
  }
  if (row->status == RunStatus::completed) {
    std::fprintf(stderr, "ganpo: run %lld has already completed; clone it to train again\n",
                 static_cast<long long>(run_id));
    return 2;
  }
  auto fail = [&](const std::string& msg) {
    if (env.rank == 0) store.set_status(run_id, RunStatus::failed, msg);
    std::fprintf(stderr, "ganpo: run %lld: %s\n", static_cast<long long>(run_id), msg.c_str());
    return 2;
  };
  // Where the run continues: the checkpoint given, else its newest complete one ("" = step 0).
  // Recorded checkpoints whose folders are all unusable (damaged, or gone: moved, deleted, a drive
  // not mounted) stop it: starting over would delete the run's recorded steps, so a person decides.
  std::string no_complete_checkpoint;
  auto resume_point = [&](std::string& from) {
    from = resume_from.empty() ? last_resumable_checkpoint(store, run_id) : resume_from;
    if (!from.empty()) return true;
    const auto rows = store.checkpoints(run_id);
    for (auto it = rows.rbegin(); it != rows.rend(); ++it) {
      if (fs::is_directory(fs::path(it->path) / "trainer_state")) {
        no_complete_checkpoint = "the run has checkpoint folders but none is complete (see above); starting again "
                                 "from step 0 would delete its recorded steps. Restore a checkpoint folder, or clone "
                                 "the run to train it anew";
        return false;
      }
      if (!fs::exists(it->path)) {
        no_complete_checkpoint = "the run's checkpoint folder " + it->path + " (step " + std::to_string(it->step) +
                                 ") is gone; starting again from step 0 would delete its recorded steps. Put the "
                                 "folder back (moved? a drive not mounted?), or clone the run to train it anew";
        return false;
      }
    }
    return true;
  };
  if (!env.distributed()) {
    // A config that cannot be read fails below, as it always did.
    int64_t processes = 1;
    try {
      processes = config_from_json(nlohmann::json::parse(row->config_json)).train.num_processes;
    } catch (const std::exception&) {
    }
    if (processes > 1) {
      // Claimed before any rank starts: a run another worker trains is refused here, untouched.
      // The launcher stays the run's worker (its pid in the row) until its last rank has ended.
      if (!claim_or_explain(store, run_id, static_cast<int64_t>(::getpid()))) return 2;
      std::string from;
      if (!resume_point(from)) return fail(no_complete_checkpoint);
      return launch_worker_ranks(db_path, run_id, from, processes);
    }
  }
  // Rank 0 (or the only process) records the run; the other ranks only compute. Started by the
  // launcher that claimed the run, rank 0 records it for the launcher (a claim of its own would
  // also clear a stop request made since); started otherwise, it claims the run itself.
  const int64_t parent = static_cast<int64_t>(::getppid());
  const bool for_launcher = env.distributed() && row->worker_pid == parent && row->worker_host == local_host_name();
  if (env.rank == 0 && !for_launcher && !claim_or_explain(store, run_id, static_cast<int64_t>(::getpid()))) return 2;

  RunConfig config;
  try {
    config = config_from_json(nlohmann::json::parse(row->config_json));
    validate_or_throw(config);
  } catch (const std::exception& e) {
    return fail(std::string("the run's stored config cannot be used: ") + e.what());
  }

  TrainerOptions options;
  if (!resume_point(options.resume_from)) return fail(no_complete_checkpoint);
  options.distributed = env;
  if (env.rank == 0) {
    if (!options.resume_from.empty())
      std::printf("run %lld: continuing from %s\n", static_cast<long long>(run_id), options.resume_from.c_str());
    else if (row->last_step)
      std::printf("run %lld: no checkpoint to continue from; starting again from step 0\n",
                  static_cast<long long>(run_id));
    std::printf("run %lld recorded in %s\n", static_cast<long long>(run_id), db_path.c_str());
    std::fflush(stdout);
  }

  install_stop_signal_handlers();
  TrainResult result;
  try {
    result = run_stage(config, options, {db_path, run_id, for_launcher ? parent : 0});
  } catch (const std::exception& e) {
    // Before the trainer could report anything (e.g. output_dir not writable).
    result.status = "failed";
    result.message = e.what();
    if (env.rank == 0) store.set_status(run_id, RunStatus::failed, e.what());
  }
  return report_result("ganpo train", result, "ganpo runs resume " + std::to_string(run_id) + " --db " + db_path);
}

namespace {

// A pipeline stage with train.num_processes > 1, without a workspace: its config goes to a file
// in its folder and its ranks are started on it.
int launch_stage(const RunConfig& config) {
  const fs::path file = fs::path(config.output_dir) / "launch.ganpo.toml";
  fs::create_directories(file.parent_path());
  write_text_file(file.string(), config_to_toml(config));
  return launch_local_ranks(config.train.num_processes, {"train", "--no-db", "--config", file.string()}, "ganpo train");
}

// A config with [[pipeline]] stages: a study of one arm, its runs trained here one after
// another (each in this process, so the console shows them). With a workspace the study is
// queued first, so an interrupted pipeline continues with `ganpo study run ID`.
int train_pipeline(const TrainArgs& args, const RunConfig& config) {
  const StudySpec spec = study_of_pipeline(config);
  if (args.no_db) {
    std::vector<StudyRun> runs;
    try {
      runs = expand_study(spec, fs::absolute(config.output_dir).string());
    } catch (const ConfigError& e) {
      std::fprintf(stderr, "ganpo train: invalid pipeline: %s\n", e.what());
      return 2;
    }
    install_stop_signal_handlers();
    // Ranks a launcher started run the stages one after another: it cannot start one stage again
    // (train.auto_find_batch_size then refuses, saying so).
    TrainerOptions in_ranks;
    in_ranks.distributed = read_distributed_env();
    in_ranks.distributed->relaunch_dir.clear();
    for (const StudyRun& run : runs) {
      std::printf("== %s -> %s\n", run.config.name.c_str(), run.config.output_dir.c_str());
      std::fflush(stdout);
      const int rc = run.config.train.num_processes > 1 && !in_ranks.distributed->distributed()
                         ? launch_stage(run.config)
                         : report_result("ganpo train", run_stage(run.config, in_ranks),
                                         "ganpo train --no-db --config " + run.config.output_dir +
                                             "/config.toml --resume <checkpoint folder>");
      if (rc != 0) return rc;
    }
    return 0;
  }
  const std::string db_path = fs::absolute(workspace_path(args.db)).string();
  int64_t study_id = 0;
  try {
    RunStore store = RunStore::open(db_path);
    // Under the config's output folder when it names one, else beside the workspace.
    const QueuedStudy q = queue_study(store, db_path, spec,
                                      is_default_output_dir(config.output_dir) ? "" : fs::absolute(config.output_dir).string());
    study_id = q.id;
    std::printf("pipeline '%s': %zu runs queued as study %lld, writing under %s\n", spec.name.c_str(), q.runs.size(),
                static_cast<long long>(q.id), q.folder.c_str());
  } catch (const Error& e) {
    std::fprintf(stderr, "ganpo train: %s\n", e.what());
    return 2;
  }
  const std::string resume_hint = "ganpo study run " + std::to_string(study_id) + " --db " + db_path;
  for (;;) {
    std::optional<int64_t> next;
    {
      RunStore store = RunStore::open(db_path);
      next = next_study_run(store, study_id);
      if (!next) {
        const StudyCounts c = study_counts(store, study_id);
        if (c.completed == c.total) return 0;
        std::fprintf(stderr, "ganpo train: the pipeline did not finish; continue it with: %s\n", resume_hint.c_str());
        return 1;
      }
      if (!claim_study_run(store, *next, static_cast<int64_t>(::getpid()))) {
        const auto s = find_study(store, study_id);
        if (s && s->state != StudyState::active)
          std::fprintf(stderr, "ganpo train: the pipeline's study %lld is %s; continue it with: ganpo study resume %lld --db %s && %s\n",
                       static_cast<long long>(study_id), to_string(s->state), static_cast<long long>(study_id),
                       db_path.c_str(), resume_hint.c_str());
        else
          std::fprintf(stderr, "ganpo train: run %lld was started by another driver; follow it with: ganpo study status %lld --db %s\n",
                       static_cast<long long>(*next), static_cast<long long>(study_id), db_path.c_str());
        return 1;
      }
    }
    const int rc = run_worker(db_path, *next, "");
    if (rc != 0) {
      // A stopped run waits for the study's resume; a failed one is retried by the driver.
      std::fprintf(stderr, "ganpo train: the pipeline stopped at run %lld; continue it with: %s%s\n",
                   static_cast<long long>(*next),
                   rc == 130 ? ("ganpo study resume " + std::to_string(study_id) + " --db " + db_path + " && ").c_str() : "",
                   resume_hint.c_str());
      return rc;
    }
  }
}

}  // namespace

int train_command(const TrainArgs& args) {
  if (args.run_id > 0) {
    if (!args.config_path.empty() || !args.overrides.empty()) {
      std::fprintf(stderr, "ganpo train: --run trains the config stored with the run; drop --config/--set\n");
      return 2;
    }
    if (const DistributedEnv env = read_distributed_env(); env.world_size > env.local_world_size) {
      // Every rank reads the run's row; a workspace file shared between hosts (a network file
      // system) is no place for SQLite's locks.
      std::fprintf(stderr,
                   "ganpo: run %lld: a workspace run trains on the processes of one host (train.num_processes); for "
                   "several hosts train its config.toml (in its output folder) without the workspace, on every host: "
                   "ganpo launch --nnodes ... train --config config.toml --no-db\n",
                   static_cast<long long>(args.run_id));
      return 2;
    }
    return run_worker(workspace_path(args.db), args.run_id, args.resume);
  }
  if (args.config_path.empty()) {
    std::fprintf(stderr, "ganpo train: give --config FILE, or --run ID (with --db FILE) to train a stored run\n");
    return 2;
  }
  RunConfig config;
  try {
    config = load_run_config(args.config_path, args.overrides);
  } catch (const ConfigError& e) {
    std::fprintf(stderr, "ganpo train: invalid config: %s\n", e.what());
    return 2;
  }
  // An empty file (a wrong or truncated one, most likely) started a full default run without a
  // word; TRL too refuses to start when nothing says what to train.
  if (args.overrides.empty() && config_file_sets_nothing(args.config_path)) {
    std::fprintf(stderr,
                 "ganpo train: %s sets no values (it is empty, or holds only comments or empty tables); name what to train in it "
                 "(stage, [model], [data], [train]; resources/presets/demo.toml is an example), or add --set "
                 "KEY=VALUE to train the defaults with that change\n",
                 args.config_path.c_str());
    return 2;
  }
  if (!config.pipeline.empty()) {
    if (!args.resume.empty()) {
      std::fprintf(stderr, "ganpo train: --resume continues one run; a pipeline continues with `ganpo study run ID`\n");
      return 2;
    }
    if (!args.no_db && read_distributed_env().distributed()) {
      // Every rank would queue the pipeline's study in the workspace.
      std::fprintf(stderr, "ganpo train: a [[pipeline]] under a launcher trains with --no-db (each stage's ranks "
                           "together); for a workspace study, set train.num_processes and run `ganpo train --config "
                           "FILE` without a launcher, which starts each stage's processes\n");
      return 2;
    }
    return train_pipeline(args, config);
  }
  const DistributedEnv env = read_distributed_env();
  if (args.no_db && config.train.num_processes > 1 && !env.distributed())
    return launch_local_ranks(config.train.num_processes, args.argv, "ganpo train");
  if (args.no_db || env.rank > 0) {
    // Files only; or a rank other than 0 started by a launcher (`ganpo launch`, torchrun, srun)
    // on a config with a workspace: rank 0 records the run there, this rank only computes, on
    // the config as rank 0 stores it.
    if (!args.no_db) {
      make_paths_absolute(config);
      resolve_data_source(config.data);
    }
    install_stop_signal_handlers();
    TrainerOptions options;
    if (!args.resume.empty()) options.resume_from = fs::absolute(args.resume).string();
    return report_result("ganpo train", run_stage(config, options),
                         "ganpo train --no-db --config " + args.config_path + " --resume <checkpoint folder>");
  }
  const std::string db_path = workspace_path(args.db);
  int64_t run_id = 0;
  try {
    RunStore store = RunStore::open(db_path);
    // --resume goes on in the folder its checkpoint is in where that is this config's folder or
    // one of its "-2", "-3" (a config trained again), not in a new "-N" beside it.
    CreateRunOptions create;
    if (!args.resume.empty()) {
      const fs::path in = fs::absolute(args.resume).lexically_normal().parent_path();
      const std::string mine = fs::absolute(config.output_dir).lexically_normal().string();
      const std::string theirs = in.string();
      const bool sibling = theirs == mine || (theirs.rfind(mine + "-", 0) == 0 &&
                                              theirs.size() > mine.size() + 1 &&
                                              theirs.find_first_not_of("0123456789", mine.size() + 1) == std::string::npos);
      if (sibling) config.output_dir = theirs;
      create.keep_output_dir = sibling;
    }
    run_id = RunService(store).create(config, create);  // absolute paths, data source resolved
  } catch (const Error& e) {
    std::fprintf(stderr, "ganpo train: %s\n(or pass --no-db to record to files only)\n", e.what());
    return 2;
  }
  std::string resume = args.resume;
  if (!resume.empty()) resume = fs::absolute(resume).string();
  return run_worker(db_path, run_id, resume);
}

}  // namespace ganpo::cli
