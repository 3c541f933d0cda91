#include "db/run_store.h"

#include <signal.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <system_error>

#include <nlohmann/json.hpp>

#include "core/config.h"
#include "core/error.h"
#include "core/json_depth.h"
#include "core/memory_estimate.h"
#include "core/run_observer.h"
#include "db/workspace_path.h"

namespace ganpo {

namespace fs = std::filesystem;

double unix_now() {
  using namespace std::chrono;
  return duration<double>(system_clock::now().time_since_epoch()).count();
}

namespace {

// Forward migrations: kMigrations[i] takes the schema from version i to i + 1.
const char* const kMigrations[] = {
    // v0 -> v1: everything.
    R"SQL(
CREATE TABLE IF NOT EXISTS runs (
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL DEFAULT '',
  status TEXT NOT NULL DEFAULT 'queued',
  stage TEXT NOT NULL DEFAULT '',
  config_json TEXT NOT NULL DEFAULT '{}',
  device TEXT NOT NULL DEFAULT '',
  created_at REAL NOT NULL,
  started_at REAL,
  finished_at REAL,
  error TEXT NOT NULL DEFAULT '',
  tags TEXT NOT NULL DEFAULT '',
  notes TEXT NOT NULL DEFAULT '',
  parent_run_id INTEGER REFERENCES runs(id) ON DELETE SET NULL,
  parent_step INTEGER,
  control TEXT,
  worker_pid INTEGER,
  heartbeat_at REAL,
  updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS metrics (
  id INTEGER PRIMARY KEY,
  run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
  step INTEGER NOT NULL,
  key TEXT NOT NULL,
  value REAL,
  wall_time REAL NOT NULL,
  tokens_seen REAL
);
CREATE TABLE IF NOT EXISTS samples (
  id INTEGER PRIMARY KEY,
  run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
  step INTEGER NOT NULL,
  prompt_index INTEGER NOT NULL,
  prompt TEXT NOT NULL,
  policy_text TEXT NOT NULL,
  reference_text TEXT NOT NULL,
  policy_score REAL,
  reference_score REAL
);
CREATE TABLE IF NOT EXISTS checkpoints (
  id INTEGER PRIMARY KEY,
  run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
  step INTEGER NOT NULL,
  path TEXT NOT NULL,
  metrics_json TEXT NOT NULL DEFAULT '{}',
  created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
  id INTEGER PRIMARY KEY,
  run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
  time REAL NOT NULL,
  level TEXT NOT NULL,
  text TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS evals (
  id INTEGER PRIMARY KEY,
  run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
  checkpoint_step INTEGER NOT NULL,
  kind TEXT NOT NULL,
  params_json TEXT NOT NULL DEFAULT '{}',
  result_json TEXT NOT NULL DEFAULT '{}',
  created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS metrics_run_key_step ON metrics(run_id, key, step, value);  -- covering: series reads never touch the table
CREATE INDEX IF NOT EXISTS metrics_run_id ON metrics(run_id, id);
CREATE INDEX IF NOT EXISTS runs_updated ON runs(updated_at);
CREATE INDEX IF NOT EXISTS samples_run_step ON samples(run_id, step);
CREATE INDEX IF NOT EXISTS events_run_id ON events(run_id, id);
CREATE INDEX IF NOT EXISTS checkpoints_run_step ON checkpoints(run_id, step);
CREATE INDEX IF NOT EXISTS evals_run ON evals(run_id, id);
)SQL",
    // v1 -> v2: the worker's host (a pid means nothing on another machine) and progress
    // (total and last recorded step) so a run list needs no metrics scan.
    R"SQL(
ALTER TABLE runs ADD COLUMN worker_host TEXT;
ALTER TABLE runs ADD COLUMN total_steps INTEGER;
ALTER TABLE runs ADD COLUMN last_step INTEGER;
CREATE INDEX IF NOT EXISTS runs_status ON runs(status);
)SQL",
    // v2 -> v3: studies (db/study_queue.h): a study row, and its runs' study, the run each one
    // starts from (a shared stage), and how often a driver has started it.
    R"SQL(
CREATE TABLE IF NOT EXISTS studies (
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL DEFAULT '',
  spec_toml TEXT NOT NULL DEFAULT '',
  state TEXT NOT NULL DEFAULT 'active',
  created_at REAL NOT NULL,
  updated_at REAL NOT NULL
);
ALTER TABLE runs ADD COLUMN study_id INTEGER;
ALTER TABLE runs ADD COLUMN depends_on INTEGER;
ALTER TABLE runs ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
CREATE INDEX IF NOT EXISTS runs_study ON runs(study_id, id);
)SQL",
    // v3 -> v4: how often a run's rows were rewound (a resume, a retry with a smaller batch). The
    // steps written again may take the row ids of those deleted (SQLite reuses the largest), so a
    // reader that follows "rows after the last id" starts over when this changes.
    R"SQL(
ALTER TABLE runs ADD COLUMN rewinds INTEGER NOT NULL DEFAULT 0;
)SQL",
    // v4 -> v5: when the worker process started (/proc/PID/stat's start time, clock ticks after
    // boot), so a pid reused by a later process (or after a reboot) is not taken for the worker.
    R"SQL(
ALTER TABLE runs ADD COLUMN worker_start INTEGER;
)SQL",
    // v5 -> v6: the ids of deleted runs. SQLite gives a new row the largest id + 1, so deleting
    // the newest run gave its id to the next one, which then wrote into the deleted run's kept log
    // and folder; a new run's id is now above these too.
    R"SQL(
CREATE TABLE IF NOT EXISTS deleted_runs (
  id INTEGER PRIMARY KEY,
  deleted_at REAL NOT NULL
);
)SQL",
    // v6 -> v7: the runs by output folder and by the checkpoint they start from, so a new run
    // finds whether another writes to its folder, and a deleted run's folder whether another
    // uses it, without parsing every run's config (RunStore::another_run_writes_to,
    // runs_using_folder).
    "ALTER TABLE runs ADD COLUMN output_dir TEXT;\n"
    "ALTER TABLE runs ADD COLUMN start_checkpoint TEXT;\n"
    // (Filled by fill_output_folders, in C++: each folder resolved through links, and no JSON
    // function here, which a workspace's schema may not run with SQLITE_DBCONFIG_TRUSTED_SCHEMA off.)
    "CREATE INDEX IF NOT EXISTS runs_output_dir ON runs(output_dir);\n"
    "CREATE INDEX IF NOT EXISTS runs_start_checkpoint ON runs(start_checkpoint);\n"
    // ... and the time workers held a run, span by span (RunRow::active_seconds): a run stopped
    // for a night and resumed did not train for a night. Runs so far: one span from their start.
    "ALTER TABLE runs ADD COLUMN active_seconds REAL NOT NULL DEFAULT 0;\n"
    "ALTER TABLE runs ADD COLUMN span_started_at REAL;\n"
    // (A queued run that ran before was stopped: its time is not known, and not a span now.)
    "UPDATE runs SET span_started_at = CASE WHEN status = 'queued' THEN NULL ELSE started_at END;",
    // v7 -> v8: a sample no judge scored has NULL scores. They were stored as -1, which an
    // external judge may print (its scores are any finite number), so its -1 read as "no score";
    // the -1s written so far were (almost all) samples without a judge.
    "UPDATE samples SET policy_score = NULL WHERE policy_score = -1;\n"
    "UPDATE samples SET reference_score = NULL WHERE reference_score = -1;",
};
constexpr int kMigrationCount = sizeof(kMigrations) / sizeof(kMigrations[0]);
static_assert(kMigrationCount == RunStore::kSchemaVersion, "one migration per schema version");

const char* const kRunColumns =
    "id, name, status, stage, config_json, device, created_at, started_at, finished_at, error, "
    "tags, notes, parent_run_id, parent_step, control, worker_pid, heartbeat_at, updated_at, worker_host, "
    "total_steps, last_step, worker_start, study_id, active_seconds, span_started_at";

constexpr size_t kMaxConfigDepth = 64;  // a run config nests 3 levels

// The runs.output_dir (at i) and runs.start_checkpoint (at i + 1) columns: config_json's
// output_dir and model.checkpoint as output_folder_key gives them, NULL where it names none.
void bind_folder(sql::Statement& s, int i, const std::string& config_json) {
  const auto [output_dir, checkpoint] = folder_keys_of_config(config_json);
  if (output_dir.empty())
    s.bind_null(i);
  else
    s.bind(i, output_dir);
  if (checkpoint.empty())
    s.bind_null(i + 1);
  else
    s.bind(i + 1, checkpoint);
}

RunRow read_run(const sql::Statement& s) {
  RunRow r;
  r.id = s.col_int(0);
  r.name = s.col_text(1);
  r.status = parse_run_status(s.col_text(2)).value_or(RunStatus::failed);
  r.stage = s.col_text(3);
  r.config_json = s.col_text(4);
  // Deeper than any config (a damaged or hostile workspace): read as unreadable, never parsed
  // into a value whose copies would recurse once per level.
  if (json_text_nested_deeper_than(r.config_json, kMaxConfigDepth))
    r.config_json = "\"(a config nested deeper than " + std::to_string(kMaxConfigDepth) +
                    " levels: the workspace is damaged)\"";
  r.device = s.col_text(5);
  r.created_at = s.col_double(6);
  r.started_at = s.col_opt_double(7);
  r.finished_at = s.col_opt_double(8);
  r.error = s.col_text(9);
  r.tags = s.col_text(10);
  r.notes = s.col_text(11);
  r.parent_run_id = s.col_opt_int(12);
  r.parent_step = s.col_opt_int(13);
  r.control = s.col_text(14);
  r.worker_pid = s.col_opt_int(15);
  r.heartbeat_at = s.col_opt_double(16);
  r.updated_at = s.col_double(17);
  r.worker_host = s.col_text(18);
  r.total_steps = s.col_opt_int(19);
  r.last_step = s.col_opt_int(20);
  r.worker_start = s.col_opt_int(21);
  r.study_id = s.col_opt_int(22);
  r.active_seconds = s.col_double(23);
  r.span_started_at = s.col_opt_double(24);
  return r;
}

// Columns: id, run_id, step, key, value, wall_time, tokens_seen.
MetricRow read_metric(const sql::Statement& s) {
  MetricRow r;
  r.id = s.col_int(0);
  r.run_id = s.col_int(1);
  r.step = s.col_int(2);
  r.key = s.col_text(3);
  r.value = s.is_null(4) ? std::nan("") : s.col_double(4);  // NaN is stored as NULL
  r.wall_time = s.col_double(5);
  r.tokens_seen = s.col_opt_double(6);
  return r;
}

bool process_alive(int64_t pid) {
  if (pid <= 0) return false;
  return ::kill(static_cast<pid_t>(pid), 0) == 0 || errno == EPERM;
}

// When process pid started: /proc/PID/stat's start time in clock ticks after boot (Linux), which
// no clock adjustment changes; nullopt where it cannot be read.
std::optional<int64_t> process_start_ticks(int64_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  const std::string text((std::istreambuf_iterator<char>(stat)), {});
  const size_t name_end = text.rfind(')');  // the command name may hold spaces and parentheses
  if (name_end == std::string::npos) return std::nullopt;
  std::istringstream fields(text.substr(name_end + 1));
  std::string field;
  for (int i = 3; i <= 22 && fields >> field; ++i)  // fields 3, 4, ... after the name; 22: starttime
    if (i == 22) return std::strtoll(field.c_str(), nullptr, 10);
  return std::nullopt;
}

// Whether the worker of a row is still the process behind its pid: alive, and (where the row
// recorded it) the same process, not a later one that was given the pid.
bool local_worker_alive(const RunRow& r) {
  if (!process_alive(*r.worker_pid)) return false;
  if (!r.worker_start) return true;
  const std::optional<int64_t> started = process_start_ticks(*r.worker_pid);
  return !started || *started == *r.worker_start;
}

}  // namespace

std::string output_folder_key(const std::string& output_dir) {
  if (output_dir.empty()) return "";
  std::error_code ec;
  const fs::path absolute = fs::absolute(output_dir, ec);
  if (ec) return "";
  fs::path p = fs::weakly_canonical(absolute, ec);
  if (ec) p = absolute;
  std::string key = p.lexically_normal().string();
  while (key.size() > 1 && key.back() == '/') key.pop_back();
  return key;
}

std::pair<std::string, std::string> folder_keys_of_config(const std::string& config_json) {
  if (json_text_nested_deeper_than(config_json, kMaxConfigDepth)) return {};
  const nlohmann::json j = nlohmann::json::parse(config_json, nullptr, false);
  if (!j.is_object()) return {};
  const auto text = [](const nlohmann::json& o, const char* key) {
    return o.is_object() && o.contains(key) && o[key].is_string() ? o[key].get<std::string>() : std::string();
  };
  return {output_folder_key(text(j, "output_dir")), output_folder_key(text(j.value("model", nlohmann::json()), "checkpoint"))};
}

double run_duration_seconds(const RunRow& r, double now) {
  if (!r.started_at) return -1;
  const double span = r.span_started_at ? std::max(0.0, r.finished_at.value_or(now) - *r.span_started_at) : 0.0;
  return r.active_seconds + span;
}

std::string close_active_span_sql(const std::string& now_sql) {
  return "active_seconds = active_seconds + CASE WHEN span_started_at IS NULL THEN 0 ELSE max(0, coalesce(finished_at, " +
         now_sql + ") - span_started_at) END, span_started_at = NULL";
}

bool worker_attached(const RunRow& r) {
  return is_active(r.status) || (r.status == RunStatus::queued && r.worker_pid);
}

std::string local_host_name() {
  char buf[256] = {0};
  if (::gethostname(buf, sizeof buf - 1) != 0) return "";
  return buf;
}

namespace {
// Device and inode of the file at path; zeros when there is none.
std::pair<uint64_t, uint64_t> file_identity(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return {};
  return {static_cast<uint64_t>(st.st_dev), static_cast<uint64_t>(st.st_ino)};
}
}  // namespace

namespace {

// Whether the file at path may become (or is) a workspace, before anything is written to it:
// false when it carries the workspace mark already, true when it is empty or a workspace from
// before the mark (a runs table of ours, its columns, at one of our schema versions: MLflow's
// mlflow.db has a runs table too). Another program's file throws, untouched.
bool workspace_to_mark(sql::Database& db, const std::string& path) {
  try {
    const int64_t app = db.query_int("PRAGMA application_id");
    if (app == RunStore::kApplicationId) return false;
    if (app != 0) {
      char id[16];
      std::snprintf(id, sizeof id, "0x%08llx", static_cast<unsigned long long>(static_cast<uint32_t>(app)));
      throw Error("workspace " + path + " is another program's SQLite database (its application_id is " + id +
                  "); GANPO Workbench changed nothing in it. Choose another file with --db FILE");
    }
    sql::Statement tables(db, "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
                              "ORDER BY name = 'runs' DESC, name LIMIT 4");
    std::vector<std::string> names;
    while (tables.step()) names.push_back(tables.col_text(0));
    if (names.empty()) return true;
    const auto ours_unmarked = [&] {
      const int64_t version = db.query_int("PRAGMA user_version");
      if (names.front() != "runs" || version < 1 || version > RunStore::kSchemaVersion) return false;
      try {
        sql::Statement columns(db, "SELECT id, name, status, stage, config_json, worker_pid FROM runs LIMIT 0");
        return true;
      } catch (const sql::SqliteError&) {
        return false;
      }
    };
    if (ours_unmarked()) return true;
    std::string list;
    for (std::string& n : names) {
      for (char& c : n)
        if (c < 0x20 || c > 0x7e) c = '?';
      list += (list.empty() ? "" : ", ") + n.substr(0, 40);
    }
    throw Error("workspace " + path + " is an SQLite database of another program (tables " + list +
                (names.size() == 4 ? ", ..." : "") + "); GANPO Workbench changed nothing in it. Choose another file "
                "with --db FILE");
  } catch (const sql::SqliteError& e) {
    throw Error("workspace " + path + " cannot be read (" + e.what() + "); restore a backup or move it aside");
  }
}

}  // namespace

RunStore RunStore::open(const std::string& path) {
  fs::path p(path);
  if (p.has_parent_path()) {
    std::error_code ec;
    fs::create_directories(p.parent_path(), ec);
    if (ec)
      throw Error("cannot create the workspace folder " + p.parent_path().string() + ": " +
                  ec.message() + "; choose a writable location (--db FILE)");
  }
  if (fs::is_directory(p))
    throw Error("workspace " + path + " is a folder, not a file; give the path of a .sqlite file");

  sql::Database db;
  try {
    db = sql::Database(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX);
  } catch (const Error& e) {
    throw Error("cannot open workspace " + path + " (" + e.what() +
                "); check that the location exists and is writable, or choose another with --db FILE");
  }
  if (sqlite3_db_readonly(db.get(), "main") == 1)
    throw Error("workspace " + path +
                " is read-only; make the file and its folder writable or choose another with --db FILE");

  // Wait for other connections from the first statement on: a process opening the workspace at
  // the same moment may be recovering its WAL, and this read would otherwise fail as busy at once.
  sqlite3_busy_timeout(db.get(), 5000);
  // The first real read tells a non-SQLite file apart.
  int rc = sqlite3_exec(db.get(), "PRAGMA schema_version", nullptr, nullptr, nullptr);
  if ((rc & 0xff) == SQLITE_NOTADB)
    throw Error("workspace " + path +
                " is not a GANPO Workbench workspace (the file is not an SQLite database); "
                "move it aside or choose another file with --db FILE");
  if ((rc & 0xff) == SQLITE_CORRUPT)
    throw Error("workspace " + path +
                " is corrupt (SQLite reports a malformed database); restore a backup or move it aside");
  if (rc != SQLITE_OK) {
    try {
      db.check(rc, "cannot read workspace");
    } catch (const Error& e) {
      throw Error(std::string(e.what()) + "; check that the file and its folder are readable and writable "
                                          "(SQLite keeps its -wal and -shm files beside the file)");
    }
  }

  // A workspace may come from someone else. This program creates no triggers or views, so a
  // file with one was made or changed by something else and could run any SQL (an endless
  // recursive query, say) when a run is updated: refused before anything touches it. Defensive
  // mode and an untrusted schema keep SQL functions and writable_schema out of its reach too.
  sqlite3_db_config(db.get(), SQLITE_DBCONFIG_DEFENSIVE, 1, nullptr);
  sqlite3_db_config(db.get(), SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0, nullptr);
  try {
    sql::Statement st(db, "SELECT type, name FROM sqlite_master WHERE type IN ('trigger', 'view') LIMIT 1");
    if (st.step()) {
      // The name comes from the file: shown with anything but plain printable ASCII as '?', and
      // never pasted into a command a person might run.
      std::string name = st.col_text(1).substr(0, 80);
      for (char& c : name)
        if (c < 0x20 || c > 0x7e) c = '?';
      throw Error("workspace " + path + " holds a " + (st.col_text(0) == "trigger" ? "trigger" : "view") +
                  " named \"" + name + "\", which GANPO Workbench never creates: the file was changed by "
                  "another program and could run arbitrary SQL. Drop it in a copy of the file with the "
                  "sqlite3 tool (DROP TRIGGER / DROP VIEW), or choose another file with --db FILE");
    }
  } catch (const sql::SqliteError& e) {
    throw Error("workspace " + path + " cannot be read (" + e.what() + "); restore a backup or move it aside");
  }

  // Whose file it is, before anything is written to it (the WAL switch below rewrites its header).
  const bool mark = workspace_to_mark(db, path);

  RunStore store(std::move(db));
  store.file_id_ = file_identity(path);
  store.configure();
  store.migrate();
  if (mark) {
    try {
      store.db_.exec("PRAGMA application_id=" + std::to_string(kApplicationId));
    } catch (const sql::SqliteError&) {
      // Busy for longer than busy_timeout: the next open marks it; never fail an open for it.
    }
  }
  try {
    store.reap_dead_workers();
  } catch (const Error&) {
    // Busy for longer than busy_timeout: the next open will reap; never fail an open for it.
  }
  return store;
}

std::string RunStore::db_option() const {
  std::error_code ec, ec_default;
  const fs::path mine = fs::weakly_canonical(path(), ec);
  if (!ec && mine == fs::weakly_canonical(default_workspace_path(), ec_default) && !ec_default) return "";
  // Quoted for a shell where the path needs it (a space, a quote, ...), so the hint pastes as is.
  const std::string file = fs::absolute(path(), ec).string();
  if (file.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789/._-+=:@%,") == std::string::npos)
    return " --db " + file;
  std::string quoted = "'";
  for (char c : file) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return " --db " + quoted + "'";
}

bool RunStore::still_at_path() const {
  return file_id_ == std::pair<uint64_t, uint64_t>{} || file_identity(path()) == file_id_;
}

void RunStore::configure() {
  db_.exec("PRAGMA busy_timeout=5000");
  std::string mode;
  try {
    mode = db_.query_text("PRAGMA journal_mode=WAL");
  } catch (const Error& e) {
    if (sqlite3_errcode(db_.get()) == SQLITE_READONLY ||
        (sqlite3_extended_errcode(db_.get()) & 0xff) == SQLITE_READONLY ||
        (sqlite3_extended_errcode(db_.get()) & 0xff) == SQLITE_CANTOPEN)
      throw Error("workspace " + path() + " cannot be written (" + e.what() +
                  "); make it and its folder writable or choose another with --db FILE");
    throw;
  }
  if (mode != "wal")
    throw Error("workspace " + path() + " could not be switched to WAL mode (journal_mode is '" + mode +
                "'); put the workspace on a local file system that supports shared memory");
  db_.exec("PRAGMA foreign_keys=ON");
  db_.exec("PRAGMA synchronous=NORMAL");
  if (db_.query_int("PRAGMA foreign_keys") != 1)
    throw Error("this SQLite build does not support foreign keys; cannot use " + path());
}

int RunStore::schema_version() { return static_cast<int>(db_.query_int("PRAGMA user_version")); }

void RunStore::migrate() {
  int version = schema_version();
  while (version < kSchemaVersion) {
    try {
      sql::Transaction txn(db_);
      // Re-read under the write lock: another process may have migrated meanwhile (a newer
      // build too, which the check after the loop refuses).
      int now = schema_version();
      if (now != version) {
        version = now;
        continue;
      }
      db_.exec(kMigrations[version]);
      if (version + 1 == 7) fill_output_folders();
      db_.exec("PRAGMA user_version=" + std::to_string(version + 1));
      txn.commit();
    } catch (const Error& e) {
      throw Error("cannot upgrade workspace " + path() + " from schema v" + std::to_string(version) +
                  " to v" + std::to_string(version + 1) + ": " + e.what());
    }
    ++version;
  }
  if (version > kSchemaVersion)
    throw Error("workspace " + path() + " was written by a newer GANPO Workbench (schema v" +
                std::to_string(version) + ", this build reads up to v" + std::to_string(kSchemaVersion) +
                "); upgrade the app");
}

bool RunStore::in_transaction() const { return sqlite3_get_autocommit(db_.get()) == 0; }

// ---------------------------------------------------------------- writes

int64_t RunStore::create_run(const std::string& name, const std::string& stage,
                             const std::string& config_json) {
  double now = unix_now();
  sql::Statement s(db_,
                   "INSERT INTO runs(id, name, status, stage, config_json, output_dir, start_checkpoint, created_at, updated_at) "
                   "VALUES(max(coalesce((SELECT max(id) FROM runs), 0), coalesce((SELECT max(id) FROM deleted_runs), 0)) + 1, "
                   "?1, 'queued', ?2, ?3, ?6, ?7, ?4, ?5)");
  s.bind(1, name).bind(2, stage).bind(3, config_json).bind(4, now).bind(5, now);
  bind_folder(s, 6, config_json);
  s.run();
  return db_.last_insert_id();
}

void RunStore::set_status(int64_t run_id, RunStatus status_value, const std::string& error) {
  const std::string status = to_string(status_value);
  bool own = !in_transaction();
  if (own) db_.exec("PRAGMA synchronous=FULL");
  try {
    double now = unix_now();
    const bool finished = is_finished(status_value);
    // A span starts where a run starts running after none, or after a finished one (a span a
    // claim did not close), which is added to the time before; queuing the run again closes it,
    // and so does any status a finished run takes without a claim (a start that failed before
    // its worker claimed it: a failure, not a second span reaching back to the first's end).
    sql::Statement s(db_,
                     "UPDATE runs SET status = ?1, error = ?2, updated_at = ?3, "
                     "started_at = CASE WHEN ?1 = 'running' AND started_at IS NULL THEN ?3 ELSE started_at END, "
                     "active_seconds = active_seconds + CASE WHEN span_started_at IS NOT NULL AND "
                     "(?1 = 'queued' OR finished_at IS NOT NULL) "
                     "THEN max(0, coalesce(finished_at, ?3) - span_started_at) ELSE 0 END, "
                     "span_started_at = CASE WHEN ?1 = 'running' AND (span_started_at IS NULL OR finished_at IS NOT NULL) "
                     "THEN ?3 WHEN ?1 = 'queued' OR finished_at IS NOT NULL THEN NULL ELSE span_started_at END, "
                     "finished_at = CASE WHEN ?4 THEN ?3 WHEN ?1 IN ('running','queued') THEN NULL ELSE finished_at END, "
                     // A queued run has no worker yet: forget an earlier attempt's.
                     "worker_pid = CASE WHEN ?1 = 'queued' THEN NULL ELSE worker_pid END "
                     "WHERE id = ?5");
    s.bind(1, status).bind(2, error).bind(3, now).bind(4, int64_t{finished ? 1 : 0}).bind(5, run_id).run();
  } catch (...) {
    if (own) db_.exec("PRAGMA synchronous=NORMAL");
    throw;
  }
  if (own) db_.exec("PRAGMA synchronous=NORMAL");
}

void RunStore::set_device(int64_t run_id, const std::string& device) {
  sql::Statement s(db_, "UPDATE runs SET device = ?, updated_at = ? WHERE id = ?");
  s.bind(1, device).bind(2, unix_now()).bind(3, run_id).run();
}

void RunStore::set_control(int64_t run_id, const std::string& control) {
  sql::Statement s(db_, "UPDATE runs SET control = ?, updated_at = ? WHERE id = ?");
  if (control.empty())
    s.bind_null(1);
  else
    s.bind(1, control);
  s.bind(2, unix_now()).bind(3, run_id).run();
}

std::string RunStore::take_control(int64_t run_id) {
  const auto read = [&] {
    sql::Statement s(db_, "SELECT control FROM runs WHERE id = ?");
    s.bind(1, run_id);
    return s.step() ? s.col_text(0) : std::string();
  };
  // Polled every step: a plain read (never blocked in WAL mode) unless a command waits, so another
  // connection's long write (a delete, a migration, an open shell) never stalls training.
  if (read().empty()) return "";
  std::optional<sql::Transaction> txn;
  if (!in_transaction()) txn.emplace(db_);
  const std::string control = read();
  if (!control.empty()) {
    sql::Statement u(db_, "UPDATE runs SET control = NULL, updated_at = ? WHERE id = ?");
    u.bind(1, unix_now()).bind(2, run_id).run();
  }
  if (txn) txn->commit();
  return control;
}

void RunStore::heartbeat(int64_t run_id, int64_t pid, std::optional<int64_t> last_step) {
  double now = unix_now();
  sql::Statement s(db_,
                   "UPDATE runs SET worker_pid = ?1, worker_host = ?2, heartbeat_at = ?3, updated_at = ?3, "
                   "last_step = COALESCE(?4, last_step), worker_start = ?6 WHERE id = ?5");
  s.bind(1, pid).bind(2, local_host_name()).bind(3, now).bind(4, last_step).bind(5, run_id);
  s.bind(6, process_start_ticks(pid)).run();
}

bool RunStore::claim_run(int64_t run_id, int64_t pid) {
  const double now = unix_now();
  sql::Statement s(db_,
                   // The worker a study driver claimed the run for keeps the stop a cancel
                   // left meanwhile (it stops at its first step instead of training on); any
                   // other claim (a resume by hand) starts clean.
                   "UPDATE runs SET status = 'queued', error = '', finished_at = NULL, " +
                       close_active_span_sql("?3") + ", "
                   "control = CASE WHEN (SELECT state FROM studies WHERE id = runs.study_id) = 'cancelled' AND "
                   "status = 'queued' AND worker_pid = ?1 AND worker_host = ?2 THEN control ELSE NULL END, "
                   "worker_pid = ?1, worker_host = ?2, heartbeat_at = ?3, updated_at = ?3, worker_start = ?5 WHERE id = ?4 AND "
                   "status NOT IN ('running', 'paused', 'completed') AND NOT (status = 'queued' AND worker_pid IS NOT NULL "
                   // A study driver claims a run for the worker it just started; that worker's own
                   // claim then finds itself and goes on.
                   "AND NOT (worker_pid = ?1 AND worker_host = ?2))");
  s.bind(1, pid).bind(2, local_host_name()).bind(3, now).bind(4, run_id).bind(5, process_start_ticks(pid)).run();
  return db_.changes() == 1;
}

bool RunStore::another_run_writes_to(int64_t run_id, const std::string& folder_key) {
  if (folder_key.empty()) return false;
  sql::Statement s(db_, "SELECT 1 FROM runs WHERE output_dir = ?1 AND id != ?2 LIMIT 1");
  s.bind(1, folder_key).bind(2, run_id);
  return s.step();
}

std::vector<RunStore::FolderUser> RunStore::runs_using_folder(const std::string& folder_key) {
  std::vector<FolderUser> out;
  if (folder_key.empty()) return out;
  // The folder itself, or a path inside it: between key + "/" and key + "0" ('0' follows '/').
  const std::string inside_lo = folder_key == "/" ? "/" : folder_key + "/";
  const std::string inside_hi = folder_key == "/" ? "0" : folder_key + "0";
  for (const char* column : {"output_dir", "start_checkpoint"}) {
    sql::Statement s(db_, std::string("SELECT id, name, ") + column + " FROM runs WHERE " + column + " = ?1 OR (" +
                              column + " >= ?2 AND " + column + " < ?3) ORDER BY id");
    s.bind(1, folder_key).bind(2, inside_lo).bind(3, inside_hi);
    while (s.step()) out.push_back({s.col_int(0), s.col_text(1), s.col_text(2), column == std::string("output_dir")});
  }
  return out;
}

void RunStore::fill_output_folders() {
  std::vector<std::pair<int64_t, std::string>> runs;
  {
    sql::Statement s(db_, "SELECT id, config_json FROM runs");
    while (s.step()) runs.emplace_back(s.col_int(0), s.col_text(1));
  }
  sql::Statement set(db_, "UPDATE runs SET output_dir = ?2, start_checkpoint = ?3 WHERE id = ?1");
  for (const auto& [id, config_json] : runs) {
    set.reset();
    set.bind(1, id);
    bind_folder(set, 2, config_json);
    set.run();
  }
}

void RunStore::set_name(int64_t run_id, const std::string& name) {
  sql::Statement s(db_, "UPDATE runs SET name = ?, updated_at = ? WHERE id = ?");
  s.bind(1, name).bind(2, unix_now()).bind(3, run_id).run();
}

void RunStore::set_config(int64_t run_id, const std::string& config_json) {
  sql::Statement s(db_, "UPDATE runs SET config_json = ?1, output_dir = ?4, start_checkpoint = ?5, updated_at = ?2 WHERE id = ?3");
  s.bind(1, config_json).bind(2, unix_now()).bind(3, run_id);
  bind_folder(s, 4, config_json);
  s.run();
}

void RunStore::set_total_steps(int64_t run_id, int64_t total_steps) {
  sql::Statement s(db_, "UPDATE runs SET total_steps = ?, updated_at = ? WHERE id = ?");
  s.bind(1, total_steps).bind(2, unix_now()).bind(3, run_id).run();
}

void RunStore::set_parent(int64_t run_id, int64_t parent_run_id, int64_t parent_step) {
  sql::Statement s(db_, "UPDATE runs SET parent_run_id = ?, parent_step = ?, updated_at = ? WHERE id = ?");
  s.bind(1, parent_run_id).bind(2, parent_step).bind(3, unix_now()).bind(4, run_id).run();
}

void RunStore::rewind(int64_t run_id, int64_t after_step) {
  std::optional<sql::Transaction> txn;
  if (!in_transaction()) txn.emplace(db_);
  for (const char* sql : {"DELETE FROM metrics WHERE run_id = ? AND step > ?",
                          "DELETE FROM samples WHERE run_id = ? AND step > ?",
                          "DELETE FROM evals WHERE run_id = ? AND checkpoint_step > ?",
                          "DELETE FROM checkpoints WHERE run_id = ? AND step > ?"}) {
    sql::Statement s(db_, sql);
    s.bind(1, run_id).bind(2, after_step).run();
  }
  sql::Statement s(db_, "UPDATE runs SET last_step = ?, updated_at = ?, rewinds = rewinds + 1 WHERE id = ?");
  if (after_step >= 0)
    s.bind(1, after_step);
  else
    s.bind_null(1);
  s.bind(2, unix_now()).bind(3, run_id).run();
  if (txn) txn->commit();
}

void RunStore::drop_redone_rows(int64_t run_id, int64_t step, bool evaluation, bool samples) {
  std::optional<sql::Transaction> txn;
  if (!in_transaction()) txn.emplace(db_);
  if (evaluation) {
    sql::Statement s(db_, "DELETE FROM evals WHERE run_id = ? AND checkpoint_step = ? AND kind = 'eval'");
    s.bind(1, run_id).bind(2, step).run();
  }
  if (samples) {
    sql::Statement s(db_, "DELETE FROM samples WHERE run_id = ? AND step = ?");
    s.bind(1, run_id).bind(2, step).run();
  }
  if (txn) txn->commit();
}

std::string RunStore::memory_kill_hint(const RunRow& r) {
  // The kernel's out-of-memory killer ends the process that holds the most memory, without a
  // word to it: a worker whose last reading held half of this machine's RAM or more likely was it,
  // and so was a CPU run's whose last line said it would try its longest rows (a GPU run's that
  // runs out of GPU memory there says so itself; core/run_observer.h).
  std::optional<RunConfig> config;
  try {
    config = config_from_json(nlohmann::json::parse(r.config_json));
  } catch (const std::exception&) {
    // a config this build cannot read: the hint stands without the settings
  }
  // ("auto" ran where its start recorded)
  const bool on_cpu = config && (config->device == "cpu" || (config->device == "auto" && r.device.rfind("cpu", 0) == 0));
  sql::Statement last(db_, "SELECT text FROM events WHERE run_id = ? ORDER BY id DESC LIMIT 1");
  last.bind(1, r.id);
  const bool trying = last.step() && last.col_text(0).rfind(kTryingLongestRowsLog, 0) == 0;
  const std::optional<double> rss_mb = last_value(r.id, "memory/rss_mb");
  const int64_t ram = system_memory_bytes("MemTotal");
  std::string text;
  if (trying)
    text = std::string(". It stopped while trying its longest training rows ahead (its last log line), which a run does "
                       "after its first step so that memory they would run out of runs out then: the system's "
                       "out-of-memory killer ") +
           (on_cpu ? "most likely" : "may have") + " ended it";
  else if (rss_mb && ram > 0 && *rss_mb * 1024 * 1024 >= 0.5 * static_cast<double>(ram))
    text = ". Its last memory reading was " + format_gib(*rss_mb * 1024 * 1024) + " resident of this machine's " +
           format_gib(static_cast<double>(ram)) + ", so the system's out-of-memory killer may have ended it";
  else
    return "";
  text += " (`journalctl -k | grep -i \"killed process\"` says)";
  if (on_cpu)  // (a GPU run's host memory depends little on its settings)
    text += "; a clone of it from its last checkpoint can ask for less: " +
            ways_to_use_less_memory(*config, 0, MemoryUse::training);
  return text;
}

std::vector<int64_t> RunStore::reap_dead_workers(double stale_after_seconds) {
  const std::string host = local_host_name();
  const double now = unix_now();
  std::vector<RunRow> dead;
  {
    sql::Statement s(db_, std::string("SELECT ") + kRunColumns +
                              " FROM runs WHERE status IN ('running', 'paused') OR "
                              "(status = 'queued' AND worker_pid IS NOT NULL) ORDER BY id");
    while (s.step()) {
      RunRow r = read_run(s);
      const double last_sign = r.heartbeat_at.value_or(r.updated_at);
      // On this machine the pid tells for certain (a worker stalled by a suspend or a long I/O
      // wait is alive, and must not be replaced by a second one); elsewhere only the heartbeat can.
      const bool local = r.worker_pid && r.worker_host == host;
      const bool gone = local ? !local_worker_alive(r) : now - last_sign > stale_after_seconds;
      if (gone) dead.push_back(std::move(r));
    }
  }
  std::vector<int64_t> ids;
  for (const auto& r : dead) {
    std::string text = "the worker";
    if (r.worker_pid) text += " (pid " + std::to_string(*r.worker_pid) + (r.worker_host.empty() ? "" : " on " + r.worker_host) + ")";
    text += " stopped without reporting: it was killed, crashed, or the machine went down";
    if (r.last_step) text += "; last recorded step " + std::to_string(*r.last_step);
    if (r.worker_pid && r.worker_host == host) text += memory_kill_hint(r);
    text += ". Continue it from its last checkpoint with: ganpo runs resume " + std::to_string(r.id) + db_option();
    std::string tail = last_log_lines(r.id, 10);
    sql::Transaction txn(db_);
    // Re-check under the write lock: the worker may have finished meanwhile.
    sql::Statement check(db_, "SELECT status FROM runs WHERE id = ?");
    check.bind(1, r.id);
    if (!check.step() || parse_run_status(check.col_text(0)) != r.status) continue;
    set_status(r.id, RunStatus::failed, tail.empty() ? text : text + "\n--- last log lines ---\n" + tail);
    // It ended at its last sign of life, not when someone next opened the workspace (a run that
    // crashed after ten minutes overnight did not last fourteen hours).
    sql::Statement ended(db_, "UPDATE runs SET finished_at = ? WHERE id = ?");
    ended.bind(1, std::min(now, r.heartbeat_at.value_or(r.updated_at))).bind(2, r.id).run();
    add_event(r.id, "error", text);
    txn.commit();
    ids.push_back(r.id);
  }
  return ids;
}

std::string RunStore::last_log_lines(int64_t run_id, int64_t n) {
  sql::Statement s(db_,
                   "SELECT level, text FROM (SELECT id, level, text FROM events WHERE run_id = ? "
                   "ORDER BY id DESC LIMIT ?) ORDER BY id");
  s.bind(1, run_id).bind(2, n);
  std::string out;
  while (s.step()) out += "[" + s.col_text(0) + "] " + s.col_text(1) + "\n";
  return out;
}

std::optional<double> RunStore::last_value(int64_t run_id, const std::string& key) {
  sql::Statement s(db_, "SELECT value FROM metrics WHERE run_id = ? AND key = ? ORDER BY step DESC LIMIT 1");
  s.bind(1, run_id).bind(2, key);
  if (!s.step() || s.is_null(0)) return std::nullopt;
  return s.col_double(0);
}

// A run's keys, in order, found by seeking the (run, key, step) index key after key: a few index
// lookups per key where a DISTINCT or GROUP BY reads every row of the run (0.3 s at 4M rows, and
// Compare, runs show and the study report ask for it per run). `?1` is the run.
namespace {
constexpr const char* kRunKeys =
    "WITH RECURSIVE keys(key) AS (SELECT (SELECT MIN(key) FROM metrics WHERE run_id = ?1) UNION ALL "
    "SELECT (SELECT MIN(key) FROM metrics WHERE run_id = ?1 AND key > keys.key) FROM keys WHERE keys.key IS NOT NULL) ";
}  // namespace

std::vector<MetricRow> RunStore::latest_metrics(int64_t run_id) {
  // Each key's row at its last step (the newest row of that step: a rewound run wrote it again).
  sql::Statement s(db_, std::string(kRunKeys) +
                            "SELECT m.id, m.run_id, m.step, m.key, m.value, m.wall_time, m.tokens_seen FROM keys "
                            "JOIN metrics m ON m.id = (SELECT id FROM metrics WHERE run_id = ?1 AND key = keys.key "
                            "ORDER BY step DESC, id DESC LIMIT 1) WHERE keys.key IS NOT NULL ORDER BY keys.key");
  s.bind(1, run_id);
  std::vector<MetricRow> out;
  while (s.step()) out.push_back(read_metric(s));
  return out;
}

void RunStore::set_tags(int64_t run_id, const std::string& tags) {
  sql::Statement s(db_, "UPDATE runs SET tags = ?, updated_at = ? WHERE id = ?");
  s.bind(1, tags).bind(2, unix_now()).bind(3, run_id).run();
}

void RunStore::set_notes(int64_t run_id, const std::string& notes) {
  sql::Statement s(db_, "UPDATE runs SET notes = ?, updated_at = ? WHERE id = ?");
  s.bind(1, notes).bind(2, unix_now()).bind(3, run_id).run();
}

bool RunStore::fail_unclaimed_launch(int64_t run_id, double launched_at, const std::string& reason) {
  sql::Transaction txn(db_);
  const std::optional<RunRow> r = run(run_id);
  if (!r || r->status == RunStatus::running || r->status == RunStatus::paused || r->status == RunStatus::completed ||
      (r->heartbeat_at && *r->heartbeat_at >= launched_at))
    return false;
  set_status(run_id, RunStatus::failed, reason);
  add_event(run_id, "error", reason);
  txn.commit();
  return true;
}

void RunStore::delete_run(int64_t run_id) {
  std::optional<sql::Transaction> txn;
  if (!in_transaction()) txn.emplace(db_);
  sql::Statement s(db_, "DELETE FROM runs WHERE id = ?");
  s.bind(1, run_id).run();
  if (sqlite3_changes(db_.get()) > 0) {
    sql::Statement kept(db_, "INSERT OR REPLACE INTO deleted_runs(id, deleted_at) VALUES(?, ?)");
    kept.bind(1, run_id).bind(2, unix_now()).run();
  }
  if (txn) txn->commit();
}

void RunStore::append_metrics(const std::vector<MetricRow>& rows) {
  if (rows.empty()) return;
  std::optional<sql::Transaction> txn;
  if (!in_transaction()) txn.emplace(db_);
  sql::Statement s(db_,
                   "INSERT INTO metrics(run_id, step, key, value, wall_time, tokens_seen) "
                   "VALUES(?, ?, ?, ?, ?, ?)");
  for (const auto& r : rows) {
    s.bind(1, r.run_id).bind(2, r.step).bind(3, r.key);
    if (std::isnan(r.value))
      s.bind_null(4);  // SQLite stores NaN as NULL anyway; be explicit
    else
      s.bind(4, r.value);
    s.bind(5, r.wall_time).bind(6, r.tokens_seen);
    s.run();
    s.reset();
  }
  if (txn) txn->commit();
}

void RunStore::add_samples(int64_t run_id, int64_t step, const std::vector<SampleRow>& samples) {
  if (samples.empty()) return;
  std::optional<sql::Transaction> txn;
  if (!in_transaction()) txn.emplace(db_);
  sql::Statement s(db_,
                   "INSERT INTO samples(run_id, step, prompt_index, prompt, policy_text, reference_text, "
                   "policy_score, reference_score) VALUES(?, ?, ?, ?, ?, ?, ?, ?)");
  for (const auto& r : samples) {
    s.bind(1, run_id).bind(2, step).bind(3, r.prompt_index).bind(4, r.prompt).bind(5, r.policy_text);
    // No score is NULL, never a number a judge could print.
    auto score = [](double v) { return std::isfinite(v) ? std::optional<double>(v) : std::nullopt; };
    s.bind(6, r.reference_text).bind(7, score(r.policy_score)).bind(8, score(r.reference_score));
    s.run();
    s.reset();
  }
  if (txn) txn->commit();
}

int64_t RunStore::add_checkpoint(int64_t run_id, int64_t step, const std::string& path,
                                 const std::string& metrics_json) {
  // A folder written again (or its numbers recorded again) replaces its row.
  std::optional<sql::Transaction> txn;
  if (!in_transaction()) txn.emplace(db_);
  sql::Statement(db_, "DELETE FROM checkpoints WHERE run_id = ? AND path = ?").bind(1, run_id).bind(2, path).run();
  sql::Statement s(db_,
                   "INSERT INTO checkpoints(run_id, step, path, metrics_json, created_at) VALUES(?, ?, ?, ?, ?)");
  s.bind(1, run_id).bind(2, step).bind(3, path).bind(4, metrics_json).bind(5, unix_now()).run();
  const int64_t id = db_.last_insert_id();
  if (txn) txn->commit();
  return id;
}

int64_t RunStore::add_event(int64_t run_id, const std::string& level, const std::string& text, double time) {
  sql::Statement s(db_, "INSERT INTO events(run_id, time, level, text) VALUES(?, ?, ?, ?)");
  s.bind(1, run_id).bind(2, time > 0 ? time : unix_now()).bind(3, level).bind(4, text).run();
  return db_.last_insert_id();
}

int64_t RunStore::add_eval(int64_t run_id, int64_t checkpoint_step, const std::string& kind,
                           const std::string& params_json, const std::string& result_json) {
  sql::Statement s(db_,
                   "INSERT INTO evals(run_id, checkpoint_step, kind, params_json, result_json, created_at) "
                   "VALUES(?, ?, ?, ?, ?, ?)");
  std::optional<sql::Transaction> txn;
  if (!in_transaction()) txn.emplace(db_);
  s.bind(1, run_id).bind(2, checkpoint_step).bind(3, kind).bind(4, params_json).bind(5, result_json);
  s.bind(6, unix_now()).run();
  const int64_t id = db_.last_insert_id();
  // The run list shows the best held-out number: a run changes with its evaluations.
  sql::Statement touch(db_, "UPDATE runs SET updated_at = ? WHERE id = ?");
  touch.bind(1, unix_now()).bind(2, run_id).run();
  if (txn) txn->commit();
  return id;
}

// ---------------------------------------------------------------- readers

std::optional<RunRow> RunStore::run(int64_t run_id) {
  sql::Statement s(db_, std::string("SELECT ") + kRunColumns + " FROM runs WHERE id = ?");
  s.bind(1, run_id);
  if (!s.step()) return std::nullopt;
  return read_run(s);
}

std::vector<RunRow> RunStore::runs() {
  sql::Statement s(db_, std::string("SELECT ") + kRunColumns + " FROM runs ORDER BY id");
  std::vector<RunRow> out;
  while (s.step()) out.push_back(read_run(s));
  return out;
}

std::vector<RunRow> RunStore::runs_changed_since(double t) {
  sql::Statement s(db_, std::string("SELECT ") + kRunColumns +
                            " FROM runs WHERE updated_at > ? ORDER BY updated_at, id");
  s.bind(1, t);
  std::vector<RunRow> out;
  while (s.step()) out.push_back(read_run(s));
  return out;
}

int64_t RunStore::rewinds(int64_t run_id) {
  sql::Statement s(db_, "SELECT rewinds FROM runs WHERE id = ?");
  s.bind(1, run_id);
  return s.step() ? s.col_int(0) : 0;
}

std::vector<MetricRow> RunStore::metrics_after(int64_t run_id, int64_t last_row_id, int64_t limit) {
  sql::Statement s(db_,
                   "SELECT id, run_id, step, key, value, wall_time, tokens_seen FROM metrics "
                   "WHERE run_id = ? AND id > ? ORDER BY id LIMIT ?");
  s.bind(1, run_id).bind(2, last_row_id).bind(3, limit);
  std::vector<MetricRow> out;
  while (s.step()) out.push_back(read_metric(s));
  return out;
}

std::vector<std::string> RunStore::metric_keys(int64_t run_id) {
  sql::Statement s(db_, std::string(kRunKeys) + "SELECT key FROM keys WHERE key IS NOT NULL");
  s.bind(1, run_id);
  std::vector<std::string> out;
  while (s.step()) out.push_back(s.col_text(0));
  return out;
}

std::vector<SeriesPoint> RunStore::series(int64_t run_id, const std::string& key, int64_t step_lo, int64_t step_hi) {
  sql::Statement s(db_,
                   "SELECT step, value FROM metrics WHERE run_id = ? AND key = ? AND step BETWEEN ? AND ? "
                   "ORDER BY step, id");
  s.bind(1, run_id).bind(2, key).bind(3, step_lo).bind(4, step_hi);
  std::vector<SeriesPoint> out;
  // NaN is stored as NULL and comes back as NaN, so a chart can mark it instead of losing it.
  while (s.step()) out.push_back({s.col_int(0), s.is_null(1) ? std::nan("") : s.col_double(1)});
  return out;
}

std::vector<RunStore::Clock> RunStore::clock_at(int64_t run_id, const std::string& key,
                                                const std::vector<int64_t>& steps) {
  // (INDEXED BY: for ORDER BY id the planner would walk the run's rows by id, every row per step.)
  sql::Statement s(db_,
                   "SELECT wall_time, tokens_seen FROM metrics INDEXED BY metrics_run_key_step "
                   "WHERE run_id = ?1 AND key = ?2 AND step = ?3 ORDER BY id DESC LIMIT 1");
  const double nan = std::numeric_limits<double>::quiet_NaN();
  std::vector<Clock> out;
  out.reserve(steps.size());
  for (int64_t step : steps) {
    s.reset();
    s.bind(1, run_id).bind(2, key).bind(3, step);
    if (s.step())
      out.push_back({s.col_double(0), s.is_null(1) ? nan : s.col_double(1)});
    else
      out.push_back({nan, nan});
  }
  return out;
}

int64_t RunStore::bucket_of(int64_t step, int64_t lo, int64_t hi, int64_t buckets) {
  return (step - lo) * buckets / (hi - lo + 1);
}

std::vector<SeriesBucket> RunStore::decimated_series(int64_t run_id, const std::string& key, int64_t step_lo,
                                                     int64_t step_hi, int64_t buckets) {
  std::vector<SeriesBucket> out;
  if (buckets <= 0 || step_hi < step_lo) return out;
  const int64_t span = step_hi - step_lo + 1;
  // Aggregates per bucket in one index range scan; the last value of each bucket is one
  // index lookup on (run_id, key, step = last step), newest row first.
  sql::Statement s(db_, R"SQL(
WITH finite AS (  -- NaN is stored as NULL; +-Inf (out of the range of doubles) is made NULL here too
  SELECT step, CASE WHEN value BETWEEN -1.7976931348623157e308 AND 1.7976931348623157e308 THEN value END AS v
  FROM metrics
  WHERE run_id = ?1 AND key = ?2 AND step BETWEEN ?3 AND ?4
), agg AS (
  SELECT ((step - ?3) * ?5) / ?6 AS b, MIN(step) AS s0, MAX(step) AS s1,
         MIN(v) AS vmin, MAX(v) AS vmax, COUNT(v) AS n, COUNT(*) - COUNT(v) AS nans, AVG(v) AS vmean
  FROM finite GROUP BY b
)
SELECT b, s0, s1, vmin, vmax, n, nans,
       (SELECT m.value FROM metrics AS m INDEXED BY metrics_run_key_step
        WHERE m.run_id = ?1 AND m.key = ?2 AND m.step = agg.s1
          AND m.value BETWEEN -1.7976931348623157e308 AND 1.7976931348623157e308
        ORDER BY m.id DESC LIMIT 1),
       vmean
FROM agg ORDER BY b
)SQL");
  s.bind(1, run_id).bind(2, key).bind(3, step_lo).bind(4, step_hi).bind(5, buckets).bind(6, span);
  while (s.step()) {
    SeriesBucket bk;
    int64_t b = s.col_int(0);
    bk.step_lo = step_lo + (b * span + buckets - 1) / buckets;  // first step whose bucket is b
    bk.step_hi = step_lo + ((b + 1) * span + buckets - 1) / buckets - 1;
    bk.first_step = s.col_int(1);
    bk.last_step = s.col_int(2);
    const double nan = std::nan("");
    bk.min = s.is_null(3) ? nan : s.col_double(3);  // NULL when every value in the bucket is NaN
    bk.max = s.is_null(4) ? nan : s.col_double(4);
    bk.count = s.col_int(5);
    bk.nan_count = s.col_int(6);
    bk.last = s.is_null(7) ? nan : s.col_double(7);
    bk.mean = s.is_null(8) ? nan : s.col_double(8);
    out.push_back(bk);
  }
  return out;
}

std::vector<SampleRow> RunStore::samples(int64_t run_id, int64_t step) {
  sql::Statement s(db_,
                   "SELECT id, run_id, step, prompt_index, prompt, policy_text, reference_text, policy_score, "
                   "reference_score FROM samples WHERE run_id = ? AND step = ? ORDER BY prompt_index, id");
  s.bind(1, run_id).bind(2, step);
  std::vector<SampleRow> out;
  while (s.step()) {
    SampleRow r;
    r.id = s.col_int(0);
    r.run_id = s.col_int(1);
    r.step = s.col_int(2);
    r.prompt_index = s.col_int(3);
    r.prompt = s.col_text(4);
    r.policy_text = s.col_text(5);
    r.reference_text = s.col_text(6);
    r.policy_score = s.is_null(7) ? std::numeric_limits<double>::quiet_NaN() : s.col_double(7);
    r.reference_score = s.is_null(8) ? std::numeric_limits<double>::quiet_NaN() : s.col_double(8);
    out.push_back(std::move(r));
  }
  return out;
}

std::vector<int64_t> RunStore::sample_steps(int64_t run_id) {
  sql::Statement s(db_, "SELECT DISTINCT step FROM samples WHERE run_id = ? ORDER BY step");
  s.bind(1, run_id);
  std::vector<int64_t> out;
  while (s.step()) out.push_back(s.col_int(0));
  return out;
}

std::vector<std::pair<int64_t, int64_t>> RunStore::sample_step_versions(int64_t run_id) {
  sql::Statement s(db_, "SELECT step, MAX(id) FROM samples WHERE run_id = ? GROUP BY step ORDER BY step");
  s.bind(1, run_id);
  std::vector<std::pair<int64_t, int64_t>> out;
  while (s.step()) out.emplace_back(s.col_int(0), s.col_int(1));
  return out;
}

std::vector<CheckpointRow> RunStore::checkpoints(int64_t run_id) {
  sql::Statement s(db_,
                   "SELECT id, run_id, step, path, metrics_json, created_at FROM checkpoints "
                   "WHERE run_id = ? ORDER BY step, id");
  s.bind(1, run_id);
  std::vector<CheckpointRow> out;
  while (s.step())
    out.push_back({s.col_int(0), s.col_int(1), s.col_int(2), s.col_text(3), s.col_text(4), s.col_double(5)});
  return out;
}

std::vector<EventRow> RunStore::events_after(int64_t run_id, int64_t last_id, int64_t limit) {
  sql::Statement s(db_,
                   "SELECT id, run_id, time, level, text FROM events WHERE run_id = ? AND id > ? "
                   "ORDER BY id LIMIT ?");
  s.bind(1, run_id).bind(2, last_id).bind(3, limit);
  std::vector<EventRow> out;
  while (s.step()) out.push_back({s.col_int(0), s.col_int(1), s.col_double(2), s.col_text(3), s.col_text(4)});
  return out;
}

std::vector<EvalRow> RunStore::evals(int64_t run_id) {
  sql::Statement s(db_,
                   "SELECT id, run_id, checkpoint_step, kind, params_json, result_json, created_at FROM evals "
                   "WHERE run_id = ? ORDER BY id");
  s.bind(1, run_id);
  std::vector<EvalRow> out;
  while (s.step())
    out.push_back({s.col_int(0), s.col_int(1), s.col_int(2), s.col_text(3), s.col_text(4), s.col_text(5),
                   s.col_double(6)});
  return out;
}

}  // namespace ganpo
