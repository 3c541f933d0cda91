// Exports one run's records from the run store as CSV or JSON Lines, streaming (a million
// metric rows never sit in memory at once).
//
// metrics: one row per step, wide: step, wall_time, then one column per metric key (sorted);
//   a metric not logged at that step is an empty CSV cell / an absent JSON key. Non-finite
//   values are written as NaN, Infinity, -Infinity (CSV: nan, inf, -inf, which pandas and
//   spreadsheets read as numbers).
// samples: step, prompt_index, prompt, reference, policy, reference_score, policy_score.
// evals: checkpoint_step, kind, created_at, then the result's fields flattened.
// events: time, level, text.
// CSV follows RFC 4180 (fields with commas, quotes or newlines are quoted).
#pragma once

#include <cstdint>
#include <ostream>
#include <string>

#include "db/run_store.h"

namespace ganpo {

enum class ExportFormat { Csv, Jsonl };
enum class ExportTable { Metrics, Samples, Evals, Events };

// Throws ganpo::Error for an unknown name, listing the allowed ones.
ExportFormat parse_export_format(const std::string& name);
ExportTable parse_export_table(const std::string& name);

// Writes the chosen table of run_id to out; returns the number of rows written (not counting
// the CSV header). Throws ganpo::Error if the run does not exist.
int64_t export_run(RunStore& store, int64_t run_id, ExportTable table, ExportFormat format, std::ostream& out);
// The same into the file at `path`, written beside it as PATH.part and renamed: a failed export
// leaves neither half a file nor the .part (a damaged workspace, a full disk). Never replaces
// the workspace (or its -wal / -shm / -journal) or any other SQLite file. Throws ganpo::Error
// saying what to do.
int64_t export_run_to_file(RunStore& store, int64_t run_id, ExportTable table, ExportFormat format,
                           const std::string& path);

// One CSV field, quoted when it has to be.
std::string csv_field(const std::string& text);

}  // namespace ganpo
