// `ganpo study`: plan (the runs a study stands for, each with its folder, or every invalid
// combination named by arm and seed; nothing starts), create (queue them in the workspace), run
// (the queue driver), status, pause, resume, cancel.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "app/cli/commands.h"
#include "core/error.h"
#include "core/study_spec.h"
#include "db/run_service.h"
#include "db/study_queue.h"
#include "db/workspace_path.h"

namespace ganpo::cli {

int study_plan_command(const StudyPlanArgs& args) {
  StudySpec spec;
  std::vector<StudyRun> runs;
  try {
    spec = load_study_file(args.file);
    std::string out = args.out;
    if (out.empty()) {
      std::string folder = spec.name;
      for (char& c : folder)
        if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_') c = '_';
      out = (std::filesystem::path("studies") / folder).string();
    }
    runs = expand_study(spec, std::filesystem::absolute(out).string());
  } catch (const ConfigError& e) {
    std::fprintf(stderr, "ganpo study plan: %s\n", e.what());
    return 2;
  }
  if (args.json) {
    nlohmann::json j = {{"name", spec.name}, {"runs", nlohmann::json::array()}};
    for (const auto& r : runs)
      j["runs"].push_back({{"stage", r.stage},
                           {"arm", r.arm},
                           {"assignments", r.assignments},
                           {"seed", r.seed},
                           {"output_dir", r.config.output_dir},
                           {"config", config_to_json(r.config)}});
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }
  size_t arms = 1;
  for (const auto& [key, values] : spec.grid) arms *= values.size();
  std::printf("%s: %zu run(s) = %zu shared stage(s) + %zu arm(s) x %zu seed(s); all configs valid\n",
              spec.name.c_str(), runs.size(), spec.stages.size(), arms,
              spec.seeds.empty() ? size_t{1} : spec.seeds.size());
  for (const auto& r : runs)
    std::printf("  %-60s seed %-4lld %s\n", r.arm.c_str(), static_cast<long long>(r.seed), r.config.output_dir.c_str());
  return 0;
}

}  // namespace ganpo::cli

// ---- queued studies ----------------------------------------------------------------------------

namespace ganpo::cli {
namespace {

std::string study_folder_name(const std::string& name) {
  std::string folder = name;
  for (char& c : folder)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_') c = '_';
  return folder;
}

// Starts `ganpo train --run ID --db DB` in a session of its own (a driver killed or interrupted
// leaves it training), output appended to the workspace's logs/run-<id>.log.
pid_t start_worker(const std::string& db, int64_t run_id) {
  const std::filesystem::path logs = std::filesystem::path(db).parent_path() / "logs";
  std::error_code ec;
  std::filesystem::create_directories(logs, ec);
  const std::string log = (logs / ("run-" + std::to_string(run_id) + ".log")).string();
  const std::string id = std::to_string(run_id);
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::setsid();
    const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) ::dup2(fd, STDOUT_FILENO), ::dup2(fd, STDERR_FILENO);
    ::execl("/proc/self/exe", "ganpo", "train", "--run", id.c_str(), "--db", db.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  return pid;
}

void print_counts(const StudyRow& s, const StudyCounts& c) {
  std::printf("study %lld '%s' (%s): %lld runs: %lld completed, %lld running, %lld queued, %lld failed, %lld stopped%s\n",
              static_cast<long long>(s.id), s.name.c_str(), to_string(s.state), static_cast<long long>(c.total),
              static_cast<long long>(c.completed), static_cast<long long>(c.attached), static_cast<long long>(c.queued),
              static_cast<long long>(c.failed), static_cast<long long>(c.stopped),
              c.blocked ? (", " + std::to_string(c.blocked) + " blocked by a failed stage").c_str() : "");
}

// The queue driver: starts runs while fewer than `jobs` are attached, until nothing can start
// and nothing runs. All state is in the store, so several drivers (or a new one after this one
// was killed) share the work without starting a run twice.
int drive(RunStore& store, const std::string& db, int64_t study_id, int jobs) {
  using namespace std::chrono_literals;
  bool cancel_sent = false;
  for (;;) {
    store.reap_dead_workers();
    while (::waitpid(-1, nullptr, WNOHANG) > 0) {
    }
    const std::optional<StudyRow> s = find_study(store, study_id);
    if (!s) throw Error("study " + std::to_string(study_id) + " was deleted");
    StudyCounts c = study_counts(store, study_id);
    if (s->state == StudyState::cancelled) {
      if (!cancel_sent)
        for (int64_t id : study_run_ids(store, study_id)) RunService(store).control(id, "stop");
      cancel_sent = true;
      if (c.attached == 0) {
        print_counts(*s, c);
        return 1;
      }
    } else if (s->state == StudyState::active) {
      std::vector<int64_t> refused;  // claimed by another driver this round
      while (c.attached < jobs) {
        const std::optional<int64_t> next = next_study_run(store, study_id);
        if (!next || std::find(refused.begin(), refused.end(), *next) != refused.end()) break;
        const pid_t pid = start_worker(db, *next);
        if (pid > 0 && store.claim_run(*next, pid)) {
          count_study_attempt(store, *next);
          ++c.attached;
          const auto run = store.run(*next);
          std::printf("started run %lld '%s' (worker pid %d)\n", static_cast<long long>(*next),
                      run ? run->name.c_str() : "?", static_cast<int>(pid));
          std::fflush(stdout);
        } else {
          if (pid > 0) ::kill(pid, SIGKILL), ::waitpid(pid, nullptr, 0);
          refused.push_back(*next);
        }
      }
      c = study_counts(store, study_id);  // other drivers' workers count too
      if (c.attached == 0 && !next_study_run(store, study_id)) {
        print_counts(*s, c);
        return c.completed == c.total ? 0 : 1;
      }
    }
    std::this_thread::sleep_for(500ms);
  }
}

}  // namespace

int study_command(const StudyArgs& args) {
  const std::string db = std::filesystem::absolute(workspace_path(args.db)).string();
  if (args.action == "create") {
    StudySpec spec;
    std::vector<StudyRun> runs;
    std::string text;
    try {
      spec = load_study_file(args.file);
      std::ifstream in(args.file);
      std::stringstream buffer;
      buffer << in.rdbuf();
      text = buffer.str();
      const std::string out = args.out.empty()
                                  ? (std::filesystem::path(db).parent_path() / "studies" / study_folder_name(spec.name)).string()
                                  : std::filesystem::absolute(args.out).string();
      runs = expand_study(spec, out);
    } catch (const ConfigError& e) {
      std::fprintf(stderr, "ganpo study create: %s\n", e.what());
      return 2;
    }
    RunStore store = RunStore::open(db);
    const int64_t id = create_study(store, spec.name, text, runs);
    std::printf("study %lld '%s': %zu runs queued in %s\nrun them with: ganpo study run %lld --db %s\n",
                static_cast<long long>(id), spec.name.c_str(), runs.size(), db.c_str(), static_cast<long long>(id),
                db.c_str());
    return 0;
  }
  RunStore store = RunStore::open(db);
  const std::optional<StudyRow> s = find_study(store, args.study_id);
  if (!s) {
    std::fprintf(stderr, "ganpo study %s: there is no study %lld in %s\n", args.action.c_str(),
                 static_cast<long long>(args.study_id), db.c_str());
    return 2;
  }
  if (args.action == "status") {
    print_counts(*s, study_counts(store, s->id));
    for (int64_t id : study_run_ids(store, s->id))
      if (const auto r = store.run(id))
        std::printf("  %5lld  %-10s %s\n", static_cast<long long>(id), to_string(r->status), r->name.c_str());
    return 0;
  }
  if (args.action == "pause" || args.action == "resume" || args.action == "cancel") {
    set_study_state(store, s->id,
                    args.action == "pause" ? StudyState::paused
                    : args.action == "resume" ? StudyState::active
                                              : StudyState::cancelled);
    std::printf("study %lld is %s%s\n", static_cast<long long>(s->id),
                to_string(find_study(store, s->id)->state),
                args.action == "cancel" ? "; a running driver stops its runs" : "");
    return 0;
  }
  if (args.jobs < 1) {
    std::fprintf(stderr, "ganpo study run: --jobs must be at least 1\n");
    return 2;
  }
  return drive(store, db, s->id, args.jobs);
}

}  // namespace ganpo::cli
