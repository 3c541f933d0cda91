// RunRecorder: records one run into the workspace database (RunStore) as a RunObserver.
//
// Observer calls come from the training thread and must never stall a step, so they only push
// an item into a bounded queue (capacity items; when full the producer waits, nothing is ever
// dropped). A writer thread owns its own RunStore connection on the same path, drains the
// queue and commits one transaction per drained batch, at most ~250 ms after the first item of
// the batch was queued. on_status goes through the writer too but waits until its transaction
// is committed with synchronous=FULL (durable); checkpoint rows are committed durably as well.
// poll_control() reads and clears the run's control field on a third connection, at most once
// every 200 ms. The writer also stamps the worker's pid, host, heartbeat and last step with each
// batch, and at least every 2 s when idle, so a dead worker is noticed (RunStore::
// reap_dead_workers). on_start(total, first_step) deletes rows after first_step left by an
// earlier attempt of the same run, so a resumed run records no step twice; a failed status
// stores the message plus the run's last log lines. The destructor flushes everything queued
// and joins the writer. Another process holding the database locked (for seconds or minutes)
// only delays the writes; a disk that is full, a workspace that became read-only, or a
// workspace file deleted or moved away (SQLite would go on writing into the unlinked file)
// makes storage_failure() say so, and the trainer stops the run with that message.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>

#include "core/run_observer.h"
#include "db/run_store.h"

namespace ganpo {

class RunRecorder final : public RunObserver {
public:
  struct Options {
    size_t capacity = 10000;                          // queued items before producers wait
    std::chrono::milliseconds max_delay{250};         // oldest item's maximum wait before commit
    std::chrono::milliseconds control_interval{200};  // minimum time between control reads
    bool heartbeat = true;                            // write worker pid + heartbeat per batch
    std::chrono::milliseconds heartbeat_interval{2000};  // heartbeat when idle this long
    // The pid the heartbeats name as the run's worker: 0 = this process. Rank 0 of a
    // data-parallel run records for its launcher, which claimed the run and outlives every rank.
    int64_t worker_pid = 0;
    // A batch refused because another connection holds the database locked is tried again
    // (each try waits out SQLite's 5 s busy timeout) until it commits or this much time passed.
    std::chrono::milliseconds busy_give_up{std::chrono::minutes(10)};
    // A batch refused because the file cannot take writes (disk full, read-only, I/O error)
    // is tried this many times, retry_interval apart, then dropped; storage_failure() says so.
    int storage_attempts = 3;
    std::chrono::milliseconds retry_interval{1000};
  };

  // Opens the writer's connection (throws ganpo::Error if the store cannot be opened).
  RunRecorder(const std::string& db_path, int64_t run_id);
  RunRecorder(const std::string& db_path, int64_t run_id, Options options);
  ~RunRecorder() override;
  RunRecorder(const RunRecorder&) = delete;
  RunRecorder& operator=(const RunRecorder&) = delete;

  void on_status(const std::string& status, const std::string& message) override;
  void on_start(int64_t total_steps, int64_t first_step,
                const std::map<std::string, std::string>& info) override;
  void on_log(const std::string& level, const std::string& text) override;
  void on_metrics(int64_t step, const std::map<std::string, double>& metrics) override;
  void on_eval(int64_t step, const EvalReport& report) override;
  void on_samples(int64_t step, const std::vector<SampleRecord>& samples) override;
  void on_redo(int64_t step, bool evaluation, bool samples) override;
  void on_checkpoint(int64_t step, const std::string& path,
                     const std::map<std::string, double>& metrics) override;
  ControlCommand poll_control() override;

  // Non-empty once a write failed because the workspace cannot take writes: what happened and
  // what to do. The trainer stops the run with it.
  std::string storage_failure() const override;
  // Times a batch waited for another connection's lock and was tried again (for tests).
  int64_t busy_retries() const;

  // Blocks until everything queued so far is committed.
  void flush() override;
  // The last error the writer hit ("" if none). Writes that failed are reported here and on
  // stderr; the recorder keeps going rather than stalling or crashing the trainer.
  std::string last_error() const;
  int64_t run_id() const { return run_id_; }
  // Batches committed so far (for tests and benchmarks).
  int64_t batches_committed() const;

  // Maps a control string to a command; unknown strings map to None.
  static ControlCommand parse_control(const std::string& control);

private:
  struct Item {
    std::function<void(RunStore&)> write;
    bool durable = false;
    std::chrono::steady_clock::time_point queued;
  };
  void push(std::function<void(RunStore&)> write, bool durable);
  // Pushes and waits until committed.
  void push_and_wait(std::function<void(RunStore&)> write, bool durable);
  void writer_loop();
  // Commits the batch in one transaction, trying again while the database is locked or cannot
  // be written (see Options); then item by item, so one bad item does not lose the batch.
  // Returns the last error ("" when everything was written).
  std::string commit_batch(RunStore& store, std::deque<Item>& batch, int64_t pid);
  // Sets storage_failure_ when the workspace path no longer names the file opened (deleted,
  // moved, its folder gone or replaced).
  void check_file_still_there();
  void beat(RunStore& store, int64_t pid);
  std::optional<int64_t> last_step() const;

  std::string path_;
  int64_t run_id_;
  Options options_;
  std::unique_ptr<RunStore> writer_store_;
  std::optional<RunStore> control_store_;  // used by the polling (training) thread only
  std::chrono::steady_clock::time_point last_control_poll_{};
  std::atomic<int64_t> last_step_{-1};  // newest step seen by on_metrics (training thread)

  mutable std::mutex mutex_;
  std::condition_variable not_empty_, not_full_, committed_;
  std::deque<Item> queue_;
  uint64_t pushed_ = 0, done_ = 0;  // sequence numbers: items queued / items committed
  bool stopping_ = false, flush_now_ = false;
  int64_t batches_ = 0;
  std::string last_error_, storage_failure_;
  int64_t busy_retries_ = 0;
  std::thread writer_;
};

}  // namespace ganpo
