#include "ui/store_worker.h"

#include <QSemaphore>

namespace ganpo::ui {

StoreWorker::StoreWorker(QString db_path, QObject* parent) : QObject(parent), db_path_(std::move(db_path)) {
  thread_.setObjectName("run-store");
  runner_ = new QObject;
  runner_->moveToThread(&thread_);
  connect(&thread_, &QThread::finished, runner_, &QObject::deleteLater);
  thread_.start();
}

StoreWorker::~StoreWorker() {
  // The connection is closed on the thread that used it.
  QMetaObject::invokeMethod(runner_, [this] { store_.reset(); }, Qt::BlockingQueuedConnection);
  thread_.quit();
  thread_.wait();
}

RunStore& StoreWorker::store() {
  if (!store_) store_ = std::make_unique<RunStore>(RunStore::open(db_path_.toStdString()));
  return *store_;
}

void StoreWorker::post(std::function<void(RunStore&)> job) {
  QMetaObject::invokeMethod(
      runner_,
      [this, job = std::move(job)] {
        try {
          job(store());
        } catch (const std::exception& e) {
          // store() failed to open: every job reports it rather than crash the thread.
          Q_EMIT errorOccurred(QString::fromStdString(e.what()));
        }
      },
      Qt::QueuedConnection);
}

void StoreWorker::execute(std::function<void(RunStore&)> fn) {
  post([this, fn = std::move(fn)](RunStore& s) {
    try {
      fn(s);
    } catch (const std::exception& e) {
      Q_EMIT errorOccurred(QString::fromStdString(e.what()));
    }
  });
}

void StoreWorker::drain() {
  QSemaphore done;
  QMetaObject::invokeMethod(runner_, [&done] { done.release(); }, Qt::QueuedConnection);
  done.acquire();
}

}  // namespace ganpo::ui
