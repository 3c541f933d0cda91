#include "ui/thread_inbox.h"

#include <QMetaObject>

namespace ganpo::ui {

ThreadInbox::~ThreadInbox() {
  std::deque<std::function<void()>> dropped;
  {
    std::lock_guard<std::mutex> lock(mutex_);  // after the last post, in TSan's eyes too
    dropped.swap(pending_);
  }
  // Destroyed outside the lock: a captured object's destructor may post (to a dead inbox it
  // must not, but it must not deadlock either).
}

void ThreadInbox::post(std::function<void()> fn) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    pending_.push_back(std::move(fn));
  }
  // By name, with no arguments: the queued call is built inside Qt and carries no data. One
  // bell per callback, so a nested event loop (a modal dialog opened by a callback) still
  // delivers what comes meanwhile; a bell that finds the queue empty does nothing.
  QMetaObject::invokeMethod(this, "deliver", Qt::QueuedConnection);
}

void ThreadInbox::deliver() {
  // One at a time, not a swapped batch: a callback that spins a nested event loop lets the
  // callbacks behind it run there, in order, as Qt's own queue would.
  for (;;) {
    std::function<void()> fn;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (pending_.empty()) return;
      fn = std::move(pending_.front());
      pending_.pop_front();
    }
    fn();
  }
}

}  // namespace ganpo::ui
