#include "db/run_recorder.h"

#include <unistd.h>

#include <iostream>
#include <thread>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/fault_points.h"
#include "db/sqlite_handle.h"

namespace ganpo {

namespace {

std::string metrics_json(const std::map<std::string, double>& metrics) {
  nlohmann::json j = nlohmann::json::object();
  for (const auto& [k, v] : metrics) {
    if (std::isfinite(v))
      j[k] = v;
    else
      j[k] = nullptr;
  }
  return j.dump();
}

}  // namespace

RunRecorder::RunRecorder(const std::string& db_path, int64_t run_id)
    : RunRecorder(db_path, run_id, Options{}) {}

RunRecorder::RunRecorder(const std::string& db_path, int64_t run_id, Options options)
    : path_(db_path), run_id_(run_id), options_(options) {
  if (options_.capacity == 0) options_.capacity = 1;
  // Opened here so a bad path fails loudly at construction; used only by the writer thread
  // from now on (handing a connection to one other thread, never sharing it, is fine).
  writer_store_ = std::make_unique<RunStore>(RunStore::open(db_path));
  writer_ = std::thread([this] { writer_loop(); });
}

RunRecorder::~RunRecorder() {
  {
    std::lock_guard<std::mutex> lk(mutex_);
    stopping_ = true;
  }
  not_empty_.notify_all();
  if (writer_.joinable()) writer_.join();
}

ControlCommand RunRecorder::parse_control(const std::string& control) {
  if (control == "pause") return ControlCommand::Pause;
  if (control == "resume") return ControlCommand::Resume;
  if (control == "stop") return ControlCommand::Stop;
  if (control == "sample") return ControlCommand::Sample;
  if (control == "checkpoint") return ControlCommand::Checkpoint;
  return ControlCommand::None;
}

void RunRecorder::push(std::function<void(RunStore&)> write, bool durable) {
  {
    std::unique_lock<std::mutex> lk(mutex_);
    not_full_.wait(lk, [&] { return queue_.size() < options_.capacity; });
    queue_.push_back(Item{std::move(write), durable, std::chrono::steady_clock::now()});
    ++pushed_;
    if (durable) flush_now_ = true;
  }
  not_empty_.notify_one();
}

void RunRecorder::push_and_wait(std::function<void(RunStore&)> write, bool durable) {
  std::unique_lock<std::mutex> lk(mutex_);
  not_full_.wait(lk, [&] { return queue_.size() < options_.capacity; });
  queue_.push_back(Item{std::move(write), durable, std::chrono::steady_clock::now()});
  uint64_t seq = ++pushed_;
  flush_now_ = true;
  not_empty_.notify_one();
  committed_.wait(lk, [&] { return done_ >= seq; });
}

void RunRecorder::flush() {
  std::unique_lock<std::mutex> lk(mutex_);
  uint64_t seq = pushed_;
  if (done_ >= seq) return;
  flush_now_ = true;
  not_empty_.notify_one();
  committed_.wait(lk, [&] { return done_ >= seq; });
}

std::string RunRecorder::last_error() const {
  std::lock_guard<std::mutex> lk(mutex_);
  return last_error_;
}

int64_t RunRecorder::batches_committed() const {
  std::lock_guard<std::mutex> lk(mutex_);
  return batches_;
}

void RunRecorder::writer_loop() {
  RunStore& store = *writer_store_;
  const int64_t pid = options_.worker_pid > 0 ? options_.worker_pid : static_cast<int64_t>(::getpid());
  for (;;) {
    std::deque<Item> batch;
    {
      std::unique_lock<std::mutex> lk(mutex_);
      not_empty_.wait_for(lk, options_.heartbeat_interval, [&] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) {
        if (stopping_) break;  // stopping and drained
        lk.unlock();
        // Nothing to write for a while (a long step, a pause): still tell readers we live.
        if (options_.heartbeat) beat(store, pid);
        check_file_still_there();
        continue;
      }
      const auto deadline = queue_.front().queued + options_.max_delay;
      not_empty_.wait_until(lk, deadline, [&] {
        return stopping_ || flush_now_ || queue_.size() * 2 >= options_.capacity;
      });
      batch.swap(queue_);
      flush_now_ = false;
    }
    not_full_.notify_all();

    bool durable = false;
    for (const auto& item : batch) durable = durable || item.durable;
    if (durable) {
      try {
        store.database().exec("PRAGMA synchronous=FULL");
      } catch (const std::exception&) {
      }
    }
    const std::string error = commit_batch(store, batch, pid);
    check_file_still_there();
    if (durable) {
      try {
        store.database().exec("PRAGMA synchronous=NORMAL");
      } catch (const std::exception&) {
      }
    }
    if (!error.empty()) std::cerr << "run store: " << error << "\n";
    {
      std::lock_guard<std::mutex> lk(mutex_);
      done_ += batch.size();
      ++batches_;
      if (!error.empty()) last_error_ = error;
    }
    committed_.notify_all();
  }
}

std::string RunRecorder::commit_batch(RunStore& store, std::deque<Item>& batch, int64_t pid) {
  const auto started = std::chrono::steady_clock::now();
  for (int storage_failures = 0;;) {
    try {
      sql::Transaction txn(store.database());  // BEGIN IMMEDIATE: waits for the write lock up front
      for (auto& item : batch) item.write(store);
      if (options_.heartbeat) store.heartbeat(run_id_, pid, last_step());
      fault_point("store.batch_written");
      txn.commit();
      return "";
    } catch (const sql::SqliteError& e) {
      if (e.is_busy()) {
        if (std::chrono::steady_clock::now() - started >= options_.busy_give_up)
          return e.what() + std::string("; ") + std::to_string(batch.size()) + " record(s) of run " +
                 std::to_string(run_id_) + " were not written: the workspace stayed locked by another program";
        {
          std::lock_guard<std::mutex> lk(mutex_);
          ++busy_retries_;
        }
        // SQLite's busy timeout has waited already; a short pause covers the cases it does not.
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        continue;
      }
      if (e.is_storage_failure()) {
        if (++storage_failures < options_.storage_attempts) {
          std::this_thread::sleep_for(options_.retry_interval);
          continue;
        }
        // Said only now, after the retries: a disk that had room again a moment later stops nothing.
        std::lock_guard<std::mutex> lk(mutex_);
        storage_failure_ =
            e.is_corrupt()
                ? std::string("the workspace ") + path_ + " is damaged (" + e.what() + "); check it with sqlite3 '" +
                      path_ + "' 'PRAGMA integrity_check' and restore a backup, then resume the run: it continues "
                      "from its last complete checkpoint, and its output folder keeps metrics.jsonl"
                : std::string("the workspace ") + path_ + " cannot be written (" + e.what() +
                      "); free disk space on its drive (df -h) or make the folder writable again, "
                      "then resume the run: it continues from its last complete checkpoint";
        return e.what() + std::string("; ") + std::to_string(batch.size()) + " record(s) of run " +
               std::to_string(run_id_) + " were not written";
      }
      break;
    } catch (const std::exception&) {
      break;
    }
  }
  // One bad item must not lose the batch: each item in its own transaction (stopping at a lock
  // or a storage failure, which would only repeat for every item).
  std::string error;
  for (auto& item : batch) {
    try {
      sql::Transaction txn(store.database());
      item.write(store);
      txn.commit();
    } catch (const sql::SqliteError& e) {
      error = e.what();
      if (e.is_busy() || e.is_storage_failure()) break;
    } catch (const std::exception& e) {
      error = e.what();
    }
  }
  return error;
}

void RunRecorder::check_file_still_there() {
  // SQLite keeps writing to an open file that was deleted or moved: nobody would ever read it.
  if (writer_store_->still_at_path()) return;
  std::lock_guard<std::mutex> lk(mutex_);
  if (storage_failure_.empty())
    storage_failure_ = "the workspace " + path_ +
                       " was deleted, moved or replaced while the run was recording into it; put it back "
                       "(or restore its folder), then resume the run: it continues from its last complete checkpoint";
}

std::string RunRecorder::storage_failure() const {
  std::lock_guard<std::mutex> lk(mutex_);
  return storage_failure_;
}

int64_t RunRecorder::busy_retries() const {
  std::lock_guard<std::mutex> lk(mutex_);
  return busy_retries_;
}

void RunRecorder::beat(RunStore& store, int64_t pid) {
  try {
    store.heartbeat(run_id_, pid, last_step());
  } catch (const std::exception& e) {
    std::lock_guard<std::mutex> lk(mutex_);
    last_error_ = e.what();
  }
}

std::optional<int64_t> RunRecorder::last_step() const {
  const int64_t s = last_step_.load();
  return s >= 0 ? std::optional<int64_t>(s) : std::nullopt;
}

void RunRecorder::on_status(const std::string& status_text, const std::string& message) {
  const int64_t id = run_id_;
  // The engine reports its statuses as text (core knows nothing of the store).
  const std::optional<RunStatus> parsed = parse_run_status(status_text);
  GANPO_ASSERT(parsed.has_value(), "the trainer reported an unknown run status " + status_text);
  const RunStatus status = *parsed;
  push_and_wait(
      [id, status, message](RunStore& s) {
        std::string error;
        if (status == RunStatus::failed) {
          // The reason plus what led to it, so a failed run explains itself in any viewer.
          const std::string tail = s.last_log_lines(id, 10);
          error = tail.empty() ? message : message + "\n--- last log lines ---\n" + tail;
        }
        s.set_status(id, status, error);
        s.add_event(id, status == RunStatus::failed ? "error" : "info",
                    std::string("status: ") + to_string(status) + (message.empty() ? "" : " (" + message + ")"));
      },
      true);
}

void RunRecorder::on_start(int64_t total_steps, int64_t first_step,
                           const std::map<std::string, std::string>& info) {
  const int64_t id = run_id_;
  std::string text = "start: " + std::to_string(total_steps) + " steps, first step " + std::to_string(first_step);
  for (const auto& [k, v] : info) text += ", " + k + "=" + v;
  auto dev = info.find("device");
  std::string device = dev == info.end() ? "" : dev->second;
  // A stage that starts at step S in this run row (fresh: S = 0, resumed: the checkpoint's step)
  // recomputes every step after S, so rows recorded after S by an earlier attempt go first.
  const int64_t keep_through = first_step > 0 ? first_step : -1;
  last_step_.store(keep_through);
  push(
      [id, text, device, total_steps, keep_through](RunStore& s) {
        s.rewind(id, keep_through);
        s.set_total_steps(id, total_steps);
        if (!device.empty()) s.set_device(id, device);
        s.add_event(id, "info", text);
      },
      false);
}

void RunRecorder::on_log(const std::string& level, const std::string& text) {
  const int64_t id = run_id_;
  const double t = unix_now();
  push([id, level, text, t](RunStore& s) { s.add_event(id, level, text, t); }, false);
}

void RunRecorder::on_metrics(int64_t step, const std::map<std::string, double>& metrics) {
  if (metrics.empty()) return;
  if (step > last_step_.load()) last_step_.store(step);
  const double wall = unix_now();
  std::optional<double> tokens;
  if (auto it = metrics.find("tokens_seen"); it != metrics.end()) tokens = it->second;
  std::vector<MetricRow> rows;
  rows.reserve(metrics.size());
  for (const auto& [k, v] : metrics) {
    MetricRow r;
    r.run_id = run_id_;
    r.step = step;
    r.key = k;
    r.value = v;
    r.wall_time = wall;
    r.tokens_seen = tokens;
    rows.push_back(std::move(r));
  }
  push([rows = std::move(rows)](RunStore& s) { s.append_metrics(rows); }, false);
}

void RunRecorder::on_eval(int64_t step, const EvalReport& report) {
  const int64_t id = run_id_;
  std::string json = to_json_text(report);
  push([id, step, json](RunStore& s) { s.add_eval(id, step, "eval", "{}", json); }, false);
}

void RunRecorder::on_redo(int64_t step, bool evaluation, bool samples) {
  const int64_t id = run_id_;
  push([id, step, evaluation, samples](RunStore& s) { s.drop_redone_rows(id, step, evaluation, samples); }, false);
}

void RunRecorder::on_samples(int64_t step, const std::vector<SampleRecord>& samples) {
  if (samples.empty()) return;
  const int64_t id = run_id_;
  std::vector<SampleRow> rows;
  rows.reserve(samples.size());
  for (const auto& s : samples) {
    SampleRow r;
    r.run_id = id;
    r.step = step;
    r.prompt_index = s.prompt_index;
    r.prompt = s.prompt;
    r.policy_text = s.policy;
    r.reference_text = s.reference;
    r.policy_score = s.policy_score;
    r.reference_score = s.reference_score;
    rows.push_back(std::move(r));
  }
  push([id, step, rows = std::move(rows)](RunStore& s) { s.add_samples(id, step, rows); }, false);
}

void RunRecorder::on_checkpoint(int64_t step, const std::string& path,
                                const std::map<std::string, double>& metrics) {
  const int64_t id = run_id_;
  std::string json = metrics_json(metrics);
  // Waits for the durable commit: a resume trusts this index, so a checkpoint the trainer has
  // moved past must be in it.
  push_and_wait([id, step, path, json](RunStore& s) { s.add_checkpoint(id, step, path, json); }, true);
}

ControlCommand RunRecorder::poll_control() {
  const auto now = std::chrono::steady_clock::now();
  if (last_control_poll_.time_since_epoch().count() != 0 &&
      now - last_control_poll_ < options_.control_interval)
    return ControlCommand::None;
  last_control_poll_ = now;
  try {
    if (!control_store_) control_store_.emplace(RunStore::open(path_));
    return parse_control(control_store_->take_control(run_id_));
  } catch (const std::exception& e) {
    std::lock_guard<std::mutex> lk(mutex_);
    last_error_ = e.what();
    return ControlCommand::None;
  }
}

}  // namespace ganpo
