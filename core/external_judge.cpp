#include "core/external_judge.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

namespace ganpo {
namespace {

using Clock = std::chrono::steady_clock;

std::string last_lines(const std::string& text, size_t max_bytes = 2000) {
  if (text.empty()) return "";
  std::string tail = text.size() > max_bytes ? "..." + text.substr(text.size() - max_bytes) : text;
  while (!tail.empty() && (tail.back() == '\n' || tail.back() == '\r')) tail.pop_back();
  return "\n--- judge stderr ---\n" + tail;
}

void close_fd(int& fd) {
  if (fd >= 0) ::close(fd);
  fd = -1;
}

}  // namespace

std::vector<double> run_judge_command(const std::string& command, const std::vector<JudgeRow>& rows,
                                      double timeout_seconds) {
  const std::string who = "the judge command `" + command + "`";
  std::string input;
  for (const auto& r : rows) input += nlohmann::json{{"prompt", r.prompt}, {"completion", r.completion}}.dump() + "\n";

  // stdin is a socket so writing after the judge has gone returns EPIPE (MSG_NOSIGNAL) instead
  // of killing this process with SIGPIPE.
  int in_pair[2], out_pipe[2], err_pipe[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, in_pair) != 0 || ::pipe2(out_pipe, O_CLOEXEC) != 0 ||
      ::pipe2(err_pipe, O_CLOEXEC) != 0)
    throw JudgeError("cannot start " + who + ": " + std::strerror(errno));
  const pid_t pid = ::fork();
  if (pid < 0) throw JudgeError("cannot start " + who + ": " + std::strerror(errno));
  if (pid == 0) {
    ::setpgid(0, 0);
    ::dup2(in_pair[1], STDIN_FILENO);
    ::dup2(out_pipe[1], STDOUT_FILENO);
    ::dup2(err_pipe[1], STDERR_FILENO);
    ::execl("/bin/sh", "sh", "-c", command.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ::setpgid(pid, pid);  // also here, so the group exists whichever side runs first
  int to_child = in_pair[0], from_child = out_pipe[0], errors = err_pipe[0];
  ::close(in_pair[1]);
  ::close(out_pipe[1]);
  ::close(err_pipe[1]);

  std::thread writer([&to_child, &input] {
    size_t sent = 0;
    while (sent < input.size()) {
      const ssize_t n = ::send(to_child, input.data() + sent, input.size() - sent, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;  // the judge closed its stdin or exited: what it printed tells the rest
      sent += static_cast<size_t>(n);
    }
    ::shutdown(to_child, SHUT_WR);
  });

  std::string out, err;
  const auto deadline = Clock::now() + std::chrono::duration<double>(timeout_seconds);
  bool timed_out = false;
  while (from_child >= 0 || errors >= 0) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) {
      timed_out = true;
      break;
    }
    pollfd fds[2] = {{from_child, POLLIN, 0}, {errors, POLLIN, 0}};
    const int ready = ::poll(fds, 2, static_cast<int>(std::min<long long>(left, 1000)));
    if (ready < 0 && errno != EINTR) break;
    char buf[65536];
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      const ssize_t n = ::read(fds[i].fd, buf, sizeof buf);
      if (n > 0)
        (i == 0 ? out : err).append(buf, static_cast<size_t>(n));
      else if (n == 0 || errno != EINTR)
        close_fd(i == 0 ? from_child : errors);
    }
  }
  if (timed_out) ::kill(-pid, SIGKILL);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!timed_out) ::kill(-pid, SIGKILL);  // anything the judge left running in its group
  writer.join();  // the judge's end is closed now, so a blocked send has returned EPIPE
  close_fd(to_child);
  close_fd(from_child);
  close_fd(errors);

  if (timed_out)
  {
    std::ostringstream limit;
    limit << timeout_seconds;
    throw JudgeError(who + " did not finish within " + limit.str() + " s and was stopped" + last_lines(err));
  }
  if (WIFSIGNALED(status))
    throw JudgeError(who + " was killed by signal " + std::to_string(WTERMSIG(status)) + last_lines(err));
  if (WIFEXITED(status) && WEXITSTATUS(status) != 0)
    throw JudgeError(who + " exited with status " + std::to_string(WEXITSTATUS(status)) +
                     (WEXITSTATUS(status) == 127 ? " (command not found?)" : "") + last_lines(err));

  std::vector<double> scores;
  size_t start = 0, line_no = 0;
  while (start < out.size()) {
    size_t end = out.find('\n', start);
    if (end == std::string::npos) end = out.size();
    std::string line = out.substr(start, end - start);
    start = end + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    const auto j = nlohmann::json::parse(line, nullptr, false);
    if (!j.is_object() || !j.contains("score") || !j["score"].is_number() || !std::isfinite(j["score"].get<double>()))
      throw JudgeError(who + ": line " + std::to_string(line_no) + " of its output is not {\"score\": <finite number>}: " +
                       line.substr(0, 200) + last_lines(err));
    scores.push_back(j["score"].get<double>());
  }
  if (scores.size() != rows.size())
    throw JudgeError(who + " printed " + std::to_string(scores.size()) + " score(s) for " + std::to_string(rows.size()) +
                     " input line(s); it must print one {\"score\": x} line per input line, in order" + last_lines(err));
  return scores;
}

}  // namespace ganpo
