// ThreadInbox: hands callbacks from worker threads to the thread that owns the inbox (the UI
// thread), where they run in the order they were posted. The callbacks travel through a queue
// under a std::mutex; Qt's event loop only rings the bell (a queued call of a slot with no
// arguments). So every hand-off of data between threads goes through a lock that
// ThreadSanitizer sees, even though Qt itself is not instrumented (its own queue synchronises
// with futexes TSan cannot see, and a functor posted through it would look like a race).
// Callbacks still queued when the inbox is destroyed are dropped, never run; its owner stops
// the threads that post to it first.
#pragma once

#include <QObject>

#include <deque>
#include <functional>
#include <mutex>

namespace ganpo::ui {

class ThreadInbox : public QObject {
  Q_OBJECT
public:
  explicit ThreadInbox(QObject* parent = nullptr) : QObject(parent) {}
  ~ThreadInbox() override;

  // Any thread: fn runs later on the inbox's thread.
  void post(std::function<void()> fn);

private:
  Q_INVOKABLE void deliver();  // the inbox's thread: runs what is queued, in order

  std::mutex mutex_;
  std::deque<std::function<void()>> pending_;  // guarded by mutex_
};

}  // namespace ganpo::ui
