#include "db/run_status.h"

#include <nlohmann/json.hpp>

namespace ganpo {

namespace {
constexpr std::pair<RunStatus, const char*> kNames[] = {
    {RunStatus::queued, "queued"},       {RunStatus::running, "running"}, {RunStatus::paused, "paused"},
    {RunStatus::completed, "completed"}, {RunStatus::stopped, "stopped"}, {RunStatus::failed, "failed"},
};
}  // namespace

const char* to_string(RunStatus status) {
  for (const auto& [s, name] : kNames)
    if (s == status) return name;
  return "failed";
}

std::optional<RunStatus> parse_run_status(std::string_view text) {
  for (const auto& [s, name] : kNames)
    if (text == name) return s;
  return std::nullopt;
}

bool is_finished(RunStatus s) { return s == RunStatus::completed || s == RunStatus::stopped || s == RunStatus::failed; }
bool is_resumable(RunStatus s) { return s == RunStatus::stopped || s == RunStatus::failed; }
bool is_active(RunStatus s) { return s == RunStatus::running || s == RunStatus::paused; }

void to_json(nlohmann::json& j, RunStatus status) { j = to_string(status); }

}  // namespace ganpo
