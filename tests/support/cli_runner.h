// Test support for end-to-end tests that drive the real `ganpo` binary (GANPO_CLI_PATH): run a
// command to completion and capture its output, and keep every run such a test starts in a
// throwaway workspace (XDG_DATA_HOME points into the temp folder), never the user's.
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

namespace ganpo::test {

struct CliOutcome {
  int exit_code = -1;  // -1 when the process did not exit normally
  std::string output;  // stdout and stderr together
};

inline CliOutcome run_cli(const std::string& args) {
  const std::string cmd = std::string(GANPO_CLI_PATH) + " " + args + " 2>&1";
  CliOutcome out;
  FILE* pipe = popen(cmd.c_str(), "r");
  if (!pipe) return out;
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof buf, pipe)) out.output.append(buf, n);
  const int status = pclose(pipe);
  out.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return out;
}

inline bool use_private_workspace() {
  const auto dir = std::filesystem::temp_directory_path() / ("ganpo-e2e-xdg-" + std::to_string(::getpid()));
  return ::setenv("XDG_DATA_HOME", dir.c_str(), 1) == 0;
}

}  // namespace ganpo::test
