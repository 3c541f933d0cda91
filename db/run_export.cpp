#include "db/run_export.h"

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/json_depth.h"
#include "core/run_files.h"

namespace ganpo {
namespace {

constexpr size_t kMaxStoredJsonDepth = 64;  // evaluation results nest 2 or 3 levels

std::string csv_number(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

void write_csv_row(std::ostream& out, const std::vector<std::string>& fields) {
  for (size_t i = 0; i < fields.size(); ++i) {
    if (i) out << ',';
    out << csv_field(fields[i]);
  }
  out << "\r\n";  // RFC 4180 line ending
}

// A JSON value from an eval result as a CSV cell.
std::string csv_json_cell(const nlohmann::json& v) {
  if (v.is_null()) return "nan";  // results store non-finite values as null
  if (v.is_number()) return csv_number(v.get<double>());
  if (v.is_string()) return v.get<std::string>();
  return json_text(v);
}

int64_t export_metrics(RunStore& store, int64_t run_id, ExportFormat format, std::ostream& out) {
  // The keys and the rows from one snapshot: a live run's worker may commit a new key in between.
  std::optional<sql::Transaction> snapshot;
  if (!store.in_transaction()) snapshot.emplace(store.database(), /*immediate=*/false);
  const std::vector<std::string> keys = store.metric_keys(run_id);
  std::map<std::string, size_t> column;
  for (size_t i = 0; i < keys.size(); ++i) column[keys[i]] = i;
  if (format == ExportFormat::Csv) {
    std::vector<std::string> header{"step", "wall_time"};
    header.insert(header.end(), keys.begin(), keys.end());
    write_csv_row(out, header);
  }
  // Rows arrive grouped by step; one output row is emitted when the step changes.
  sql::Statement s(store.database(),
                   "SELECT step, key, value, wall_time FROM metrics WHERE run_id = ? ORDER BY step, id");
  s.bind(1, run_id);
  int64_t rows = 0, step = 0;
  double wall = 0;
  bool have = false;
  std::vector<std::optional<double>> values(keys.size());
  auto emit = [&] {
    if (!have) return;
    if (format == ExportFormat::Csv) {
      std::vector<std::string> f{std::to_string(step), csv_number(wall)};
      for (const auto& v : values) f.push_back(v ? csv_number(*v) : "");
      write_csv_row(out, f);
    } else {
      nlohmann::ordered_json j;
      j["step"] = step;
      j["wall_time"] = wall;
      for (size_t i = 0; i < keys.size(); ++i)
        if (values[i]) j[keys[i]] = json_number(*values[i]);
      out << json_text(j) << '\n';
    }
    ++rows;
    std::fill(values.begin(), values.end(), std::nullopt);
    have = false;
  };
  while (s.step()) {
    const int64_t row_step = s.col_int(0);
    if (have && row_step != step) emit();
    step = row_step;
    have = true;
    wall = s.col_double(3);
    const std::string key = s.col_text(1);
    const auto at = column.find(key);
    // Only a damaged file lists a key here that metric_keys (read through the index) missed.
    if (at == column.end())
      throw Error("workspace " + store.path() + " is damaged: metric \"" + key + "\" of run " +
                  std::to_string(run_id) + " is missing from the metrics index; check it with "
                  "`sqlite3 FILE 'PRAGMA integrity_check'`, then REINDEX or restore a backup");
    values[at->second] = s.is_null(2) ? std::nan("") : s.col_double(2);
  }
  emit();
  return rows;
}

int64_t export_samples(RunStore& store, int64_t run_id, ExportFormat format, std::ostream& out) {
  if (format == ExportFormat::Csv)
    write_csv_row(out, {"step", "prompt_index", "prompt", "reference", "policy", "reference_score", "policy_score"});
  int64_t rows = 0;
  for (int64_t step : store.sample_steps(run_id)) {
    for (const auto& r : store.samples(run_id, step)) {
      if (format == ExportFormat::Csv) {
        write_csv_row(out, {std::to_string(r.step), std::to_string(r.prompt_index), r.prompt, r.reference_text,
                            r.policy_text, std::isfinite(r.reference_score) ? csv_number(r.reference_score) : "",
                            std::isfinite(r.policy_score) ? csv_number(r.policy_score) : ""});
      } else {
        nlohmann::ordered_json j{{"step", r.step},          {"prompt_index", r.prompt_index},
                                 {"prompt", r.prompt},      {"reference", r.reference_text},
                                 {"policy", r.policy_text}};
        j["reference_score"] = std::isfinite(r.reference_score) ? nlohmann::json(r.reference_score) : nlohmann::json();
        j["policy_score"] = std::isfinite(r.policy_score) ? nlohmann::json(r.policy_score) : nlohmann::json();
        out << json_text(j) << '\n';
      }
      ++rows;
    }
  }
  return rows;
}

// Stored JSON as a value, or as its text when it does not parse or nests deeper than any real
// result (a damaged workspace must not overflow the stack when the value is copied or printed).
nlohmann::json parse_or_text(const std::string& text) {
  auto j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  return j.is_discarded() || json_nested_deeper_than(j, kMaxStoredJsonDepth) ? nlohmann::json(text) : j;
}

int64_t export_evals(RunStore& store, int64_t run_id, ExportFormat format, std::ostream& out) {
  const auto evals = store.evals(run_id);
  if (format == ExportFormat::Jsonl) {
    for (const auto& e : evals) {
      nlohmann::ordered_json j{{"checkpoint_step", e.checkpoint_step}, {"kind", e.kind}, {"created_at", e.created_at}};
      j["params"] = parse_or_text(e.params_json);
      j["result"] = parse_or_text(e.result_json);
      out << json_text(j) << '\n';
    }
    return static_cast<int64_t>(evals.size());
  }
  // CSV: the union of the results' top-level fields as columns.
  std::vector<nlohmann::json> results;
  std::set<std::string> fields;
  for (const auto& e : evals) {
    results.push_back(parse_or_text(e.result_json));
    if (results.back().is_object())
      for (const auto& item : results.back().items()) fields.insert(item.key());
  }
  std::vector<std::string> header{"checkpoint_step", "kind", "created_at", "params"};
  header.insert(header.end(), fields.begin(), fields.end());
  write_csv_row(out, header);
  for (size_t i = 0; i < evals.size(); ++i) {
    std::vector<std::string> f{std::to_string(evals[i].checkpoint_step), evals[i].kind,
                               csv_number(evals[i].created_at), evals[i].params_json};
    for (const auto& name : fields)
      f.push_back(results[i].is_object() && results[i].contains(name) ? csv_json_cell(results[i][name]) : "");
    write_csv_row(out, f);
  }
  return static_cast<int64_t>(evals.size());
}

int64_t export_events(RunStore& store, int64_t run_id, ExportFormat format, std::ostream& out) {
  if (format == ExportFormat::Csv) write_csv_row(out, {"time", "level", "text"});
  int64_t rows = 0, last = 0;
  for (;;) {
    const auto batch = store.events_after(run_id, last, 10000);
    if (batch.empty()) break;
    for (const auto& e : batch) {
      if (format == ExportFormat::Csv) {
        write_csv_row(out, {csv_number(e.time), e.level, e.text});
      } else {
        out << json_text(nlohmann::ordered_json{{"time", e.time}, {"level", e.level}, {"text", e.text}}) << '\n';
      }
      last = e.id;
      ++rows;
    }
  }
  return rows;
}

}  // namespace

std::string csv_field(const std::string& text) {
  if (text.find_first_of(",\"\r\n") == std::string::npos) return text;
  std::string quoted = "\"";
  for (char c : text) {
    if (c == '"') quoted += '"';
    quoted += c;
  }
  return quoted + "\"";
}

ExportFormat parse_export_format(const std::string& name) {
  if (name == "csv") return ExportFormat::Csv;
  if (name == "jsonl") return ExportFormat::Jsonl;
  throw Error("unknown export format '" + name + "'; use csv or jsonl");
}

ExportTable parse_export_table(const std::string& name) {
  if (name == "metrics") return ExportTable::Metrics;
  if (name == "samples") return ExportTable::Samples;
  if (name == "evals") return ExportTable::Evals;
  if (name == "events") return ExportTable::Events;
  throw Error("unknown table '" + name + "'; use metrics, samples, evals or events");
}

int64_t export_run(RunStore& store, int64_t run_id, ExportTable table, ExportFormat format, std::ostream& out) {
  if (!store.run(run_id)) throw Error("no run " + std::to_string(run_id) + " in " + store.path());
  switch (table) {
    case ExportTable::Metrics: return export_metrics(store, run_id, format, out);
    case ExportTable::Samples: return export_samples(store, run_id, format, out);
    case ExportTable::Evals: return export_evals(store, run_id, format, out);
    case ExportTable::Events: return export_events(store, run_id, format, out);
  }
  return 0;
}

namespace {

// An export never replaces the workspace it reads, its journal files, or any other SQLite file
// (a slip of --out would put CSV where every run was).
void refuse_database_target(const RunStore& store, const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::exists(path, ec)) return;
  for (const char* suffix : {"", "-wal", "-shm", "-journal"}) {
    const std::string file = store.path() + suffix;
    if (fs::exists(file, ec) && fs::equivalent(path, file, ec))
      throw Error(path + " is the workspace" + (*suffix ? std::string(" file ") + suffix : std::string()) +
                  " the runs are read from; export to another file");
  }
  std::ifstream in(path, std::ios::binary);
  char header[16] = {};
  if (in.read(header, sizeof header) && std::string(header, sizeof header) == std::string("SQLite format 3\0", 16))
    throw Error(path + " is an SQLite database (a workspace?); an export does not replace it: export to another file");
}

}  // namespace

int64_t export_run_to_file(RunStore& store, int64_t run_id, ExportTable table, ExportFormat format,
                           const std::string& path) {
  refuse_database_target(store, path);
  const std::string tmp = path + ".part";
  try {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw Error("cannot write " + path + "; check the folder exists and is writable");
    const int64_t n = export_run(store, run_id, table, format, out);
    out.close();
    if (!out) throw Error("writing " + path + " failed; free disk space (df -h) and export again");
    std::filesystem::rename(tmp, path);
    return n;
  } catch (...) {
    std::error_code ignored;
    std::filesystem::remove(tmp, ignored);
    throw;
  }
}

}  // namespace ganpo
