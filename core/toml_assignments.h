// Config assignments written as TOML, shared by run configs ([[pipeline]]) and studies ([grid],
// [[stage]]): `"section.key" = value` pairs read in file order and turned into the
// "section.key=value" text apply_override takes, the stage tables that chain runs
// (name = "...", set = { ... }), and the way back from assignment text to TOML.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <toml++/toml.h>

#include "core/config.h"

namespace ganpo {

// A double-quoted string with TOML (and JSON) escapes, for files and for messages.
std::string toml_quoted(std::string_view s);

// A TOML scalar as the text apply_override parses (0.2, not 0.20000000000000001). Throws
// ConfigError(where + ...) for tables, arrays and dates.
std::string override_text(const toml::node& node, const std::string& where);

// Checks that `key=value` names a known key with a value of its type; ConfigError(where + ...).
void check_assignment(const std::string& assignment, const std::string& where);

// A key as apply_override reads it: without the spaces and tabs around it.
std::string trimmed_key(const std::string& key);

// Refuses two values of one key that set the same thing ("0.1" and "0.10", "1e-3" and "0.001",
// "true" and "True"): they would be two arms of identical runs. ConfigError(where + ...).
void refuse_same_settings(const std::string& key, const std::vector<std::string>& values, const std::string& where);

// Refuses name, seed and output_dir: the study or pipeline sets them per run.
void refuse_per_run_keys(const std::string& key, const std::string& where);

// "key" = value pairs of a table in file order (toml++ iterates keys sorted), with unquoted
// dotted keys (objective.beta = ..., nested tables to TOML) flattened back to "objective.beta".
std::vector<std::pair<std::string, const toml::node*>> entries_in_file_order(const toml::table& table);

// An array of stage tables ([[pipeline]] or [[stage]]), each name = "..." and
// set = { "section.key" = value, ... }; names unique as folder names. `what` is the array's key,
// used in messages.
std::vector<PipelineStage> stages_from_toml(const toml::node& node, const std::string& label, const std::string& what);

// An assignment's value ("0.003", "true", "sft") as a TOML value: numbers and booleans bare,
// anything else a quoted string; reading it back with override_text gives the same setting.
std::string toml_value_of_assignment(const std::string& value_text);
// `"section.key" = value, ...` for an inline table.
std::string toml_inline_assignments(const std::vector<std::string>& assignments);

}  // namespace ganpo
