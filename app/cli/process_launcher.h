// Starts the processes of a data-parallel run on this host, as torchrun does: one `ganpo`
// process per local rank, each told its place through RANK, WORLD_SIZE, LOCAL_RANK,
// LOCAL_WORLD_SIZE, MASTER_ADDR and MASTER_PORT, then watches them. When one fails, the others
// are stopped (SIGTERM, then SIGKILL after a grace period) so nothing waits on a dead rank; a
// SIGINT or SIGTERM to the launcher is passed on to every rank. On one host, a rank that ran out
// of memory with train.auto_find_batch_size may ask for every rank to be started again with a
// smaller batch from a checkpoint (core/relaunch_request.h): the launcher does so once all have
// ended, as torchrun's elastic restarts do. Torch-free.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace ganpo::cli {

struct LaunchPlan {
  int nproc_per_node = 1;
  int nnodes = 1;
  int node_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 0;  // 0 = a free port on this host (single-node runs only)
  std::vector<std::string> command;  // argv of each rank, without the program: {"train", "--config", ...}
  // Whether a rank may ask for every rank to be started again (train.auto_find_batch_size): only
  // where this launcher starts every rank (one host) and a new start goes on with the same run (a
  // workspace run started by `ganpo launch` would be taken as dead, or recorded anew).
  bool can_start_again = true;
};

struct LaunchOutcome {
  // 0 when every rank succeeded (in the last start, where they were started again); else the
  // first failed rank's (128 + signal when killed)
  int exit_code = 0;
  int failed_rank = -1;    // global rank of the first failure
  int killed_by = 0;       // the signal that ended that rank (0 where it exited)
  std::string message;     // "rank 1 (pid 123) was killed by signal 9 (Killed)"
  bool asked_again = false;  // the ranks ended asking to be started again, and were not (message says why)
  // For a rank killed by SIGKILL: whether the kernel's count of out-of-memory kills went up since
  // the ranks started (core/oom_kill_count.h; a user-space killer such as systemd-oomd is not
  // counted); none where it cannot be read.
  std::optional<bool> oom_killer;
};

// Runs the plan's ranks from this executable (/proc/self/exe) and waits for all of them.
LaunchOutcome launch_processes(const LaunchPlan& plan);

// `processes` ranks of `command` on this host (a free port), waited for; a failure is printed as
// "<who>: failed: rank ..." on stderr. Returns the outcome's exit code.
int launch_local_ranks(int64_t processes, std::vector<std::string> command, const char* who);

// A TCP port nobody listens on now, for a single host's rendezvous.
int free_local_port();

}  // namespace ganpo::cli
