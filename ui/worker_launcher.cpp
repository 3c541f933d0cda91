#include "ui/worker_launcher.h"

#include <QCoreApplication>
#include <QDir>
#include <QFileInfo>
#include <QProcess>
#include <QStandardPaths>

namespace ganpo::ui {

WorkerLauncher::WorkerLauncher(QString db_path, QObject* parent) : QObject(parent), db_path_(std::move(db_path)) {}

QString WorkerLauncher::workerProgram() const {
  if (!program_.isEmpty()) return program_;
  const QString env = qEnvironmentVariable("GANPO_CLI");
  if (!env.isEmpty()) return env;
  const QString beside = QDir(QCoreApplication::applicationDirPath()).filePath("ganpo");
  if (QFileInfo(beside).isExecutable()) return beside;
  const QString on_path = QStandardPaths::findExecutable("ganpo");
  return on_path.isEmpty() ? beside : on_path;
}

QString WorkerLauncher::logPath(int64_t run_id) const {
  return QFileInfo(db_path_).absoluteDir().filePath(QString("logs/run-%1.log").arg(run_id));
}

bool WorkerLauncher::start(int64_t run_id, QString* error, qint64* pid) {
  return startDetached({"train", "--db", QFileInfo(db_path_).absoluteFilePath(), "--run", QString::number(run_id)},
                       logPath(run_id), error, pid);
}

bool WorkerLauncher::startStudyDriver(int64_t study_id, int jobs, QString* error, qint64* pid) {
  return startDetached({"study", "run", QString::number(study_id), "--db", QFileInfo(db_path_).absoluteFilePath(),
                        "--jobs", QString::number(jobs)},
                       QFileInfo(db_path_).absoluteDir().filePath(QString("logs/study-%1.log").arg(study_id)), error, pid);
}

bool WorkerLauncher::startDetached(const QStringList& arguments, const QString& log, QString* error, qint64* pid) {
  const QString program = workerProgram();
  if (!QFileInfo(program).isExecutable()) {
    *error = QString("the worker program '%1' was not found; build the `ganpo` target or set GANPO_CLI").arg(program);
    return false;
  }
  QDir().mkpath(QFileInfo(log).absolutePath());
  QProcess process;
  process.setProgram(program);
  process.setArguments(arguments);
  process.setStandardOutputFile(log, QIODevice::Append);
  process.setStandardErrorFile(log, QIODevice::Append);
  process.setStandardInputFile(QProcess::nullDevice());
  qint64 started = 0;
  if (!process.startDetached(&started)) {
    *error = QString("could not start %1: %2").arg(program, process.errorString());
    return false;
  }
  if (pid) *pid = started;
  return true;
}

}  // namespace ganpo::ui
