#include "core/relaunch_watch.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>

#include "core/relaunch_request.h"

namespace ganpo {

namespace {
std::atomic<int> g_not_now{0};
}

RelaunchWatch::NotNow::NotNow() { ++g_not_now; }
RelaunchWatch::NotNow::~NotNow() { --g_not_now; }

bool RelaunchWatch::Decision::end_now(std::chrono::steady_clock::time_point now, bool request, bool not_now) {
  if (!request) {  // (the launcher clears the folder only once every rank has ended)
    seen_.reset();
    return false;
  }
  if (!seen_) seen_ = now;
  return !not_now && now >= *seen_ + grace_;
}

RelaunchWatch::RelaunchWatch(std::string dir, int rank, std::chrono::milliseconds grace)
    : dir_(std::move(dir)), rank_(rank), grace_(grace), thread_([this] { watch(); }) {}

RelaunchWatch::~RelaunchWatch() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

std::chrono::milliseconds RelaunchWatch::grace_for(std::chrono::milliseconds timeout) {
  using std::chrono::seconds;
  return std::min<std::chrono::milliseconds>(std::clamp<std::chrono::milliseconds>(timeout / 10, seconds(5), seconds(60)),
                                             timeout / 2);
}

void RelaunchWatch::watch() {
  Decision decision(grace_);
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    if (wake_.wait_for(lock, std::chrono::milliseconds(500), [this] { return stop_; })) return;
    try {
      const auto request = read_relaunch_request(dir_);
      if (!decision.end_now(std::chrono::steady_clock::now(), request.has_value(), g_not_now.load() > 0)) continue;
      // write(2), not stdio: the main thread may hold stdio's lock where it waits.
      const std::string line =
          "rank " + std::to_string(rank_) + ": rank " + std::to_string(request->rank) +
          " asked the launcher to start every rank again (train.auto_find_batch_size), and " +
          (request->rank == rank_ ? "this process has not ended " : "this rank has not ended with it ") +
          std::to_string(std::chrono::duration_cast<std::chrono::seconds>(grace_).count()) +
          " s later (it waits on something that has not noticed: an NCCL collective between the GPUs of one host, "
          "say): it ends now, to be started again\n";
      [[maybe_unused]] const ssize_t written = ::write(STDERR_FILENO, line.data(), line.size());
      ::_exit(kRelaunchExitCode);
    } catch (const std::exception&) {
      // (A folder that cannot be read now is read again at the next look.)
    }
  }
}

}  // namespace ganpo
