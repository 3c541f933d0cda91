// The run store: one SQLite file per workspace holding every run, metric, sample, checkpoint,
// event and evaluation. It is the single source of truth that the GUI reads while a worker
// trains. Opening sets WAL mode (and checks it took), busy_timeout 5000 ms, foreign keys and
// synchronous=NORMAL, then applies forward migrations keyed on PRAGMA user_version.
// Readers are incremental ("rows after id N", "runs changed since T") so a GUI never reloads
// what it already has.
//
// Threading: each RunStore owns exactly one SQLite connection. A connection must not be shared
// across threads; every thread (writer, GUI, control poller) opens its own RunStore on the
// same path. SQLite's WAL mode lets one writer and many readers run concurrently.
#pragma once

#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "db/run_status.h"
#include "db/sqlite_handle.h"

namespace ganpo {

// Seconds since the Unix epoch, as stored in every time column.
double unix_now();
// This machine's name, as stored in runs.worker_host.
std::string local_host_name();

struct RunRow {
  int64_t id = 0;
  std::string name;
  RunStatus status = RunStatus::queued;  // a stored text this build does not know reads as failed
  std::string stage, config_json, device;
  double created_at = 0;
  std::optional<double> started_at, finished_at;
  std::string error, tags, notes;
  std::optional<int64_t> parent_run_id, parent_step;
  std::string control;
  std::optional<int64_t> worker_pid;
  std::optional<double> heartbeat_at;
  double updated_at = 0;
  std::string worker_host;                     // gethostname() of the worker
  std::optional<int64_t> total_steps, last_step;  // progress: optimizer steps planned / recorded
  std::optional<int64_t> worker_start;         // the worker's start (clock ticks after boot): a reused pid differs
  std::optional<int64_t> study_id;             // the study whose queue starts it (db/study_queue.h)
  // Time a worker held it: the spans before the current or last one (closed when the run is
  // queued again), and the start of that one (it ends at finished_at, or goes on while it runs).
  double active_seconds = 0;
  std::optional<double> span_started_at;
};

// How long workers have held the run (running or paused) up to now: its spans, not the time it
// sat stopped or failed between them (finished_at - started_at counted that); -1 if it never
// started. A run from before schema v7 counts as one span from its first start.
double run_duration_seconds(const RunRow& run, double now);
// The folder a run writes to as the runs.output_dir column keeps it (schema v7): absolute,
// resolved through the links that exist, lexically normal, no trailing '/'; "" for none. Two
// spellings of one folder (a link, "x/../y", "y/") give one key, as far as the links exist when
// it is written.
std::string output_folder_key(const std::string& output_dir);
// The keys of a config's output_dir and model.checkpoint (config JSON text); "" where it names
// none or is unreadable.
std::pair<std::string, std::string> folder_keys_of_config(const std::string& config_json);
// SQL for an UPDATE of runs that queues a run again (finished_at cleared): its last span is added
// to active_seconds, ending at finished_at, or at `now_sql` (a parameter such as "?3") where it
// never finished.
std::string close_active_span_sql(const std::string& now_sql);

// True while a worker holds the run: running, paused, or queued with a worker attached (the
// states reap_dead_workers checks and claim_run refuses).
bool worker_attached(const RunRow& run);

struct MetricRow {
  int64_t id = 0;  // row id; ignored on insert
  int64_t run_id = 0;
  int64_t step = 0;
  std::string key;
  double value = 0;
  double wall_time = 0;
  std::optional<double> tokens_seen;
};

struct SeriesPoint {
  int64_t step = 0;
  double value = 0;
};

// One bucket of a decimated series. [step_lo, step_hi] is the bucket's step range;
// first_step / last_step are the steps actually present in it. min / max / last cover the
// finite values (NaN when there are none); nan_count says how many NaN or +-Inf values it holds
// (an infinite value would stretch the envelope to infinity; charts mark them instead).
struct SeriesBucket {
  int64_t step_lo = 0, step_hi = 0;
  int64_t first_step = 0, last_step = 0;
  double min = 0, max = 0, last = 0;
  double mean = 0;        // of the finite values (NaN when none)
  int64_t count = 0;      // finite values
  int64_t nan_count = 0;  // NaN and +-Inf values
};

struct SampleRow {
  int64_t id = 0, run_id = 0, step = 0, prompt_index = 0;
  std::string prompt, policy_text, reference_text;
  // Judge scores, any finite number; NaN (NULL in the table) where no judge scored the sample.
  double policy_score = std::numeric_limits<double>::quiet_NaN();
  double reference_score = std::numeric_limits<double>::quiet_NaN();
};

struct CheckpointRow {
  int64_t id = 0, run_id = 0, step = 0;
  std::string path, metrics_json;
  double created_at = 0;
};

struct EventRow {
  int64_t id = 0, run_id = 0;
  double time = 0;
  std::string level, text;
};

struct EvalRow {
  int64_t id = 0, run_id = 0, checkpoint_step = 0;
  std::string kind, params_json, result_json;
  double created_at = 0;
};

class RunStore {
public:
  // The schema version this build writes and reads.
  static constexpr int kSchemaVersion = 8;
  // PRAGMA application_id of a workspace ("GANP"): a file with other tables and no such mark is
  // another program's database and is refused untouched (workspaces made before the mark carry
  // the runs table, and get it).
  static constexpr int32_t kApplicationId = 0x47414E50;

  // Opens or creates the workspace at path (creating parent folders) and migrates it.
  // Throws ganpo::Error with an actionable message for: a newer schema, a file that is not
  // SQLite, a location that cannot be written, WAL mode not available. Then marks runs whose
  // worker died as failed (reap_dead_workers), so no run stays "running" forever.
  static RunStore open(const std::string& path);

  RunStore(RunStore&&) noexcept = default;
  RunStore& operator=(RunStore&&) noexcept = default;

  const std::string& path() const { return db_.path(); }
  // " --db /absolute/path" when this is not the default workspace, else "": what a `ganpo ...`
  // command in a hint needs to reach this workspace when pasted.
  std::string db_option() const;
  // False once the file at path() is no longer the one this connection opened (deleted, moved
  // away or replaced): SQLite would go on reading and writing the open file, which nobody finds.
  bool still_at_path() const;
  int schema_version();
  sql::Database& database() { return db_; }

  // ---- writes
  // A new run's id is above every id a run of this workspace has had, those deleted since schema
  // v6 included: its log (logs/run-ID.log) and folder (runs/ID-name) are never such a deleted
  // run's kept files. (A run deleted by an older build was not recorded.)
  int64_t create_run(const std::string& name, const std::string& stage, const std::string& config_json);
  // Durable commit (synchronous=FULL for this transaction). Sets started_at on "running" (first
  // time) and finished_at on "completed" / "stopped" / "failed". error may be empty.
  void set_status(int64_t run_id, RunStatus status, const std::string& error = "");
  void set_device(int64_t run_id, const std::string& device);
  void set_control(int64_t run_id, const std::string& control);
  // Reads and clears the control field atomically; "" when none.
  std::string take_control(int64_t run_id);
  // Worker pid + host + time; last_step (when given) is the newest step recorded.
  void heartbeat(int64_t run_id, int64_t pid, std::optional<int64_t> last_step = std::nullopt);
  // Attaches a worker (pid, this host) to the run and sets it queued, unless another live worker
  // holds it (running, paused, or queued with a worker) or it has completed. Atomic, so two
  // workers started on one run cannot both claim it. Claiming again for the pid already
  // attached (a study driver claims for the worker it started) succeeds. False when not claimed.
  // Clears any control command, except the stop a cancelled study left for the worker its driver
  // claimed the run for.
  bool claim_run(int64_t run_id, int64_t pid);
  void set_name(int64_t run_id, const std::string& name);
  void set_config(int64_t run_id, const std::string& config_json);
  // Whether a run other than run_id writes to the folder output_folder_key gave folder_key: one
  // indexed lookup (schema v7), however many runs the workspace holds.
  bool another_run_writes_to(int64_t run_id, const std::string& folder_key);
  // The runs that write to the folder folder_key names or inside it (writes), or start from a
  // checkpoint inside it, in id order: index range reads (schema v7).
  struct FolderUser {
    int64_t id = 0;
    std::string name, path;  // path: its output_dir or checkpoint, as output_folder_key gave it
    bool writes = false;
  };
  std::vector<FolderUser> runs_using_folder(const std::string& folder_key);
  void set_total_steps(int64_t run_id, int64_t total_steps);
  void set_parent(int64_t run_id, int64_t parent_run_id, int64_t parent_step);
  // Deletes the run's metrics, samples, evals and checkpoint rows after after_step (all of them
  // when after_step < 0), so a run resumed from the checkpoint at after_step records no step
  // twice.
  void rewind(int64_t run_id, int64_t after_step);
  // Deletes the run's held-out evaluation (`evaluation`) and samples (`samples`) rows of `step`,
  // which a stage resumed from a checkpoint saved before them records again (RunObserver::on_redo).
  void drop_redone_rows(int64_t run_id, int64_t step, bool evaluation, bool samples);
  // For a process of this host that trained `run` and ended without a word (a dead worker, a
  // data-parallel rank killed by SIGKILL): ". It stopped while trying ..." naming the system's
  // out-of-memory killer as the likely cause, with what to change, where the run's last log line
  // said it would try its longest training rows or its last memory reading held half of the
  // machine's RAM or more ("" otherwise).
  std::string memory_kill_hint(const RunRow& run);
  // Marks failed (with a note saying how to resume and the last log lines) every run whose
  // worker is gone: running, paused, or queued with a worker attached, and its pid no longer
  // exists on this host, or its heartbeat is older than stale_after_seconds. Returns the ids.
  std::vector<int64_t> reap_dead_workers(double stale_after_seconds = kStaleAfterSeconds);
  static constexpr double kStaleAfterSeconds = 120;
  void set_tags(int64_t run_id, const std::string& tags);
  void set_notes(int64_t run_id, const std::string& notes);
  // A worker started for run_id at `launched_at` has ended: where the run was not taken since (no
  // heartbeat at or after launched_at; a claim stamps one) and is not running, paused or
  // completed, it is marked failed with `reason`. True when it was.
  bool fail_unclaimed_launch(int64_t run_id, double launched_at, const std::string& reason);
  void delete_run(int64_t run_id);  // its rows; its id is remembered (deleted_runs), never given again
  // All rows in one transaction (or inside the caller's, if one is open).
  void append_metrics(const std::vector<MetricRow>& rows);
  void add_samples(int64_t run_id, int64_t step, const std::vector<SampleRow>& samples);
  // Replaces the run's row for the same path (a checkpoint saved again, or its numbers recorded again).
  int64_t add_checkpoint(int64_t run_id, int64_t step, const std::string& path, const std::string& metrics_json);
  int64_t add_event(int64_t run_id, const std::string& level, const std::string& text, double time = 0);
  int64_t add_eval(int64_t run_id, int64_t checkpoint_step, const std::string& kind,
                   const std::string& params_json, const std::string& result_json);

  // ---- readers
  std::optional<RunRow> run(int64_t run_id);
  std::vector<RunRow> runs();
  // Runs whose updated_at > t, oldest change first.
  std::vector<RunRow> runs_changed_since(double t);
  // Metric rows of a run with id > last_row_id, in id order, at most limit.
  std::vector<MetricRow> metrics_after(int64_t run_id, int64_t last_row_id, int64_t limit = 100000);
  // How often rewind() dropped the run's later rows: a reader of metrics_after starts over from
  // id 0 when it changes (the rows written again may reuse the deleted rows' ids).
  int64_t rewinds(int64_t run_id);
  // A run's metric keys, sorted (a few index seeks per key, however many rows the run has).
  std::vector<std::string> metric_keys(int64_t run_id);
  // The value of one metric at its highest step (an index lookup), if the run has it.
  std::optional<double> last_value(int64_t run_id, const std::string& key);
  // Every metric key of a run, by key: its row at its highest step (the newest row there).
  std::vector<MetricRow> latest_metrics(int64_t run_id);
  // The run's last n events as "[level] text" lines, oldest first.
  std::string last_log_lines(int64_t run_id, int64_t n);
  // Every point of one metric in step order (those with step_lo <= step <= step_hi); NaN values
  // are kept (stored as NULL).
  std::vector<SeriesPoint> series(int64_t run_id, const std::string& key,
                                  int64_t step_lo = std::numeric_limits<int64_t>::min(),
                                  int64_t step_hi = std::numeric_limits<int64_t>::max());
  // Splits [step_lo, step_hi] into `buckets` equal step ranges and returns, for each bucket
  // that has points, min / max / last value and count (computed in SQL, GROUP BY bucket).
  std::vector<SeriesBucket> decimated_series(int64_t run_id, const std::string& key, int64_t step_lo,
                                             int64_t step_hi, int64_t buckets);
  // Where the run was at each of `steps` (ascending) by one metric's rows there: the wall time and
  // tokens seen of its row at that step (the newest), NaN where it has none. One index lookup per
  // step: Compare draws a run against wall time or tokens seen from these.
  struct Clock {
    double wall_time = 0, tokens_seen = 0;
  };
  std::vector<Clock> clock_at(int64_t run_id, const std::string& key, const std::vector<int64_t>& steps);
  std::vector<SampleRow> samples(int64_t run_id, int64_t step);
  std::vector<int64_t> sample_steps(int64_t run_id);
  // Each step with samples and the id of its newest sample row, in step order: a step whose
  // samples were written again (a resumed run redoing it) has another id, so a reader's cache of
  // that step is stale. (From the (run_id, step) index alone.)
  std::vector<std::pair<int64_t, int64_t>> sample_step_versions(int64_t run_id);
  std::vector<CheckpointRow> checkpoints(int64_t run_id);
  std::vector<EventRow> events_after(int64_t run_id, int64_t last_id, int64_t limit = 100000);
  std::vector<EvalRow> evals(int64_t run_id);

  // Bucket index formula shared with tests: floor((step - lo) * buckets / (hi - lo + 1)).
  static int64_t bucket_of(int64_t step, int64_t lo, int64_t hi, int64_t buckets);

  // Whether this connection is inside a transaction (a caller's, which a write joins).
  bool in_transaction() const;

private:
  explicit RunStore(sql::Database db) : db_(std::move(db)) {}
  void configure();
  void migrate();
  void fill_output_folders();  // v6 -> v7: every run's output_dir and start_checkpoint from its config

  sql::Database db_;
  std::pair<uint64_t, uint64_t> file_id_{};  // device and inode of the file when opened
};

}  // namespace ganpo
