#include "core/relaunch_watch.h"

#include <unistd.h>

#include <algorithm>
#include <optional>

#include "core/relaunch_request.h"

namespace ganpo {

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
  return std::clamp<std::chrono::milliseconds>(timeout / 10, std::chrono::seconds(5), std::chrono::seconds(60));
}

void RelaunchWatch::watch() {
  using Clock = std::chrono::steady_clock;
  std::optional<Clock::time_point> seen;  // when a request was first found
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    const auto poll = std::chrono::milliseconds(500);
    const auto wait = seen ? std::min<Clock::duration>(poll, *seen + grace_ - Clock::now()) : Clock::duration(poll);
    if (wake_.wait_for(lock, wait, [this] { return stop_; })) return;
    if (!seen) {
      if (read_relaunch_request(dir_)) seen = Clock::now();
      continue;
    }
    if (Clock::now() < *seen + grace_) continue;
    const auto request = read_relaunch_request(dir_);
    if (!request) {  // (the launcher clears the folder only once every rank has ended)
      seen.reset();
      continue;
    }
    // write(2), not stdio: the main thread may hold stdio's lock where it hangs.
    const std::string line =
        "rank " + std::to_string(rank_) + ": rank " + std::to_string(request->rank) +
        " asked the launcher to start every rank again (train.auto_find_batch_size), and " +
        (request->rank == rank_ ? "this process has not ended " : "this rank has not ended with it ") +
        std::to_string(std::chrono::duration_cast<std::chrono::seconds>(grace_).count()) +
        " s later (waiting on a collective that has not noticed, as NCCL's between the GPUs of one host does not): "
        "it ends now, to be started again\n";
    [[maybe_unused]] const ssize_t written = ::write(STDERR_FILENO, line.data(), line.size());
    ::_exit(kRelaunchExitCode);
  }
}

}  // namespace ganpo
