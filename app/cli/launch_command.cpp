#include <algorithm>
#include <cstdio>

#include "app/cli/commands.h"
#include "app/cli/process_launcher.h"
#include "core/error.h"

namespace ganpo::cli {

int launch_command(const LaunchArgs& args) {
  if (args.command.empty() || args.command.front() != "train") {
    std::fprintf(stderr, "ganpo launch: give the command each process runs after the options, e.g. ganpo launch "
                         "--nproc-per-node 2 train --config RUN.toml\n");
    return 2;
  }
  // Passed on as MASTER_PORT, whose check in every rank blamed the environment variable.
  if (args.master_port < 0 || args.master_port > 65535) {
    std::fprintf(stderr, "ganpo launch: --master-port must be a port from 1 to 65535 (or 0 for a free one), got %d\n",
                 args.master_port);
    return 2;
  }
  LaunchPlan plan;
  plan.nproc_per_node = args.nproc_per_node;
  plan.nnodes = args.nnodes;
  plan.node_rank = args.node_rank;
  plan.master_addr = args.master_addr;
  plan.master_port = args.master_port;
  plan.command = args.command;
  plan.can_start_again = std::find(args.command.begin(), args.command.end(), "--no-db") != args.command.end();
  try {
    const LaunchOutcome outcome = launch_processes(plan);
    if (outcome.failed_rank >= 0) std::fprintf(stderr, "ganpo launch: failed: %s\n", outcome.message.c_str());
    return outcome.exit_code;
  } catch (const Error& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 2;
  }
}

}  // namespace ganpo::cli
