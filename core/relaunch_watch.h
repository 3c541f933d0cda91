// The last part of train.auto_find_batch_size's new starts (core/relaunch_request.h): a
// data-parallel rank that has not ended a while after a rank asked the launcher to start every
// rank again is ended, so the new start does not wait for it.
//
// A rank normally ends because its next collective fails once the rank that asked has gone. It
// may not: NCCL between the GPUs of one host does not notice a peer that has gone, so a rank
// waiting on a device all-reduce (or on a GPU that waits on one) would wait out
// train.dist_timeout_s (30 minutes by default) and then be aborted by NCCL's watchdog, which the
// launcher takes for a failure of the run, not for a request. The rank that asked may hang too,
// tearing its process group down.
//
// RelaunchWatch is a thread that lists the request folder twice a second. Once any rank's
// request (this one's included) has been there for `grace` and this process still runs, it
// writes why to stderr and ends the process with kRelaunchExitCode, as the failed collective
// would have; not while a NotNow lives (rank 0 writing a checkpoint, which the request may name).
// Ending there loses nothing the new start needs: a step or an evaluation under way is done
// again, a checkpoint folder is written atomically and the new start goes on from the request's
// complete checkpoint (core/atomic_folder.h), and the run store's writes are SQLite
// transactions. Torch-free.
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

namespace ganpo {

class RelaunchWatch {
public:
  RelaunchWatch(std::string dir, int rank, std::chrono::milliseconds grace);
  ~RelaunchWatch();  // stops the thread (the process goes on)
  RelaunchWatch(const RelaunchWatch&) = delete;
  RelaunchWatch& operator=(const RelaunchWatch&) = delete;

  // The grace for a run's collective timeout (train.dist_timeout_s): a tenth of it, from 5 s to
  // 60 s, and never more than half of it (NCCL's watchdog aborts a rank at the timeout). Gloo's
  // collectives fail at once when a peer goes, so there the watch ends only a rank that hangs.
  static std::chrono::milliseconds grace_for(std::chrono::milliseconds timeout);

  // While one lives (any thread), no watch ends this process: it finishes what it writes first.
  class NotNow {
  public:
    NotNow();
    ~NotNow();
    NotNow(const NotNow&) = delete;
    NotNow& operator=(const NotNow&) = delete;
  };

  // The watch's decision, apart from its thread and clock (tests drive it): at `now`, with a
  // request in the folder or not, and a NotNow living or not, whether to end the process.
  class Decision {
  public:
    explicit Decision(std::chrono::milliseconds grace) : grace_(grace) {}
    bool end_now(std::chrono::steady_clock::time_point now, bool request, bool not_now);

  private:
    std::chrono::milliseconds grace_;
    std::optional<std::chrono::steady_clock::time_point> seen_;  // when the request was first found
  };

private:
  void watch();
  const std::string dir_;
  const int rank_;
  const std::chrono::milliseconds grace_;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace ganpo
