#include "core/oom_kill_count.h"

#include <cstdlib>
#include <fstream>
#include <sstream>

namespace ganpo {
namespace {

std::string vmstat_path() {
  const char* for_tests = std::getenv(kVmstatForTestsVariable);
  return for_tests && *for_tests ? for_tests : "/proc/vmstat";
}

}  // namespace

std::optional<int64_t> oom_kill_count() {
  std::ifstream in(vmstat_path());
  std::string key;
  long long value = 0;
  while (in >> key >> value)
    if (key == "oom_kill") return static_cast<int64_t>(value);
  return std::nullopt;
}

std::string with_one_more_oom_kill(const std::string& vmstat) {
  std::istringstream in(vmstat);
  std::string out, line;
  bool counted = false;
  while (std::getline(in, line)) {
    if (line.rfind("oom_kill ", 0) == 0) {
      line = "oom_kill " + std::to_string(std::atoll(line.c_str() + 9) + 1);
      counted = true;
    }
    out += line + "\n";
  }
  return counted ? out : out + "oom_kill 1\n";
}

}  // namespace ganpo
