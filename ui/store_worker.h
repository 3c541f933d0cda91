// StoreWorker: runs run-store queries on a thread of its own, with its own SQLite connection,
// so the UI thread never waits on the database. A query is a function of RunStore&; its result
// comes back to a context object's thread (normally the UI thread) through a callback, and is
// dropped if that object has been destroyed meanwhile. Errors (a locked or broken workspace)
// come back as text, never as an exception in the event loop. Before each job the worker checks
// that the workspace can be opened and is still the file at its path (not deleted, moved away
// or replaced while open, when SQLite would read and write a file nobody finds); while it is not,
// jobs fail with that reason, and workspaceProblemChanged tells the window once when the problem
// starts and once when it ends.
#pragma once

#include <QObject>
#include <QPointer>
#include <QString>
#include <QThread>

#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "db/run_store.h"

namespace ganpo::ui {

class StoreWorker : public QObject {
  Q_OBJECT
public:
  explicit StoreWorker(QString db_path, QObject* parent = nullptr);
  ~StoreWorker() override;

  const QString& db_path() const { return db_path_; }

  // Runs fn on the store thread; done(result) then runs on context's thread. On an error,
  // failed(message) runs there instead (or the error is reported through errorOccurred).
  template <class R>
  void query(QObject* context, std::function<R(RunStore&)> fn, std::function<void(R)> done,
             std::function<void(QString)> failed = {}) {
    QPointer<QObject> ctx(context);
    post([this, ctx, fn = std::move(fn), done = std::move(done), failed = std::move(failed)] {
      std::optional<R> result;
      QString error;
      try {
        result.emplace(fn(checked_store()));
      } catch (const std::exception& e) {
        error = explain(e);
      }
      if (!ctx) return;
      QMetaObject::invokeMethod(
          ctx.data(),
          [this, result = std::move(result), error, done, failed]() mutable {
            if (result) {
              done(std::move(*result));
            } else if (failed) {
              failed(error);
            } else {
              Q_EMIT errorOccurred(error);
            }
          },
          Qt::QueuedConnection);
    });
  }

  // Runs a write on the store thread; errors are reported through errorOccurred.
  void execute(std::function<void(RunStore&)> fn);

  // Blocks until everything posted so far has run (tests and shutdown only).
  void drain();

Q_SIGNALS:
  void errorOccurred(const QString& message);
  // The workspace cannot be used (message), or can again (empty message).
  void workspaceProblemChanged(const QString& message);

private:
  void post(std::function<void()> job);  // runs job on the store thread
  RunStore& checked_store();  // store thread only; throws the workspace's problem
  void set_problem(const QString& problem);  // store thread only
  // The message of an error from a job: a write the disk or the file refused says what to do.
  QString explain(const std::exception& e) const;

  QString db_path_;
  QThread thread_;
  QObject* runner_ = nullptr;         // lives on thread_; queued jobs run in its context
  std::unique_ptr<RunStore> store_;   // opened on first use, on thread_
  QString problem_;                   // store thread only: the problem last reported
};

}  // namespace ganpo::ui
