#include "ui/store_worker.h"

#include <future>

#include "core/error.h"
#include "db/sqlite_handle.h"

namespace ganpo::ui {

StoreWorker::StoreWorker(QString db_path, QObject* parent)
    : QObject(parent), db_path_(std::move(db_path)), thread_([this] { run_jobs(); }) {}

StoreWorker::~StoreWorker() {
  {
    std::lock_guard<std::mutex> lock(jobs_mutex_);
    stopping_ = true;  // jobs already queued still run (a write the user asked for is kept)
  }
  jobs_cv_.notify_one();
  thread_.join();
}

void StoreWorker::run_jobs() {
  for (;;) {
    std::function<void()> job;
    {
      std::unique_lock<std::mutex> lock(jobs_mutex_);
      jobs_cv_.wait(lock, [this] { return stopping_ || !jobs_.empty(); });
      if (jobs_.empty()) break;  // stopping, and nothing left to run
      job = std::move(jobs_.front());
      jobs_.pop_front();
    }
    try {
      job();  // queries and writes catch std::exception themselves
    } catch (...) {
      inbox_.post([this] { Q_EMIT errorOccurred(QStringLiteral("A workspace job failed with an unknown error.")); });
    }
  }
  store_.reset();  // the connection is closed on the thread that used it
}

RunStore& StoreWorker::checked_store() {
  try {
    if (!store_) store_ = std::make_unique<RunStore>(RunStore::open(db_path_.toStdString()));
    if (!store_->still_at_path())
      throw Error("The workspace " + store_->path() +
                  " was deleted, moved or replaced while the window had it open. The window keeps showing what it "
                  "had read but cannot read or save anything more: put the file back, or open it where it is now "
                  "(ganpo-workbench --db FILE); nothing stored in it is lost.");
  } catch (const std::exception& e) {
    set_problem(QString::fromStdString(e.what()));
    throw;
  }
  set_problem({});
  return *store_;
}

void StoreWorker::set_problem(const QString& problem) {
  if (problem == problem_) return;
  problem_ = problem;
  inbox_.post([this, problem] { Q_EMIT workspaceProblemChanged(problem); });
}

QString StoreWorker::explain(const std::exception& e) const {
  const auto* sqlite = dynamic_cast<const sql::SqliteError*>(&e);
  if (sqlite && sqlite->is_busy())
    return QString("The workspace %1 is locked: another program has been writing to it for a while (%2). Nothing "
                   "was changed; try again when it has finished. Runs keep training and record once it is done.")
        .arg(db_path_, QString::fromStdString(e.what()));
  if (!sqlite || !sqlite->is_storage_failure()) return QString::fromStdString(e.what());
  if (sqlite->is_corrupt())
    return QString("The workspace %1 is damaged (%2). Check it with: sqlite3 '%1' 'PRAGMA integrity_check'; copy the "
                   "file aside before repairing it (sqlite3's .recover) or restore a backup. Each run's output folder "
                   "keeps its own metrics.jsonl and checkpoints.")
        .arg(db_path_, QString::fromStdString(e.what()));
  return QString("The workspace %1 cannot be written (%2). Free disk space on its drive (df -h) or make the file and "
                 "its folder writable again, then try again; nothing already stored in it is lost.")
      .arg(db_path_, QString::fromStdString(e.what()));
}

void StoreWorker::post(std::function<void()> job) {
  {
    std::lock_guard<std::mutex> lock(jobs_mutex_);
    jobs_.push_back(std::move(job));
  }
  jobs_cv_.notify_one();
}

void StoreWorker::execute(std::function<void(RunStore&)> fn) {
  post([this, fn = std::move(fn)] {
    try {
      fn(checked_store());
    } catch (const std::exception& e) {
      inbox_.post([this, error = explain(e)] { Q_EMIT errorOccurred(error); });
    }
  });
}

void StoreWorker::drain() {
  std::promise<void> done;
  post([&done] { done.set_value(); });
  done.get_future().wait();
}

}  // namespace ganpo::ui
