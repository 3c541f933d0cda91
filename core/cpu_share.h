// Fair shares of the CPU between the ganpo jobs computing on one machine at the same time.
//
// Two runs started together on a 2-core machine must not each take both cores (four busy
// threads on two cores make both slower than one after the other). Every process that
// computes on the CPU (a training worker, the workbench's generation thread while it
// generates) holds a CpuShare: an exclusive flock on its own file in a folder shared by the
// user's processes. participants() counts the files whose lock is held; the kernel drops a
// lock when its process exits, even by SIGKILL, so a crashed job never keeps its share and
// its file is removed by the next count. The trainer re-plans its threads from the count every
// few seconds (cpu_runtime.h), so a run that is alone again takes the whole machine back.
#pragma once

#include <string>

namespace ganpo {

class CpuShare {
public:
  // Joins the folder `dir` (created if missing); default_cpu_share_dir() when empty. A folder
  // that cannot be used leaves the share detached: participants() is then 1.
  explicit CpuShare(std::string dir = {});
  ~CpuShare();
  CpuShare(const CpuShare&) = delete;
  CpuShare& operator=(const CpuShare&) = delete;

  // Live participants, this one included (>= 1). Removes the files of dead processes.
  int participants() const;
  bool attached() const { return fd_ >= 0; }
  const std::string& dir() const { return dir_; }

private:
  std::string dir_, path_;
  int fd_ = -1;
};

// $GANPO_CPU_SHARE_DIR, else $XDG_RUNTIME_DIR/ganpo-workbench/cpu-share, else
// /tmp/ganpo-workbench-<uid>/cpu-share.
std::string default_cpu_share_dir();

}  // namespace ganpo
