// WorkerLauncher: starts training workers (`ganpo train --db FILE --run ID`) as detached
// processes, so a run keeps going when the window closes and a crash cannot touch the GUI. Each
// worker's stdout and stderr go to a log file beside the workspace (logs/run-<id>.log), which
// the run's Log tab follows; the run store carries everything else (status, metrics, control).
#pragma once

#include <QObject>
#include <QString>

#include <cstdint>

namespace ganpo::ui {

class WorkerLauncher : public QObject {
  Q_OBJECT
public:
  explicit WorkerLauncher(QString db_path, QObject* parent = nullptr);

  // The `ganpo` binary: set explicitly, else $GANPO_CLI, else next to this executable, else PATH.
  void setWorkerProgram(const QString& path) { program_ = path; }
  QString workerProgram() const;
  QString logPath(int64_t run_id) const;

  // Starts the worker for run_id. On failure returns false and says why in *error.
  bool start(int64_t run_id, QString* error, qint64* pid = nullptr);

private:
  QString db_path_;
  QString program_;
};

}  // namespace ganpo::ui
