// StoreWorker: runs run-store queries on a thread of its own, with its own SQLite connection,
// so the UI thread never waits on the database. A query is a function of RunStore&; its result
// comes back to a context object's thread (normally the UI thread) through a callback, and is
// dropped if that object has been destroyed meanwhile. Errors (a locked or broken workspace)
// come back as text, never as an exception in the event loop. Before each job the worker checks
// that the workspace can be opened and is still the file at its path (not deleted, moved away
// or replaced while open, when SQLite would read and write a file nobody finds); while it is not,
// jobs fail with that reason, and workspaceProblemChanged tells the window once when the problem
// starts and once when it ends.
// Threads: jobs go to the store thread through a queue under a std::mutex, results and signals
// come back through a ThreadInbox, so ThreadSanitizer sees every hand-off (tests/tsan). The
// worker, its signals' receivers and the context objects of queries live on one thread (the UI
// thread): results and signals are delivered there.
#pragma once

#include <QObject>
#include <QPointer>
#include <QString>

#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "db/run_store.h"
#include "ui/thread_inbox.h"

namespace ganpo::ui {

class StoreWorker : public QObject {
  Q_OBJECT
public:
  explicit StoreWorker(QString db_path, QObject* parent = nullptr);
  ~StoreWorker() override;

  const QString& db_path() const { return db_path_; }

  // Runs fn on the store thread; done(result) then runs on this worker's thread, unless context
  // (an object of that thread) has been destroyed meanwhile. On an error, failed(message) runs
  // there instead (or the error is reported through errorOccurred).
  template <class R>
  void query(QObject* context, std::function<R(RunStore&)> fn, std::function<void(R)> done,
             std::function<void(QString)> failed = {}) {
    // ctx is only read on this thread (in the delivery): whether the object is still alive is
    // a question for the thread that deletes it.
    QPointer<QObject> ctx(context);
    post([this, ctx, fn = std::move(fn), done = std::move(done), failed = std::move(failed)]() mutable {
      std::optional<R> result;
      QString error;
      try {
        result.emplace(fn(checked_store()));
      } catch (const std::exception& e) {
        error = explain(e);
      }
      inbox_.post([this, ctx = std::move(ctx), result = std::move(result), error = std::move(error),
                   done = std::move(done), failed = std::move(failed)]() mutable {
        if (!ctx) return;
        if (result) {
          done(std::move(*result));
        } else if (failed) {
          failed(error);
        } else {
          Q_EMIT errorOccurred(error);
        }
      });
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
  void run_jobs();                       // the store thread's loop
  RunStore& checked_store();  // store thread only; throws the workspace's problem
  void set_problem(const QString& problem);  // store thread only
  // The message of an error from a job: a write the disk or the file refused says what to do.
  QString explain(const std::exception& e) const;

  const QString db_path_;
  ThreadInbox inbox_;  // results and signals, back to this worker's thread

  std::mutex jobs_mutex_;
  std::condition_variable jobs_cv_;
  std::deque<std::function<void()>> jobs_;  // guarded by jobs_mutex_
  bool stopping_ = false;                   // guarded by jobs_mutex_

  // Store thread only:
  std::unique_ptr<RunStore> store_;  // opened on first use
  QString problem_;                  // the problem last reported

  std::thread thread_;  // last: started once everything above exists
};

}  // namespace ganpo::ui
