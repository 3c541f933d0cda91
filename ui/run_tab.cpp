#include "ui/run_tab.h"

#include <QFontDatabase>
#include <QPlainTextEdit>

#include "ui/checkpoints_view.h"
#include "ui/dashboard_view.h"
#include "ui/log_view.h"
#include "ui/samples_view.h"

namespace ganpo::ui {

RunTab::RunTab(StoreWorker* store, int64_t run_id, const QString& config_toml, const QString& log_path,
               const QString& worker_program, QWidget* parent)
    : QTabWidget(parent), run_id_(run_id) {
  setDocumentMode(true);
  dashboard_ = new DashboardView(store, run_id, this);
  addTab(dashboard_, "Dashboard");
  samples_ = new SamplesView(store, run_id, this);
  addTab(samples_, "Samples");
  checkpoints_ = new CheckpointsView(store, run_id, worker_program, this);
  addTab(checkpoints_, "Checkpoints");
  auto* config = new QPlainTextEdit(this);
  config->setReadOnly(true);
  config->setFont(QFontDatabase::systemFont(QFontDatabase::FixedFont));
  config->setPlainText(config_toml);
  addTab(config, "Config");
  log_ = new LogView(store, run_id, log_path, this);
  addTab(log_, "Log");
  connect(this, &QTabWidget::currentChanged, this, [this] { setLive(live_); });
}

void RunTab::setLive(bool live) {
  live_ = live;
  QWidget* page = currentWidget();
  dashboard_->setLive(live && page == dashboard_);
  samples_->setLive(live && page == samples_);
  checkpoints_->setLive(live && page == checkpoints_);
  log_->setLive(live && page == log_);
}

}  // namespace ganpo::ui
