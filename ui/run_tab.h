// RunTab: everything about one opened run, as tabs: Dashboard (live charts), Samples (the fixed
// prompts' answers over the steps), Checkpoints (interactive generation and evaluation), Config
// (the run's config as TOML) and Log (the worker's output, live).
#pragma once

#include <QTabWidget>

#include <cstdint>

namespace ganpo::ui {

class CheckpointsView;
class DashboardView;
class LogView;
class SamplesView;
class StoreWorker;

class RunTab : public QTabWidget {
  Q_OBJECT
public:
  RunTab(StoreWorker* store, int64_t run_id, const QString& config_toml, const QString& log_path,
         const QString& worker_program, QWidget* parent = nullptr);
  int64_t runId() const { return run_id_; }
  DashboardView* dashboard() const { return dashboard_; }
  SamplesView* samples() const { return samples_; }
  CheckpointsView* checkpoints() const { return checkpoints_; }
  LogView* log() const { return log_; }
  // Live polling on (the tab is visible) or off; only the visible page polls.
  void setLive(bool live);

private:
  int64_t run_id_;
  bool live_ = false;
  DashboardView* dashboard_;
  SamplesView* samples_;
  CheckpointsView* checkpoints_;
  LogView* log_;
};

}  // namespace ganpo::ui
