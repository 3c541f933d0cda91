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
// would have. Ending there loses nothing the new start needs: a step or an evaluation under way
// is done again, a checkpoint folder is written atomically and the new start goes on from the
// request's complete checkpoint (core/atomic_folder.h), and the run store's writes are SQLite
// transactions. Torch-free.
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>
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
  // 60 s. Gloo's collectives fail at once when a peer goes, so the watch ends nothing there but
  // a rank that hangs.
  static std::chrono::milliseconds grace_for(std::chrono::milliseconds timeout);

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
