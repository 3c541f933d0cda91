// read_in_background: runs a slow read (a large dataset, a 128k-token tokenizer, a model
// folder's description) on a thread of its own and hands the result to `done` on the UI thread,
// unless the receiving widget is gone by then. Callers drop results they no longer want (a newer
// path was asked for) with a generation counter of their own.
#pragma once

#include <QCoreApplication>
#include <QMetaObject>
#include <QPointer>

#include <thread>
#include <utility>

namespace ganpo::ui {

template <class Receiver, class Work, class Done>
void read_in_background(Receiver* receiver, Work work, Done done) {
  QPointer<Receiver> self(receiver);
  std::thread([self, work = std::move(work), done = std::move(done)]() mutable {
    auto result = work();
    QCoreApplication* app = QCoreApplication::instance();
    if (!app) return;
    QMetaObject::invokeMethod(
        app,
        [self, done = std::move(done), result = std::move(result)]() mutable {
          if (self) done(std::move(result));
        },
        Qt::QueuedConnection);
  }).detach();
}

}  // namespace ganpo::ui
