#include "ui/run_tab.h"

#include <QFontDatabase>
#include <QPlainTextEdit>

#include "ui/dashboard_view.h"
#include "ui/log_view.h"

namespace ganpo::ui {

RunTab::RunTab(StoreWorker* store, int64_t run_id, const QString& config_toml, const QString& log_path,
               QWidget* parent)
    : QTabWidget(parent), run_id_(run_id) {
  setDocumentMode(true);
  dashboard_ = new DashboardView(store, run_id, this);
  addTab(dashboard_, "Dashboard");
  auto* config = new QPlainTextEdit(this);
  config->setReadOnly(true);
  config->setFont(QFontDatabase::systemFont(QFontDatabase::FixedFont));
  config->setPlainText(config_toml);
  addTab(config, "Config");
  log_ = new LogView(store, run_id, log_path, this);
  addTab(log_, "Log");
}

void RunTab::setLive(bool live) {
  dashboard_->setLive(live);
  log_->setLive(live);
}

}  // namespace ganpo::ui
