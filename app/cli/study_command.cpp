// `ganpo study`: plan (the runs a study stands for, each with its folder, or every invalid
// combination named by arm and seed; nothing starts), create (queue them in the workspace), run
// (the queue driver), status, pause, resume, cancel.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <numeric>
#include <fstream>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "app/cli/commands.h"
#include "app/cli/console_progress.h"
#include "core/error.h"
#include "core/run_files.h"
#include "core/study_spec.h"
#include "core/train/trainer.h"
#include "core/run_work.h"
#include "db/run_service.h"
#include "db/run_speed.h"
#include "db/study_queue.h"
#include "db/study_report.h"
#include "db/study_report_export.h"
#include "db/workspace_path.h"

namespace ganpo::cli {

int study_plan_command(const StudyPlanArgs& args) {
  StudySpec spec;
  std::vector<StudyRun> runs;
  try {
    spec = load_study_file(args.file);
    std::string out = args.out;
    if (out.empty()) out = default_study_folder(workspace_path(args.db), spec.name);  // as `create` will
    runs = expand_study(spec, std::filesystem::absolute(out).string());
  } catch (const ConfigError& e) {
    std::fprintf(stderr, "ganpo study plan: %s\n", e.what());
    return 2;
  }
  // The duration at this machine's measured speed (read only: no workspace is created here).
  WorkSpeed speed{reference_work_per_second(), 0};
  const std::string db = workspace_path(args.db);
  if (std::filesystem::exists(db)) {
    try {
      RunStore store = RunStore::open(db);
      speed = measured_work_speed(store);
    } catch (const Error& e) {
      std::fprintf(stderr, "ganpo study plan: not using %s for the estimate: %s\n", db.c_str(), e.what());
    }
  }
  std::vector<RunConfig> configs;
  for (const auto& r : runs) configs.push_back(r.config);
  const DurationEstimate estimate = estimate_duration(configs, speed);
  if (args.json) {
    nlohmann::json j = {{"name", spec.name},
                        {"estimated_seconds", estimate.seconds},
                        {"estimate_basis", estimate.basis},
                        {"runs", nlohmann::json::array()}};
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
  std::printf("estimated duration: %s one after another, %s\n", format_duration(estimate.seconds).c_str(),
              estimate.basis.c_str());
  return 0;
}

}  // namespace ganpo::cli

// ---- queued studies ----------------------------------------------------------------------------

namespace ganpo::cli {
namespace {

// Starts `ganpo train --run ID --db DB` in a session of its own (a driver killed or interrupted
// leaves it training), output appended to the workspace's logs/run-<id>.log. The worker waits
// until the driver has claimed the run for its pid: it goes on when go() is called and exits
// without a trace when the claim failed (the Worker is destroyed unsent).
class Worker {
public:
  // gpus (a CUDA_VISIBLE_DEVICES list) not empty: the worker sees only those devices (one, or
  // one per process of a data-parallel run), so runs started at once spread over the GPUs
  // instead of sharing the first.
  Worker(const std::string& db, int64_t run_id, const std::string& gpus = "") {
    const std::filesystem::path logs = std::filesystem::path(db).parent_path() / "logs";
    std::error_code ec;
    std::filesystem::create_directories(logs, ec);
    const std::string log = (logs / ("run-" + std::to_string(run_id) + ".log")).string();
    const std::string id = std::to_string(run_id);
    int gate[2];
    if (::pipe2(gate, O_CLOEXEC) != 0) return;
    pid_ = ::fork();
    if (pid_ == 0) {
      ::close(gate[1]);
      char go = 0;
      while (::read(gate[0], &go, 1) < 0 && errno == EINTR) {
      }
      if (go != 'g') ::_exit(0);
      ::setsid();
      if (!gpus.empty()) ::setenv("CUDA_VISIBLE_DEVICES", gpus.c_str(), 1);
      const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
      if (fd >= 0) ::dup2(fd, STDOUT_FILENO), ::dup2(fd, STDERR_FILENO);
      ::execl("/proc/self/exe", "ganpo", "train", "--run", id.c_str(), "--db", db.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    ::close(gate[0]);
    gate_ = gate[1];
  }
  ~Worker() {
    if (gate_ >= 0) ::close(gate_);  // unsent: the child exits
    if (pid_ > 0 && !sent_) ::waitpid(pid_, nullptr, 0);
  }
  pid_t pid() const { return pid_; }
  void go() {
    sent_ = ::write(gate_, "g", 1) == 1;
    ::close(gate_);
    gate_ = -1;
  }

private:
  pid_t pid_ = -1;
  int gate_ = -1;
  bool sent_ = false;
};

// " (n=K)" where a number has fewer seeds than its arm or pair (the others lack it); one seed has no interval.
std::string fewer_seeds(const Interval& i, size_t seeds) {
  if (i.n < 2) return " (n=1, no interval)";
  return static_cast<size_t>(i.n) < seeds ? " (n=" + std::to_string(i.n) + ")" : "";
}

// "mean [low, high]", or the mean alone from one seed (fewer_seeds then says "(n=1, no interval)"),
// as the Study tab and the HTML report print it.
std::string interval_figures(const Interval& i, bool sign) {
  char buf[128];
  if (i.n < 2)
    std::snprintf(buf, sizeof buf, sign ? "%+.4f" : "%.4f", i.mean);
  else
    std::snprintf(buf, sizeof buf, sign ? "%+.4f [%+.4f, %+.4f]" : "%.4f [%.4f, %.4f]", i.mean, i.low, i.high);
  return buf;
}

void print_counts(const RunStore& store, const StudyRow& s, const StudyCounts& c) {
  std::printf("study %lld '%s' (%s): %lld runs: %lld completed, %lld running, %lld queued, %lld failed, %lld stopped%s\n",
              static_cast<long long>(s.id), s.name.c_str(), to_string(s.state), static_cast<long long>(c.total),
              static_cast<long long>(c.completed), static_cast<long long>(c.attached), static_cast<long long>(c.queued),
              static_cast<long long>(c.failed), static_cast<long long>(c.stopped),
              c.blocked ? (", " + std::to_string(c.blocked) + " blocked by a failed or stopped stage").c_str() : "");
  // Stopped runs of an active study wait for a resume: one a person stopped, or one that took a
  // cancel's stop before a resume came and was still saving its checkpoint when it did.
  if (s.state == StudyState::active && c.stopped > 0 && c.attached == 0)
    std::printf("the stopped runs go back in the queue with: ganpo study resume %lld%s, and continue from their "
                "checkpoints when the queue runs (ganpo study run %lld%s, or the Study tab)\n",
                static_cast<long long>(s.id), store.db_option().c_str(), static_cast<long long>(s.id), store.db_option().c_str());
}

// The queue driver: starts runs while fewer than `jobs` are attached, until nothing can start
// and nothing runs. All state is in the store, so several drivers (or a new one after this one
// was killed) share the work without starting a run twice.
// With several GPUs each worker this driver starts gets the least used one (as many as the run
// has processes, train.num_processes).
int drive(RunStore& store, const std::string& db, int64_t study_id, int jobs) {
  using namespace std::chrono_literals;
  bool said_paused = false;
  const int gpus = cuda_device_count();
  std::map<pid_t, std::vector<int>> gpus_of;  // this driver's live workers
  // The devices this driver may use, as CUDA_VISIBLE_DEVICES names them (its own list when the
  // user or a scheduler set one, e.g. "2,3" or GPU UUIDs; else 0..gpus-1).
  std::vector<std::string> visible;
  if (const char* env = std::getenv("CUDA_VISIBLE_DEVICES"); env && *env) {
    std::stringstream list(env);
    for (std::string item; std::getline(list, item, ',');) visible.push_back(item);
  }
  if (visible.empty())
    for (int i = 0; i < gpus; ++i) visible.push_back(std::to_string(i));
  if (static_cast<int>(visible.size()) > gpus) visible.resize(static_cast<size_t>(std::max(gpus, 0)));
  // The devices for a run's worker (indexes into `visible`), none to keep every device in view.
  auto free_gpus = [&](int64_t run_id) -> std::vector<int> {
    if (visible.size() < 2) return {};
    size_t processes = 1;
    if (const auto run = store.run(run_id)) {
      const auto config = nlohmann::json::parse(run->config_json, nullptr, false);
      if (!config.is_object()) return {};
      // A run that names its device ("cuda:1") keeps every device in view.
      const std::string device = config.contains("device") && config["device"].is_string()
                                     ? config["device"].get<std::string>()
                                     : "auto";
      if (device != "auto" && device != "cuda") return {};
      const auto n = config.value("/train/num_processes"_json_pointer, nlohmann::json(1));
      if (n.is_number_integer() && n.get<int64_t>() > 1) processes = static_cast<size_t>(n.get<int64_t>());
    }
    // More processes than GPUs: all of them (the run then says it needs one GPU per process).
    processes = std::min(processes, visible.size());
    std::vector<int> used(visible.size(), 0);
    for (const auto& [pid, gpus] : gpus_of)
      for (int g : gpus) ++used[static_cast<size_t>(g)];
    std::vector<int> order(visible.size());
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return used[static_cast<size_t>(a)] < used[static_cast<size_t>(b)]; });
    order.resize(processes);
    std::sort(order.begin(), order.end());
    return order;
  };
  for (;;) {
    try {
      pid_t ended = 0;
      while ((ended = ::waitpid(-1, nullptr, WNOHANG)) > 0) gpus_of.erase(ended);  // own workers that ended

      store.reap_dead_workers();
      const std::optional<StudyRow> s = find_study(store, study_id);
      if (!s) throw ConfigError("study " + std::to_string(study_id) + " was deleted");
      StudyCounts c = study_counts(store, study_id);
      if (s->state == StudyState::cancelled) {
        // Sent every round: a worker that attaches after the first round must get it too. (Only
        // while the study is still cancelled: a resume since this round read it wins.)
        stop_runs_of_cancelled_study(store, study_id);
        if (c.attached == 0) {
          print_counts(store, *s, c);
          return 1;
        }
      } else if (s->state == StudyState::paused) {
        if (!said_paused)
          std::printf("study %lld is paused: no run starts until `ganpo study resume %lld`\n",
                      static_cast<long long>(study_id), static_cast<long long>(study_id));
        std::fflush(stdout);
        said_paused = true;
      } else {
        said_paused = false;
        std::vector<int64_t> refused;  // claimed by another driver this round
        while (c.attached < jobs) {
          const std::optional<int64_t> next = next_study_run(store, study_id);
          if (!next || std::find(refused.begin(), refused.end(), *next) != refused.end()) break;
          const std::vector<int> gpus = free_gpus(*next);
          std::string devices;
          for (int g : gpus) devices += (devices.empty() ? "" : ",") + visible[static_cast<size_t>(g)];
          Worker worker(db, *next, devices);
          if (worker.pid() > 0 && claim_study_run(store, *next, worker.pid())) {
            worker.go();
            if (!gpus.empty()) gpus_of[worker.pid()] = gpus;
            ++c.attached;
            const auto run = store.run(*next);
            std::printf("started run %lld '%s' (worker pid %d)\n", static_cast<long long>(*next),
                        run ? run->name.c_str() : "?", static_cast<int>(worker.pid()));
            std::fflush(stdout);
          } else {
            refused.push_back(*next);
          }
        }
        c = study_counts(store, study_id);  // other drivers' workers count too
        if (c.attached == 0 && !next_study_run(store, study_id)) {
          print_counts(store, *s, c);
          return c.completed == c.total ? 0 : 1;
        }
      }
    } catch (const ConfigError&) {
      throw;
    } catch (const Error& e) {
      // A busy or briefly unreadable workspace: the next round tries again.
      std::fprintf(stderr, "ganpo study run: %s; trying again\n", e.what());
    }
    std::this_thread::sleep_for(500ms);
  }
}

}  // namespace

int study_command(const StudyArgs& args) {
  const std::string db = std::filesystem::absolute(workspace_path(args.db)).string();
  if (args.action == "create") {
    try {
      const StudySpec spec = load_study_file(args.file);
      RunStore store = RunStore::open(db);
      const QueuedStudy q = queue_study(store, db, spec, args.out);
      std::printf("study %lld '%s': %zu runs queued in %s, writing under %s\nrun them with: ganpo study run %lld --db %s\n",
                  static_cast<long long>(q.id), spec.name.c_str(), q.runs.size(), db.c_str(), q.folder.c_str(),
                  static_cast<long long>(q.id), db.c_str());
    } catch (const ConfigError& e) {
      std::fprintf(stderr, "ganpo study create: %s\n", e.what());
      return 2;
    }
    return 0;
  }
  if (!std::filesystem::exists(db)) {  // (opening would make an empty workspace there)
    std::fprintf(stderr, "ganpo study %s: there is no workspace at %s; name the one that holds the study with --db FILE\n",
                 args.action.c_str(), db.c_str());
    return 2;
  }
  RunStore store = RunStore::open(db);
  const std::optional<StudyRow> s = find_study(store, args.study_id);
  if (!s) {
    std::fprintf(stderr, "ganpo study %s: there is no study %lld in %s\n", args.action.c_str(),
                 static_cast<long long>(args.study_id), db.c_str());
    return 2;
  }
  if (args.action == "report") {
    const StudyReport report = study_report(store, s->id);
    for (const auto& [path, text] : {std::pair{args.html, args.html.empty() ? "" : study_report_html(report)},
                                     std::pair{args.csv, args.csv.empty() ? "" : study_report_csv(report)}}) {
      if (path.empty()) continue;
      std::ofstream out(path, std::ios::binary | std::ios::trunc);
      out << text;
      if (!out.flush()) {
        std::fprintf(stderr, "ganpo study report: cannot write %s: %s\n", path.c_str(), std::strerror(errno));
        return 1;
      }
      std::fprintf(stderr, "wrote %s\n", path.c_str());
    }
    if (args.json) {
      std::printf("%s\n", report_to_json(report).dump(2).c_str());
      return 0;
    }
    std::printf("study %lld '%s': mean [95%% interval] over completed seeds\n", static_cast<long long>(s->id),
                s->name.c_str());
    for (const auto& a : report.arms) {
      std::printf("  %s: seeds %s\n", a.arm.c_str(), arm_seeds_text(a, report.state).c_str());
      for (const auto& [key, i] : a.metrics)
        std::printf("      %-32s %s%s\n", key.c_str(), interval_figures(i, false).c_str(),
                    fewer_seeds(i, a.seeds.size()).c_str());
    }
    for (const auto& p : report.ganpo_vs_base) {
      std::printf("  GANPO on minus off: %s  vs  %s (%zu paired seed(s))\n", p.arm.c_str(), p.baseline.c_str(),
                  p.seeds.size());
      for (const auto& [key, i] : p.differences)
        std::printf("      %-32s %s%s  %s\n", key.c_str(), interval_figures(i, true).c_str(),
                    fewer_seeds(i, p.seeds.size()).c_str(), verdict_text(i, /*head_to_head=*/false).c_str());
      for (const auto& [key, i] : p.win_rate_vs_baseline)
        std::printf("      %-32s %s%s  %s head to head\n", key.c_str(), interval_figures(i, false).c_str(),
                    fewer_seeds(i, p.seeds.size()).c_str(), verdict_text(i, /*head_to_head=*/true).c_str());
    }
    if (const std::string note = multiplicity_note(count_verdicts(report, /*headline_only=*/false)); !note.empty())
      std::printf("  %s\n", note.c_str());
    return 0;
  }
  if (args.action == "status") {
    print_counts(store, *s, study_counts(store, s->id));
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
                args.action == "cancel" ? "; its running runs stop at their next step" : "");
    return 0;
  }
  if (args.jobs < 0) {
    std::fprintf(stderr, "ganpo study run: --jobs must be 0 (one per GPU, or one on a CPU) or more\n");
    return 2;
  }
  // One per GPU; on a CPU one at a time, each run using every core.
  const int jobs = args.jobs > 0 ? args.jobs : std::max(1, cuda_device_count());
  return drive(store, db, s->id, jobs);
}

}  // namespace ganpo::cli
