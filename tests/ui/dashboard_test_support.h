// Shared helpers for the dashboard tests: a temporary workspace with one run, rows appended the
// way the trainer's recorder writes them, and an event-loop pump with a deadline.
#pragma once

#include <QCoreApplication>
#include <QElapsedTimer>
#include <QTemporaryDir>
#include <QThread>

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "db/run_store.h"

namespace ganpo::ui::testing {

struct TempWorkspace {
  QTemporaryDir dir;
  std::string path;
  std::optional<RunStore> store;
  int64_t run = 0;

  explicit TempWorkspace(const std::string& config_json = R"({"objective":{"loss_type":"sigmoid"},"ganpo":{"adv_weight":0.5}})") {
    path = dir.filePath("workspace.sqlite").toStdString();
    store.emplace(RunStore::open(path));
    run = store->create_run("dashboard-test", "preference", config_json);
  }

  // One trainer log line: every key at one step, one wall time, one tokens_seen (of run_id, or
  // of this workspace's run when 0).
  void log_step(int64_t step, const std::map<std::string, double>& values, int64_t run_id = 0) {
    std::vector<MetricRow> rows;
    for (const auto& [k, v] : values) {
      MetricRow r;
      r.run_id = run_id ? run_id : run;
      r.step = step;
      r.key = k;
      r.value = v;
      r.wall_time = 1.7e9 + static_cast<double>(step) * 0.5;
      r.tokens_seen = static_cast<double>(step) * 512.0;
      rows.push_back(std::move(r));
    }
    store->append_metrics(rows);
  }

  // Many steps of one key in one transaction.
  void log_series(const std::string& key, int64_t first_step, const std::vector<double>& values) {
    std::vector<MetricRow> rows;
    rows.reserve(values.size());
    for (size_t i = 0; i < values.size(); ++i) {
      MetricRow r;
      r.run_id = run;
      r.step = first_step + static_cast<int64_t>(i);
      r.key = key;
      r.value = values[i];
      r.wall_time = 1.7e9 + static_cast<double>(r.step) * 0.5;
      r.tokens_seen = static_cast<double>(r.step) * 512.0;
      rows.push_back(std::move(r));
    }
    store->append_metrics(rows);
  }
};

// Processes events until done() or the deadline; returns done().
inline bool pump_until(const std::function<bool()>& done, int timeout_ms = 10000) {
  QElapsedTimer t;
  t.start();
  while (!done() && t.elapsed() < timeout_ms) {
    QCoreApplication::processEvents(QEventLoop::AllEvents, 20);
    QThread::msleep(2);
  }
  return done();
}

}  // namespace ganpo::ui::testing
