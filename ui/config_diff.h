// Config diff: which run-configuration fields differ between runs, for the Compare tab. Each
// config (as stored in runs.config_json, the shape config_to_json writes) is flattened into dotted
// field names ("objective.beta", "ganpo.enabled"); a field becomes a row only when its value is not
// the same in every config (a field one config lacks counts as different). Arrays are compared and
// shown whole. The Compare tab passes each run's config as this build reads it (every field, a
// field an older build did not store at its default) beside the config as stored, so a field a run
// never stored is compared at the value it runs with and shown marked "(default)". Pure functions,
// no Qt, so they are unit-tested directly.
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
// give no rows. A config that is not an object contributes no fields. stored (when given, one per
// config): the configs as stored; a field present in configs[i] but not in stored[i] shows as
// "VALUE (default)", and one stored but absent from configs[i] (a field this build does not read)
// is compared as stored and shows as "VALUE (not read by this build)". Numbers are equal when they are the same number (1 and 1.0), integers compared
// as integers (two seeds beyond 2^53 apart stay apart).
std::vector<ConfigDiffRow> config_diff(const std::vector<nlohmann::json>& configs,
                                       const std::vector<nlohmann::json>* stored = nullptr);

inline constexpr const char* kDefaultMark = " (default)";
inline constexpr const char* kNotReadMark = " (not read by this build)";

// stored without the fields `known` (this build's config JSON, e.g. of a default RunConfig) has
// no place for: a key is dropped where known holds an object without it. What is left reads with
// this build's reader, so a run an older build configured with a field since removed is still
// compared as read (that field marked "not read by this build") instead of every run as stored.
// "pipeline" is kept (a default config has none).
nlohmann::json known_fields_only(const nlohmann::json& stored, const nlohmann::json& known);

// The text a config value shows as: strings without quotes, numbers and booleans as JSON writes
// them, arrays and null as JSON.
std::string config_value_text(const nlohmann::json& value);

}  // namespace ganpo::ui
