// MainWindow: the workbench. Left, the run list (filter box, sortable table, context menu);
// centre, a tab per opened run; a toolbar (New Run, Start, Pause/Resume, Stop, Sample now,
// Clone, Compare) and a status bar (device, memory, the active run's progress and ETA). A timer polls the
// run store through a StoreWorker a few times a second (runs changed since the last poll, dead
// workers reaped), so the UI thread never waits on the database or on training, which runs in
// detached `ganpo` worker processes (WorkerLauncher). Window geometry, splitter and workspace
// are remembered; a notification says when a run ends.
#pragma once

#include <QMainWindow>
#include <QMap>
#include <QTimer>

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>

#include "core/config.h"
#include "core/study_spec.h"
#include "db/run_status.h"

class QAction;
class QLabel;
class QLineEdit;
class QProgressBar;
class QSplitter;
class QStackedWidget;
class QSystemTrayIcon;
class QTableView;
class QTabWidget;

namespace ganpo::ui {

class CompareView;
class WelcomePane;
class StudyView;
class RunListModel;
class RunListProxy;
class RunTab;
class StoreWorker;
class WorkerLauncher;
struct RunListEntry;

class MainWindow : public QMainWindow {
  Q_OBJECT
public:
  explicit MainWindow(const QString& db_path, QWidget* parent = nullptr);
  ~MainWindow() override;

  const QString& dbPath() const { return db_path_; }
  RunListModel* runModel() const { return model_; }
  RunListProxy* runProxy() const { return proxy_; }
  QTableView* runTable() const { return table_; }
  WorkerLauncher* launcher() const { return launcher_; }
  StoreWorker* store() const { return store_; }
  // Why the workspace cannot be used now (deleted, moved, unreadable); empty when it can.
  const QString& workspaceProblem() const { return workspace_problem_; }

  // Opens the New Run dialog, preset (a file stem such as "demo") preselected.
  void openNewRunDialog(const QString& preset = QString());
  // The New Run dialog with a run config file loaded (a double-clicked *.ganpo.toml).
  void openNewRunDialogWithFile(const QString& path);
  // Inserts a queued run with this config (output folder assigned beside the workspace), starts
  // its worker and opens its tab (emits runCreated); a config with a pipeline goes to
  // createAndStartPipeline.
  void createAndStartRun(const RunConfig& config, std::optional<int64_t> parent_run = std::nullopt,
                         std::optional<int64_t> parent_step = std::nullopt);
  // A config with [[pipeline]] stages: queued as a study of one run per stage, its queue driver
  // started, the first run's tab opened; each later stage's tab opens when its run starts.
  void createAndStartPipeline(const RunConfig& config);
  // Queues a study (every run validated first; a problem is shown and nothing is stored), starts
  // its queue driver with `jobs` runs at a time (0: one per GPU, or one on a CPU) and emits
  // studyCreated. follow_runs: open each
  // run's tab as it starts (a pipeline); otherwise the Study tab opens. out_root: where the runs
  // write (default: studies/<name> beside the workspace).
  void createAndStartStudy(const StudySpec& spec, int jobs = 0, bool follow_runs = false,
                           const std::string& out_root = "");
  void startRun(int64_t run_id);
  // Starts the detached queue driver of a study; its pid, or 0 (having shown why) when it cannot.
  qint64 startStudyDriver(int64_t study_id, int jobs = 0);
  void sendControl(int64_t run_id, const QString& command);
  RunTab* openRunTab(int64_t run_id);
  // A Compare tab for two or more runs (nullptr, with a status message, for fewer).
  CompareView* openCompareTab(const std::vector<int64_t>& run_ids);
  // Selects exactly these runs in the run list (those the filter shows).
  void selectRunsInList(const std::vector<int64_t>& run_ids);
  // Writes each run's metrics, samples, evaluations and events as CSV into `folder`
  // (run-ID-metrics.csv, ...; `ganpo runs export`'s tables), off the UI thread; the status bar
  // says what was written, or why not, and exported() follows.
  void exportRuns(const std::vector<int64_t>& run_ids, const QString& folder);
  // The Study tab of a study in the workspace (an existing tab is brought forward).
  StudyView* openStudyTab(int64_t study_id);
  // The New Study dialog (base: the presets and the workspace's runs, base_run preselected);
  // Start queues the study, starts its driver and opens its Study tab.
  void openStudyDialog(std::optional<int64_t> base_run = std::nullopt);
  // Lets the user pick one of the workspace's studies and opens its tab.
  void chooseStudy();
  // New run from a checkpoint of run_id (New Run dialog prefilled; parent run and step recorded).
  void cloneFromCheckpoint(int64_t run_id, int64_t step, const QString& path);
  RunTab* runTab(int64_t run_id) const;
  void pollNow();
  // What closeEvent does with active runs: ask (default), or answer without asking (tests).
  enum class CloseChoice { Ask, StopRuns, LeaveRunning };
  void setCloseChoice(CloseChoice choice) { close_choice_ = choice; }

Q_SIGNALS:
  void runCreated(qint64 run_id);
  void studyCreated(qint64 study_id);
  void runFinished(qint64 run_id, const QString& status);
  void exported(const QString& message);
  void polled();

protected:
  void closeEvent(QCloseEvent* event) override;

private:
  void buildActions();
  void buildLayout();
  void restoreSettings();
  void openRunTabWhenListed(int64_t run_id);
  void onPolled(const std::vector<RunListEntry>& changed, const std::vector<int64_t>& ids, double newest);
  void updateActions();
  void updateStatusBar();
  std::optional<int64_t> currentRunId() const;
  // The run list follows the run tab brought to the front, so the toolbar and the status bar act
  // on the run in view; a selection of several runs (to compare, to stop) is left as it is.
  void selectRunInList(int64_t run_id);
  bool opening_on_its_own_ = false;  // a tab opened by the poll (a pipeline's next stage), not the user
  std::vector<int64_t> selectedRunIds() const;
  void showRunMenu(const QPoint& pos);
  void cloneRun(int64_t run_id);
  std::optional<RunConfig> storedConfig(int64_t run_id);  // shows why when it cannot be read
  void renameRun(int64_t run_id);
  void tagRun(int64_t run_id);
  void noteRun(int64_t run_id);
  void deleteRuns(const std::vector<int64_t>& ids);
  void onWorkspaceProblem(const QString& problem);  // empty: the workspace is usable again
  void notify(const QString& title, const QString& text);
  void showError(const QString& title, const QString& message);
  std::vector<int64_t> activeRunIds() const;

  QString db_path_;
  StoreWorker* store_ = nullptr;
  WorkerLauncher* launcher_ = nullptr;
  RunListModel* model_ = nullptr;
  RunListProxy* proxy_ = nullptr;
  QTableView* table_ = nullptr;
  QLineEdit* filter_ = nullptr;
  QLabel* filter_error_ = nullptr;
  QTabWidget* tabs_ = nullptr;
  QStackedWidget* right_ = nullptr;  // the tabs, or the welcome pane while none is open
  WelcomePane* welcome_ = nullptr;
  QSplitter* splitter_ = nullptr;
  QLabel* workspace_label_ = nullptr;  // shown while the workspace cannot be used
  QString workspace_problem_;
  QLabel* device_label_ = nullptr;
  QLabel* progress_label_ = nullptr;
  QProgressBar* progress_ = nullptr;
  QSystemTrayIcon* tray_ = nullptr;
  QAction *new_run_ = nullptr, *start_ = nullptr, *pause_ = nullptr, *stop_ = nullptr, *sample_ = nullptr,
          *clone_ = nullptr, *compare_ = nullptr, *export_ = nullptr, *refresh_ = nullptr;
  QTimer poll_timer_;
  bool poll_pending_ = false;
  bool columns_sized_ = false;
  double last_poll_time_ = 0;
  std::map<qint64, RunStatus> last_status_;  // for end-of-run notifications
  std::set<int64_t> open_when_started_;      // later stages of pipelines this window created
  std::set<int64_t> open_when_listed_;       // tabs asked for before the next poll listed the run
  std::optional<double> active_memory_mb_;
  std::optional<double> active_step_time_s_;  // its last logged step_time_s, for the ETA
  // Workers this window started that have not taken their run yet (run id -> pid, start time).
  struct Launch {
    qint64 pid = 0;
    double at = 0;
  };
  std::map<int64_t, Launch> launched_;
  void checkLaunchedWorkers();  // each poll: a launched worker that ended untaken fails its run
  CloseChoice close_choice_ = CloseChoice::Ask;
};

}  // namespace ganpo::ui
