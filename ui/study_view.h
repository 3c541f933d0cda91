// StudyView: the Study tab. The queue (runs of the study with their status, counts per state,
// Pause / Resume / Cancel for the whole study) and the answer, as db/study_report computes it
// from the stored runs: a table of arms (mean and 95% interval over seeds of held-out accuracy
// and margin, win rate against the reference per temperature, response length, step time), the
// GANPO-on against GANPO-off differences (marked only when their interval excludes 0, or 0.5 for
// head-to-head win rates), and win rate against temperature per arm with interval bands. Export
// writes the self-contained HTML report, CSV and JSON. "Run queue" drives the queue from the
// window with the same driver as the terminal (`ganpo study run ID`, started detached, so it
// keeps going when the window closes; several drivers share a queue without starting a run
// twice). It re-reads the store every few seconds while it is visible; every read goes through
// the StoreWorker.
#pragma once

#include <QString>
#include <QTimer>
#include <QWidget>

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

class QCustomPlot;
class QLabel;
class QPushButton;
class QTabWidget;
class QTableWidget;

namespace ganpo {
struct StudyReport;
}

namespace ganpo::ui {

class StoreWorker;
struct StudySnapshot;

class StudyView : public QWidget {
  Q_OBJECT
public:
  // worker_program: the `ganpo` binary that drives the queue.
  StudyView(StoreWorker* store, int64_t study_id, QString worker_program, QWidget* parent = nullptr);
  ~StudyView() override;

  int64_t studyId() const { return study_id_; }
  void refresh();
  // Writes <folder>/study-<id>.html, .csv and .json; false with the reason when it cannot.
  bool exportReport(const QString& folder, QString* why = nullptr);
  // The files exportReport would write into folder that are already there (the Export button
  // asks before it replaces them).
  QStringList existingExportFiles(const QString& folder) const;
  // Starts `ganpo study run ID --db DB` detached (output to the workspace's logs/study-<id>.log);
  // false with the reason when it cannot start.
  bool runQueue(QString* why = nullptr);
  // A queue driver started for this study elsewhere (New Study's Start): Run queue stays off
  // while it lives.
  void setDriverPid(qint64 pid) { driver_pid_ = pid; }
  qint64 driverPid() const { return driver_pid_; }  // the driver this tab started (0: none)

  // For tests.
  QTableWidget* runsTable() const { return runs_; }
  QTableWidget* armsTable() const { return arms_; }
  QTableWidget* differencesTable() const { return differences_; }
  QCustomPlot* plot() const { return plot_; }
  QCustomPlot* noisePlot() const { return noise_plot_; }
  QCustomPlot* timePlot() const { return time_plot_; }
  QLabel* summary() const { return summary_; }
  bool isLoaded() const { return loaded_; }

Q_SIGNALS:
  void loaded();
  // Run ids of an arm the user double-clicked (the window selects them and opens Compare).
  void armActivated(std::vector<int64_t> run_ids);

protected:
  void showEvent(QShowEvent* event) override;
  void hideEvent(QHideEvent* event) override;

private:
  void drawNoisePlot(const StudyReport& report);
  void drawTimePlot(const StudyReport& report);
  void showSnapshot(const StudySnapshot& snapshot);
  // Writes the study's state; `then` runs once it is written.
  void setState(const char* state, std::function<void()> then = {});

  StoreWorker* store_;
  int64_t study_id_;
  QString worker_program_;
  QLabel* summary_;
  QPushButton* run_queue_;
  QPushButton* pause_;
  QPushButton* resume_;
  QPushButton* cancel_;
  QPushButton* export_;
  QTableWidget* runs_;
  QTableWidget* arms_;
  QTableWidget* differences_;
  QLabel* multiplicity_;  // how many verdicts chance alone would give
  QTabWidget* plots_;
  QCustomPlot* plot_;        // win rate against temperature per arm, 95% bands
  QCustomPlot* noise_plot_;  // held-out accuracy against label noise, 95% error bars
  QCustomPlot* time_plot_;   // step time per arm, 95% error bars
  QTimer timer_;
  bool loaded_ = false;
  bool in_flight_ = false;
  qint64 driver_pid_ = 0;  // the queue driver this tab started, while it lives
  std::vector<std::vector<int64_t>> arm_runs_;  // per arms_ row
  std::shared_ptr<const StudySnapshot> last_;   // the last report read; exported on request
};

}  // namespace ganpo::ui
