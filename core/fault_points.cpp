#include "core/fault_points.h"

#include "core/error.h"
#include "core/oom_kill_count.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
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
  bool as_the_oom_killer = false;  // counted in GANPO_VMSTAT_FOR_TESTS's file, then killed
};

std::once_flag g_once;
std::atomic<bool> g_armed{false};
KillPlan g_plan;
std::mutex g_mutex;

// The first of the variables armed in this process: NAME[:N][@R], where R (or else
// GANPO_FAULT_RANK) names the one data-parallel rank it is for.
void read_plan() {
  const char* only_rank = std::getenv("GANPO_FAULT_RANK");
  const char* rank_text = std::getenv("RANK");
  const std::string rank = rank_text && *rank_text ? rank_text : "0";
  for (const char* variable : {"GANPO_KILL_AT", "GANPO_OOM_KILL_AT", "GANPO_HANG_AT", "GANPO_FAIL_AT", "GANPO_OOM_AT"}) {
    const char* env = std::getenv(variable);
    if (!env || !*env) continue;
    std::string spec(env), for_rank = only_rank ? only_rank : "";
    if (const auto at = spec.rfind('@'); at != std::string::npos) {
      if (at + 1 < spec.size()) for_rank = spec.substr(at + 1);  // ("NAME@" is NAME's, for every rank asked)
      spec.resize(at);
    }
    if (!for_rank.empty() && for_rank != rank) continue;
    long n = 1;
    if (const auto colon = spec.rfind(':'); colon != std::string::npos) {
      n = std::strtol(spec.c_str() + colon + 1, nullptr, 10);
      spec.resize(colon);
    }
    const std::string v = variable;
    g_plan = {spec, n < 1 ? 1 : n, v == "GANPO_HANG_AT", v == "GANPO_FAIL_AT", v == "GANPO_OOM_AT", v == "GANPO_OOM_KILL_AT"};
    g_armed.store(true);
    return;
  }
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
  if (const char* vmstat = std::getenv(kVmstatForTestsVariable); g_plan.as_the_oom_killer && vmstat && *vmstat) {
    std::string text;
    {
      std::ifstream in(vmstat);
      text.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    }
    // (Whole or not at all, for the launcher reading it: a file of this process's, then renamed.)
    const std::string tmp = std::string(vmstat) + "." + std::to_string(::getpid());
    std::ofstream(tmp) << with_one_more_oom_kill(text);
    std::rename(tmp.c_str(), vmstat);
  }
  if (!g_plan.hang) ::kill(::getpid(), SIGKILL);
  for (;;) ::pause();
}

}  // namespace ganpo
