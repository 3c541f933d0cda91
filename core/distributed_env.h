// Where this process sits in a data-parallel run, read from the environment its launcher set:
// `ganpo launch` and torchrun (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR,
// MASTER_PORT) or Slurm's srun (SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID, SLURM_NTASKS_PER_NODE
// in a step, i.e. with SLURM_STEP_ID; the rendezvous host is MASTER_ADDR when the job script sets
// it, else the node srun was started from). Nothing set means one process. Torch-free: the
// launcher and the tests read it too.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace ganpo {

inline constexpr int kDefaultMasterPort = 29500;

struct DistributedEnv {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;        // index on this host: the CUDA device a rank uses
  int local_world_size = 1;  // processes on this host
  std::string master_addr = "127.0.0.1";
  int master_port = kDefaultMasterPort;
  std::string source = "single process";  // or "RANK/WORLD_SIZE environment", "Slurm"
  std::string note;  // set when the environment looks like a launch that this process is not part of
  // From a launcher that starts every rank again where one asks (core/relaunch_request.h):
  // GANPO_RELAUNCH_DIR, where a rank writes its request, and, once started again,
  // GANPO_BATCHES_FOUND, the batches to go on with ({} = the config's), and
  // GANPO_RELAUNCH_REASON, the request's rank and why it asked, for the run's log.
  std::string relaunch_dir;
  std::vector<int64_t> batches_found;
  std::string relaunch_reason;

  bool distributed() const { return world_size > 1; }
  std::string describe() const;  // "rank 1 of 4 (local 1 of 2), rendezvous 10.0.0.1:29500, from Slurm"
};

using EnvLookup = std::function<const char*(const char*)>;

// Reads the variables through `lookup` (std::getenv by default). Inconsistent values (a rank
// outside the world, a port that is not a port, RANK without WORLD_SIZE) throw ConfigError
// naming the variable and what to set.
DistributedEnv read_distributed_env(const EnvLookup& lookup = nullptr);

}  // namespace ganpo
