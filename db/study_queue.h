// Studies in the run store: a study row, its runs queued in order (the shared stages first, each
// arm depending on the stage it starts from), and what a driver asks of them: the next run it
// may start, how many are attached to workers, and whether anything is left. Starting a run
// goes through RunStore::claim_run, so two drivers (the GUI and `ganpo study run`, or two
// terminals) never start one run twice; a driver that dies loses nothing, since everything it
// knows is in the store. A run that failed is started once more (it resumes from its last
// checkpoint), then left failed.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/study_spec.h"
#include "db/run_store.h"

namespace ganpo {

enum class StudyState { active, paused, cancelled };
const char* to_string(StudyState state);

struct StudyRow {
  int64_t id = 0;
  std::string name, spec_toml;
  StudyState state = StudyState::active;
  double created_at = 0;
};

struct StudyCounts {
  int64_t total = 0, queued = 0, attached = 0, completed = 0, failed = 0, stopped = 0;
  int64_t blocked = 0;  // queued, but the run it starts from failed for good or stopped
};

// Driver policy: a failed run is started at most this often in all.
constexpr int64_t kStudyMaxAttempts = 2;

// The study row and one queued run per StudyRun (output folders as expand_study set them), in
// one transaction. Returns the study id.
int64_t create_study(RunStore& store, const std::string& name, const std::string& spec_toml,
                     const std::vector<StudyRun>& runs);
// Expands and queues a study in the workspace at db_path, its runs writing under out_root, or
// by default <workspace folder>/studies/<name> (<name>-2, -3, ... when taken). The stored text
// is study_to_toml(spec): self-contained, whatever file the base config came from. Throws
// ConfigError naming every invalid run before anything is stored.
struct QueuedStudy {
  int64_t id = 0;
  std::string folder;
  std::vector<StudyRun> runs;
};
QueuedStudy queue_study(RunStore& store, const std::string& db_path, const StudySpec& spec,
                        const std::string& out_root = "");
// <workspace folder>/studies/<name>, or <name>-2, -3, ... when taken: where queue_study puts a
// study's runs when no folder is named (and what `ganpo study plan` shows).
std::string default_study_folder(const std::string& db_path, const std::string& name);

std::optional<StudyRow> find_study(RunStore& store, int64_t study_id);
std::vector<StudyRow> list_studies(RunStore& store);
// active queues the runs a cancel stopped again and takes back a stop their workers have not yet
// taken; cancelled asks every run a worker holds to stop (through the store: no driver needs to
// be alive to pass it on).
void set_study_state(RunStore& store, int64_t study_id, StudyState state);
// While the study is cancelled, asks every run a worker holds to stop; nothing once it is active
// or paused again (checked in the same statement, so a driver racing a resume sends nothing).
void stop_runs_of_cancelled_study(RunStore& store, int64_t study_id);
std::vector<int64_t> study_run_ids(RunStore& store, int64_t study_id);

// The first run (by id) that may start now: queued with no worker, or failed with attempts
// left, and whatever it starts from completed. nullopt when none.
std::optional<int64_t> next_study_run(RunStore& store, int64_t study_id);
// Claims the run for the worker `pid` (on this host) if it is still startable and its study
// active, counting the attempt, in one statement: a driver that loses the race, or a study
// paused or cancelled meanwhile, gets false. The worker's own claim then finds its pid.
bool claim_study_run(RunStore& store, int64_t run_id, int64_t pid);
StudyCounts study_counts(RunStore& store, int64_t study_id);
// The queued runs that can never start (StudyCounts::blocked), by id.
std::vector<int64_t> blocked_study_runs(RunStore& store, int64_t study_id);

}  // namespace ganpo
