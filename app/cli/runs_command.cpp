// `ganpo runs`: list, inspect, export, delete, tag, control and resume the runs of a workspace.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <iostream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "app/cli/commands.h"
#include "app/cli/console_progress.h"
#include "core/atomic_folder.h"
#include "core/error.h"
#include "core/run_files.h"
#include "db/run_export.h"
#include "db/run_recorder.h"
#include "db/run_service.h"
#include "db/run_store.h"

namespace fs = std::filesystem;

namespace ganpo::cli {
namespace {

std::string local_time(std::optional<double> t) {
  if (!t) return "-";
  const std::time_t s = static_cast<std::time_t>(*t);
  std::tm tm{};
  localtime_r(&s, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M", &tm);
  return buf;
}

// The time workers held it (not the time it sat stopped before a resume).
std::string duration_of(const RunRow& r) {
  const double seconds = run_duration_seconds(r, unix_now());
  return seconds < 0 ? "-" : format_duration(seconds);
}

// For one cell of the runs table: line breaks, tabs and other control characters escaped
// ("\n", "\t", "\x1b"), which had broken the table's lines (a tag or name stored with one).
std::string one_line(const std::string& text) {
  std::string out;
  for (const unsigned char c : text) {
    if (c == '\n') out += "\\n";
    else if (c == '\t') out += "\\t";
    else if (c < 0x20 || c == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    } else out += static_cast<char>(c);
  }
  return out;
}

bool has_control_character(const std::string& text) {
  return std::any_of(text.begin(), text.end(), [](unsigned char c) { return c < 0x20 || c == 0x7f; });
}

std::string progress_of(const RunRow& r) {
  std::string done = r.last_step ? std::to_string(*r.last_step) : "0";
  return r.total_steps ? done + "/" + std::to_string(*r.total_steps) : done;
}

std::string config_summary(const RunRow& r) {
  auto j = nlohmann::json::parse(r.config_json, nullptr, false);
  if (!j.is_object()) return "?";
  std::string loss = j.value("/objective/loss_type"_json_pointer, std::string("?"));
  if (r.stage == "sft") return "sft";
  const bool ganpo = j.value("/ganpo/enabled"_json_pointer, false);
  return loss + (ganpo ? "+ganpo" : "");
}

nlohmann::json run_json(const RunRow& r) {
  nlohmann::json j{{"id", r.id},           {"name", r.name},     {"status", r.status}, {"stage", r.stage},
                   {"device", r.device},   {"created_at", r.created_at},                {"error", r.error},
                   {"tags", r.tags},       {"notes", r.notes},   {"control", r.control}};
  auto opt = [&](const char* k, const auto& v) { j[k] = v ? nlohmann::json(*v) : nlohmann::json(); };
  opt("started_at", r.started_at);
  opt("finished_at", r.finished_at);
  opt("parent_run_id", r.parent_run_id);
  opt("parent_step", r.parent_step);
  opt("worker_pid", r.worker_pid);
  opt("heartbeat_at", r.heartbeat_at);
  opt("total_steps", r.total_steps);
  opt("last_step", r.last_step);
  j["worker_host"] = r.worker_host;
  j["config"] = nlohmann::json::parse(r.config_json, nullptr, false);
  return j;
}

RunRow require_run(RunStore& store, int64_t id) {
  auto row = store.run(id);
  if (!row)
    throw Error("no run " + std::to_string(id) + " in " + store.path() + "; `ganpo runs list" + store.db_option() +
                "` shows the runs");
  return *row;
}

int list_runs(RunStore& store, const RunsArgs& args) {
  const auto rows = store.runs();
  if (args.json) {
    nlohmann::json all = nlohmann::json::array();
    for (const auto& r : rows) all.push_back(run_json(r));
    std::printf("%s\n", json_text(all, 2).c_str());
    return 0;
  }
  if (rows.empty()) {
    std::printf("no runs in %s yet; start one with: ganpo train --config FILE\n", store.path().c_str());
    return 0;
  }
  std::printf("%5s  %-24s %-10s %-14s %-12s %-8s %-16s %-9s %s\n", "ID", "NAME", "STATUS", "OBJECTIVE", "STEP",
              "DEVICE", "STARTED", "DURATION", "TAGS");
  for (const auto& r : rows)
    std::printf("%5lld  %-24s %-10s %-14s %-12s %-8s %-16s %-9s %s\n", static_cast<long long>(r.id),
                one_line(r.name).substr(0, 24).c_str(), to_string(r.status), config_summary(r).c_str(),
                progress_of(r).c_str(), r.device.empty() ? "-" : r.device.c_str(), local_time(r.started_at).c_str(),
                duration_of(r).c_str(), one_line(r.tags).c_str());
  return 0;
}

int show_run(RunStore& store, const RunsArgs& args) {
  const RunRow r = require_run(store, args.run_id);
  const auto latest = store.latest_metrics(r.id);
  const auto checkpoints = store.checkpoints(r.id);
  const auto evals = store.evals(r.id);
  if (args.json) {
    nlohmann::json j = run_json(r);
    for (const auto& m : latest) j["latest_metrics"][m.key] = {{"step", m.step}, {"value", json_number(m.value)}};
    for (const auto& c : checkpoints)
      j["checkpoints"].push_back({{"step", c.step}, {"path", c.path}, {"created_at", c.created_at},
                                  {"complete", incomplete_reason(c.path).empty()},
                                  {"metrics", nlohmann::json::parse(c.metrics_json, nullptr, false)}});
    for (const auto& e : evals)
      j["evals"].push_back({{"checkpoint_step", e.checkpoint_step}, {"kind", e.kind},
                            {"result", nlohmann::json::parse(e.result_json, nullptr, false)}});
    std::printf("%s\n", json_text(j, 2).c_str());
    return 0;
  }
  std::printf("run %lld  %s\n", static_cast<long long>(r.id), r.name.c_str());
  std::printf("  status     %s%s\n", to_string(r.status), r.control.empty() ? "" : (" (pending control: " + r.control + ")").c_str());
  std::printf("  stage      %s (%s)\n", r.stage.c_str(), config_summary(r).c_str());
  std::printf("  progress   step %s\n", progress_of(r).c_str());
  std::printf("  device     %s\n", r.device.empty() ? "-" : r.device.c_str());
  std::printf("  created    %s\n  started    %s\n  finished   %s\n  duration   %s\n", local_time(r.created_at).c_str(),
              local_time(r.started_at).c_str(), local_time(r.finished_at).c_str(), duration_of(r).c_str());
  if (r.worker_pid)
    std::printf("  worker     pid %lld on %s, heartbeat %s\n", static_cast<long long>(*r.worker_pid),
                r.worker_host.c_str(), local_time(r.heartbeat_at).c_str());
  if (r.parent_run_id)
    std::printf("  parent     run %lld at step %lld\n", static_cast<long long>(*r.parent_run_id),
                static_cast<long long>(r.parent_step.value_or(0)));
  if (!r.tags.empty()) std::printf("  tags       %s\n", r.tags.c_str());
  if (!r.notes.empty()) std::printf("  notes      %s\n", r.notes.c_str());
  if (!r.error.empty()) std::printf("  error      %s\n", r.error.c_str());
  if (!latest.empty()) {
    std::printf("latest metrics:\n");
    for (const auto& m : latest)
      std::printf("  %-32s %-14.6g (step %lld)\n", m.key.c_str(), m.value, static_cast<long long>(m.step));
  }
  if (!checkpoints.empty()) {
    std::printf("checkpoints:\n");
    for (const auto& c : checkpoints) {
      const std::string why = incomplete_reason(c.path);
      std::printf("  step %-8lld %s  %s%s\n", static_cast<long long>(c.step), local_time(c.created_at).c_str(),
                  c.path.c_str(), why.empty() ? "" : ("  (unusable: " + why + ")").c_str());
    }
  }
  if (!evals.empty()) {
    std::printf("evaluations:\n");
    for (const auto& e : evals)
      std::printf("  step %-8lld %s %s\n", static_cast<long long>(e.checkpoint_step), e.kind.c_str(),
                  e.result_json.c_str());
  }
  const std::string tail = store.last_log_lines(r.id, 10);
  if (!tail.empty()) std::printf("last log lines:\n%s", tail.c_str());
  auto cfg = nlohmann::json::parse(r.config_json, nullptr, false);
  if (cfg.is_object()) {
    try {
      std::printf("config:\n%s", config_to_toml(config_from_json(cfg)).c_str());
    } catch (const std::exception&) {
      std::printf("config (JSON):\n%s\n", json_text(cfg, 2).c_str());
    }
  }
  return 0;
}

int export_run_command(RunStore& store, const RunsArgs& args) {
  const ExportFormat format = parse_export_format(args.format);
  const ExportTable table = parse_export_table(args.table);
  require_run(store, args.run_id);
  if (args.out.empty() || args.out == "-") {
    const int64_t n = export_run(store, args.run_id, table, format, std::cout);
    std::cout.flush();
    std::fprintf(stderr, "%lld rows\n", static_cast<long long>(n));
    return 0;
  }
  // Written beside the target and renamed, so a failed export never leaves half a file: not the
  // target, and not the .part file either (a damaged workspace, a full disk).
  if (fs::is_directory(args.out))
    throw Error("--out " + args.out + " is a folder; give the path of the file to write, e.g. " +
                (fs::path(args.out) / "metrics.csv").string());
  const int64_t n = export_run_to_file(store, args.run_id, table, format, args.out);
  std::printf("wrote %lld %s rows to %s\n", static_cast<long long>(n), args.table.c_str(), args.out.c_str());
  return 0;
}

int delete_run(RunStore& store, const RunsArgs& args) {
  const RunRow r = require_run(store, args.run_id);
  if (worker_attached(r)) {
    std::fprintf(stderr, "ganpo runs delete: run %lld is %s (worker pid %lld); stop it first: ganpo runs control %lld stop\n",
                 static_cast<long long>(r.id), to_string(r.status), static_cast<long long>(r.worker_pid.value_or(0)),
                 static_cast<long long>(r.id));
    return 2;
  }
  std::string output_dir;
  if (auto cfg = nlohmann::json::parse(r.config_json, nullptr, false); cfg.is_object())
    output_dir = cfg.value("output_dir", std::string());
  if (!args.yes) {
    if (!::isatty(STDIN_FILENO)) {
      std::fprintf(stderr, "ganpo runs delete: pass --yes to delete run %lld without a prompt\n",
                   static_cast<long long>(r.id));
      return 2;
    }
    std::printf("Delete run %lld '%s' (%s) and all its metrics, samples and checkpoint records%s? [y/N] ",
                static_cast<long long>(r.id), r.name.c_str(), to_string(r.status),
                args.files ? (", and the folder " + output_dir).c_str() : "");
    std::fflush(stdout);
    std::string answer;
    std::getline(std::cin, answer);
    if (answer != "y" && answer != "Y" && answer != "yes") {
      std::printf("kept\n");
      return 0;
    }
  }
  const std::string logs_dir = (fs::path(store.path()).parent_path() / "logs").string();
  const RemoveRunResult result = RunService(store).remove(r.id, args.files, logs_dir);
  if (!result.removed) {
    std::fprintf(stderr, "ganpo runs delete: %s\n", result.refused.c_str());
    return 2;
  }
  std::printf("deleted run %lld from %s\n", static_cast<long long>(r.id), store.path().c_str());
  if (result.folder_removed)
    std::printf("removed %s\n", output_dir.c_str());
  else if (!result.folder_kept.empty())
    std::fprintf(stderr, "left %s in place: %s\n", output_dir.c_str(), result.folder_kept.c_str());
  else if (!output_dir.empty() && fs::exists(output_dir))
    std::printf("its files stay in %s (add --files to remove them)\n", output_dir.c_str());
  return 0;
}

std::vector<std::string> split_tags(const std::string& tags) {
  std::vector<std::string> out;
  std::stringstream ss(tags);
  std::string t;
  while (std::getline(ss, t, ','))
    if (!t.empty()) out.push_back(t);
  return out;
}

int tag_run(RunStore& store, const RunsArgs& args) {
  const RunRow r = require_run(store, args.run_id);
  if (args.tag.empty() || args.tag.find(',') != std::string::npos || has_control_character(args.tag)) {
    std::fprintf(stderr, "ganpo runs tag: a tag is one non-empty word without commas, line breaks or tabs\n");
    return 2;
  }
  auto tags = split_tags(r.tags);
  auto it = std::find(tags.begin(), tags.end(), args.tag);
  if (args.remove && it != tags.end()) tags.erase(it);
  if (!args.remove && it == tags.end()) tags.push_back(args.tag);
  std::string joined;
  for (const auto& t : tags) joined += (joined.empty() ? "" : ",") + t;
  store.set_tags(r.id, joined);
  std::printf("run %lld tags: %s\n", static_cast<long long>(r.id), joined.empty() ? "(none)" : joined.c_str());
  return 0;
}

int control_run(RunStore& store, const RunsArgs& args) {
  const RunRow r = require_run(store, args.run_id);
  if (const std::string problem = RunService(store).control(r.id, args.command); !problem.empty()) {
    std::fprintf(stderr, "ganpo runs control: %s\n", problem.c_str());
    return 2;
  }
  std::printf("sent '%s' to run %lld; its worker acts on it at the next step\n", args.command.c_str(),
              static_cast<long long>(r.id));
  return 0;
}

}  // namespace

int runs_command(const RunsArgs& args) {
  const std::string db_path = workspace_path(args.db);
  if (!std::filesystem::exists(db_path)) {  // (opening would make an empty workspace there)
    if (args.action == "list") {  // nothing trained yet (a fresh install's default), or a mistyped --db
      if (args.json) std::printf("[]\n");
      else std::printf("no workspace at %s yet, so no runs; start one with: ganpo train --config FILE (or name "
                       "another workspace with --db FILE)\n", db_path.c_str());
      return 0;
    }
    std::fprintf(stderr, "ganpo runs %s: there is no workspace at %s; name the one that holds the runs with --db FILE\n",
                 args.action.c_str(), db_path.c_str());
    return 2;
  }
  if (args.action == "resume") return run_worker(db_path, args.run_id);
  RunStore store = RunStore::open(db_path);
  // An unknown id is bad usage (2), as for `runs resume`, `train --run` and the study commands.
  if (args.action != "list") {
    try {
      require_run(store, args.run_id);
    } catch (const Error& e) {
      std::fprintf(stderr, "ganpo runs %s: %s\n", args.action.c_str(), e.what());
      return 2;
    }
  }
  if (args.action == "list") return list_runs(store, args);
  if (args.action == "show") return show_run(store, args);
  if (args.action == "export") return export_run_command(store, args);
  if (args.action == "delete") return delete_run(store, args);
  if (args.action == "tag") return tag_run(store, args);
  if (args.action == "control") return control_run(store, args);
  std::fprintf(stderr, "ganpo runs: unknown action '%s'\n", args.action.c_str());
  return 2;
}

}  // namespace ganpo::cli
