// An external judge: a command the user names (their reward model, a unit-test runner, a
// checker) that scores completions. The protocol is JSON Lines both ways:
//   stdin:  {"prompt": "...", "completion": "..."}   one line per completion
//   stdout: {"score": 0.73}                          one line per input line, in order
// The command is split into an argument list (core/command_line.h) and run with execvp in a
// process group of its own, never through a shell; stderr is kept for messages.
// Anything but exactly one finite score per input line, a non-zero exit, a signal, or running
// past the time limit is a JudgeError that says which and shows the judge's last stderr lines;
// the judge's process group is killed on a timeout, so nothing is left running.
#pragma once

#include <atomic>
#include <string>
#include <utility>
#include <vector>

#include "core/error.h"

namespace ganpo {

class JudgeError : public Error {
public:
  using Error::Error;
};

struct JudgeRow {
  std::string prompt;
  std::string completion;
};

// Scores in input order. timeout_seconds covers the whole call. A non-null `cancel` that turns
// true ends the call within a poll: the judge is stopped and a JudgeError says it was cancelled.
std::vector<double> run_judge_command(const std::string& command, const std::vector<JudgeRow>& rows,
                                      double timeout_seconds = 600, const std::atomic<bool>* cancel = nullptr);

}  // namespace ganpo
