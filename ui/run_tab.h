// RunTab: everything about one opened run, as tabs: Dashboard (live charts), Config (the run's
// config as TOML) and Log (the worker's output, live).
#pragma once

#include <QTabWidget>

#include <cstdint>

namespace ganpo::ui {

class DashboardView;
class LogView;
class StoreWorker;

class RunTab : public QTabWidget {
  Q_OBJECT
public:
  RunTab(StoreWorker* store, int64_t run_id, const QString& config_toml, const QString& log_path,
         QWidget* parent = nullptr);
  int64_t runId() const { return run_id_; }
  DashboardView* dashboard() const { return dashboard_; }
  LogView* log() const { return log_; }
  // Live polling on (the tab is visible) or off.
  void setLive(bool live);

private:
  int64_t run_id_;
  DashboardView* dashboard_;
  LogView* log_;
};

}  // namespace ganpo::ui
