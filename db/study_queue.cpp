#include "db/study_queue.h"

#include <filesystem>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/run_files.h"
#include "db/run_service.h"

namespace ganpo {

const char* to_string(StudyState state) {
  switch (state) {
    case StudyState::active: return "active";
    case StudyState::paused: return "paused";
    case StudyState::cancelled: return "cancelled";
  }
  return "active";
}

namespace {

StudyState parse_state(const std::string& text) {
  if (text == "paused") return StudyState::paused;
  if (text == "cancelled") return StudyState::cancelled;
  return StudyState::active;
}

StudyRow read_study(const sql::Statement& s) {
  StudyRow r;
  r.id = s.col_int(0);
  r.name = s.col_text(1);
  r.spec_toml = s.col_text(2);
  r.state = parse_state(s.col_text(3));
  r.created_at = s.col_double(4);
  return r;
}

// A run that may start: queued without a worker, or failed with attempts left; and the run it
// starts from (if any) completed.
const char* const kStartable =
    "((r.status = 'queued' AND r.worker_pid IS NULL) OR (r.status = 'failed' AND r.attempts < ?2)) AND "
    "(r.depends_on IS NULL OR EXISTS (SELECT 1 FROM runs d WHERE d.id = r.depends_on AND d.status = 'completed'))";

}  // namespace

int64_t create_study(RunStore& store, const std::string& name, const std::string& spec_toml,
                     const std::vector<StudyRun>& runs) {
  sql::Database& db = store.database();
  sql::Transaction txn(db);
  const double now = unix_now();
  sql::Statement insert(db, "INSERT INTO studies(name, spec_toml, state, created_at, updated_at) VALUES(?, ?, 'active', ?, ?)");
  insert.bind(1, name).bind(2, spec_toml).bind(3, now).bind(4, now).run();
  const int64_t study_id = db.last_insert_id();
  RunService service(store);
  int64_t last_stage = 0;
  for (const StudyRun& run : runs) {
    CreateRunOptions keep;
    keep.keep_output_dir = true;  // (the stages after point into these folders already)
    const int64_t id = service.create(run.config, keep);
    sql::Statement link(db, "UPDATE runs SET study_id = ?, depends_on = ? WHERE id = ?");
    link.bind(1, study_id);
    if (last_stage > 0)
      link.bind(2, last_stage);
    else
      link.bind_null(2);
    link.bind(3, id).run();
    if (!run.stage.empty()) last_stage = id;
  }
  txn.commit();
  return study_id;
}

std::string default_study_folder(const std::string& db_path, const std::string& name) {
  namespace fs = std::filesystem;
  const fs::path root = fs::absolute(db_path).parent_path() / "studies";
  std::string folder = (root / safe_file_name(name)).string();
  for (int n = 2; fs::exists(folder); ++n) folder = (root / (safe_file_name(name) + "-" + std::to_string(n))).string();
  return folder;
}

QueuedStudy queue_study(RunStore& store, const std::string& db_path, const StudySpec& spec, const std::string& out_root) {
  namespace fs = std::filesystem;
  QueuedStudy queued;
  queued.folder = out_root;
  if (!queued.folder.empty()) {
    // A folder named by the user: never mixed with an earlier study's runs.
    std::error_code ec;
    const std::string root = fs::absolute(queued.folder).lexically_normal().string();
    bool taken = fs::is_directory(root, ec) && !fs::is_empty(root, ec);
    for (const RunRow& r : store.runs()) {  // also an earlier study queued there that has not started
      if (taken) break;
      const auto config = nlohmann::json::parse(r.config_json, nullptr, false);
      const std::string dir = config.is_object() && config.contains("output_dir") && config["output_dir"].is_string()
                                  ? config["output_dir"].get<std::string>()
                                  : "";
      taken = dir.rfind(root + "/", 0) == 0;
    }
    if (taken)
      throw ConfigError(queued.folder + " already holds runs (an earlier study or pipeline?); remove it or choose "
                        "another folder (output_dir, or --out)");
  } else {
    queued.folder = default_study_folder(db_path, spec.name);
  }
  queued.folder = fs::absolute(queued.folder).string();
  queued.runs = expand_study(spec, queued.folder);
  std::error_code ec;
  fs::create_directories(queued.folder, ec);  // taken: the next study of this name gets -2
  queued.id = create_study(store, spec.name, study_to_toml(spec), queued.runs);
  return queued;
}

std::optional<StudyRow> find_study(RunStore& store, int64_t study_id) {
  sql::Statement s(store.database(), "SELECT id, name, spec_toml, state, created_at FROM studies WHERE id = ?");
  s.bind(1, study_id);
  if (!s.step()) return std::nullopt;
  return read_study(s);
}

std::vector<StudyRow> list_studies(RunStore& store) {
  sql::Statement s(store.database(), "SELECT id, name, spec_toml, state, created_at FROM studies ORDER BY id");
  std::vector<StudyRow> out;
  while (s.step()) out.push_back(read_study(s));
  return out;
}

void set_study_state(RunStore& store, int64_t study_id, StudyState state) {
  sql::Transaction txn(store.database());
  sql::Statement s(store.database(), "UPDATE studies SET state = ?, updated_at = ? WHERE id = ?");
  s.bind(1, std::string(to_string(state))).bind(2, unix_now()).bind(3, study_id).run();
  if (state == StudyState::active) {
    // Runs a cancel (or a person) stopped go back in the queue; each continues from its last
    // checkpoint when started.
    sql::Statement requeue(store.database(),
                           "UPDATE runs SET status = 'queued', error = '', finished_at = NULL, worker_pid = NULL, " +
                               close_active_span_sql("?2") + ", attempts = 0, updated_at = ?2 "
                               "WHERE study_id = ?1 AND status = 'stopped'");
    requeue.bind(1, study_id).bind(2, unix_now()).run();
    // A stop a cancel (or a person) left for a run a worker still holds, and that its worker has
    // not taken yet, is taken back: the run would otherwise stop after this resume and stay
    // stopped in an active study (only the stopped runs above go back in the queue).
    sql::Statement withdraw(store.database(),
                            "UPDATE runs SET control = NULL, updated_at = ?2 WHERE study_id = ?1 AND control = 'stop' AND "
                            "(status IN ('running', 'paused') OR (status = 'queued' AND worker_pid IS NOT NULL))");
    withdraw.bind(1, study_id).bind(2, unix_now()).run();
  } else if (state == StudyState::cancelled) {
    // Every run a worker holds is asked to stop here, in the store, so a cancel needs no driver
    // alive (one killed, or started from a terminal since closed). A worker that a driver started
    // but that has not yet taken its run finds the stop when it does (RunStore::claim_run).
    stop_runs_of_cancelled_study(store, study_id);
  }
  txn.commit();
}

void stop_runs_of_cancelled_study(RunStore& store, int64_t study_id) {
  // One statement that reads the study's state where it writes, so a driver's round that saw the
  // study cancelled never sends its stop after a resume has come in between.
  sql::Statement stop(store.database(),
                      "UPDATE runs SET control = 'stop', updated_at = ?2 WHERE study_id = ?1 AND "
                      "(status IN ('running', 'paused') OR (status = 'queued' AND worker_pid IS NOT NULL)) AND "
                      "(SELECT state FROM studies WHERE id = ?1) = 'cancelled'");
  stop.bind(1, study_id).bind(2, unix_now()).run();
}

std::vector<int64_t> study_run_ids(RunStore& store, int64_t study_id) {
  sql::Statement s(store.database(), "SELECT id FROM runs WHERE study_id = ? ORDER BY id");
  s.bind(1, study_id);
  std::vector<int64_t> ids;
  while (s.step()) ids.push_back(s.col_int(0));
  return ids;
}

std::optional<int64_t> next_study_run(RunStore& store, int64_t study_id) {
  sql::Statement s(store.database(),
                   std::string("SELECT r.id FROM runs r WHERE r.study_id = ?1 AND ") + kStartable + " ORDER BY r.id LIMIT 1");
  s.bind(1, study_id).bind(2, kStudyMaxAttempts);
  if (!s.step()) return std::nullopt;
  return s.col_int(0);
}

bool claim_study_run(RunStore& store, int64_t run_id, int64_t pid) {
  const double now = unix_now();
  sql::Statement s(store.database(),
                   "UPDATE runs SET status = 'queued', error = '', finished_at = NULL, control = NULL, " +
                       close_active_span_sql("?5") +
                       ", worker_pid = ?3, worker_host = ?4, heartbeat_at = ?5, updated_at = ?5, "
                       // (The previous attempt's start time would make the new worker look like a
                       // later process given the pid, dead to any reaper, until its own claim
                       // stamps its start.)
                       "worker_start = NULL, attempts = attempts + 1 WHERE id IN (SELECT r.id FROM runs r WHERE r.id = ?1 AND " +
                       kStartable + " AND (SELECT state FROM studies WHERE id = r.study_id) = 'active')");
  s.bind(1, run_id).bind(2, kStudyMaxAttempts).bind(3, pid).bind(4, local_host_name()).bind(5, now).run();
  return store.database().changes() == 1;
}

StudyCounts study_counts(RunStore& store, int64_t study_id) {
  StudyCounts c;
  for (int64_t id : study_run_ids(store, study_id)) {
    const std::optional<RunRow> r = store.run(id);
    if (!r) continue;
    ++c.total;
    if (worker_attached(*r)) {
      ++c.attached;
      continue;
    }
    switch (r->status) {
      case RunStatus::completed: ++c.completed; break;
      case RunStatus::stopped: ++c.stopped; break;
      case RunStatus::failed: ++c.failed; break;
      default: ++c.queued; break;
    }
  }
  c.blocked = static_cast<int64_t>(blocked_study_runs(store, study_id).size());
  return c;
}

std::vector<int64_t> blocked_study_runs(RunStore& store, int64_t study_id) {
  // Something they start from, however many stages up, is finished without completing, or was
  // deleted.
  sql::Statement blocked(store.database(),
                         "WITH RECURSIVE dead(id) AS ("
                         "  SELECT id FROM runs WHERE study_id = ?1 AND "
                         "    (status = 'stopped' OR (status = 'failed' AND attempts >= ?2) "
                         "     OR (depends_on IS NOT NULL AND depends_on NOT IN (SELECT id FROM runs))) "
                         "  UNION SELECT r.id FROM runs r JOIN dead ON r.depends_on = dead.id "
                         "    WHERE r.status = 'queued' AND r.worker_pid IS NULL) "
                         "SELECT id FROM runs WHERE id IN (SELECT id FROM dead) AND status = 'queued' ORDER BY id");
  blocked.bind(1, study_id).bind(2, kStudyMaxAttempts);
  std::vector<int64_t> ids;
  while (blocked.step()) ids.push_back(blocked.col_int(0));
  return ids;
}

}  // namespace ganpo
