// StoreWorker, the window's run-store thread, without widgets: the order of jobs, where results
// arrive, a context destroyed while its query runs, errors, the workspace going away and coming
// back, shutdown with work queued. Every test hands data across the two threads, so under
// ThreadSanitizer (tests/tsan) they check the hand-offs too.
#include <gtest/gtest.h>

#include <QCoreApplication>
#include <QTemporaryDir>
#include <QThread>

#include <sqlite3.h>

#include <cstdio>
#include <filesystem>
#include <future>
#include <memory>
#include <string>
#include <vector>

#include "db/run_store.h"
#include "dashboard_test_support.h"
#include "tests/support/read_only_files.h"
#include "ui/store_worker.h"

namespace ganpo::ui {
namespace {

using testing::pump_until;

class StoreWorkerTest : public ::testing::Test {
protected:
  void SetUp() override {
    ASSERT_TRUE(dir_.isValid());
    db_ = dir_.filePath(QStringLiteral("workspace.sqlite"));
    RunStore::open(db_.toStdString()).create_run("first", "preference", "{}");
  }
  QTemporaryDir dir_;
  QString db_;
};

// Writes and reads posted from the UI thread run in the order they were posted, and every result
// comes back on the UI thread: each read sees exactly the writes posted before it.
TEST_F(StoreWorkerTest, JobsRunInOrderAndResultsComeBackOnTheOwnerThread) {
  StoreWorker worker(db_);
  QObject context;
  std::vector<size_t> seen;
  bool all_on_owner_thread = true;
  for (int i = 0; i < 40; ++i) {
    worker.execute([i](RunStore& s) { s.create_run("run-" + std::to_string(i), "preference", "{}"); });
    worker.query<size_t>(
        &context, [](RunStore& s) { return s.runs().size(); },
        [&](size_t n) {
          all_on_owner_thread = all_on_owner_thread && QThread::currentThread() == QCoreApplication::instance()->thread();
          seen.push_back(n);
        });
  }
  ASSERT_TRUE(pump_until([&] { return seen.size() == 40; }, 60000));
  EXPECT_TRUE(all_on_owner_thread);
  for (size_t i = 0; i < seen.size(); ++i) EXPECT_EQ(seen[i], i + 2) << "read " << i;
}

// A view closed while its query is running gets no callback: the result is dropped on the UI
// thread, which is the only one that may ask whether the view still exists.
TEST_F(StoreWorkerTest, AContextDestroyedWhileItsQueryRunsGetsNoCallback) {
  StoreWorker worker(db_);
  auto context = std::make_unique<QObject>();
  std::promise<void> started, release;
  std::shared_future<void> released = release.get_future().share();
  bool called = false, failed = false;
  worker.query<int>(
      context.get(),
      [&started, released](RunStore& s) {
        started.set_value();
        released.wait();
        return static_cast<int>(s.runs().size());
      },
      [&](int) { called = true; }, [&](QString) { failed = true; });
  started.get_future().wait();  // the query is running on the store thread
  context.reset();
  release.set_value();
  worker.drain();
  // Deliver whatever the store thread handed back; a later query's result proves the inbox ran.
  QObject other;
  bool later = false;
  worker.query<int>(&other, [](RunStore&) { return 1; }, [&](int) { later = true; });
  ASSERT_TRUE(pump_until([&] { return later; }, 60000));
  EXPECT_FALSE(called);
  EXPECT_FALSE(failed);
}

// A failing query reports its message through failed() on the UI thread, or through
// errorOccurred when it has no failed(); a failing write through errorOccurred.
TEST_F(StoreWorkerTest, ErrorsComeBackAsTextOnTheOwnerThread) {
  StoreWorker worker(db_);
  QObject context;
  QStringList errors;
  QObject::connect(&worker, &StoreWorker::errorOccurred, &context, [&](const QString& m) { errors << m; });
  QString failed_with;
  worker.query<int>(
      &context, [](RunStore&) -> int { throw std::runtime_error("no such run 77"); }, [](int) {},
      [&](QString m) { failed_with = m; });
  worker.query<int>(&context, [](RunStore&) -> int { throw std::runtime_error("unread"); }, [](int) {});
  worker.execute([](RunStore&) { throw std::runtime_error("cannot write that"); });
  ASSERT_TRUE(pump_until([&] { return errors.size() == 2 && !failed_with.isEmpty(); }, 60000));
  EXPECT_EQ(failed_with, QStringLiteral("no such run 77"));
  EXPECT_EQ(errors, (QStringList{QStringLiteral("unread"), QStringLiteral("cannot write that")}));

  // A full disk and a damaged file say different things to do.
  worker.execute([](RunStore&) { throw sql::SqliteError("database or disk is full", SQLITE_FULL); });
  worker.execute([](RunStore&) { throw sql::SqliteError("database disk image is malformed", SQLITE_CORRUPT); });
  ASSERT_TRUE(pump_until([&] { return errors.size() == 4; }, 60000));
  EXPECT_TRUE(errors[2].contains("Free disk space")) << errors[2].toStdString();
  EXPECT_TRUE(errors[3].contains("is damaged (database disk image is malformed)") &&
              errors[3].contains("PRAGMA integrity_check") && !errors[3].contains("Free disk space"))
      << errors[3].toStdString();
}

// The workspace moved away while open: jobs fail with the reason, workspaceProblemChanged comes
// once when the problem starts (however many jobs fail) and once, empty, when it is back.
TEST_F(StoreWorkerTest, AWorkspaceMovedAwayIsReportedOnceAndItsReturnOnce) {
  StoreWorker worker(db_);
  QObject context;
  QStringList problems;
  QObject::connect(&worker, &StoreWorker::workspaceProblemChanged, &context,
                   [&](const QString& m) { problems << m; });
  int ok = 0;
  QStringList failures;
  auto count_runs = [&] {
    worker.query<size_t>(
        &context, [](RunStore& s) { return s.runs().size(); }, [&](size_t) { ++ok; },
        [&](QString m) { failures << m; });
  };
  count_runs();
  ASSERT_TRUE(pump_until([&] { return ok == 1; }, 60000));

  const std::string moved = (dir_.filePath(QStringLiteral("elsewhere.sqlite"))).toStdString();
  std::filesystem::rename(db_.toStdString(), moved);
  for (int i = 0; i < 3; ++i) count_runs();
  ASSERT_TRUE(pump_until([&] { return failures.size() == 3; }, 60000));
  for (const QString& f : failures) EXPECT_TRUE(f.contains(QStringLiteral("moved"))) << f.toStdString();
  ASSERT_EQ(problems.size(), 1);
  EXPECT_TRUE(problems[0].contains(db_)) << problems[0].toStdString();

  std::filesystem::rename(moved, db_.toStdString());
  count_runs();
  ASSERT_TRUE(pump_until([&] { return ok == 2; }, 60000));
  ASSERT_EQ(problems.size(), 2);
  EXPECT_TRUE(problems[1].isEmpty());
}

// The workspace's folder turns read-only while the window has it open (the file and its
// write-ahead log can no longer be written, nothing can be created beside them): what was stored
// can still be read, a write says what happened and what to do, and once the folder is writable
// again writes work again. Not covered, because no program survives it: a file system that
// turns read-only under SQLite's memory-mapped -shm file (ext4's errors=remount-ro) makes the
// next write into that mapping fault; what was committed before is still safe on disk.
TEST_F(StoreWorkerTest, AWorkspaceTurnedReadOnlyKeepsReadingAndSaysWhyWritesFail) {
  StoreWorker worker(db_);
  QObject context;
  QStringList errors;
  QObject::connect(&worker, &StoreWorker::errorOccurred, &context, [&](const QString& m) { errors << m; });
  std::vector<size_t> counts;
  auto count_runs = [&] {
    worker.query<size_t>(&context, [](RunStore& s) { return s.runs().size(); }, [&](size_t n) { counts.push_back(n); });
  };
  count_runs();  // opens the workspace (and its -wal / -shm files)
  ASSERT_TRUE(pump_until([&] { return counts.size() == 1; }, 60000));
  {
    // Not the -shm file: SQLite memory-maps it, and a store into a mapping of a file that can
    // no longer be written faults (SIGBUS), in any program that uses SQLite (see the note below).
    const std::string db = db_.toStdString();
    test::ReadOnlyFiles read_only({db, db + "-wal", dir_.path().toStdString()});
    if (!read_only.ok()) GTEST_SKIP() << "cannot make files immutable here (needs root and ext4, xfs or btrfs)";
    worker.execute([](RunStore& s) { s.create_run("refused", "preference", "{}"); });
    count_runs();
    ASSERT_TRUE(pump_until([&] { return counts.size() == 2 && errors.size() == 1; }, 60000));
    EXPECT_EQ(counts[1], 1u) << "what was stored is still read";
    EXPECT_TRUE(errors[0].contains(QStringLiteral("cannot be written"))) << errors[0].toStdString();
    EXPECT_TRUE(errors[0].contains(QStringLiteral("writable again"))) << errors[0].toStdString();
    EXPECT_TRUE(errors[0].contains(QStringLiteral("nothing already stored in it is lost"))) << errors[0].toStdString();
    std::printf("[ message  ] %s\n", errors[0].toStdString().c_str());
  }
  worker.execute([](RunStore& s) { s.create_run("accepted", "preference", "{}"); });
  count_runs();
  ASSERT_TRUE(pump_until([&] { return counts.size() == 3; }, 60000));
  EXPECT_EQ(counts[2], 2u) << "writable again: the write lands";
  EXPECT_EQ(errors.size(), 1);
}

// Closing the window with writes still queued: every write lands before the worker is gone, and
// no result is delivered afterwards (its receivers may be gone too).
TEST_F(StoreWorkerTest, ShutdownRunsQueuedWritesAndDeliversNothingAfter) {
  QObject context;
  int delivered = 0;
  {
    StoreWorker worker(db_);
    for (int i = 0; i < 25; ++i) {
      worker.execute([i](RunStore& s) { s.create_run("queued-" + std::to_string(i), "preference", "{}"); });
      worker.query<int>(&context, [](RunStore&) { return 0; }, [&](int) { ++delivered; });
    }
  }  // destroyed with everything still queued
  // Nothing is left to deliver: a bell still queued in the event loop finds no inbox.
  QCoreApplication::sendPostedEvents();
  QCoreApplication::processEvents();
  EXPECT_EQ(delivered, 0);
  EXPECT_EQ(RunStore::open(db_.toStdString()).runs().size(), 26u);
}

}  // namespace
}  // namespace ganpo::ui
