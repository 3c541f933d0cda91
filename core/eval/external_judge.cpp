#include "core/eval/external_judge.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/command_line.h"

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

// File descriptors closed however the call ends.
struct Fds {
  int fd[6] = {-1, -1, -1, -1, -1, -1};
  ~Fds() {
    for (int& f : fd) close_fd(f);
  }
};

// Whether execvp would find an executable file for program (a path, or a name on PATH).
bool program_exists(const std::string& program) {
  // An executable regular file (access(X_OK) alone also passes folders).
  auto executable_file = [](const std::string& path) {
    struct stat st {};
    return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(path.c_str(), X_OK) == 0;
  };
  if (program.empty()) return false;
  if (program.find('/') != std::string::npos) return executable_file(program);
  const char* path = std::getenv("PATH");
  std::string dirs = path ? path : "/usr/local/bin:/usr/bin:/bin";
  size_t start = 0;
  for (;;) {
    const size_t end = dirs.find(':', start);
    std::string dir = dirs.substr(start, end == std::string::npos ? std::string::npos : end - start);
    if (dir.empty()) dir = ".";
    if (executable_file(dir + "/" + program)) return true;
    if (end == std::string::npos) return false;
    start = end + 1;
  }
}

constexpr size_t kMaxStdout = 64u << 20;  // far beyond one short line per row
constexpr size_t kKeptStderr = 64u << 10;

}  // namespace

std::vector<double> run_judge_command(const std::string& command, const std::vector<JudgeRow>& rows,
                                      double timeout_seconds, const std::atomic<bool>* cancel) {
  const auto cancelled = [cancel] { return cancel && cancel->load(); };
  const std::string who = "the judge command `" + command + "`";
  if (!std::isfinite(timeout_seconds) || timeout_seconds <= 0)
    throw JudgeError("the time limit for " + who + " must be a positive number of seconds");
  std::vector<std::string> args;
  if (const std::string bad = split_command_line(command, args); !bad.empty())
    throw JudgeError(who + " cannot be run: " + bad);
  if (!program_exists(args[0]))
    throw JudgeError(who + " cannot be run: no executable program " + args[0] +
                     (args[0].find('/') == std::string::npos ? " on the PATH" : "") +
                     "; give the judge's full path, or make it executable (chmod +x)");
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  timeout_seconds = std::min(timeout_seconds, 1e7);  // the deadline stays representable
  std::string input;
  for (const auto& r : rows)  // text that is not UTF-8 (a byte model's output) is sent with U+FFFD
    input += nlohmann::json{{"prompt", r.prompt}, {"completion", r.completion}}.dump(
                 -1, ' ', false, nlohmann::json::error_handler_t::replace) +
             "\n";

  // stdin is a socket so writing after the judge has gone returns EPIPE (MSG_NOSIGNAL) instead
  // of killing this process with SIGPIPE.
  Fds fds;
  int* in_pair = fds.fd;
  int* out_pipe = fds.fd + 2;
  int* err_pipe = fds.fd + 4;
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
    ::execvp(argv[0], argv.data());  // an argument list: no shell ever sees the text
    ::_exit(127);
  }
  ::setpgid(pid, pid);  // also here, so the group exists whichever side runs first
  int& to_child = in_pair[0];
  int& from_child = out_pipe[0];
  int& errors = err_pipe[0];
  close_fd(in_pair[1]);
  close_fd(out_pipe[1]);
  close_fd(err_pipe[1]);

  // Whatever happens below, the judge's group is killed, the judge reaped and the writer joined.
  bool reaped = false;
  int status = 0;
  std::thread writer;
  struct Cleanup {
    pid_t pid;
    bool& reaped;
    int& to_child;
    std::thread& writer;
    ~Cleanup() {
      if (!reaped) ::kill(-pid, SIGKILL);  // the leader is unreaped, so the group id is still its
      if (to_child >= 0) ::shutdown(to_child, SHUT_RDWR);  // a blocked send returns now
      if (writer.joinable()) writer.join();
      if (!reaped)
        while (::waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
        }
    }
  } cleanup{pid, reaped, to_child, writer};

  const int writer_fd = to_child;
  writer = std::thread([writer_fd, &input] {
    size_t sent = 0;
    while (sent < input.size()) {
      const ssize_t n = ::send(writer_fd, input.data() + sent, input.size() - sent, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;  // the judge closed its stdin or exited: what it printed tells the rest
      sent += static_cast<size_t>(n);
    }
    ::shutdown(writer_fd, SHUT_WR);
  });

  std::string out, err;
  const auto deadline = Clock::now() + std::chrono::duration<double>(timeout_seconds);
  auto ms_left = [&] {
    return std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  };
  bool timed_out = false;
  while (from_child >= 0 || errors >= 0) {
    const auto left = ms_left();
    if (left <= 0 || cancelled()) {
      timed_out = true;
      break;
    }
    pollfd pfds[2] = {{from_child, POLLIN, 0}, {errors, POLLIN, 0}};
    const int ready = ::poll(pfds, 2, static_cast<int>(std::min<long long>(left, 1000)));
    if (ready < 0 && errno != EINTR) throw JudgeError("reading from " + who + " failed: " + std::strerror(errno));
    char buf[65536];
    for (int i = 0; i < 2; ++i) {
      if (pfds[i].fd < 0 || !(pfds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      const ssize_t n = ::read(pfds[i].fd, buf, sizeof buf);
      if (n > 0) {
        if (i == 0) {
          out.append(buf, static_cast<size_t>(n));
          if (out.size() > kMaxStdout)
            throw JudgeError(who + " printed more than " + std::to_string(kMaxStdout >> 20) +
                             " MB; it must print one short {\"score\": x} line per input line");
        } else {
          err.append(buf, static_cast<size_t>(n));
          if (err.size() > 2 * kKeptStderr) err.erase(0, err.size() - kKeptStderr);
        }
      } else if (n == 0 || errno != EINTR) {
        close_fd(i == 0 ? from_child : errors);
      }
    }
  }
  // Its output is closed; the judge itself still has until the deadline to exit.
  while (!timed_out) {
    siginfo_t info{};
    const int r = ::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOHANG | WNOWAIT);
    if (r == 0 && info.si_pid == pid) {
      // Exited; anything it left running in its group goes before the leader is reaped.
      ::kill(-pid, SIGKILL);
      while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
      }
      reaped = true;
      break;
    }
    if (r < 0 && errno != EINTR) {
      reaped = true;  // nothing left to wait for
      throw JudgeError("cannot tell how " + who + " ended: " + std::strerror(errno));
    }
    if (ms_left() <= 0 || cancelled())
      timed_out = true;
    else
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }

  if (timed_out) {
    if (cancelled()) throw JudgeError(who + " was stopped: the request was cancelled");
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
