// WorkerLauncher: starts `ganpo` processes detached, so they keep going when the window closes
// and a crash cannot touch the GUI: training workers (`ganpo train --db FILE --run ID`, output
// to logs/run-<id>.log beside the workspace, which the run's Log tab follows) and study queue
// drivers (`ganpo study run ID --db FILE`, output to logs/study-<id>.log). The run store carries
// everything else (status, metrics, control, the queue).
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
  // Starts the queue driver of a study: it starts the study's runs as earlier ones finish.
  bool startStudyDriver(int64_t study_id, int jobs, QString* error, qint64* pid = nullptr);

private:
  bool startDetached(const QStringList& arguments, const QString& log, QString* error, qint64* pid);
  QString db_path_;
  QString program_;
};

}  // namespace ganpo::ui
