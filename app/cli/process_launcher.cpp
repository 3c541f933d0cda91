#include "app/cli/process_launcher.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <optional>
#include <stdexcept>
#include <thread>

#include "core/atomic_folder.h"
#include "core/error.h"
#include "core/oom_kill_count.h"
#include "core/relaunch_request.h"

namespace ganpo::cli {
namespace {

std::atomic<int> g_forward_signal{0};
void remember_signal(int sig) { g_forward_signal.store(sig); }

constexpr auto kGrace = std::chrono::seconds(10);  // between SIGTERM and SIGKILL for the survivors

struct Rank {
  int global = 0;
  pid_t pid = -1;
  bool running = false;
};

// What a start of the ranks adds to their environment (NAME=value) and takes from it (NAME=).
struct Start {
  std::vector<std::string> set;
  std::vector<std::string> unset;
};

pid_t spawn(const LaunchPlan& plan, const Start& start, int local_rank, int global_rank, int world, int port) {
  // Everything the child needs is built here: between fork and exec only async-signal-safe calls.
  std::vector<std::string> place = {
      "RANK=" + std::to_string(global_rank),          "WORLD_SIZE=" + std::to_string(world),
      "LOCAL_RANK=" + std::to_string(local_rank),     "LOCAL_WORLD_SIZE=" + std::to_string(plan.nproc_per_node),
      "MASTER_ADDR=" + plan.master_addr,              "MASTER_PORT=" + std::to_string(port),
      "GROUP_RANK=" + std::to_string(plan.node_rank),
  };
  place.insert(place.end(), start.set.begin(), start.set.end());
  auto overridden = [&](const char* entry) {
    const auto named = [&](const std::string& v) { return std::strncmp(entry, v.c_str(), v.find('=') + 1) == 0; };
    return std::any_of(place.begin(), place.end(), named) || std::any_of(start.unset.begin(), start.unset.end(), named);
  };
  std::vector<char*> envp;
  for (char** e = environ; *e != nullptr; ++e)
    if (!overridden(*e)) envp.push_back(*e);
  for (const auto& v : place) envp.push_back(const_cast<char*>(v.c_str()));
  envp.push_back(nullptr);
  std::string self = "ganpo";
  std::vector<char*> argv{self.data()};
  for (const auto& a : plan.command) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  const std::string cannot_start = "ganpo launch: cannot start rank " + std::to_string(global_rank) + "\n";

  const pid_t launcher = ::getpid();
  const pid_t pid = ::fork();
  if (pid != 0) return pid;
  // The child: this same program with the rank's command and its place in the world. Should the
  // launcher die (even by SIGKILL), the rank gets SIGTERM: it stops with its peers instead of
  // training on with nobody to watch it (and the launcher may have died before this line).
  ::signal(SIGINT, SIG_DFL);
  ::signal(SIGTERM, SIG_DFL);
  ::prctl(PR_SET_PDEATHSIG, SIGTERM);
  if (::getppid() != launcher) ::_exit(143);
  ::execve("/proc/self/exe", argv.data(), envp.data());
  [[maybe_unused]] const ssize_t n = ::write(STDERR_FILENO, cannot_start.data(), cannot_start.size());
  ::_exit(127);
}

std::string describe_exit(int status) {
  if (WIFSIGNALED(status)) {
    const int sig = WTERMSIG(status);
    return std::string("was killed by signal ") + std::to_string(sig) + " (" + ::strsignal(sig) + ")";
  }
  if (WEXITSTATUS(status) == kRelaunchExitCode)
    return "exited with code " + std::to_string(kRelaunchExitCode) + " (to be started again with a smaller batch)";
  return "exited with code " + std::to_string(WEXITSTATUS(status));
}

int exit_code_of(int status) { return WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status); }

}  // namespace

int launch_local_ranks(int64_t processes, std::vector<std::string> command, const char* who) {
  LaunchPlan plan;
  plan.nproc_per_node = static_cast<int>(processes);
  plan.command = std::move(command);
  const LaunchOutcome outcome = launch_processes(plan);
  if (outcome.failed_rank >= 0) std::fprintf(stderr, "%s: failed: %s\n", who, outcome.message.c_str());
  return outcome.exit_code;
}

int free_local_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) throw Error(std::string("cannot open a socket to find a free port: ") + std::strerror(errno));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof addr;
  const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
                  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0;
  ::close(fd);
  if (!ok) throw Error(std::string("cannot find a free local port: ") + std::strerror(errno));
  return ntohs(addr.sin_port);
}

namespace {

bool asks_to_start_again(int status) { return WIFEXITED(status) && WEXITSTATUS(status) == kRelaunchExitCode; }

// One start of the plan's ranks, waited for until every one has ended. `signalled`: a SIGINT or
// SIGTERM to the launcher was passed on to them (a person stopping the run). `only_asked_again`:
// every rank that failed ended asking to be started again (kRelaunchExitCode, or SIGKILL where
// it left a standing request in `relaunch_dir`: the system ended it for its memory), and none
// stopped on request (the run's stop command).
LaunchOutcome run_ranks(const LaunchPlan& plan, const Start& start, const std::string& relaunch_dir, bool& signalled,
                        bool& only_asked_again) {
  const int port = plan.master_port > 0 ? plan.master_port : free_local_port();
  const int world = plan.nproc_per_node * plan.nnodes;
  const std::optional<int64_t> oom_kills_at_start = oom_kill_count();  // (before any rank can be ended)
  std::vector<Rank> ranks;
  for (int local = 0; local < plan.nproc_per_node; ++local) {
    const int global = plan.node_rank * plan.nproc_per_node + local;
    ranks.push_back({global, spawn(plan, start, local, global, world, port), true});
  }

  LaunchOutcome outcome;
  bool stopping = false;  // SIGTERM sent to the survivors
  bool kill_pending = false;
  std::chrono::steady_clock::time_point kill_at{};  // when the survivors get SIGKILL
  auto signal_all = [&](int sig) {
    for (auto& r : ranks)
      if (r.running) ::kill(r.pid, sig);
  };
  for (;;) {
    bool any_running = false;
    // The ranks found failed in this pass. A rank killed by a signal is named before one that
    // exited with an error: when one dies, its peers' collectives fail at once, and they may be
    // found in the same pass, but the killed one is the cause.
    struct Failure {
      const Rank* rank;
      pid_t done;
      int status;
      bool asks_again;  // it ended asking to be started again, or it was ended where it stood so
      std::optional<bool> oom_killer;  // (LaunchOutcome::oom_killer)
    };
    std::vector<Failure> failures;
    for (auto& r : ranks) {
      if (!r.running) continue;
      int status = 0;
      const pid_t done = ::waitpid(r.pid, &status, WNOHANG);
      if (done == 0) {
        any_running = true;
        continue;
      }
      r.running = false;
      // 130: the rank stopped on request (a signal passed on, or the run's stop command), saving
      // a checkpoint; every rank agrees on a stop, so the others are stopping too.
      const bool stopped = done > 0 && WIFEXITED(status) && WEXITSTATUS(status) == 130;
      if (stopped && outcome.exit_code == 0) outcome.exit_code = 130;
      if (stopped) only_asked_again = false;  // a stop asked for is never followed by a new start
      if (stopped || (done > 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0)) continue;
      // A rank ended by SIGKILL: most likely an out-of-memory killer's doing, the kernel's where it
      // counted a kill since the ranks started. (Where it did not, a user-space one such as
      // systemd-oomd or earlyoom, which the kernel does not count, is still likelier than a
      // person's kill -9: the count makes the message surer, never the run less so.)
      const bool sigkill = done > 0 && WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL;
      std::optional<bool> oom_killer;
      if (sigkill)
        if (const auto now = oom_kill_count(); now && oom_kills_at_start) oom_killer = *now > *oom_kills_at_start;
      const bool killed_standing = sigkill && !relaunch_dir.empty() && take_standing_request(relaunch_dir, r.global);
      failures.push_back({&r, done, status, killed_standing || (done > 0 && asks_to_start_again(status)), oom_killer});
    }
    for (const auto& f : failures) only_asked_again = only_asked_again && f.asks_again;
    if (!failures.empty() && !stopping) {
      // A rank that asks to be started again (train.auto_find_batch_size) is a cause only where
      // nothing else failed; the others are not stopped then: their collectives fail and they end
      // asking too, and rank 0 finishes a checkpoint it is writing (the new start goes on from it).
      // (A rank the system ended where it stood so is named before the peers that end asking with it.)
      auto rank_of = [](const Failure& f) {
        return f.asks_again ? (WIFSIGNALED(f.status) ? 3 : 4) : f.done < 0 ? 2 : WIFSIGNALED(f.status) ? 0 : 1;
      };
      auto cause = *std::min_element(failures.begin(), failures.end(),
                                     [&](const Failure& a, const Failure& b) { return rank_of(a) < rank_of(b); });
      const bool asks_again = rank_of(cause) >= 3;
      if (!asks_again || outcome.failed_rank < 0) {
        outcome.failed_rank = cause.rank->global;
        outcome.exit_code = cause.done < 0 ? 1 : exit_code_of(cause.status);
        outcome.killed_by = cause.done > 0 && WIFSIGNALED(cause.status) ? WTERMSIG(cause.status) : 0;
        outcome.oom_killer = cause.oom_killer;
        outcome.message = "rank " + std::to_string(cause.rank->global) + " (pid " + std::to_string(cause.rank->pid) +
                          ") " + (cause.done < 0 ? std::string("could not be waited for") : describe_exit(cause.status)) +
                          (asks_again && WIFSIGNALED(cause.status)
                               ? std::string(" while trying its longest training rows ahead: ") +
                                     (cause.oom_killer.value_or(false)
                                          ? "the system's out-of-memory killer ended it (the kernel counted it)"
                                          : "most likely the system's out-of-memory killer ended it")
                           : cause.oom_killer.value_or(false)
                               ? " (the kernel's out-of-memory killer counted a kill since the ranks started)"
                               : "");
        std::fprintf(stderr, "ganpo launch: %s; %s\n", outcome.message.c_str(),
                     asks_again ? "waiting for the other ranks" : "stopping the other ranks");
      }
      if (!asks_again) {
        signal_all(SIGTERM);
        kill_at = std::chrono::steady_clock::now() + kGrace;
        kill_pending = true;
        stopping = true;
      }
    }
    if (!any_running) break;
    if (const int sig = g_forward_signal.exchange(0)) {
      signal_all(sig);
      signalled = true;
    }
    if (kill_pending && std::chrono::steady_clock::now() >= kill_at) {
      signal_all(SIGKILL);
      kill_pending = false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return outcome;
}

// `command` going on from `from` (its --resume replaced; none where `from` is "").
std::vector<std::string> resuming_from(std::vector<std::string> command, const std::string& from) {
  for (size_t i = 0; i < command.size(); ++i) {
    if (command[i] == "--resume") {
      command.erase(command.begin() + static_cast<std::ptrdiff_t>(i),
                    command.begin() + static_cast<std::ptrdiff_t>(std::min(i + 2, command.size())));
      break;
    }
    if (command[i].rfind("--resume=", 0) == 0) {
      command.erase(command.begin() + static_cast<std::ptrdiff_t>(i));
      break;
    }
  }
  if (!from.empty()) command.insert(command.end(), {"--resume", from});
  return command;
}

// A folder of its own for the ranks' requests to be started again (removed at the end).
std::string make_relaunch_dir() {
  const char* tmp = std::getenv("TMPDIR");
  std::string pattern = std::string(tmp && *tmp ? tmp : "/tmp") + "/ganpo-launch-XXXXXX";
  if (!::mkdtemp(pattern.data()))
    throw Error("ganpo launch: cannot make a folder under " + pattern.substr(0, pattern.rfind('/')) + ": " +
                std::strerror(errno) + "; set TMPDIR to a writable folder");
  return pattern;
}

constexpr int kMostStarts = 32;  // each start again has a smaller batch: far more than any run needs

}  // namespace

LaunchOutcome launch_processes(const LaunchPlan& plan_in) {
  if (plan_in.nproc_per_node < 1 || plan_in.nnodes < 1 || plan_in.node_rank < 0 || plan_in.node_rank >= plan_in.nnodes)
    throw ConfigError("ganpo launch: --nproc-per-node and --nnodes must be at least 1 and --node-rank in [0, --nnodes)");
  if (plan_in.master_port == 0 && plan_in.nnodes > 1)
    throw ConfigError("ganpo launch: several hosts need --master-port (the same on every host), and --master-addr "
                      "the address of node 0");
  LaunchPlan plan = plan_in;
  // On one host this launcher starts every rank, so it can start them all again where one asks
  // (train.auto_find_batch_size, core/relaunch_request.h); over several hosts it cannot.
  const std::string relaunch_dir = plan.nnodes == 1 && plan.can_start_again ? make_relaunch_dir() : std::string();
  Start start;
  start.unset = {std::string(kRelaunchDirVariable) + "=", std::string(kBatchesFoundVariable) + "=",
                 std::string(kRelaunchReasonVariable) + "="};
  if (!relaunch_dir.empty()) start.set = {std::string(kRelaunchDirVariable) + "=" + relaunch_dir};

  g_forward_signal.store(0);
  struct sigaction action {};
  action.sa_handler = remember_signal;
  struct sigaction old_int {}, old_term {};
  ::sigaction(SIGINT, &action, &old_int);
  ::sigaction(SIGTERM, &action, &old_term);

  LaunchOutcome outcome;
  for (int starts = 1;; ++starts) {
    bool signalled = false, only_asked_again = true;
    outcome = run_ranks(plan, start, relaunch_dir, signalled, only_asked_again);
    if (outcome.exit_code == 0 || !only_asked_again) break;  // (another failure is the run's)
    auto request = relaunch_dir.empty() ? std::nullopt : read_relaunch_request(relaunch_dir);
    // (A stop asked for after the ranks ended, g_forward_signal, is never followed by a new start.)
    const std::string not_again = !request                                            ? "its request could not be read"
                                  : signalled || g_forward_signal.load() != 0         ? "a stop was asked for"
                                  : starts == kMostStarts ? "the ranks were started " + std::to_string(starts) + " times"
                                                          : "";
    if (!not_again.empty()) {
      outcome.message += ", but they were not started again: " + not_again;
      outcome.asked_again = true;
      break;
    }
    clear_relaunch_requests(relaunch_dir);
    if (read_relaunch_request(relaunch_dir)) {  // (each new start's ranks would end on it again)
      outcome.message += ", but they were not started again: their requests could not be removed from " + relaunch_dir;
      break;
    }
    // The checkpoint named is complete unless rank 0 was still writing it: then an earlier one.
    request->resume_from = complete_checkpoint_at_or_before(request->resume_from);
    const std::string from = request->resume_from.empty() ? "the start" : request->resume_from;
    std::printf("ganpo launch: rank %d ran out of memory; train.auto_find_batch_size: starting the %d processes again "
                "with %s, from %s\n",
                request->rank, plan.nproc_per_node, request->change.c_str(), from.c_str());
    std::fflush(stdout);
    start.set = {std::string(kRelaunchDirVariable) + "=" + relaunch_dir,
                 std::string(kBatchesFoundVariable) + "=" + format_batches(request->batches),
                 std::string(kRelaunchReasonVariable) + "=rank " + std::to_string(request->rank) + " ran out of memory" +
                     (request->reason.empty() ? "" : ": " + request->reason)};
    // A test's fault point fails once, in the first start: the ranks started again pass it.
    if (starts == 1)
      for (const char* fault : {"GANPO_KILL_AT=", "GANPO_OOM_KILL_AT=", "GANPO_HANG_AT=", "GANPO_FAIL_AT=", "GANPO_OOM_AT="})
        start.unset.push_back(fault);
    plan.command = resuming_from(plan.command, request->resume_from);
  }
  ::sigaction(SIGINT, &old_int, nullptr);
  ::sigaction(SIGTERM, &old_term, nullptr);
  if (!relaunch_dir.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(relaunch_dir, ec);
  }
  return outcome;
}

}  // namespace ganpo::cli
