// The life of a run, as the store records it: one enum instead of string literals, its text in
// the database, and the questions every caller asks of it.
//
//   queued ──claim──> queued + worker ──> running <──> paused
//                                            │
//                         completed / stopped / failed   (finished; stopped and failed resume)
//
// A run is queued when created (the GUI's New Run, a study's arms) until a worker claims it;
// the worker sets running, and completed, stopped (SIGINT/SIGTERM or a stop command, with a
// checkpoint) or failed (an error, or reaped when its worker died) when it ends. Resuming a
// stopped or failed run claims it again.
#pragma once

#include <optional>
#include <string_view>

#include <nlohmann/json_fwd.hpp>

namespace ganpo {

enum class RunStatus { queued, running, paused, completed, stopped, failed };

// "queued", "running", ... as stored in runs.status.
const char* to_string(RunStatus status);
// The status stored as `text`; nullopt for anything else.
std::optional<RunStatus> parse_run_status(std::string_view text);

// completed, stopped or failed: no worker will touch it again unless it is resumed.
bool is_finished(RunStatus status);
// stopped or failed: `ganpo runs resume` continues it from its last checkpoint.
bool is_resumable(RunStatus status);
// running or paused: a worker is training it now.
bool is_active(RunStatus status);

// JSON holds the stored text ("completed"), never the enum's number.
void to_json(nlohmann::json& j, RunStatus status);

}  // namespace ganpo
