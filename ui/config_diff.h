// Config diff: which run-configuration fields differ between runs, for the Compare tab. Each
// config (as stored in runs.config_json, the shape config_to_json writes) is flattened into dotted
// field names ("objective.beta", "ganpo.enabled"); a field becomes a row only when its value is not
// the same in every config (a field one config lacks counts as different). Arrays are compared and
// shown whole. Pure functions, no Qt, so they are unit-tested directly.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace ganpo::ui {

struct ConfigDiffRow {
  std::string field;                // dotted name, e.g. "objective.beta"
  std::vector<std::string> values;  // one per config, in input order; kAbsent where it lacks the field
};

inline constexpr const char* kAbsent = "(absent)";

// Rows sorted by field name (which keeps a section's fields together). Fewer than two configs
// give no rows. A config that is not an object contributes no fields.
std::vector<ConfigDiffRow> config_diff(const std::vector<nlohmann::json>& configs);

// The text a config value shows as: strings without quotes, numbers and booleans as JSON writes
// them, arrays and null as JSON.
std::string config_value_text(const nlohmann::json& value);

}  // namespace ganpo::ui
