// Run store tests for schema upgrades from a real v1 file, worker bookkeeping (claim, heartbeat,
// dead-worker reaping) and rewinding a run for a resume.
#include <gtest/gtest.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>

#include "core/memory_estimate.h"
#include "core/run_observer.h"
#include "db/run_store.h"

namespace fs = std::filesystem;
using ganpo::MetricRow;
using ganpo::RunStatus;
using ganpo::RunStore;
using ganpo::RunRow;
using ganpo::run_duration_seconds;
using ganpo::unix_now;

namespace {

class RunStoreWorkersTest : public ::testing::Test {
protected:
  void SetUp() override {
    static int counter = 0;
    dir_ = fs::temp_directory_path() /
           ("ganpo_db_workers_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string db_path() const { return (dir_ / "workspace.sqlite").string(); }

  void exec(const std::string& sql) {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(db_path().c_str(), &db), SQLITE_OK);
    char* err = nullptr;
    const int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err);
    EXPECT_EQ(rc, SQLITE_OK) << (err ? err : "");
    sqlite3_free(err);
    sqlite3_close(db);
  }

  // A pid that existed a moment ago and is gone now.
  static int64_t dead_pid() {
    const pid_t child = ::fork();
    if (child == 0) ::_exit(0);
    int status = 0;
    ::waitpid(child, &status, 0);
    return child;
  }

  fs::path dir_;
};

// The v1 schema exactly as release 1 wrote it (runs, metrics and the other tables), with data.
const char* const kVersionOneFile = R"SQL(
CREATE TABLE runs (id INTEGER PRIMARY KEY, name TEXT NOT NULL DEFAULT '', status TEXT NOT NULL DEFAULT 'queued',
  stage TEXT NOT NULL DEFAULT '', config_json TEXT NOT NULL DEFAULT '{}', device TEXT NOT NULL DEFAULT '',
  created_at REAL NOT NULL, started_at REAL, finished_at REAL, error TEXT NOT NULL DEFAULT '',
  tags TEXT NOT NULL DEFAULT '', notes TEXT NOT NULL DEFAULT '',
  parent_run_id INTEGER REFERENCES runs(id) ON DELETE SET NULL, parent_step INTEGER, control TEXT,
  worker_pid INTEGER, heartbeat_at REAL, updated_at REAL NOT NULL);
CREATE TABLE metrics (id INTEGER PRIMARY KEY, run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
  step INTEGER NOT NULL, key TEXT NOT NULL, value REAL, wall_time REAL NOT NULL, tokens_seen REAL);
CREATE TABLE samples (id INTEGER PRIMARY KEY, run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
  step INTEGER NOT NULL, prompt_index INTEGER NOT NULL, prompt TEXT NOT NULL, policy_text TEXT NOT NULL,
  reference_text TEXT NOT NULL, policy_score REAL, reference_score REAL);
CREATE TABLE checkpoints (id INTEGER PRIMARY KEY, run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
  step INTEGER NOT NULL, path TEXT NOT NULL, metrics_json TEXT NOT NULL DEFAULT '{}', created_at REAL NOT NULL);
CREATE TABLE events (id INTEGER PRIMARY KEY, run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
  time REAL NOT NULL, level TEXT NOT NULL, text TEXT NOT NULL);
CREATE TABLE evals (id INTEGER PRIMARY KEY, run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
  checkpoint_step INTEGER NOT NULL, kind TEXT NOT NULL, params_json TEXT NOT NULL DEFAULT '{}',
  result_json TEXT NOT NULL DEFAULT '{}', created_at REAL NOT NULL);
CREATE INDEX metrics_run_key_step ON metrics(run_id, key, step, value);
CREATE INDEX metrics_run_id ON metrics(run_id, id);
CREATE INDEX runs_updated ON runs(updated_at);
INSERT INTO runs(id, name, status, stage, config_json, created_at, updated_at, tags)
  VALUES (7, 'old run', 'completed', 'preference', '{"name":"old run"}', 1000, 1000, 'baseline');
INSERT INTO metrics(run_id, step, key, value, wall_time) VALUES (7, 1, 'loss', 0.69, 1001), (7, 2, 'loss', 0.5, 1002);
PRAGMA user_version = 1;
)SQL";

}  // namespace

TEST_F(RunStoreWorkersTest, VersionOneFileUpgradesAndKeepsItsRuns) {
  exec(kVersionOneFile);
  auto store = RunStore::open(db_path());
  EXPECT_EQ(store.schema_version(), RunStore::kSchemaVersion);
  EXPECT_EQ(store.database().query_int("PRAGMA application_id"), RunStore::kApplicationId) << "marked as it upgrades";
  auto run = store.run(7);
  ASSERT_TRUE(run);
  EXPECT_EQ(run->name, "old run");
  EXPECT_EQ(run->status, RunStatus::completed);
  EXPECT_EQ(run->tags, "baseline");
  EXPECT_FALSE(run->total_steps);
  EXPECT_FALSE(run->last_step);
  auto loss = store.series(7, "loss");
  ASSERT_EQ(loss.size(), 2u);
  EXPECT_DOUBLE_EQ(loss[1].value, 0.5);
  // The new columns are usable, and reopening does not migrate twice.
  store.set_total_steps(7, 2);
  store.heartbeat(7, 1234, 2);
  auto again = RunStore::open(db_path());
  EXPECT_EQ(again.run(7)->total_steps, 2);
  EXPECT_EQ(again.run(7)->last_step, 2);
  EXPECT_EQ(again.run(7)->worker_host, ganpo::local_host_name());
  EXPECT_EQ(again.database().query_text("PRAGMA integrity_check"), "ok");
}

TEST_F(RunStoreWorkersTest, DeadWorkerOnThisHostIsMarkedFailedOnOpen) {
  int64_t id = 0;
  double last_heartbeat = 0;
  {
    auto store = RunStore::open(db_path());
    id = store.create_run("crashed", "sft", "{}");
    store.set_status(id, RunStatus::running);
    store.add_event(id, "info", "step 40 done");
    store.heartbeat(id, dead_pid(), 42);
    // Its last sign of life an hour ago: it ended then, not now.
    store.database().exec("UPDATE runs SET heartbeat_at = heartbeat_at - 3600 WHERE id = " + std::to_string(id));
    last_heartbeat = *store.run(id)->heartbeat_at;
  }
  auto store = RunStore::open(db_path());
  auto run = store.run(id);
  EXPECT_EQ(run->status, RunStatus::failed);
  ASSERT_TRUE(run->finished_at);
  EXPECT_DOUBLE_EQ(*run->finished_at, last_heartbeat);
  EXPECT_NE(run->error.find("stopped without reporting"), std::string::npos) << run->error;
  EXPECT_NE(run->error.find("last recorded step 42"), std::string::npos) << run->error;
  // With this workspace's --db (not the default one): the hint pasted as it is reaches the run.
  EXPECT_NE(run->error.find("ganpo runs resume " + std::to_string(id) + " --db " + fs::absolute(db_path()).string() + "\n"),
            std::string::npos)
      << run->error;
  EXPECT_NE(run->error.find("step 40 done"), std::string::npos) << "last log lines kept: " << run->error;
}

// A run's duration is the time workers held it: a run stopped for hours and resumed did not train
// for hours (finished_at - started_at said so, in the run list, `runs list`, the ETA and the
// speed a study's duration estimate is taken from). Spans are timed here by moving their
// stored times back, as the clock would have.
TEST_F(RunStoreWorkersTest, ADurationCountsTheSpansWorkersHeldTheRunNotTheTimeBetween) {
  auto store = RunStore::open(db_path());
  const int64_t id = store.create_run("resumed", "sft", "{}");
  const std::string where = " WHERE id = " + std::to_string(id);
  EXPECT_EQ(run_duration_seconds(*store.run(id), 0), -1) << "never started";
  store.set_status(id, RunStatus::running);
  store.database().exec("UPDATE runs SET span_started_at = span_started_at - 7200, started_at = started_at - 7200" + where);
  store.set_status(id, RunStatus::paused);  // a pause counts: its worker holds the run
  store.set_status(id, RunStatus::running);
  store.set_status(id, RunStatus::stopped);
  // It trained 100 s, two hours ago; then sat stopped.
  store.database().exec("UPDATE runs SET finished_at = span_started_at + 100" + where);
  EXPECT_NEAR(run_duration_seconds(*store.run(id), 1e12), 100, 1e-6);
  ASSERT_TRUE(store.claim_run(id, ::getpid()));  // `runs resume`
  EXPECT_NEAR(store.run(id)->active_seconds, 100, 1e-6);
  EXPECT_FALSE(store.run(id)->span_started_at);
  store.set_status(id, RunStatus::running);
  const double now = unix_now();
  EXPECT_NEAR(run_duration_seconds(*store.run(id), now + 30), 130, 1) << "a live span counts up to now";
  store.set_status(id, RunStatus::completed);
  const RunRow done = *store.run(id);
  EXPECT_NEAR(run_duration_seconds(done, 1e12), 100 + (*done.finished_at - *done.span_started_at), 1e-6);
  EXPECT_LT(run_duration_seconds(done, 1e12), 200) << "not the two hours since it first started";

  // A run that ran again without a claim in between (a finished span is closed where the next starts).
  const int64_t other = store.create_run("direct", "sft", "{}");
  store.set_status(other, RunStatus::running);
  store.set_status(other, RunStatus::failed);
  store.database().exec("UPDATE runs SET span_started_at = span_started_at - 1000, finished_at = span_started_at - 990 "
                        "WHERE id = " + std::to_string(other));
  store.set_status(other, RunStatus::running);
  EXPECT_NEAR(store.run(other)->active_seconds, 10, 1e-6);

  // A stopped run started again the next day whose start fails before its worker claims it
  // (a launch that failed): failed, with the 10 s it trained, not the day between.
  const int64_t failed_start = store.create_run("failed start", "sft", "{}");
  store.set_status(failed_start, RunStatus::running);
  store.set_status(failed_start, RunStatus::stopped);
  store.database().exec("UPDATE runs SET span_started_at = span_started_at - 86400, finished_at = span_started_at - 86390 "
                        "WHERE id = " + std::to_string(failed_start));
  store.set_status(failed_start, RunStatus::failed, "could not start");
  EXPECT_NEAR(run_duration_seconds(*store.run(failed_start), unix_now()), 10, 1e-6);
  ASSERT_TRUE(store.claim_run(failed_start, ::getpid()));
  store.set_status(failed_start, RunStatus::running);
  EXPECT_NEAR(store.run(failed_start)->active_seconds, 10, 1e-6) << "and so after it is resumed";
}

// Hints name a workspace with --db only where it is not the default one (which needs none).
TEST_F(RunStoreWorkersTest, HintsNameTheWorkspaceUnlessItIsTheDefault) {
  EXPECT_EQ(RunStore::open(db_path()).db_option(), " --db " + fs::absolute(db_path()).string());
  // Quoted for a shell where the path needs it.
  fs::create_directories(dir_ / "it's here");
  EXPECT_EQ(RunStore::open((dir_ / "it's here" / "w.sqlite").string()).db_option(),
            " --db '" + fs::absolute(dir_).string() + "/it'\\''s here/w.sqlite'");
  const char* xdg = std::getenv("XDG_DATA_HOME");
  const std::string saved = xdg ? xdg : "";
  ASSERT_EQ(::setenv("XDG_DATA_HOME", (dir_ / "xdg").c_str(), 1), 0);
  fs::create_directories(dir_ / "xdg" / "ganpo-workbench");
  EXPECT_EQ(RunStore::open((dir_ / "xdg" / "ganpo-workbench" / "workspace.sqlite").string()).db_option(), "");
  if (xdg) ::setenv("XDG_DATA_HOME", saved.c_str(), 1);
  else ::unsetenv("XDG_DATA_HOME");
}

// A worker that held most of the machine's memory at its last reading was likely ended by the
// kernel's out-of-memory killer: the failure says so, and for a CPU run what would need less.
// One that held little says nothing of memory.
TEST_F(RunStoreWorkersTest, ADeadWorkerThatHeldMostOfTheMemoryIsSaidToBeLikelyKilledForIt) {
  const double ram_mb = static_cast<double>(ganpo::system_memory_bytes("MemTotal")) / (1024.0 * 1024.0);
  ASSERT_GT(ram_mb, 0);
  int64_t big = 0, small = 0;
  {
    auto store = RunStore::open(db_path());
    big = store.create_run("big", "preference", R"({"device": "cpu", "train": {"per_device_train_batch_size": 4}})");
    small = store.create_run("small", "preference", R"({"device": "cpu"})");
    for (const auto& [id, share] : {std::make_pair(big, 0.9), std::make_pair(small, 0.1)}) {
      store.set_status(id, RunStatus::running);
      store.append_metrics({{0, id, 3, "memory/rss_mb", ram_mb * share, 1000.0, std::nullopt}});
      store.heartbeat(id, dead_pid(), 3);
    }
  }
  auto store = RunStore::open(db_path());
  const std::string killed = store.run(big)->error, other = store.run(small)->error;
  EXPECT_NE(killed.find("stopped without reporting"), std::string::npos) << killed;
  EXPECT_NE(killed.find("resident of this machine's " + ganpo::format_gib(ram_mb * 1024 * 1024) +
                        ", so the system's out-of-memory killer may have ended it"),
            std::string::npos)
      << killed;
  EXPECT_NE(killed.find("a clone of it from its last checkpoint can ask for less: set train.gradient_checkpointing = "
                        "true, lower train.per_device_train_batch_size (now 4)"),
            std::string::npos)
      << killed;
  EXPECT_NE(killed.find("ganpo runs resume " + std::to_string(big)), std::string::npos) << killed;
  EXPECT_EQ(other.find("out-of-memory"), std::string::npos) << other;
  EXPECT_NE(other.find("stopped without reporting"), std::string::npos) << other;
}

// A worker that ended without a word right after saying it would try its longest training rows
// (after its first step, core/train/trainer.h) was most likely ended for its memory, whatever its
// last reading; one that said so earlier and went on is judged by its reading.
TEST_F(RunStoreWorkersTest, ADeadWorkerWhoseLastLineWasTheTryOfItsLongestRowsIsSaidToBeLikelyKilledForIt) {
  int64_t trying = 0, went_on = 0;
  const std::string line =
      std::string(ganpo::kTryingLongestRowsLog) + " a micro-batch of the 4 longest training rows ahead (up to ...)";
  {
    auto store = RunStore::open(db_path());
    trying = store.create_run("trying", "preference", R"({"device": "cpu", "train": {"per_device_train_batch_size": 8}})");
    went_on = store.create_run("went-on", "preference", R"({"device": "cpu"})");
    for (const int64_t id : {trying, went_on}) {
      store.set_status(id, RunStatus::running);
      store.add_event(id, "info", line);
      store.heartbeat(id, dead_pid(), 1);
    }
    store.add_event(went_on, "info", "memory: the longest training rows ahead fit");
  }
  auto store = RunStore::open(db_path());
  const std::string killed = store.run(trying)->error, other = store.run(went_on)->error;
  EXPECT_NE(killed.find("last recorded step 1. It stopped while trying its longest training rows ahead (its last log "
                        "line), which a run does after its first step so that memory they would run out of runs out "
                        "then: the system's out-of-memory killer most likely ended it (`journalctl -k"),
            std::string::npos)
      << killed;
  EXPECT_NE(killed.find("a clone of it from its last checkpoint can ask for less: set train.gradient_checkpointing = "
                        "true, lower train.per_device_train_batch_size (now 8)"),
            std::string::npos)
      << killed;
  EXPECT_EQ(other.find("out-of-memory"), std::string::npos) << other;
}

TEST_F(RunStoreWorkersTest, LiveAndUnattachedRunsAreLeftAlone) {
  auto store = RunStore::open(db_path());
  const int64_t live = store.create_run("live", "sft", "{}");
  store.set_status(live, RunStatus::running);
  store.heartbeat(live, ::getpid());
  const int64_t paused = store.create_run("paused", "sft", "{}");
  store.set_status(paused, RunStatus::paused);
  store.heartbeat(paused, ::getpid());
  const int64_t queued = store.create_run("queued, no worker yet", "sft", "{}");
  const int64_t done = store.create_run("done", "sft", "{}");
  store.heartbeat(done, dead_pid());
  store.set_status(done, RunStatus::completed);
  EXPECT_TRUE(store.reap_dead_workers().empty());
  EXPECT_EQ(store.run(live)->status, RunStatus::running);
  EXPECT_EQ(store.run(paused)->status, RunStatus::paused);
  EXPECT_EQ(store.run(queued)->status, RunStatus::queued);
  EXPECT_EQ(store.run(done)->status, RunStatus::completed);
}

// A pid that is alive but belongs to another process than the worker's (the pid reused after the
// worker died, or after a reboot: another start time) is not the worker: the run is reaped.
TEST_F(RunStoreWorkersTest, APidReusedByALaterProcessIsNotTheWorker) {
  auto store = RunStore::open(db_path());
  const int64_t reused = store.create_run("reused pid", "sft", "{}"), live = store.create_run("live", "sft", "{}");
  for (int64_t id : {reused, live}) {
    store.set_status(id, RunStatus::running);
    store.heartbeat(id, ::getpid());
  }
  ASSERT_TRUE(store.run(live)->worker_start.has_value()) << "the worker's start time is recorded";
  store.database().exec("UPDATE runs SET worker_start = worker_start - 100 WHERE id = " + std::to_string(reused));
  EXPECT_EQ(store.reap_dead_workers(), std::vector<int64_t>{reused});
  EXPECT_EQ(store.run(reused)->status, RunStatus::failed);
  EXPECT_EQ(store.run(live)->status, RunStatus::running) << "the same process: the worker";
}

TEST_F(RunStoreWorkersTest, OtherHostsAreJudgedByHeartbeatAge) {
  auto store = RunStore::open(db_path());
  const int64_t fresh = store.create_run("fresh", "sft", "{}");
  const int64_t stale = store.create_run("stale", "sft", "{}");
  for (int64_t id : {fresh, stale}) {
    store.set_status(id, RunStatus::running);
    store.heartbeat(id, 1);  // pid 1 exists here, but it is another machine's pid
  }
  const double now = ganpo::unix_now();
  store.database().exec("UPDATE runs SET worker_host = 'gpu-server-7' WHERE id IN (" + std::to_string(fresh) + "," +
                        std::to_string(stale) + ")");
  store.database().exec("UPDATE runs SET heartbeat_at = " + std::to_string(now - 10) +
                        " WHERE id = " + std::to_string(fresh));
  store.database().exec("UPDATE runs SET heartbeat_at = " + std::to_string(now - 1000) +
                        " WHERE id = " + std::to_string(stale));
  EXPECT_EQ(store.reap_dead_workers(), std::vector<int64_t>{stale});
  EXPECT_EQ(store.run(fresh)->status, RunStatus::running);
  EXPECT_EQ(store.run(stale)->status, RunStatus::failed);
  EXPECT_NE(store.run(stale)->error.find("on gpu-server-7"), std::string::npos) << store.run(stale)->error;
}

TEST_F(RunStoreWorkersTest, ClaimIsExclusiveAndRefusesCompletedRuns) {
  auto store = RunStore::open(db_path());
  const int64_t id = store.create_run("r", "sft", "{}");
  ASSERT_TRUE(store.claim_run(id, ::getpid()));
  EXPECT_EQ(store.run(id)->worker_pid, ::getpid());
  EXPECT_FALSE(store.claim_run(id, ::getpid() + 1)) << "queued with a live worker";
  store.set_status(id, RunStatus::running);
  EXPECT_FALSE(store.claim_run(id, ::getpid() + 1));
  store.set_status(id, RunStatus::stopped);
  store.set_control(id, "stop");
  EXPECT_TRUE(store.claim_run(id, ::getpid())) << "a stopped run can be continued";
  auto run = store.run(id);
  EXPECT_EQ(run->status, RunStatus::queued);
  EXPECT_EQ(run->control, "") << "a stale command is dropped";
  EXPECT_FALSE(run->finished_at);
  store.set_status(id, RunStatus::completed);
  EXPECT_FALSE(store.claim_run(id, ::getpid()));
  // Queuing a run again forgets the old worker, so the reaper does not fail it.
  store.set_status(id, RunStatus::queued);
  EXPECT_FALSE(store.run(id)->worker_pid);
}

TEST_F(RunStoreWorkersTest, RewindDropsRowsAfterTheStep) {
  auto store = RunStore::open(db_path());
  const int64_t id = store.create_run("r", "preference", "{}");
  const int64_t other = store.create_run("other", "preference", "{}");
  std::vector<MetricRow> rows;
  for (int64_t run : {id, other})
    for (int64_t step = 1; step <= 10; ++step) rows.push_back({0, run, step, "loss", 1.0 / step, 0, std::nullopt});
  store.append_metrics(rows);
  for (int64_t step : {0, 5, 10}) {
    ganpo::SampleRow s;
    s.prompt = "p";
    store.add_samples(id, step, {s});
    store.add_checkpoint(id, step, "/ckpt-" + std::to_string(step), "{}");
    store.add_eval(id, step, "eval", "{}", "{}");
  }
  store.heartbeat(id, ::getpid(), 10);
  store.rewind(id, 5);
  EXPECT_EQ(store.series(id, "loss").size(), 5u);
  EXPECT_EQ(store.series(other, "loss").size(), 10u) << "other runs untouched";
  EXPECT_EQ(store.sample_steps(id), (std::vector<int64_t>{0, 5}));
  EXPECT_EQ(store.checkpoints(id).size(), 2u);
  EXPECT_EQ(store.evals(id).size(), 2u);
  EXPECT_EQ(store.run(id)->last_step, 5);
  store.rewind(id, -1);
  EXPECT_TRUE(store.series(id, "loss").empty());
  EXPECT_TRUE(store.sample_steps(id).empty());
  EXPECT_FALSE(store.run(id)->last_step);
  // Each rewind is counted: a reader following new row ids starts over (they can be reused).
  EXPECT_EQ(store.rewinds(id), 2);
  EXPECT_EQ(store.rewinds(other), 0);
}

TEST_F(RunStoreWorkersTest, LatestMetricsAndLastLogLines) {
  auto store = RunStore::open(db_path());
  const int64_t id = store.create_run("r", "sft", "{}");
  store.append_metrics({{0, id, 1, "loss", 2.0, 0, std::nullopt},
                        {0, id, 1, "lr", 1e-3, 0, std::nullopt},
                        {0, id, 2, "loss", std::nan(""), 0, std::nullopt}});
  auto latest = store.latest_metrics(id);
  ASSERT_EQ(latest.size(), 2u);
  EXPECT_EQ(latest[0].key, "loss");
  EXPECT_EQ(latest[0].step, 2);
  EXPECT_TRUE(std::isnan(latest[0].value));
  EXPECT_EQ(latest[1].key, "lr");
  // Keys are found by seeking the index key after key: other runs' keys (before, between and
  // after this run's) stay out; a key's row is the one at its highest step, the newest there.
  const int64_t before = store.create_run("before", "sft", "{}");
  const int64_t after = store.create_run("after", "sft", "{}");
  store.append_metrics({{0, before, 9, "zz", 1.0, 0, std::nullopt},
                        {0, after, 9, "a", 1.0, 0, std::nullopt},
                        {0, after, 9, "m", 1.0, 0, std::nullopt},
                        {0, id, 3, "loss", 5.0, 0, std::nullopt},
                        {0, id, 3, "loss", 6.0, 0, std::nullopt},
                        {0, id, 2, "lr", 7.0, 0, std::nullopt}});
  EXPECT_EQ(store.metric_keys(id), (std::vector<std::string>{"loss", "lr"}));
  EXPECT_EQ(store.metric_keys(after), (std::vector<std::string>{"a", "m"}));
  EXPECT_TRUE(store.metric_keys(store.create_run("empty", "sft", "{}")).empty());
  latest = store.latest_metrics(id);
  ASSERT_EQ(latest.size(), 2u);
  EXPECT_EQ(latest[0].step, 3);
  EXPECT_EQ(latest[0].value, 6.0);
  EXPECT_EQ(latest[1].step, 2);
  EXPECT_EQ(latest[1].value, 7.0);
  // Where the run was at given steps: the newest row's wall time and tokens seen there, NaN
  // where it has none.
  store.append_metrics({{0, id, 5, "loss", 1.0, 50.0, 640.0}, {0, id, 5, "loss", 1.0, 55.0, std::nullopt}});
  const auto clock = store.clock_at(id, "loss", {1, 4, 5});
  ASSERT_EQ(clock.size(), 3u);
  EXPECT_EQ(clock[0].wall_time, 0);
  EXPECT_TRUE(std::isnan(clock[0].tokens_seen));
  EXPECT_TRUE(std::isnan(clock[1].wall_time)) << "no row at step 4";
  EXPECT_EQ(clock[2].wall_time, 55.0);
  EXPECT_TRUE(std::isnan(clock[2].tokens_seen));
  for (int i = 1; i <= 12; ++i) store.add_event(id, i == 12 ? "error" : "info", "line " + std::to_string(i));
  const std::string tail = store.last_log_lines(id, 3);
  EXPECT_EQ(tail, "[info] line 10\n[info] line 11\n[error] line 12\n");
}
