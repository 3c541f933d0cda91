// Run store tests: a real SQLite file in a fresh temp folder per test.
#include "db/run_store.h"
#include "core/json_depth.h"

#include <gtest/gtest.h>
#include <sqlite3.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <random>
#include <sstream>
#include <thread>

#include <unistd.h>

#include "core/error.h"
#include "db/run_export.h"
#include "db/sqlite_handle.h"

namespace fs = std::filesystem;
using ganpo::RunStatus;
using ganpo::RunStore;
using ganpo::output_folder_key;
using ganpo::run_duration_seconds;

namespace {

class RunStoreTest : public ::testing::Test {
protected:
  void SetUp() override {
    static int counter = 0;
    dir_ = fs::temp_directory_path() /
           ("ganpo_db_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::remove_all(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string db_path() const { return (dir_ / "sub" / "workspace.sqlite").string(); }

  fs::path dir_;
};

std::string error_of(const std::string& path) {
  try {
    RunStore::open(path);
  } catch (const ganpo::Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_F(RunStoreTest, CreatesParentFoldersAndReopens) {
  int64_t id;
  {
    auto store = RunStore::open(db_path());
    EXPECT_TRUE(fs::exists(db_path()));
    EXPECT_EQ(store.schema_version(), RunStore::kSchemaVersion);
    id = store.create_run("first", "sft", R"({"lr":1e-4})");
    auto row = store.run(id);
    ASSERT_TRUE(row);
    EXPECT_EQ(row->status, RunStatus::queued);
    EXPECT_EQ(row->name, "first");
    EXPECT_EQ(row->stage, "sft");
    EXPECT_EQ(row->config_json, R"({"lr":1e-4})");
    EXPECT_FALSE(row->started_at);
  }
  auto store = RunStore::open(db_path());
  auto row = store.run(id);
  ASSERT_TRUE(row);
  EXPECT_EQ(row->name, "first");
  EXPECT_FALSE(store.run(id + 100));
}

TEST_F(RunStoreTest, WalForeignKeysBusyTimeout) {
  auto store = RunStore::open(db_path());
  auto& db = store.database();
  EXPECT_EQ(db.query_text("PRAGMA journal_mode"), "wal");
  EXPECT_EQ(db.query_int("PRAGMA foreign_keys"), 1);
  EXPECT_EQ(db.query_int("PRAGMA busy_timeout"), 5000);
  EXPECT_EQ(db.query_int("PRAGMA synchronous"), 1);  // NORMAL
}

TEST_F(RunStoreTest, NotSqliteFileGivesClearError) {
  fs::create_directories(dir_);
  std::string path = (dir_ / "notes.sqlite").string();
  {
    std::ofstream f(path);
    for (int i = 0; i < 200; ++i) f << "this is a text file, not a database\n";
  }
  std::string msg = error_of(path);
  EXPECT_NE(msg.find("not an SQLite database"), std::string::npos) << msg;
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
  EXPECT_NE(msg.find("--db"), std::string::npos) << msg;
}

TEST_F(RunStoreTest, AWorkspaceWithATriggerFromElsewhereIsRefusedBeforeItRuns) {
  { RunStore::open(db_path()).create_run("r", "sft", "{}"); }
  {
    // An endless recursive query on every update of a run (opening reaps dead workers' runs).
    ganpo::sql::Database raw(db_path(), SQLITE_OPEN_READWRITE);
    raw.exec("CREATE TRIGGER hang AFTER UPDATE ON runs BEGIN INSERT INTO events(run_id, time, level, text) "
             "SELECT 1, 0, 'x', count(*) FROM (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) "
             "SELECT x FROM c); END");
  }
  std::string msg = error_of(db_path());
  EXPECT_NE(msg.find("holds a trigger named \"hang\", which GANPO Workbench never creates"), std::string::npos) << msg;
  EXPECT_NE(msg.find("(DROP TRIGGER / DROP VIEW)"), std::string::npos) << msg;
  {
    ganpo::sql::Database raw(db_path(), SQLITE_OPEN_READWRITE);
    raw.exec("DROP TRIGGER hang; CREATE VIEW v AS SELECT * FROM runs");
  }
  msg = error_of(db_path());
  EXPECT_NE(msg.find("holds a view named \"v\""), std::string::npos) << msg;
}

TEST_F(RunStoreTest, UserTextIsBoundNeverPartOfTheSql) {
  // Every text a person or a file supplies reaches SQLite as a bound parameter: quotes,
  // semicolons, comment markers and NUL bytes are stored and read back as they are.
  const std::string hostile = std::string("x'); DROP TABLE runs; --\"\\ ") + '\0' + "after NUL ';";
  auto store = RunStore::open(db_path());
  const int64_t id = store.create_run(hostile, "sft", "{\"name\": \"'; DELETE FROM metrics; --\"}");
  store.set_name(id, hostile + "2");
  store.set_tags(id, hostile);
  store.set_notes(id, hostile);
  store.append_metrics({{0, id, 1, hostile, 0.5, 0.0, std::nullopt}});
  store.add_event(id, "info", hostile);
  store.add_checkpoint(id, 1, hostile, "{}");
  store.add_samples(id, 1, {{0, 0, 1, 0, hostile, hostile, hostile, -1, -1}});

  auto again = RunStore::open(db_path());
  const auto run = again.run(id);
  ASSERT_TRUE(run);
  EXPECT_EQ(run->name, hostile + "2");
  EXPECT_EQ(run->tags, hostile);
  EXPECT_EQ(run->notes, hostile);
  const auto metrics = again.metrics_after(id, 0);
  ASSERT_EQ(metrics.size(), 1u);
  EXPECT_EQ(metrics[0].key, hostile);
  ASSERT_EQ(again.checkpoints(id).size(), 1u);
  EXPECT_EQ(again.checkpoints(id)[0].path, hostile);
  EXPECT_EQ(again.database().query_text("PRAGMA integrity_check"), "ok");
  EXPECT_EQ(again.database().query_int("SELECT COUNT(*) FROM runs"), 1) << "no statement ran from the text";

  // Exports write the same text, quoted for CSV and escaped for JSON.
  for (auto table : {ganpo::ExportTable::Metrics, ganpo::ExportTable::Events, ganpo::ExportTable::Samples}) {
    std::ostringstream csv, jsonl;
    EXPECT_EQ(ganpo::export_run(again, id, table, ganpo::ExportFormat::Csv, csv), 1);
    EXPECT_EQ(ganpo::export_run(again, id, table, ganpo::ExportFormat::Jsonl, jsonl), 1);
    EXPECT_NE(csv.str().find("DROP TABLE runs"), std::string::npos);
    EXPECT_NE(jsonl.str().find("\\u0000after NUL"), std::string::npos) << jsonl.str();
  }
}

// A stored config nesting [[[[...]]]] 100000 levels (a few hundred KB in a damaged or hostile
// workspace) reads as an unreadable config: every reader (the run list, `ganpo runs show`, resume)
// then says so instead of copying a value whose copy recurses once per level.
TEST_F(RunStoreTest, AConfigNestedDeeperThanAnyIsReadAsUnreadable) {
  auto store = RunStore::open(db_path());
  const std::string deep = "{\"seed\": " + std::string(100000, '[') + std::string(100000, ']') + "}";
  const int64_t id = store.create_run("deep", "preference", deep);
  const int64_t fine = store.create_run("fine", "preference", "{\"name\": \"[[[[\\\"{{\"}");
  const auto run = store.run(id);
  ASSERT_TRUE(run);
  EXPECT_FALSE(nlohmann::json::parse(run->config_json).is_object());
  EXPECT_NE(run->config_json.find("nested deeper than 64 levels: the workspace is damaged"), std::string::npos);
  EXPECT_EQ(store.run(fine)->config_json, "{\"name\": \"[[[[\\\"{{\"}") << "brackets in strings are text";
  EXPECT_EQ(store.runs().size(), 2u);
  EXPECT_TRUE(ganpo::json_text_nested_deeper_than("[[[]]]", 2));
  EXPECT_FALSE(ganpo::json_text_nested_deeper_than("[[]][[]]", 2));
}

// A new run's folder search (RunService::create) looks runs up by output folder in an index, not
// by reading every run's config; a config this build cannot read (not JSON, nested too deep) has
// no folder there and writes as before, and a workspace of schema v6 holding one upgrades.
TEST_F(RunStoreTest, RunsAreFoundByTheirOutputFolderThroughAnIndex) {
  {
    auto store = RunStore::open(db_path());
    const int64_t a = store.create_run("a", "preference", R"({"output_dir": "/w/runs/a", "seed": 1})");
    const int64_t bad = store.create_run("bad", "preference", "not json {");
    store.set_config(bad, "{\"seed\": " + std::string(5000, '[') + std::string(5000, ']') + "}");
    const int64_t b = store.create_run("b", "preference", R"({"output_dir": 5})");
    EXPECT_TRUE(store.another_run_writes_to(b, output_folder_key("/w/runs/a")));
    EXPECT_FALSE(store.another_run_writes_to(a, output_folder_key("/w/runs/a"))) << "the run itself does not count";
    EXPECT_TRUE(store.another_run_writes_to(0, output_folder_key("/w/runs/./x/../a/"))) << "one folder, however spelled";
    EXPECT_FALSE(store.another_run_writes_to(0, output_folder_key("/w/runs")));
    EXPECT_FALSE(store.another_run_writes_to(0, output_folder_key("5"))) << "a number is no folder";
    store.set_config(a, R"({"output_dir": "/w/runs/a-2"})");
    EXPECT_FALSE(store.another_run_writes_to(0, output_folder_key("/w/runs/a"))) << "the index follows a changed config";
    EXPECT_TRUE(store.another_run_writes_to(0, output_folder_key("/w/runs/a-2")));
    // The runs that use a folder: writing to it or inside it, or starting from a checkpoint in
    // it; not a sibling whose name starts the same ("a-2", "a.b").
    const int64_t inner = store.create_run("inner", "sft", R"({"output_dir": "/w/runs/a-2/inner/"})");
    const int64_t clone = store.create_run("clone", "sft", R"({"output_dir": "/w/c", "model": {"checkpoint": "/w/runs/a-2/checkpoint-5"}})");
    store.create_run("sibling", "sft", R"({"output_dir": "/w/runs/a-2.b", "model": {"checkpoint": "/w/runs/a-20"}})");
    const auto users = store.runs_using_folder(output_folder_key("/w/runs/a-2/"));
    ASSERT_EQ(users.size(), 3u);
    EXPECT_EQ(users[0].id, a);
    EXPECT_EQ(users[1].id, inner);
    EXPECT_EQ(users[1].path, "/w/runs/a-2/inner");
    EXPECT_TRUE(users[1].writes);
    EXPECT_EQ(users[2].id, clone);
    EXPECT_FALSE(users[2].writes) << "starts from a checkpoint in it";
    EXPECT_EQ(store.runs_using_folder("/").size(), 6u) << "every run with a folder is inside /";

    {
      ganpo::sql::Statement plan(store.database(),
                                 "EXPLAIN QUERY PLAN SELECT 1 FROM runs WHERE output_dir = ?1 AND id != ?2 LIMIT 1");
      std::string steps;
      while (plan.step()) steps += plan.col_text(3) + "\n";
      EXPECT_NE(steps.find("INDEX runs_output_dir (output_dir=?)"), std::string::npos) << steps;
    }

    // Back to v6 (no column), with an unreadable config in it: the upgrade fills the column.
    // A run of v6 that ran from t = 1000 to 1500.
    store.database().exec("UPDATE runs SET started_at = 1000, finished_at = 1500, status = 'stopped' WHERE id = " +
                          std::to_string(a));
    store.database().exec("DROP INDEX runs_output_dir; ALTER TABLE runs DROP COLUMN output_dir; "
                          "DROP INDEX runs_start_checkpoint; ALTER TABLE runs DROP COLUMN start_checkpoint; "
                          "ALTER TABLE runs DROP COLUMN active_seconds; ALTER TABLE runs DROP COLUMN span_started_at; "
                          "PRAGMA user_version=6");
  }
  {
    // Upgraded, it is one span from its first start, as v6 counted it.
    auto store = RunStore::open(db_path());
    EXPECT_NEAR(run_duration_seconds(*store.run(1), 1e12), 500, 1e-6);
  }
  auto store = RunStore::open(db_path());
  EXPECT_EQ(store.schema_version(), RunStore::kSchemaVersion);
  EXPECT_EQ(store.database().query_int("SELECT COUNT(*) FROM sqlite_master WHERE name = 'runs_output_dir'"), 1);
  EXPECT_TRUE(store.another_run_writes_to(0, output_folder_key("/w/runs/a-2")));
  EXPECT_EQ(store.runs().size(), 6u);
  EXPECT_EQ(store.runs_using_folder(output_folder_key("/w/runs/a-2")).size(), 3u) << "filled at the upgrade";
}

// Up to v7 a sample no judge scored held -1, which an external judge may print as a score; v8
// keeps no number for it (NULL), and the upgrade reads the stored -1s as the "no judge" they were.
TEST_F(RunStoreTest, TheUpgradeToV8ReadsAStoredMinusOneAsNoJudgeScore) {
  {
    auto store = RunStore::open(db_path());
    const int64_t id = store.create_run("r", "sft", "{}");
    ganpo::SampleRow judged;
    judged.policy_score = 0.25;
    judged.reference_score = -0.5;
    store.add_samples(id, 10, {judged});
    store.database().exec("UPDATE samples SET reference_score = -1; PRAGMA user_version=7");
  }
  auto store = RunStore::open(db_path());
  EXPECT_EQ(store.schema_version(), RunStore::kSchemaVersion);
  const auto rows = store.samples(1, 10);
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_DOUBLE_EQ(rows[0].policy_score, 0.25);
  EXPECT_TRUE(std::isnan(rows[0].reference_score));
}

TEST_F(RunStoreTest, NewerSchemaGivesUpgradeMessage) {
  { auto store = RunStore::open(db_path()); store.database().exec("PRAGMA user_version=9"); }
  std::string msg = error_of(db_path());
  EXPECT_EQ(msg, "workspace " + db_path() +
                     " was written by a newer GANPO Workbench (schema v9, this build reads up to v" +
                     std::to_string(RunStore::kSchemaVersion) + "); "
                     "upgrade the app");
}

TEST_F(RunStoreTest, UnwritableLocationGivesClearError) {
  // A folder cannot be created under a regular file (works even as root).
  fs::create_directories(dir_);
  { std::ofstream f(dir_ / "file"); f << "x"; }
  std::string msg = error_of((dir_ / "file" / "ws.sqlite").string());
  EXPECT_NE(msg.find("cannot create the workspace folder"), std::string::npos) << msg;
  // A path that is a folder.
  msg = error_of(dir_.string());
  EXPECT_NE(msg.find("is a folder"), std::string::npos) << msg;
}

// Another program's SQLite file (tables of its own, or its own application_id) is refused before
// anything is written to it: not switched to WAL, no tables added. An empty file becomes a
// workspace, marked with the workspace application_id.
TEST_F(RunStoreTest, AnotherProgramsDatabaseIsRefusedUntouched) {
  fs::create_directories(dir_);
  const auto make = [&](const std::string& name, const char* sql) {
    const std::string path = (dir_ / name).string();
    sqlite3* db = nullptr;
    EXPECT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
    EXPECT_EQ(sqlite3_exec(db, sql, nullptr, nullptr, nullptr), SQLITE_OK);
    sqlite3_close(db);
    return path;
  };
  const auto bytes = [](const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  const std::string notes = make("notes.sqlite", "CREATE TABLE notes(x); INSERT INTO notes VALUES(1); PRAGMA user_version=52;");
  const std::string before = bytes(notes);
  std::string msg = error_of(notes);
  EXPECT_NE(msg.find("is an SQLite database of another program (tables notes); GANPO Workbench changed nothing"),
            std::string::npos) << msg;
  EXPECT_EQ(bytes(notes), before) << "not switched to WAL, nothing added";
  EXPECT_FALSE(fs::exists(notes + "-wal"));

  // A runs table of another program (MLflow's mlflow.db has one) is no workspace either.
  const std::string mlflow = make("mlflow.db", "CREATE TABLE runs(run_uuid TEXT, name TEXT); CREATE TABLE metrics(k);");
  const std::string mlflow_before = bytes(mlflow);
  msg = error_of(mlflow);
  EXPECT_NE(msg.find("another program (tables runs, metrics)"), std::string::npos) << msg;
  EXPECT_EQ(bytes(mlflow), mlflow_before);

  const std::string marked = make("app.sqlite", "PRAGMA application_id=1234;");
  msg = error_of(marked);
  EXPECT_NE(msg.find("another program's SQLite database (its application_id is 0x000004d2)"), std::string::npos) << msg;

  // An empty (zero-byte) file becomes a workspace with the mark.
  const std::string empty = (dir_ / "empty.sqlite").string();
  { std::ofstream f(empty); }
  {
    auto store = RunStore::open(empty);
    EXPECT_EQ(store.schema_version(), RunStore::kSchemaVersion);
    EXPECT_EQ(store.database().query_int("PRAGMA application_id"), RunStore::kApplicationId);
  }
  auto again = RunStore::open(empty);
  EXPECT_TRUE(again.run(again.create_run("r", "sft", "{}")));
}

TEST_F(RunStoreTest, MetricsAfterIsIncremental) {
  auto store = RunStore::open(db_path());
  int64_t a = store.create_run("a", "sft", "{}");
  int64_t b = store.create_run("b", "sft", "{}");
  std::vector<ganpo::MetricRow> rows;
  for (int step = 1; step <= 10; ++step) {
    rows.push_back({0, a, step, "loss", 1.0 / step, 100.0 + step, std::nullopt});
    rows.push_back({0, b, step, "loss", 2.0, 100.0, 5.0});
  }
  store.append_metrics(rows);
  auto first = store.metrics_after(a, 0, 4);
  ASSERT_EQ(first.size(), 4u);
  EXPECT_EQ(first[0].step, 1);
  EXPECT_EQ(first[3].step, 4);
  auto rest = store.metrics_after(a, first.back().id);
  ASSERT_EQ(rest.size(), 6u);
  EXPECT_EQ(rest[0].step, 5);
  EXPECT_DOUBLE_EQ(rest[0].value, 0.2);
  EXPECT_FALSE(rest[0].tokens_seen);
  EXPECT_TRUE(store.metrics_after(a, rest.back().id).empty());
  store.append_metrics({{0, a, 11, "loss", 0.05, 200.0, 1234.0}});
  auto more = store.metrics_after(a, rest.back().id);
  ASSERT_EQ(more.size(), 1u);
  EXPECT_EQ(more[0].step, 11);
  ASSERT_TRUE(more[0].tokens_seen);
  EXPECT_DOUBLE_EQ(*more[0].tokens_seen, 1234.0);
  auto series = store.series(a, "loss");
  ASSERT_EQ(series.size(), 11u);
  EXPECT_EQ(store.metric_keys(b), std::vector<std::string>{"loss"});
}

TEST_F(RunStoreTest, DecimatedSeriesMatchesBruteForce) {
  auto store = RunStore::open(db_path());
  int64_t id = store.create_run("r", "sft", "{}");
  std::mt19937_64 rng(42);
  std::uniform_int_distribution<int64_t> step_dist(0, 49999);
  std::normal_distribution<double> val(0.0, 3.0);
  std::vector<ganpo::MetricRow> rows;
  for (int i = 0; i < 10000; ++i) rows.push_back({0, id, step_dist(rng), "loss", val(rng), 1.0, std::nullopt});
  store.append_metrics(rows);
  // Another key must not leak in.
  store.append_metrics({{0, id, 100, "other", 1e9, 1.0, std::nullopt}});

  struct Agg {
    int64_t first = std::numeric_limits<int64_t>::max(), last = -1;
    double min = 1e300, max = -1e300, last_value = 0, sum = 0;
    int64_t count = 0;
  };
  for (auto [lo, hi, buckets] : std::vector<std::tuple<int64_t, int64_t, int64_t>>{
           {0, 49999, 2000}, {1000, 20000, 37}, {0, 49999, 1}, {12345, 12400, 100}}) {
    std::map<int64_t, Agg> expect;
    for (size_t i = 0; i < rows.size(); ++i) {
      const auto& r = rows[i];
      if (r.step < lo || r.step > hi) continue;
      auto& a = expect[RunStore::bucket_of(r.step, lo, hi, buckets)];
      a.first = std::min(a.first, r.step);
      a.min = std::min(a.min, r.value);
      a.max = std::max(a.max, r.value);
      a.sum += r.value;
      ++a.count;
      if (r.step >= a.last) {  // ties: the later row wins (higher id)
        a.last = r.step;
        a.last_value = r.value;
      }
    }
    auto got = store.decimated_series(id, "loss", lo, hi, buckets);
    ASSERT_EQ(got.size(), expect.size()) << lo << ".." << hi << "/" << buckets;
    size_t i = 0;
    for (const auto& [b, a] : expect) {
      const auto& g = got[i++];
      EXPECT_LE(g.step_lo, g.first_step);
      EXPECT_GE(g.step_hi, g.last_step);
      EXPECT_EQ(RunStore::bucket_of(g.step_lo, lo, hi, buckets), b);
      EXPECT_EQ(RunStore::bucket_of(g.step_hi, lo, hi, buckets), b);
      EXPECT_EQ(g.first_step, a.first);
      EXPECT_EQ(g.last_step, a.last);
      EXPECT_DOUBLE_EQ(g.min, a.min);
      EXPECT_DOUBLE_EQ(g.max, a.max);
      EXPECT_DOUBLE_EQ(g.last, a.last_value);
      EXPECT_NEAR(g.mean, a.sum / static_cast<double>(a.count), 1e-12);
      EXPECT_EQ(g.count, a.count);
    }
    EXPECT_LE(static_cast<int64_t>(got.size()), buckets);
  }
}

TEST_F(RunStoreTest, RunsChangedSince) {
  auto store = RunStore::open(db_path());
  int64_t a = store.create_run("a", "sft", "{}");
  int64_t b = store.create_run("b", "sft", "{}");
  double t0 = ganpo::unix_now();
  while (ganpo::unix_now() <= t0) {
  }  // the clock has moved on: later changes are stamped after t0
  EXPECT_TRUE(store.runs_changed_since(t0).empty());
  store.set_status(b, RunStatus::running);
  auto changed = store.runs_changed_since(t0);
  ASSERT_EQ(changed.size(), 1u);
  EXPECT_EQ(changed[0].id, b);
  EXPECT_EQ(changed[0].status, RunStatus::running);
  EXPECT_TRUE(changed[0].started_at);
  EXPECT_EQ(store.runs_changed_since(0).size(), 2u);
  store.set_status(a, RunStatus::failed, "out of memory");
  auto row = store.run(a);
  EXPECT_EQ(row->error, "out of memory");
  EXPECT_TRUE(row->finished_at);
}

TEST_F(RunStoreTest, TakeControlReadsAndClears) {
  auto store = RunStore::open(db_path());
  int64_t id = store.create_run("a", "sft", "{}");
  EXPECT_EQ(store.take_control(id), "");
  store.set_control(id, "pause");
  auto other = RunStore::open(db_path());
  EXPECT_EQ(other.take_control(id), "pause");
  EXPECT_EQ(other.take_control(id), "");
  EXPECT_EQ(store.take_control(id), "");
  EXPECT_EQ(store.run(id)->control, "");

  // The per-step poll with no command waiting takes no write lock: another connection's open
  // write transaction does not hold it up (with no busy wait, a lock attempt fails at once).
  store.database().exec("PRAGMA busy_timeout = 0");
  other.database().exec("BEGIN IMMEDIATE");
  EXPECT_NO_THROW(EXPECT_EQ(store.take_control(id), ""));
  other.database().exec("COMMIT");
}

TEST_F(RunStoreTest, DeleteCascades) {
  auto store = RunStore::open(db_path());
  int64_t a = store.create_run("a", "sft", "{}");
  int64_t b = store.create_run("b", "sft", "{}");
  for (int64_t id : {a, b}) {
    store.append_metrics({{0, id, 1, "loss", 1.0, 1.0, std::nullopt}});
    ganpo::SampleRow s;
    s.prompt = "p";
    store.add_samples(id, 1, {s});
    store.add_checkpoint(id, 1, "/tmp/ckpt", "{}");
    store.add_event(id, "info", "hello");
    store.add_eval(id, 1, "judge", "{}", "{}");
  }
  store.delete_run(a);
  auto& db = store.database();
  for (const char* t : {"metrics", "samples", "checkpoints", "events", "evals"}) {
    EXPECT_EQ(db.query_int(std::string("SELECT COUNT(*) FROM ") + t + " WHERE run_id = " + std::to_string(a)), 0) << t;
    EXPECT_EQ(db.query_int(std::string("SELECT COUNT(*) FROM ") + t + " WHERE run_id = " + std::to_string(b)), 1) << t;
  }
  EXPECT_FALSE(store.run(a));
  // The newest run deleted: its id is not given again (SQLite would: the largest id + 1), so a
  // new run never writes into the deleted run's kept log or folder; nor after reopening.
  store.delete_run(b);
  const int64_t c = store.create_run("c", "sft", "{}");
  EXPECT_EQ(c, b + 1);
  store.delete_run(c);
  store.delete_run(c);  // (twice: nothing more)
  auto reopened = RunStore::open(db_path());
  EXPECT_EQ(reopened.create_run("d", "sft", "{}"), c + 1);
  EXPECT_EQ(reopened.database().query_int("SELECT COUNT(*) FROM deleted_runs"), 3);
}

TEST_F(RunStoreTest, SamplesCheckpointsEventsEvals) {
  auto store = RunStore::open(db_path());
  int64_t id = store.create_run("a", "sft", "{}");
  std::vector<ganpo::SampleRow> rows(3);
  for (int i = 0; i < 3; ++i) {
    rows[i].prompt_index = i;
    rows[i].prompt = "prompt " + std::to_string(i);
    rows[i].policy_text = "policy";
    rows[i].reference_text = "ref";
    rows[i].policy_score = 0.5;
  }
  store.add_samples(id, 10, rows);
  store.add_samples(id, 20, rows);
  EXPECT_EQ(store.sample_steps(id), (std::vector<int64_t>{10, 20}));
  auto s = store.samples(id, 20);
  ASSERT_EQ(s.size(), 3u);
  EXPECT_EQ(s[2].prompt, "prompt 2");
  EXPECT_DOUBLE_EQ(s[0].policy_score, 0.5);
  EXPECT_TRUE(std::isnan(s[0].reference_score)) << "no judge: no score";
  store.add_checkpoint(id, 200, "/x/step200", R"({"loss":1})");
  store.add_checkpoint(id, 100, "/x/step100", "{}");
  auto c = store.checkpoints(id);
  ASSERT_EQ(c.size(), 2u);
  EXPECT_EQ(c[0].step, 100);
  EXPECT_EQ(c[1].metrics_json, R"({"loss":1})");
  // The same folder recorded again (saved again, or with the numbers of an evaluation done again)
  // replaces its row.
  store.add_checkpoint(id, 200, "/x/step200", R"({"loss":0.5})");
  c = store.checkpoints(id);
  ASSERT_EQ(c.size(), 2u);
  EXPECT_EQ(c[1].metrics_json, R"({"loss":0.5})");
  int64_t e1 = store.add_event(id, "info", "one");
  store.add_event(id, "warn", "two");
  auto ev = store.events_after(id, e1);
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].text, "two");
  EXPECT_EQ(ev[0].level, "warn");
  store.add_eval(id, 200, "judge", R"({"n":8})", R"({"win":0.6})");
  auto evs = store.evals(id);
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_EQ(evs[0].result_json, R"({"win":0.6})");
}

TEST_F(RunStoreTest, ReadOnlyFileGivesClearError) {
  if (::geteuid() == 0) GTEST_SKIP() << "root ignores file permissions";
  { auto store = RunStore::open(db_path()); }
  fs::permissions(db_path(), fs::perms::owner_read | fs::perms::group_read | fs::perms::others_read);
  fs::permissions(fs::path(db_path()).parent_path(),
                  fs::perms::owner_read | fs::perms::owner_exec, fs::perm_options::replace);
  std::string msg = error_of(db_path());
  fs::permissions(fs::path(db_path()).parent_path(), fs::perms::owner_all, fs::perm_options::replace);
  EXPECT_NE(msg.find("read-only"), std::string::npos) << msg;
}

TEST_F(RunStoreTest, NanValuesStayVisibleInSeries) {
  auto store = RunStore::open(db_path());
  int64_t id = store.create_run("r", "preference", "{}");
  const double nan = std::nan("");
  store.append_metrics({{0, id, 1, "loss", 0.7, 1.0, std::nullopt},
                        {0, id, 2, "loss", nan, 1.0, std::nullopt},
                        {0, id, 3, "loss", 0.5, 1.0, std::nullopt},
                        {0, id, 4, "loss", nan, 1.0, std::nullopt}});
  auto points = store.series(id, "loss");
  ASSERT_EQ(points.size(), 4u);
  EXPECT_TRUE(std::isnan(points[1].value));
  EXPECT_DOUBLE_EQ(points[2].value, 0.5);

  // The one bucket over [lo, hi]: its finite count, non-finite count, min and max.
  const auto expect_one_bucket = [&](int64_t lo, int64_t hi, int64_t count, int64_t nans, double min, double max) {
    const auto b = store.decimated_series(id, "loss", lo, hi, 1);
    ASSERT_EQ(b.size(), 1u);
    EXPECT_EQ(b[0].count, count);
    EXPECT_EQ(b[0].nan_count, nans);
    EXPECT_DOUBLE_EQ(b[0].min, min);
    EXPECT_DOUBLE_EQ(b[0].max, max);
  };
  expect_one_bucket(1, 4, 2, 2, 0.5, 0.7);

  auto per_step = store.decimated_series(id, "loss", 1, 4, 4);
  ASSERT_EQ(per_step.size(), 4u);  // a bucket holding only NaN is still returned
  EXPECT_EQ(per_step[1].nan_count, 1);
  EXPECT_TRUE(std::isnan(per_step[1].min));

  // +-Inf (a hinge run's derived share dividing by 0) is counted with NaN, not stretched into the
  // envelope, and is never a bucket's last value.
  const double inf = std::numeric_limits<double>::infinity();
  store.append_metrics({{0, id, 5, "loss", inf, 1.0, std::nullopt}, {0, id, 6, "loss", 0.6, 1.0, std::nullopt},
                        {0, id, 7, "loss", -inf, 1.0, std::nullopt}});
  expect_one_bucket(5, 7, 1, 2, 0.6, 0.6);
  EXPECT_DOUBLE_EQ(store.decimated_series(id, "loss", 1, 7, 1).at(0).mean, (0.7 + 0.5 + 0.6) / 3) << "of finite values";
  EXPECT_TRUE(std::isnan(store.decimated_series(id, "loss", 5, 7, 1).at(0).last)) << "the last step's value is -Inf";
}
