#include "core/fault_points.h"

#include "core/error.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <string>

namespace ganpo {

namespace {

struct KillPlan {
  std::string name;
  long hits_left = 0;  // kill (or hang, or fail) when this reaches 0
  bool hang = false;
  bool fail = false;
  bool out_of_memory = false;
};

std::once_flag g_once;
std::atomic<bool> g_armed{false};
KillPlan g_plan;
std::mutex g_mutex;

void read_plan() {
  const char* kill_at = std::getenv("GANPO_KILL_AT");
  const char* hang_at = std::getenv("GANPO_HANG_AT");
  const char* fail_at = std::getenv("GANPO_FAIL_AT");
  const char* oom_at = std::getenv("GANPO_OOM_AT");
  const char* env = kill_at && *kill_at   ? kill_at
                    : hang_at && *hang_at ? hang_at
                    : fail_at && *fail_at ? fail_at
                                          : oom_at;
  if (!env || !*env) return;
  const char* only_rank = std::getenv("GANPO_FAULT_RANK");
  const char* rank = std::getenv("RANK");
  if (only_rank && *only_rank && std::string(only_rank) != (rank ? rank : "0")) return;
  std::string spec(env);
  long n = 1;
  if (const auto colon = spec.rfind(':'); colon != std::string::npos) {
    n = std::strtol(spec.c_str() + colon + 1, nullptr, 10);
    spec.resize(colon);
  }
  g_plan = {spec, n < 1 ? 1 : n, env == hang_at, env == fail_at, env == oom_at};
  g_armed.store(true);
}

}  // namespace

void fault_point(const char* name) {
  std::call_once(g_once, read_plan);
  if (!g_armed.load(std::memory_order_relaxed)) return;
  std::lock_guard<std::mutex> lock(g_mutex);
  if (g_plan.name != name || --g_plan.hits_left > 0) return;
  g_armed.store(false);  // a failure happens once; a run that goes on passes the point again
  if (g_plan.fail) throw Error(std::string("failed at ") + name + " on purpose (GANPO_FAIL_AT)");
  if (g_plan.out_of_memory) throw std::bad_alloc();
  if (!g_plan.hang) ::kill(::getpid(), SIGKILL);
  for (;;) ::pause();
}

}  // namespace ganpo
