#include "core/distributed_env.h"

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <optional>

#include "core/error.h"
#include "core/relaunch_request.h"

namespace ganpo {
namespace {

std::optional<std::string> value(const EnvLookup& lookup, const char* name) {
  const char* v = lookup(name);
  if (v == nullptr || *v == '\0') return std::nullopt;
  return std::string(v);
}

int integer(const EnvLookup& lookup, const char* name, int fallback, int min, int max) {
  const auto v = value(lookup, name);
  if (!v) return fallback;
  char* end = nullptr;
  errno = 0;
  const long n = std::strtol(v->c_str(), &end, 10);
  if (errno != 0 || end == v->c_str() || *end != '\0' || n < min || n > max)
    throw ConfigError(std::string(name) + " = \"" + *v + "\" is not a whole number from " + std::to_string(min) +
                      " to " + std::to_string(max) + "; fix or unset it (the launcher sets it for each process)");
  return static_cast<int>(n);
}

constexpr int kMaxWorld = 1 << 20;

}  // namespace

std::string DistributedEnv::describe() const {
  if (!distributed()) return "single process";
  return "rank " + std::to_string(rank) + " of " + std::to_string(world_size) + " (local " + std::to_string(local_rank) +
         " of " + std::to_string(local_world_size) + "), rendezvous " + master_addr + ":" + std::to_string(master_port) +
         ", from the " + source;
}

DistributedEnv read_distributed_env(const EnvLookup& lookup_in) {
  const EnvLookup lookup = lookup_in ? lookup_in : [](const char* name) -> const char* { return std::getenv(name); };
  DistributedEnv env;
  const bool torchrun = value(lookup, "RANK") || value(lookup, "WORLD_SIZE");
  // Slurm's task variables count only inside a step srun started (it sets SLURM_STEP_ID): a batch
  // script's own shell sees the job's SLURM_NTASKS too, yet it is one process.
  const bool in_step = value(lookup, "SLURM_STEP_ID") || value(lookup, "SLURM_STEPID");
  const bool slurm = !torchrun && in_step && value(lookup, "SLURM_PROCID") && value(lookup, "SLURM_NTASKS");
  if (const auto tasks = value(lookup, "SLURM_NTASKS"); !torchrun && !slurm && tasks && std::atoll(tasks->c_str()) > 1)
    env.note = "the Slurm job has SLURM_NTASKS = " + *tasks +
               " but this process was not started by srun (no SLURM_STEP_ID), so it trains alone; start one "
               "process per task with `srun ganpo train ...`";
  if (torchrun) {
    if (!value(lookup, "RANK") || !value(lookup, "WORLD_SIZE"))
      throw ConfigError(std::string(value(lookup, "RANK") ? "RANK is set without WORLD_SIZE"
                                                          : "WORLD_SIZE is set without RANK") +
                        "; a launcher sets both for every process (ganpo launch, torchrun), or unset both "
                        "for a single-process run");
    env.source = "RANK/WORLD_SIZE environment";
    env.world_size = integer(lookup, "WORLD_SIZE", 1, 1, kMaxWorld);
    env.rank = integer(lookup, "RANK", 0, 0, kMaxWorld);
    env.local_rank = integer(lookup, "LOCAL_RANK", env.rank, 0, kMaxWorld);
    env.local_world_size = integer(lookup, "LOCAL_WORLD_SIZE", env.world_size, 1, kMaxWorld);
    if (const auto dir = value(lookup, kRelaunchDirVariable)) env.relaunch_dir = *dir;
    if (const auto found = value(lookup, kBatchesFoundVariable)) env.batches_found = parse_batches(*found, kBatchesFoundVariable);
    if (const auto why = value(lookup, kRelaunchReasonVariable)) env.relaunch_reason = *why;
  } else if (slurm) {
    env.source = "Slurm";
    env.world_size = integer(lookup, "SLURM_NTASKS", 1, 1, kMaxWorld);
    env.rank = integer(lookup, "SLURM_PROCID", 0, 0, kMaxWorld);
    env.local_rank = integer(lookup, "SLURM_LOCALID", 0, 0, kMaxWorld);
    // "4" or "4(x2)": tasks per node, the same on every node here.
    if (const auto per_node = value(lookup, "SLURM_NTASKS_PER_NODE"))
      env.local_world_size = std::max(1, std::atoi(per_node->c_str()));
    else
      env.local_world_size = env.world_size;
    if (const auto launch_host = value(lookup, "SLURM_LAUNCH_NODE_IPADDR")) env.master_addr = *launch_host;
  } else {
    return env;
  }
  if (env.rank >= env.world_size)
    throw ConfigError("rank " + std::to_string(env.rank) + " is outside a world of " + std::to_string(env.world_size) +
                      " processes (" + env.source + "); ranks run from 0 to WORLD_SIZE - 1");
  if (env.local_rank >= env.local_world_size)
    throw ConfigError("local rank " + std::to_string(env.local_rank) + " is outside the " +
                      std::to_string(env.local_world_size) + " processes of this host (" + env.source + ")");
  if (const auto addr = value(lookup, "MASTER_ADDR")) env.master_addr = *addr;
  env.master_port = integer(lookup, "MASTER_PORT", kDefaultMasterPort, 1, 65535);
  return env;
}

}  // namespace ganpo
