// Test support for end-to-end tests that drive the real `ganpo` binary (GANPO_CLI_PATH): run a
// command to completion and capture its output, and keep every run such a test starts in a
// throwaway workspace (XDG_DATA_HOME points into the temp folder), never the user's; start one
// in the background (spawn_cli) and wait for a condition with a deadline against hangs (wait_for).
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <string>
#include <thread>
#include <vector>

namespace ganpo::test {

struct CliOutcome {
  int exit_code = -1;  // -1 when the process did not exit normally
  std::string output;  // stdout and stderr together
  bool killed_by_sigkill = false;
};

// `prefix` goes before the program in the shell command line: environment assignments
// ("GANPO_KILL_AT=step.done") or limits ("ulimit -f 2048 &&").
inline CliOutcome run_cli(const std::string& args, const std::string& prefix = "") {
  const std::string cmd = prefix + (prefix.empty() ? "" : " ") + std::string(GANPO_CLI_PATH) + " " + args + " 2>&1";
  CliOutcome out;
  FILE* pipe = popen(cmd.c_str(), "r");
  if (!pipe) return out;
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof buf, pipe)) out.output.append(buf, n);
  const int status = pclose(pipe);
  out.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  // The shell reports a child killed by signal S as 128 + S.
  out.killed_by_sigkill = (WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) || out.exit_code == 128 + SIGKILL;
  return out;
}

inline bool use_private_workspace() {
  // Removed when the test program exits.
  static const struct PrivateDir {
    std::filesystem::path path;
    ~PrivateDir() {
      std::error_code ec;
      std::filesystem::remove_all(path, ec);
    }
  } dir{std::filesystem::temp_directory_path() / ("ganpo-e2e-xdg-" + std::to_string(::getpid()))};
  return ::setenv("XDG_DATA_HOME", dir.path.c_str(), 1) == 0;
}

// A folder for the running test of an end-to-end suite, named after the process and the test
// (so parallel ctest processes never share one), created empty.
inline std::filesystem::path fresh_test_dir(const std::string& prefix) {
  const auto dir = std::filesystem::temp_directory_path() /
                   (prefix + "-" + std::to_string(::getpid()) + "-" +
                    ::testing::UnitTest::GetInstance()->current_test_info()->name());
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

// Starts `ganpo args...` as a child process with its output in log; returns its pid.
inline pid_t spawn_cli(const std::vector<std::string>& args, const std::filesystem::path& log) {
  std::vector<std::string> argv_s{GANPO_CLI_PATH};
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  const pid_t pid = ::fork();
  if (pid == 0) {
    const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    std::vector<char*> argv;
    for (auto& a : argv_s) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  return pid;
}

// Polls until ready() holds; fails (with what) after a generous guard so a hung worker cannot
// hang the suite. This is a deadline against hangs, not a timing assertion.
inline bool wait_for(const std::function<bool()>& ready, const std::string& what, int seconds = 180) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
  while (std::chrono::steady_clock::now() < deadline) {
    if (ready()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ADD_FAILURE() << "timed out waiting for: " << what;
  return false;
}

}  // namespace ganpo::test
