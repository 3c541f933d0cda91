// Reading a process's place in a data-parallel run from its launcher's environment: torchrun
// style, Slurm, nothing (one process), and inconsistent values refused with what to set.
#include "core/distributed_env.h"

#include <gtest/gtest.h>

#include <map>
#include <string>

#include "core/error.h"
#include "tests/support/expect_contains.h"

namespace ganpo {
namespace {

DistributedEnv read(const std::map<std::string, std::string>& vars) {
  return read_distributed_env([&](const char* name) -> const char* {
    auto it = vars.find(name);
    return it == vars.end() ? nullptr : it->second.c_str();
  });
}

std::string refusal(const std::map<std::string, std::string>& vars) {
  try {
    read(vars);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "(accepted)";
}

TEST(DistributedEnv, NothingSetIsOneProcess) {
  const auto env = read({});
  EXPECT_FALSE(env.distributed());
  EXPECT_EQ(env.rank, 0);
  EXPECT_EQ(env.world_size, 1);
  EXPECT_EQ(env.describe(), "single process");
}

TEST(DistributedEnv, TorchrunVariables) {
  const auto env = read({{"RANK", "3"}, {"WORLD_SIZE", "4"}, {"LOCAL_RANK", "1"}, {"LOCAL_WORLD_SIZE", "2"},
                         {"MASTER_ADDR", "10.0.0.7"}, {"MASTER_PORT", "29611"}});
  EXPECT_TRUE(env.distributed());
  EXPECT_EQ(env.rank, 3);
  EXPECT_EQ(env.world_size, 4);
  EXPECT_EQ(env.local_rank, 1);
  EXPECT_EQ(env.local_world_size, 2);
  EXPECT_EQ(env.master_addr, "10.0.0.7");
  EXPECT_EQ(env.master_port, 29611);
  EXPECT_EQ(env.describe(), "rank 3 of 4 (local 1 of 2), rendezvous 10.0.0.7:29611, from the RANK/WORLD_SIZE environment");
}

TEST(DistributedEnv, TorchrunDefaultsLocalRankToRankOnOneHost) {
  const auto env = read({{"RANK", "1"}, {"WORLD_SIZE", "2"}});
  EXPECT_EQ(env.local_rank, 1);
  EXPECT_EQ(env.local_world_size, 2);
  EXPECT_EQ(env.master_addr, "127.0.0.1");
  EXPECT_EQ(env.master_port, kDefaultMasterPort);
}

TEST(DistributedEnv, SlurmVariables) {
  const auto env = read({{"SLURM_PROCID", "5"}, {"SLURM_NTASKS", "8"}, {"SLURM_LOCALID", "1"}, {"SLURM_STEP_ID", "0"},
                         {"SLURM_NTASKS_PER_NODE", "4(x2)"}, {"SLURM_LAUNCH_NODE_IPADDR", "192.168.1.20"}});
  EXPECT_EQ(env.source, "Slurm");
  EXPECT_EQ(env.rank, 5);
  EXPECT_EQ(env.world_size, 8);
  EXPECT_EQ(env.local_rank, 1);
  EXPECT_EQ(env.local_world_size, 4);
  EXPECT_EQ(env.master_addr, "192.168.1.20");
  // A job script's MASTER_ADDR wins over the launch node; RANK beats Slurm's own numbering.
  EXPECT_EQ(read({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "2"}, {"SLURM_STEPID", "3"}, {"MASTER_ADDR", "head"}}).master_addr,
            "head");
  EXPECT_EQ(read({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "2"}, {"RANK", "1"}, {"WORLD_SIZE", "2"}}).rank, 1);
}

TEST(DistributedEnv, ABatchScriptOutsideAnSrunStepTrainsAloneAndSaysSo) {
  // sbatch --ntasks=4 runs the script once, with the job's SLURM_NTASKS and SLURM_PROCID = 0.
  const auto env = read({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "4"}, {"SLURM_JOB_ID", "77"}});
  EXPECT_FALSE(env.distributed());
  EXPECT_CONTAINS(env.note, "SLURM_NTASKS = 4");
  EXPECT_CONTAINS(env.note, "srun ganpo train");
  EXPECT_EQ(read({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "1"}}).note, "");
}

TEST(DistributedEnv, InconsistentValuesAreRefusedWithWhatToSet) {
  EXPECT_CONTAINS(refusal({{"RANK", "0"}}), "RANK is set without WORLD_SIZE");
  EXPECT_CONTAINS(refusal({{"WORLD_SIZE", "2"}}), "WORLD_SIZE is set without RANK");
  EXPECT_CONTAINS(refusal({{"RANK", "2"}, {"WORLD_SIZE", "2"}}), "rank 2 is outside a world of 2 processes");
  EXPECT_CONTAINS(refusal({{"RANK", "x"}, {"WORLD_SIZE", "2"}}), "RANK = \"x\" is not a whole number");
  EXPECT_CONTAINS(refusal({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_PORT", "70000"}}),
                  "MASTER_PORT = \"70000\" is not a whole number from 1 to 65535");
  EXPECT_CONTAINS(refusal({{"RANK", "0"}, {"WORLD_SIZE", "0"}}), "WORLD_SIZE = \"0\"");
  EXPECT_CONTAINS(refusal({{"RANK", "1"}, {"WORLD_SIZE", "4"}, {"LOCAL_RANK", "2"}, {"LOCAL_WORLD_SIZE", "2"}}),
                  "local rank 2 is outside the 2 processes of this host");
}

// A launcher of one host names where a rank asks to be started again, and, once it started the
// ranks again, the batches to go on with (core/relaunch_request.h).
TEST(DistributedEnv, TheRelaunchFolderAndTheBatchesFound) {
  const std::map<std::string, std::string> place = {{"RANK", "1"}, {"WORLD_SIZE", "2"}};
  EXPECT_TRUE(read(place).relaunch_dir.empty());
  EXPECT_TRUE(read(place).batches_found.empty());
  auto vars = place;
  vars["GANPO_RELAUNCH_DIR"] = "/tmp/ganpo-launch-x";
  vars["GANPO_BATCHES_FOUND"] = "2,4,8";
  const auto env = read(vars);
  EXPECT_EQ(env.relaunch_dir, "/tmp/ganpo-launch-x");
  EXPECT_EQ(env.batches_found, (std::vector<int64_t>{2, 4, 8}));
  for (const char* bad : {"2,4", "2,4,8,1", "2,0,8", "2,x,8", "2,,8", "-2,4,8", "2,4,8,"}) {
    vars["GANPO_BATCHES_FOUND"] = bad;
    EXPECT_CONTAINS(refusal(vars), "GANPO_BATCHES_FOUND = \"" + std::string(bad) + "\" is not three positive whole numbers")
        << bad;
  }
}

}  // namespace
}  // namespace ganpo
