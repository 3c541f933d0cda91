// The run life-cycle policy every front end shares (the CLI, the window, and the study
// scheduler to come), over the RunStore of the calling thread:
// - create: store a run queued with the config it will train (absolute paths, the data source
//   resolved, and, when it names none of its own, an output folder beside the workspace; an
//   output folder another run of the workspace writes to becomes "<folder>-2", "-3", ...);
// - remove: delete a run's rows, and on request its output folder and worker log, never while a
//   worker holds it and never a folder that does not look like a run's output, is a link, holds
//   the workspace, or is shared with another run (its output folder, or a checkpoint it starts from);
// - control: pass pause / resume / stop / sample / checkpoint to the worker training a run;
// - evaluate: the `ganpo eval` worker command that evaluates a checkpoint of a run against the
//   run's reference on the run's own task, and storing the typed report it prints.
// Nothing here prints or asks: outcomes come back as values the caller words for its user.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "core/config.h"
#include "db/run_store.h"

namespace ganpo {

struct CreateRunOptions {
  // Runs that keep the default output_dir (or the demo's) write to runs_dir/<id>-<name>; empty =
  // keep whatever the config says.
  std::string runs_dir;
  std::optional<int64_t> parent_run, parent_step;  // a clone's origin
  // Write to output_dir even where another run of the workspace does (a resume with --config
  // goes on in the folder of the run it continues), rather than to "<output_dir>-2".
  bool keep_output_dir = false;
};

struct CheckpointEvalOptions {
  int64_t num_prompts = 150;      // judge prompts per temperature
  int64_t max_new_tokens = 96;
  std::vector<double> temperatures{0.5, 0.7, 1.0, 1.3, 1.5};
  bool preference_pairs = true;   // also score held-out pairs (accuracy, margins)
  uint64_t seed = 1234;
};

struct CheckpointEvalPlan {
  std::vector<std::string> arguments;  // of the ganpo program, from "eval"
  std::string params_json;             // stored beside the result
  std::string refused;                 // why there is nothing to run
};

struct RemoveRunResult {
  bool removed = false;
  std::string refused;        // why nothing was removed (a worker holds the run, no such run)
  std::string output_dir;     // the run's output folder, as its config names it
  bool folder_removed = false;
  std::string folder_kept;    // why the folder stayed, when its removal was asked for
};

class RunService {
public:
  explicit RunService(RunStore& store) : store_(store) {}

  // Returns the new run's id; the stored config is what its worker will train.
  int64_t create(RunConfig config, const CreateRunOptions& options = {});
  // with_files: also the output folder (only if it looks like a run's and no other run uses it) and
  // logs_dir/run-<id>.log. also_deleted: runs deleted in the same action (by the caller, after or
  // before this one), whose use of the folder does not keep it.
  RemoveRunResult remove(int64_t run_id, bool with_files, const std::string& logs_dir = "",
                         const std::set<int64_t>& also_deleted = {});
  // "" when sent; otherwise why not (unknown command, no worker attached, no such run).
  std::string control(int64_t run_id, const std::string& command);

  // What evaluates `checkpoint` of the run: its reference (model.reference, else
  // model.checkpoint), its task's judge prompts (and its eval.judge_command), its held-out pairs
  // (data.eval, or a built-in task's held-out pairs written once into scratch_dir).
  CheckpointEvalPlan plan_checkpoint_eval(int64_t run_id, const std::string& checkpoint,
                                          const CheckpointEvalOptions& options, const std::string& scratch_dir);
  // Stores what the eval worker printed (`ganpo eval --json`) as the evaluation of the run's
  // checkpoint at `step`; throws Error when it holds no report. Returns the eval row's id.
  int64_t store_checkpoint_eval(int64_t run_id, int64_t step, const std::string& params_json,
                                const std::string& worker_stdout);

private:
  RunStore& store_;
};

// The config names no output folder of its own (the default, or the demo preset's): the run's
// files go beside the workspace.
bool is_default_output_dir(const std::string& dir);

// A folder is treated as a run's output only when it holds one of the files a run writes, so a
// mistyped output_dir such as "/" or "~" is never deleted.
bool looks_like_run_folder(const std::filesystem::path& dir);

}  // namespace ganpo
