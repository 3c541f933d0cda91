#include "ui/main_window.h"

#include <errno.h>
#include <signal.h>
#include <unistd.h>

#include <QAction>
#include <QApplication>
#include <QAbstractButton>
#include <QCheckBox>
#include <QCloseEvent>
#include <QDir>
#include <QFileInfo>
#include <QHeaderView>
#include <QInputDialog>
#include <QLabel>
#include <QLineEdit>
#include <QMenu>
#include <QMessageBox>
#include <QProgressBar>
#include <QPushButton>
#include <QFileDialog>
#include <QItemSelection>
#include <QSettings>
#include <QSplitter>
#include <QStatusBar>
#include <QSystemTrayIcon>
#include <QTableView>
#include <QStackedWidget>
#include <QTabWidget>
#include <QToolBar>
#include <QVBoxLayout>

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "core/config.h"
#include "core/eval/eval_report.h"
#include "core/run_files.h"
#include "core/study_spec.h"
#include "db/run_export.h"
#include "db/run_service.h"
#include "db/run_speed.h"
#include "db/study_queue.h"
#include "ui/checkpoints_view.h"
#include "ui/compare_view.h"
#include "ui/new_run_dialog.h"
#include "ui/run_list_model.h"
#include "ui/run_tab.h"
#include "ui/store_worker.h"
#include "ui/help_menu.h"
#include "ui/run_presets.h"
#include "ui/study_dialog.h"
#include "ui/study_view.h"
#include "ui/welcome_pane.h"
#include "ui/worker_launcher.h"

namespace ganpo::ui {
namespace {

constexpr int kPollMs = 400;

// The best held-out number of a run so far: preference accuracy (higher is better) or, for SFT,
// the eval loss (lower is better).
void best_eval(RunStore& store, RunListEntry& e) {
  for (const auto& ev : store.evals(e.row.id)) {
    // (The report's one reader: this build's rows keep the numbers under "preference", older
    // ones flat; it never throws.)
    const std::map<std::string, double>& numbers = eval_report_from_text(ev.result_json).preference;
    const auto acc = numbers.find("eval_rewards/accuracies"), loss = numbers.find("eval_loss");
    if (acc != numbers.end() && std::isfinite(acc->second)) {
      const double v = acc->second;
      if (!e.best_eval || e.best_eval_name != "acc" || v > *e.best_eval) e.best_eval = v;
      e.best_eval_name = "acc";
    } else if (loss != numbers.end() && std::isfinite(loss->second) && e.best_eval_name != "acc") {
      const double v = loss->second;
      if (!e.best_eval || v < *e.best_eval) e.best_eval = v;
      e.best_eval_name = "eval loss";
    }
  }
}

// The steps left at the run's last logged step time (step_time_s: its last logging window), or,
// before one is logged, at the average over the time workers held it (which counts pauses, not a
// resumed run's time away).
QString eta_text(const RunRow& r, std::optional<double> step_time_s) {
  if (!r.total_steps || !r.last_step || *r.last_step <= 0) return "";
  const double steps_left = static_cast<double>(*r.total_steps - *r.last_step);
  double left = 0;
  if (step_time_s && std::isfinite(*step_time_s) && *step_time_s > 0)
    left = steps_left * *step_time_s;
  else if (const double held = run_duration_seconds(r, unix_now()); held > 0)
    left = steps_left * held / static_cast<double>(*r.last_step);
  else
    return "";
  const long t = static_cast<long>(left + 0.5);
  if (t >= 3600) return QString("ETA %1h%2m").arg(t / 3600).arg((t % 3600) / 60, 2, 10, QChar('0'));
  if (t >= 60) return QString("ETA %1m%2s").arg(t / 60).arg(t % 60, 2, 10, QChar('0'));
  return QString("ETA %1s").arg(t);
}

// A run that failed while the window watched (UX.md "Errors": a dialog with what happened and
// what to do): its error, with the last log lines under Show Details. Not modal, so the window
// keeps working; a failure while the box is up is added to it rather than stacking boxes.
void show_run_failure(QWidget* window, const RunRow& r) {
  const QString error = QString::fromStdString(r.error);
  const QString first = error.section('\n', 0, 0).trimmed();
  const QString line = QString("Run %1 '%2' failed: %3")
                           .arg(r.id)
                           .arg(QString::fromStdString(r.name), first.isEmpty() ? "no reason was recorded" : first);
  const QString details = QString("Run %1:\n%2").arg(r.id).arg(error);
  for (QMessageBox* open : window->findChildren<QMessageBox*>("run-failed", Qt::FindDirectChildrenOnly))
    if (open->isVisible()) {
      open->setText(open->text() + "\n\n" + line);
      open->setDetailedText(open->detailedText() + "\n\n" + details);
      return;
    }
  auto* box = new QMessageBox(QMessageBox::Warning, "Run failed", line, QMessageBox::Ok, window);
  box->setObjectName("run-failed");
  box->setTextFormat(Qt::PlainText);
  box->setAttribute(Qt::WA_DeleteOnClose);
  box->setWindowModality(Qt::NonModal);
  box->setInformativeText(
      "Fix what the message names (put a moved data file or model folder back, free memory, ...), then select "
      "the run and press Start: it continues from its last checkpoint (from step 0 if it has none), and the "
      "steps it logged after that checkpoint are recorded again. To change its config instead, use Clone and "
      "edit, which keeps this run as it is. The run's Log tab has its full output. (A study's run is retried by "
      "its queue once on its own.)");
  box->setDetailedText(details);
  box->show();
}

}  // namespace

MainWindow::MainWindow(const QString& db_path, QWidget* parent)
    : QMainWindow(parent), db_path_(QFileInfo(db_path).absoluteFilePath()) {
  setWindowTitle(QString("GANPO Workbench — %1").arg(QDir::toNativeSeparators(db_path_)));
  store_ = new StoreWorker(db_path_, this);
  launcher_ = new WorkerLauncher(db_path_, this);
  model_ = new RunListModel(this);
  proxy_ = new RunListProxy(this);
  proxy_->setSourceModel(model_);
  connect(store_, &StoreWorker::errorOccurred, this, [this](const QString& m) { showError("Workspace", m); });
  connect(store_, &StoreWorker::workspaceProblemChanged, this, &MainWindow::onWorkspaceProblem);
  buildActions();
  buildLayout();
  restoreSettings();
  if (QSystemTrayIcon::isSystemTrayAvailable()) {
    tray_ = new QSystemTrayIcon(windowIcon().isNull() ? style()->standardIcon(QStyle::SP_ComputerIcon) : windowIcon(),
                                this);
    tray_->show();
  }
  connect(&poll_timer_, &QTimer::timeout, this, &MainWindow::pollNow);
  poll_timer_.start(kPollMs);
  pollNow();
}

MainWindow::~MainWindow() = default;

void MainWindow::buildActions() {
  auto* bar = addToolBar("Runs");
  bar->setObjectName("runs-toolbar");
  bar->setToolButtonStyle(Qt::ToolButtonTextBesideIcon);
  auto add = [&](const QString& text, QStyle::StandardPixmap icon, const QKeySequence& keys, auto slot) {
    auto* a = bar->addAction(style()->standardIcon(icon), text);
    a->setShortcut(keys);
    a->setToolTip(QString("%1 (%2)").arg(text, keys.toString(QKeySequence::NativeText)));
    connect(a, &QAction::triggered, this, slot);
    return a;
  };
  new_run_ = add("New Run", QStyle::SP_FileIcon, QKeySequence::New, [this] { openNewRunDialog(); });
  start_ = add("Start", QStyle::SP_MediaPlay, QKeySequence("Ctrl+R"), [this] {
    if (auto id = currentRunId()) startRun(*id);
  });
  pause_ = add("Pause", QStyle::SP_MediaPause, QKeySequence("Ctrl+P"), [this] {
    auto id = currentRunId();
    if (!id) return;
    const RunListEntry* e = model_->entry(*id);
    sendControl(*id, e && e->row.status == RunStatus::paused ? "resume" : "pause");
  });
  stop_ = add("Stop", QStyle::SP_MediaStop, QKeySequence("Ctrl+."), [this] {
    for (int64_t id : selectedRunIds()) sendControl(id, "stop");
  });
  sample_ = add("Sample now", QStyle::SP_FileDialogContentsView, QKeySequence("Ctrl+M"), [this] {
    if (auto id = currentRunId()) sendControl(*id, "sample");
  });
  clone_ = add("Clone", QStyle::SP_FileDialogNewFolder, QKeySequence("Ctrl+D"), [this] {
    if (auto id = currentRunId()) cloneRun(*id);
  });
  compare_ = add("Compare", QStyle::SP_FileDialogListView, QKeySequence("Ctrl+K"), [this] {
    openCompareTab(selectedRunIds());
  });
  export_ = add("Export", QStyle::SP_DialogSaveButton, QKeySequence("Ctrl+E"), [this] {
    const std::vector<int64_t> ids = selectedRunIds();
    if (ids.empty()) return;
    const QString folder = QFileDialog::getExistingDirectory(
        this, ids.size() == 1 ? QString("Export run %1 as CSV into").arg(ids.front()) : QString("Export %1 runs as CSV into").arg(ids.size()));
    if (!folder.isEmpty()) exportRuns(ids, folder);
  });
  export_->setToolTip(QString("Each selected run's metrics (one row per step), samples, evaluations and events as CSV "
                              "files (%1)").arg(export_->shortcut().toString(QKeySequence::NativeText)));
  add("New Study", QStyle::SP_FileDialogNewFolder, QKeySequence("Ctrl+Shift+N"), [this] { openStudyDialog(); });
  add("Studies", QStyle::SP_FileDialogDetailedView, QKeySequence("Ctrl+Shift+S"), [this] { chooseStudy(); });
  refresh_ = new QAction("Refresh", this);
  refresh_->setShortcut(QKeySequence::Refresh);
  connect(refresh_, &QAction::triggered, this, [this] {
    pollNow();
    if (auto* compare = qobject_cast<CompareView*>(tabs_->currentWidget())) compare->refresh();
  });
  addAction(refresh_);
  // (An action, not a bare shortcut, so the Help menu's shortcut list has it.)
  auto* find = new QAction("Filter the run list", this);
  find->setShortcut(QKeySequence::Find);
  connect(find, &QAction::triggered, this, [this] {
    filter_->setFocus();
    filter_->selectAll();
  });
  addAction(find);
  add_help_menu(this, db_path_, bar->actions() << refresh_ << find);
}

void MainWindow::buildLayout() {
  auto* left = new QWidget(this);
  auto* left_layout = new QVBoxLayout(left);
  left_layout->setContentsMargins(4, 4, 4, 4);
  filter_ = new QLineEdit(left);
  filter_->setPlaceholderText("Filter: name, tag:x, status:running, beta>0.05 ...  (Ctrl+F)");
  filter_->setClearButtonEnabled(true);
  filter_error_ = new QLabel(left);
  filter_error_->setStyleSheet("color: #c0392b;");
  filter_error_->setWordWrap(true);
  filter_error_->hide();
  connect(filter_, &QLineEdit::textChanged, this, [this](const QString& text) {
    const QString error = proxy_->setFilterText(text);
    filter_error_->setText(error);
    filter_error_->setVisible(!error.isEmpty());
  });
  table_ = new QTableView(left);
  table_->setModel(proxy_);
  table_->setSortingEnabled(true);
  table_->sortByColumn(RunListModel::Color, Qt::DescendingOrder);
  table_->setSelectionBehavior(QAbstractItemView::SelectRows);
  table_->setSelectionMode(QAbstractItemView::ExtendedSelection);
  table_->setContextMenuPolicy(Qt::CustomContextMenu);
  table_->verticalHeader()->hide();
  table_->horizontalHeader()->setStretchLastSection(true);
  table_->setAlternatingRowColors(true);
  table_->setWordWrap(false);
  connect(table_, &QTableView::customContextMenuRequested, this, &MainWindow::showRunMenu);
  connect(table_, &QTableView::doubleClicked, this, [this](const QModelIndex& index) {
    openRunTab(index.data(RunListModel::RunIdRole).toLongLong());
  });
  connect(table_->selectionModel(), &QItemSelectionModel::selectionChanged, this, [this] {
    updateActions();
    updateStatusBar();
  });
  left_layout->addWidget(filter_);
  left_layout->addWidget(filter_error_);
  left_layout->addWidget(table_);

  tabs_ = new QTabWidget(this);
  tabs_->setTabsClosable(true);
  tabs_->setMovable(true);
  tabs_->setDocumentMode(true);
  connect(tabs_, &QTabWidget::tabCloseRequested, this, [this](int index) {
    QWidget* w = tabs_->widget(index);
    tabs_->removeTab(index);
    w->deleteLater();
  });
  connect(tabs_, &QTabWidget::currentChanged, this, [this](int index) {
    right_->setCurrentWidget(tabs_->count() > 0 ? static_cast<QWidget*>(tabs_) : welcome_);
    for (int i = 0; i < tabs_->count(); ++i)
      if (auto* tab = qobject_cast<RunTab*>(tabs_->widget(i))) tab->setLive(i == index);
    // (Not for a tab that opened on its own, a pipeline's next stage: the user's row stays.)
    if (auto* tab = qobject_cast<RunTab*>(tabs_->widget(index)); tab && !opening_on_its_own_)
      selectRunInList(tab->runId());
    updateActions();
    updateStatusBar();
  });

  welcome_ = new WelcomePane(this);
  connect(welcome_, &WelcomePane::demoRequested, this, [this] { openNewRunDialog("demo"); });
  connect(welcome_, &WelcomePane::newRunRequested, this, [this] { openNewRunDialog(); });
  connect(welcome_, &WelcomePane::newStudyRequested, this, [this] { openStudyDialog(); });
  connect(welcome_, &WelcomePane::studiesRequested, this, &MainWindow::chooseStudy);
  right_ = new QStackedWidget(this);
  right_->addWidget(welcome_);
  right_->addWidget(tabs_);
  right_->setCurrentWidget(welcome_);

  splitter_ = new QSplitter(this);
  splitter_->addWidget(left);
  splitter_->addWidget(right_);
  splitter_->setStretchFactor(0, 2);
  splitter_->setStretchFactor(1, 3);
  setCentralWidget(splitter_);

  device_label_ = new QLabel(this);
  progress_label_ = new QLabel(this);
  progress_ = new QProgressBar(this);
  progress_->setMaximumWidth(220);
  progress_->setTextVisible(true);
  progress_->hide();
  workspace_label_ = new QLabel("Workspace unavailable", this);
  workspace_label_->setStyleSheet("QLabel { color: #b3261e; font-weight: bold; }");
  workspace_label_->hide();
  statusBar()->addPermanentWidget(workspace_label_);
  statusBar()->addPermanentWidget(device_label_);
  statusBar()->addPermanentWidget(progress_label_);
  statusBar()->addPermanentWidget(progress_);
  updateActions();
}

void MainWindow::restoreSettings() {
  QSettings settings;
  if (!restoreGeometry(settings.value("window/geometry").toByteArray())) resize(1400, 860);
  restoreState(settings.value("window/state").toByteArray());
  if (!splitter_->restoreState(settings.value("window/splitter").toByteArray())) splitter_->setSizes({560, 840});
  table_->horizontalHeader()->restoreState(settings.value("window/run-columns").toByteArray());
  settings.setValue("workspace/last", db_path_);
}

void MainWindow::pollNow() {
  if (poll_pending_) return;
  poll_pending_ = true;
  struct Poll {
    std::vector<RunListEntry> changed;
    std::vector<int64_t> ids;
    double newest = 0;
    std::optional<double> memory;
    std::optional<double> step_time;
  };
  const double since = last_poll_time_ > 0 ? last_poll_time_ - 1.0 : 0.0;
  const std::optional<int64_t> active = currentRunId();
  store_->query<Poll>(
      this,
      [since, active](RunStore& s) {
        Poll p;
        s.reap_dead_workers();
        for (auto& row : s.runs_changed_since(since)) {
          RunListEntry e;
          e.config = nlohmann::json::parse(row.config_json, nullptr, false);
          if (e.config.is_discarded()) e.config = nullptr;
          e.row = std::move(row);
          best_eval(s, e);
          p.newest = std::max(p.newest, e.row.updated_at);
          p.changed.push_back(std::move(e));
        }
        sql::Statement ids(s.database(), "SELECT id FROM runs");
        while (ids.step()) p.ids.push_back(ids.col_int(0));
        if (active) p.memory = s.last_value(*active, "memory/rss_mb");
        if (active) p.step_time = s.last_value(*active, "step_time_s");
        return p;
      },
      [this](Poll p) {
        poll_pending_ = false;
        active_memory_mb_ = p.memory;
        active_step_time_s_ = p.step_time;
        onPolled(p.changed, p.ids, p.newest);
      },
      [this](QString error) {
        poll_pending_ = false;
        if (workspace_problem_.isEmpty()) statusBar()->showMessage("Workspace not readable: " + error, 5000);
      });
}

void MainWindow::onPolled(const std::vector<RunListEntry>& changed, const std::vector<int64_t>& ids, double newest) {
  if (newest > last_poll_time_) last_poll_time_ = newest;
  model_->retain(ids);
  model_->upsert(changed);
  if (!changed.empty()) {
    std::vector<int64_t> changed_ids;
    for (const auto& e : changed) changed_ids.push_back(e.row.id);
    for (int t = 0; t < tabs_->count(); ++t)
      if (auto* compare = qobject_cast<CompareView*>(tabs_->widget(t))) compare->runsChanged(changed_ids);
  }
  checkLaunchedWorkers();
  welcome_->setRunCount(model_->rowCount());
  // Tabs asked for before the run was listed: now with its name and config.
  for (auto it = open_when_listed_.begin(); it != open_when_listed_.end();)
    if (model_->entry(*it)) {
      openRunTab(*it);
      it = open_when_listed_.erase(it);
    } else {
      ++it;
    }
  for (const auto& e : changed) {
    const RunStatus status = e.row.status;
    const QString status_text = to_string(status);
    auto before = last_status_.find(e.row.id);
    if (before != last_status_.end() && !is_finished(before->second) && is_finished(status)) {
      QString text = QString("Run %1 '%2' %3").arg(e.row.id).arg(QString::fromStdString(e.row.name), status_text);
      if (status == RunStatus::failed) text += ": " + QString::fromStdString(e.row.error).section('\n', 0, 0);
      notify(status == RunStatus::failed ? "Run failed" : "Run finished", text);
      if (status == RunStatus::failed) show_run_failure(this, e.row);
      Q_EMIT runFinished(e.row.id, status_text);
    }
    last_status_[e.row.id] = status;
    if (RunTab* tab = runTab(e.row.id))  // (renamed here or elsewhere)
      tabs_->setTabText(tabs_->indexOf(tab), QString("#%1 %2").arg(e.row.id).arg(QString::fromStdString(e.row.name)));
    if (status != RunStatus::queued && open_when_started_.erase(e.row.id)) {
      opening_on_its_own_ = true;
      openRunTab(e.row.id);
      opening_on_its_own_ = false;
    }
  }
  if (!columns_sized_ && !changed.empty()) {
    columns_sized_ = true;
    if (QSettings().value("window/run-columns").isNull()) table_->resizeColumnsToContents();
  }
  if (table_->currentIndex().isValid() == false && proxy_->rowCount() > 0) table_->selectRow(0);
  updateActions();
  updateStatusBar();
  Q_EMIT polled();
}

std::optional<int64_t> MainWindow::currentRunId() const {
  if (auto* tab = qobject_cast<RunTab*>(tabs_ ? tabs_->currentWidget() : nullptr)) {
    if (tabs_->hasFocus() || !table_ || !table_->hasFocus()) {
      const auto rows = table_ ? table_->selectionModel()->selectedRows() : QModelIndexList{};
      if (rows.isEmpty()) return tab->runId();
    }
  }
  if (!table_) return std::nullopt;
  // Only a selected row: where the filter hides the selected run, Qt moves the current index to
  // a neighbour without selecting it, and the toolbar would act on a run nobody chose.
  const QModelIndex index = table_->currentIndex();
  if (index.isValid() && table_->selectionModel()->isRowSelected(index.row(), index.parent()))
    return index.data(RunListModel::RunIdRole).toLongLong();
  if (auto* tab = qobject_cast<RunTab*>(tabs_->currentWidget())) return tab->runId();
  return std::nullopt;
}

void MainWindow::selectRunInList(int64_t run_id) {
  if (!table_ || table_->selectionModel()->selectedRows().size() > 1) return;  // (a selection to compare stays)
  const int row = model_->rowOf(run_id);
  const QModelIndex at = row < 0 ? QModelIndex() : proxy_->mapFromSource(model_->index(row, 0));
  if (at.isValid())
    table_->selectionModel()->setCurrentIndex(at, QItemSelectionModel::ClearAndSelect | QItemSelectionModel::Rows);
  else  // not listed yet, or filtered out: no row selected, so the actions take the tab's run
    table_->selectionModel()->clearSelection();
}

std::vector<int64_t> MainWindow::selectedRunIds() const {
  std::vector<int64_t> ids;
  for (const QModelIndex& i : table_->selectionModel()->selectedRows())
    ids.push_back(i.data(RunListModel::RunIdRole).toLongLong());
  if (ids.empty())
    if (auto id = currentRunId()) ids.push_back(*id);
  return ids;
}

std::vector<int64_t> MainWindow::activeRunIds() const {
  std::vector<int64_t> ids;
  for (int row = 0; row < model_->rowCount(); ++row)
    if (worker_attached(model_->entryAt(row).row)) ids.push_back(model_->entryAt(row).row.id);
  return ids;
}

void MainWindow::updateActions() {
  const auto id = currentRunId();
  const RunListEntry* e = id ? model_->entry(*id) : nullptr;
  const bool attached = e && worker_attached(e->row);
  const bool paused = e && e->row.status == RunStatus::paused;
  // A study's queued run is its queue's to start (after the stages it starts from, within its
  // jobs limit): started alone it would skip both.
  const bool study_queued = e && e->row.study_id && e->row.status == RunStatus::queued;
  start_->setEnabled(e && !attached && e->row.status != RunStatus::completed && !study_queued);
  start_->setToolTip(study_queued ? QString("Run %1 waits in study %2's queue, which starts it (the Study tab's Run queue)")
                                        .arg(e->row.id)
                                        .arg(*e->row.study_id)
                                  : QString("Start (%1)").arg(start_->shortcut().toString(QKeySequence::NativeText)));
  pause_->setEnabled(e && is_active(e->row.status));
  pause_->setText(paused ? "Resume" : "Pause");
  pause_->setIcon(style()->standardIcon(paused ? QStyle::SP_MediaPlay : QStyle::SP_MediaPause));
  stop_->setEnabled(attached);
  sample_->setEnabled(e && e->row.status == RunStatus::running);
  clone_->setEnabled(e != nullptr);
  compare_->setEnabled(table_->selectionModel()->selectedRows().size() >= 2);
  export_->setEnabled(!selectedRunIds().empty());
}

void MainWindow::updateStatusBar() {
  const auto id = currentRunId();
  const RunListEntry* e = id ? model_->entry(*id) : nullptr;
  if (!e) {
    device_label_->setText(QString("%1 runs").arg(model_->rowCount()));
    progress_label_->clear();
    progress_->hide();
    return;
  }
  const RunRow& r = e->row;
  QString device = r.device.empty() ? QString("device: -") : "device: " + QString::fromStdString(r.device);
  if (active_memory_mb_) device += QString("  ·  memory %1 MB").arg(*active_memory_mb_, 0, 'f', 0);
  device_label_->setText(device);
  progress_label_->setText(QString("run %1 · %2%3")
                               .arg(r.id)
                               .arg(to_string(r.status))
                               .arg(r.status == RunStatus::running ? "  " + eta_text(r, active_step_time_s_) : QString()));
  if (r.total_steps && *r.total_steps > 0) {
    progress_->setRange(0, static_cast<int>(*r.total_steps));
    progress_->setValue(static_cast<int>(r.last_step.value_or(0)));
    progress_->setFormat(QString("%v / %m steps"));
    progress_->show();
  } else {
    progress_->hide();
  }
}

void MainWindow::openNewRunDialog(const QString& preset) {
  NewRunDialog dialog(this);
  if (!preset.isEmpty()) dialog.selectPreset(preset);
  if (dialog.exec() != QDialog::Accepted) return;
  createAndStartRun(dialog.config());
}

void MainWindow::openNewRunDialogWithFile(const QString& path) {
  NewRunDialog dialog(this);
  if (!dialog.loadConfigFile(path)) return;  // the dialog said why
  if (dialog.exec() != QDialog::Accepted) return;
  createAndStartRun(dialog.config());
}

void MainWindow::createAndStartRun(const RunConfig& config, std::optional<int64_t> parent_run,
                                   std::optional<int64_t> parent_step) {
  if (!config.pipeline.empty()) {
    createAndStartPipeline(config);
    return;
  }
  const QString runs_dir = QFileInfo(db_path_).absoluteDir().filePath("runs");
  store_->query<int64_t>(
      this,
      [config, runs_dir, parent_run, parent_step](RunStore& s) {
        // Each run writes into a folder of its own beside the workspace unless it names one.
        CreateRunOptions options;
        options.runs_dir = runs_dir.toStdString();
        options.parent_run = parent_run;
        options.parent_step = parent_step;
        return RunService(s).create(config, options);
      },
      [this](int64_t id) {
        pollNow();
        startRun(id);
        openRunTabWhenListed(id);
        Q_EMIT runCreated(id);
      },
      [this](QString error) { showError("New run", "The run could not be created: " + error); });
}

void MainWindow::createAndStartPipeline(const RunConfig& config) {
  // Its runs write under the config's output folder when it names one, else beside the workspace.
  const std::string out_root = is_default_output_dir(config.output_dir)
                                   ? ""
                                   : std::filesystem::absolute(config.output_dir).string();
  createAndStartStudy(study_of_pipeline(config), /*jobs=*/1, /*follow_runs=*/true, out_root);
}

void MainWindow::createAndStartStudy(const StudySpec& spec, int jobs, bool follow_runs, const std::string& out_root) {
  struct Queued {
    int64_t study_id = 0;
    std::vector<int64_t> run_ids;
  };
  const std::string db = db_path_.toStdString();
  store_->query<Queued>(
      this,
      [spec, db, out_root](RunStore& s) {
        Queued q;
        q.study_id = queue_study(s, db, spec, out_root).id;
        q.run_ids = study_run_ids(s, q.study_id);
        return q;
      },
      [this, jobs, follow_runs](const Queued& q) {
        pollNow();
        if (q.run_ids.empty()) return;
        const qint64 driver = startStudyDriver(q.study_id, jobs);
        if (follow_runs) {
          open_when_started_.insert(q.run_ids.begin() + 1, q.run_ids.end());
          openRunTabWhenListed(q.run_ids.front());
        } else if (StudyView* view = openStudyTab(q.study_id)) {
          view->setDriverPid(driver);
        }
        statusBar()->showMessage(
            QString("Study %1 queued: %2 runs").arg(q.study_id).arg(q.run_ids.size()), 8000);
        Q_EMIT studyCreated(q.study_id);
      },
      [this](QString error) { showError("New study", "The runs could not be queued: " + error); });
}

qint64 MainWindow::startStudyDriver(int64_t study_id, int jobs) {
  QString error;
  qint64 pid = 0;
  if (!launcher_->startStudyDriver(study_id, jobs, &error, &pid)) {
    showError("Run queue", error);
    return 0;
  }
  return pid;
}

void MainWindow::startRun(int64_t run_id) {
  QString error;
  qint64 pid = 0;
  if (!launcher_->start(run_id, &error, &pid)) {
    showError("Start run", error);
    store_->execute([run_id, error](RunStore& s) { s.set_status(run_id, RunStatus::failed, error.toStdString()); });
    return;
  }
  // Watched until the worker takes the run: one that ends before (a library it cannot load, a
  // workspace it cannot open) leaves the run failed with where its output is, not queued for ever.
  if (pid > 0) launched_[run_id] = {pid, unix_now()};
  statusBar()->showMessage(QString("Started run %1").arg(run_id), 4000);
  pollNow();
}

void MainWindow::checkLaunchedWorkers() {
  for (auto it = launched_.begin(); it != launched_.end();) {
    const auto [run_id, launch] = *it;
    const RunListEntry* e = model_->entry(run_id);
    // Taken (a claim stamps a heartbeat), or gone from the list: nothing more to watch.
    if (!e || (e->row.heartbeat_at && *e->row.heartbeat_at >= launch.at)) {
      it = launched_.erase(it);
      continue;
    }
    if (::kill(static_cast<pid_t>(launch.pid), 0) == 0 || errno == EPERM) {  // still starting
      ++it;
      continue;
    }
    const std::string reason = "the worker (pid " + std::to_string(launch.pid) +
                               ") ended before it took the run; its output is in " +
                               launcher_->logPath(run_id).toStdString();
    store_->execute([run_id = run_id, at = launch.at, reason](RunStore& s) { s.fail_unclaimed_launch(run_id, at, reason); });
    it = launched_.erase(it);
  }
}

void MainWindow::sendControl(int64_t run_id, const QString& command) {
  const std::string c = command.toStdString();
  store_->query<QString>(
      this, [run_id, c](RunStore& s) { return QString::fromStdString(RunService(s).control(run_id, c)); },
      [this](const QString& problem) {
        if (!problem.isEmpty()) statusBar()->showMessage(problem, 8000);
      },
      [this](QString error) { statusBar()->showMessage("Control failed: " + error, 8000); });
  statusBar()->showMessage(QString("Sent '%1' to run %2").arg(command).arg(run_id), 4000);
  if (command != "stop") return;
  // If the worker does not act on the control field (hung in a long step), SIGTERM still makes
  // it save a checkpoint and stop.
  QTimer::singleShot(30000, this, [this, run_id] {
    const RunListEntry* e = model_->entry(run_id);
    if (!e || !worker_attached(e->row) || !e->row.worker_pid || e->row.worker_host != local_host_name()) return;
    ::kill(static_cast<pid_t>(*e->row.worker_pid), SIGTERM);
  });
}

RunTab* MainWindow::runTab(int64_t run_id) const {
  for (int i = 0; i < tabs_->count(); ++i)
    if (auto* tab = qobject_cast<RunTab*>(tabs_->widget(i)); tab && tab->runId() == run_id) return tab;
  return nullptr;
}

void MainWindow::openRunTabWhenListed(int64_t run_id) {
  if (model_->entry(run_id))
    openRunTab(run_id);
  else
    open_when_listed_.insert(run_id);
}

RunTab* MainWindow::openRunTab(int64_t run_id) {
  if (RunTab* existing = runTab(run_id)) {
    tabs_->setCurrentWidget(existing);
    if (!opening_on_its_own_) selectRunInList(run_id);  // (also where it was in front already)
    return existing;
  }
  const RunListEntry* e = model_->entry(run_id);
  QString toml;
  QString title = QString("#%1").arg(run_id);
  if (e) {
    title = QString("#%1 %2").arg(run_id).arg(QString::fromStdString(e->row.name));
    try {
      toml = QString::fromStdString(config_to_toml(config_from_json(e->config)));
    } catch (const std::exception& ex) {
      toml = QString("# the stored config cannot be read: %1\n%2").arg(ex.what(), QString::fromStdString(json_text(e->config, 2)));
    }
  }
  auto* tab = new RunTab(store_, run_id, toml, launcher_->logPath(run_id), launcher_->workerProgram(), tabs_);
  connect(tab->checkpoints(), &CheckpointsView::cloneFromCheckpoint, this,
          [this](qint64 run, qint64 step, const QString& path) { cloneFromCheckpoint(run, step, path); });
  const int index = tabs_->addTab(tab, title);
  tabs_->setTabIcon(index, QIcon(QPixmap([&] {
                      QPixmap p(12, 12);
                      p.fill(run_color(run_id));
                      return p;
                    }())));
  tabs_->setCurrentIndex(index);
  tab->setLive(true);
  return tab;
}

void MainWindow::showRunMenu(const QPoint& pos) {
  const QModelIndex index = table_->indexAt(pos);
  if (!index.isValid()) return;
  const int64_t id = index.data(RunListModel::RunIdRole).toLongLong();
  QMenu menu(this);
  menu.addAction("Open", this, [this, id] { openRunTab(id); });
  menu.addAction("Clone and edit…", this, [this, id] { cloneRun(id); });
  menu.addAction("New study from this run…", this, [this, id] { openStudyDialog(id); });
  auto* compare = menu.addAction("Compare selected", this, [this] { openCompareTab(selectedRunIds()); });
  compare->setEnabled(selectedRunIds().size() >= 2);
  menu.addSeparator();
  menu.addAction("Rename…", this, [this, id] { renameRun(id); });
  menu.addAction("Tag…", this, [this, id] { tagRun(id); });
  menu.addAction("Note…", this, [this, id] { noteRun(id); });
  menu.addSeparator();
  menu.addAction("Delete…", this, [this] { deleteRuns(selectedRunIds()); });
  menu.exec(table_->viewport()->mapToGlobal(pos));
}

std::optional<RunConfig> MainWindow::storedConfig(int64_t run_id) {
  const RunListEntry* e = model_->entry(run_id);
  if (!e) return std::nullopt;
  try {
    return config_from_json(e->config);
  } catch (const std::exception& ex) {
    showError("Clone", QString("Run %1's config cannot be read: %2").arg(run_id).arg(ex.what()));
    return std::nullopt;
  }
}

void MainWindow::cloneRun(int64_t run_id) {
  auto stored = storedConfig(run_id);
  if (!stored) return;
  RunConfig config = *stored;
  // Read now: the run list is polled while the dialog is open, and its entries move.
  const RunListEntry* e = model_->entry(run_id);
  const int64_t last_step = e ? e->row.last_step.value_or(0) : 0;
  config.name = (e ? e->row.name : config.name) + "-clone";  // (the list's name: a rename sets only that)
  config.output_dir = RunConfig{}.output_dir;  // a fresh folder
  NewRunDialog dialog(this);
  dialog.setWindowTitle("Clone and edit");
  dialog.setConfig(config);
  if (dialog.exec() != QDialog::Accepted) return;
  createAndStartRun(dialog.config(), run_id, last_step);
}

void MainWindow::cloneFromCheckpoint(int64_t run_id, int64_t step, const QString& path) {
  auto stored = storedConfig(run_id);
  if (!stored) return;
  RunConfig config = *stored;
  // A new run that starts from that checkpoint's weights; its reference stays what it was (a
  // run of random weights had no reference folder: the clone's is its starting checkpoint).
  if (config.model.reference.empty() && !config.model.random_weights) config.model.reference = config.model.checkpoint;
  config.model.checkpoint = path.toStdString();
  config.model.random_weights = false;
  if (const RunListEntry* e = model_->entry(run_id)) config.name = e->row.name;  // (as renamed)
  config.name += "-from-" + std::to_string(step);
  config.output_dir = RunConfig{}.output_dir;
  NewRunDialog dialog(this);
  dialog.setWindowTitle(QString("Clone from run %1, step %2").arg(run_id).arg(step));
  dialog.setConfig(config);
  if (dialog.exec() != QDialog::Accepted) return;
  createAndStartRun(dialog.config(), run_id, step);
}

CompareView* MainWindow::openCompareTab(const std::vector<int64_t>& run_ids) {
  if (run_ids.size() < 2) {
    statusBar()->showMessage("Select two or more runs to compare", 4000);
    return nullptr;
  }
  auto* view = new CompareView(store_, run_ids, tabs_);
  QStringList ids;
  for (int64_t id : run_ids) ids << QString("#%1").arg(id);
  tabs_->setCurrentIndex(tabs_->addTab(view, "Compare " + ids.join(" ")));
  return view;
}

void MainWindow::selectRunsInList(const std::vector<int64_t>& run_ids) {
  QItemSelection selection;
  QModelIndex first;
  for (int64_t id : run_ids) {
    const int row = model_->rowOf(id);
    const QModelIndex at = row < 0 ? QModelIndex() : proxy_->mapFromSource(model_->index(row, 0));
    if (!at.isValid()) continue;
    selection.select(at, at);
    if (!first.isValid() || at.row() < first.row()) first = at;
  }
  table_->selectionModel()->select(selection, QItemSelectionModel::ClearAndSelect | QItemSelectionModel::Rows);
  if (first.isValid()) table_->scrollTo(first);
}

void MainWindow::exportRuns(const std::vector<int64_t>& run_ids, const QString& folder) {
  struct Written {
    int files = 0;
    int64_t rows = 0;
    QString error;
  };
  const std::string dir = folder.toStdString();
  store_->query<Written>(
      this,
      [run_ids, dir](RunStore& s) {
        Written w;
        static const std::pair<ExportTable, const char*> kTables[] = {
            {ExportTable::Metrics, "metrics"}, {ExportTable::Samples, "samples"}, {ExportTable::Evals, "evals"},
            {ExportTable::Events, "events"}};
        for (int64_t id : run_ids)
          for (const auto& [table, name] : kTables) {
            const std::string path = (std::filesystem::path(dir) / ("run-" + std::to_string(id) + "-" + name + ".csv")).string();
            try {
              w.rows += export_run_to_file(s, id, table, ExportFormat::Csv, path);  // (whole or not at all)
            } catch (const std::exception& e) {
              w.error = QString::fromStdString(e.what());
              return w;
            }
            ++w.files;
          }
        return w;
      },
      [this, folder, n = run_ids.size()](Written w) {
        const QString message =
            w.error.isEmpty() ? QString("Exported %1 run(s) to %2: %3 CSV files, %4 rows").arg(n).arg(folder).arg(w.files).arg(w.rows)
                              : QString("Export failed after %1 file(s): %2").arg(w.files).arg(w.error);
        statusBar()->showMessage(message, 10000);
        if (!w.error.isEmpty()) showError("Export", message);
        Q_EMIT exported(message);
      },
      [this](QString error) {
        statusBar()->showMessage("Export failed: " + error, 10000);
        Q_EMIT exported("Export failed: " + error);
      });
}

StudyView* MainWindow::openStudyTab(int64_t study_id) {
  for (int i = 0; i < tabs_->count(); ++i)
    if (auto* view = qobject_cast<StudyView*>(tabs_->widget(i)); view && view->studyId() == study_id) {
      tabs_->setCurrentIndex(i);
      return view;
    }
  auto* view = new StudyView(store_, study_id, launcher_->workerProgram(), tabs_);
  connect(view, &StudyView::armActivated, this, [this](std::vector<int64_t> ids) {
    selectRunsInList(ids);  // (UX.md: an arm's runs selected in the list, and compared)
    if (ids.size() >= 2) openCompareTab(ids);
    else if (ids.size() == 1) openRunTab(ids.front());
    else statusBar()->showMessage("No run of this arm has completed yet", 4000);
  });
  tabs_->setCurrentIndex(tabs_->addTab(view, QString("Study %1").arg(study_id)));
  return view;
}

void MainWindow::openStudyDialog(std::optional<int64_t> base_run) {
  store_->query<WorkSpeed>(
      this, [](RunStore& s) { return measured_work_speed(s); },
      [this, base_run](WorkSpeed speed) {
        // Bases: the presets, then the workspace's runs, newest first.
        std::vector<StudyDialog::Base> bases;
        for (const QString& stem : run_preset_stems()) {
          try {
            bases.push_back({"Preset: " + run_preset_title(stem), load_run_preset(stem)});
          } catch (const std::exception&) {
          }
        }
        int chosen = 0;
        QString unreadable;  // the asked-for base run's config, where it does not read
        std::vector<const RunListEntry*> runs;
        for (int row = 0; row < model_->rowCount(); ++row)
          if (const RunListEntry* e = model_->entry(model_->index(row, 0).data(RunListModel::RunIdRole).toLongLong()))
            runs.push_back(e);
        std::sort(runs.begin(), runs.end(), [](const RunListEntry* a, const RunListEntry* b) { return a->row.id > b->row.id; });
        for (const RunListEntry* e : runs) {
          try {
            bases.push_back({QString("Run %1: %2").arg(e->row.id).arg(QString::fromStdString(e->row.name)),
                             config_from_json(e->config)});
            if (base_run && *base_run == e->row.id) chosen = static_cast<int>(bases.size()) - 1;
          } catch (const std::exception& ex) {
            if (base_run && *base_run == e->row.id) unreadable = QString::fromStdString(ex.what());
          }
        }
        if (!unreadable.isEmpty()) {  // (not a silent switch to the first preset)
          showError("New study", QString("Run %1's config cannot be a study's base: %2").arg(*base_run).arg(unreadable));
          return;
        }
        StudyDialog dialog(std::move(bases), speed, this);
        dialog.setBase(chosen);
        if (dialog.exec() != QDialog::Accepted) return;
        createAndStartStudy(dialog.spec(), dialog.jobs(), /*follow_runs=*/false);
      },
      [this](QString error) { showError("New study", "The workspace could not be read: " + error); });
}

void MainWindow::chooseStudy() {
  store_->query<std::vector<StudyRow>>(
      this, [](RunStore& s) { return list_studies(s); },
      [this](std::vector<StudyRow> studies) {
        if (studies.empty()) {
          QMessageBox::information(this, "Studies",
                                   "This workspace has no study yet. Start one with New Study (Ctrl+Shift+N), or "
                                   "queue one from a study file:\n"
                                   "ganpo study create resources/studies/paper-in-miniature.toml");
          return;
        }
        QStringList items;
        for (const auto& s : studies)
          items << QString("%1: %2 (%3)").arg(s.id).arg(QString::fromStdString(s.name), to_string(s.state));
        bool ok = false;
        const QString picked = QInputDialog::getItem(this, "Studies", "Open the study:", items, items.size() - 1, false, &ok);
        if (!ok) return;
        openStudyTab(studies[static_cast<size_t>(items.indexOf(picked))].id);
      });
}

void MainWindow::renameRun(int64_t run_id) {
  const RunListEntry* e = model_->entry(run_id);
  bool ok = false;
  const QString name = QInputDialog::getText(this, "Rename run", "Name:", QLineEdit::Normal,
                                             e ? QString::fromStdString(e->row.name) : QString(), &ok);
  if (!ok) return;
  if (name.trimmed().isEmpty()) {
    statusBar()->showMessage(QString("A run's name cannot be empty: run %1 keeps its name").arg(run_id), 10000);
    return;
  }
  const std::string n = name.trimmed().toStdString();
  store_->execute([run_id, n](RunStore& s) { s.set_name(run_id, n); });
  pollNow();
}

void MainWindow::tagRun(int64_t run_id) {
  const RunListEntry* e = model_->entry(run_id);
  bool ok = false;
  const QString tags = QInputDialog::getText(this, "Tags", "Comma-separated tags:", QLineEdit::Normal,
                                             e ? QString::fromStdString(e->row.tags) : QString(), &ok);
  if (!ok) return;
  QStringList clean;
  for (const QString& t : tags.split(',', Qt::SkipEmptyParts))
    if (!t.trimmed().isEmpty()) clean << t.trimmed();
  const std::string joined = clean.join(',').toStdString();
  store_->execute([run_id, joined](RunStore& s) { s.set_tags(run_id, joined); });
  pollNow();
}

void MainWindow::noteRun(int64_t run_id) {
  const RunListEntry* e = model_->entry(run_id);
  bool ok = false;
  const QString note = QInputDialog::getMultiLineText(this, "Note", "Note for this run:",
                                                      e ? QString::fromStdString(e->row.notes) : QString(), &ok);
  if (!ok) return;
  const std::string n = note.toStdString();
  store_->execute([run_id, n](RunStore& s) { s.set_notes(run_id, n); });
  pollNow();
}

void MainWindow::deleteRuns(const std::vector<int64_t>& ids) {
  std::vector<int64_t> deletable;
  QStringList busy, folders;
  for (int64_t id : ids) {
    const RunListEntry* e = model_->entry(id);
    if (!e) continue;
    if (worker_attached(e->row)) {
      busy << QString("#%1").arg(id);
      continue;
    }
    deletable.push_back(id);
    if (e->config.is_object() && e->config.contains("output_dir") && e->config["output_dir"].is_string())
      folders << QString("#%1: %2").arg(id).arg(QString::fromStdString(e->config["output_dir"].get<std::string>()));
  }
  if (!busy.isEmpty()) showError("Delete", QString("Stop these runs first: %1").arg(busy.join(", ")));
  if (deletable.empty()) return;
  QMessageBox box(QMessageBox::Warning, "Delete runs",
                  QString("Delete %1 run(s) and all their metrics, samples and checkpoint records?").arg(deletable.size()),
                  QMessageBox::Cancel, this);
  auto* del = box.addButton("Delete", QMessageBox::DestructiveRole);
  box.setDefaultButton(QMessageBox::Cancel);  // (Enter keeps the runs: deleting is the choice made by hand)
  auto* files = new QCheckBox("Also delete their output folders (checkpoints, logs)", &box);
  box.setCheckBox(files);
  // Which folders the check box removes (one another run uses, a link or the workspace's stays).
  if (!folders.isEmpty()) box.setDetailedText("Output folders:\n" + folders.join("\n"));
  box.exec();
  if (box.clickedButton() != del) return;
  for (int64_t id : deletable)
    if (tabs_)
      if (RunTab* tab = runTab(id)) tab->deleteLater();
  const std::string logs_dir = QFileInfo(db_path_).absoluteDir().filePath("logs").toStdString();
  const bool with_files = files->isChecked();
  store_->query<QStringList>(
      this,
      [deletable, with_files, logs_dir](RunStore& s) {
        QStringList problems;
        const std::set<int64_t> together(deletable.begin(), deletable.end());  // none keeps another's folder
        for (int64_t id : deletable) {
          const RemoveRunResult r = RunService(s).remove(id, with_files, logs_dir, together);
          if (!r.refused.empty()) problems << QString::fromStdString(r.refused);
          if (!r.folder_kept.empty())
            problems << QString("kept %1: %2").arg(QString::fromStdString(r.output_dir), QString::fromStdString(r.folder_kept));
        }
        return problems;
      },
      [this](const QStringList& problems) {
        if (!problems.isEmpty()) showError("Delete", problems.join("\n"));
        pollNow();
      },
      [this](QString error) { showError("Delete", "The runs could not be deleted: " + error); });
}

void MainWindow::onWorkspaceProblem(const QString& problem) {
  workspace_problem_ = problem;
  workspace_label_->setVisible(!problem.isEmpty());
  workspace_label_->setToolTip(problem);
  if (!problem.isEmpty())
    showError("Workspace unavailable", problem);
  else
    statusBar()->showMessage("The workspace " + db_path_ + " can be read and written again", 8000);
}

void MainWindow::notify(const QString& title, const QString& text) {
  if (tray_ && QSystemTrayIcon::supportsMessages()) tray_->showMessage(title, text);
  QApplication::alert(this);
  statusBar()->showMessage(text, 15000);
}

void MainWindow::showError(const QString& title, const QString& message) {
  if (QApplication::platformName() == "offscreen") {
    statusBar()->showMessage(title + ": " + message, 15000);  // tests: never block on a modal box
    return;
  }
  QMessageBox::warning(this, title, message);
}

void MainWindow::closeEvent(QCloseEvent* event) {
  const auto active = activeRunIds();
  CloseChoice choice = close_choice_;
  if (!active.empty() && choice == CloseChoice::Ask) {
    QMessageBox box(QMessageBox::Question, "Runs are training",
                    QString("%1 run(s) are still training. Stop them (each saves a checkpoint first) or leave them "
                            "running in the background? They will show up again when you reopen the workbench.")
                        .arg(active.size()),
                    QMessageBox::Cancel, this);
    auto* stop = box.addButton("Stop runs", QMessageBox::DestructiveRole);
    auto* leave = box.addButton("Leave running", QMessageBox::AcceptRole);
    box.setDefaultButton(leave);
    box.exec();
    if (box.clickedButton() == stop)
      choice = CloseChoice::StopRuns;
    else if (box.clickedButton() == leave)
      choice = CloseChoice::LeaveRunning;
    else {
      event->ignore();
      return;
    }
  }
  if (choice == CloseChoice::StopRuns)
    for (int64_t id : active) sendControl(id, "stop");
  store_->drain();
  QSettings settings;
  settings.setValue("window/geometry", saveGeometry());
  settings.setValue("window/state", saveState());
  settings.setValue("window/splitter", splitter_->saveState());
  settings.setValue("window/run-columns", table_->horizontalHeader()->saveState());
  event->accept();
}

}  // namespace ganpo::ui
