// The run configuration's field registry and text helpers, private to the config sources.
//
// One list of every key (`fields()`): reading TOML and JSON, writing both, overrides, the
// validation's finite-number sweep and `config_keys()` all walk it, so adding a field to
// core/config.h means adding one line in config_fields.cpp and nothing else. The text helpers
// format and parse numbers without the C locale (the GUI may set a decimal comma, and a config
// file must read the same everywhere). Used by config.cpp (files, overrides), config_lora.cpp
// ([model.lora]'s lists) and config_validation.cpp; nothing outside core/config*.cpp includes it.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "core/config.h"

namespace ganpo::config_detail {

// ---------------------------------------------------------------------------------------------
// The field registry.

using FieldRef = std::variant<std::string*, int64_t*, double*, bool*>;

struct Field {
  const char* section;  // "" for top-level keys
  const char* key;
  FieldRef (*ref)(RunConfig&);
  // A list kept as comma-separated text (model.lora.target_modules, eval.temperatures): files and
  // overrides may also give it as an array, as PEFT's and TRL's configs write lists.
  bool list = false;

  std::string path() const { return *section ? std::string(section) + "." + key : key; }
  FieldRef get(RunConfig& c) const { return ref(c); }
  // Readers share the mutable accessor; they never write through the pointer.
  FieldRef get(const RunConfig& c) const { return ref(const_cast<RunConfig&>(c)); }
};

// Every field, top-level keys first, then each section's in the order they are written.
const std::vector<Field>& fields();

// Section order is the order tables are written in. A section may sit inside another
// ("model.lora" is the table [model.lora], the object {"model": {"lora": {...}}}).
const std::vector<std::string>& sections();
bool is_section(std::string_view name);
// A table at the top of a file ("model", not "model.lora", which sits inside [model]).
bool is_top_section(std::string_view name);
const Field* find_field(std::string_view section, std::string_view key);  // nullptr when unknown
std::vector<std::string> keys_of(std::string_view section);

// ---------------------------------------------------------------------------------------------
// Text helpers.

std::string join(const std::vector<std::string>& items, const std::string& sep);
std::string quote(std::string_view s);  // as TOML writes a string
// Shortest text that reads back to exactly the same double ("5e-7", "0.1", "10000").
std::string format_double(double v);
// TOML needs a '.' or exponent to read a value back as a float rather than an integer.
std::string format_toml_double(double v);
std::string trim(std::string_view s);
std::string lower(std::string s);
// Whole-text parses ("+" allowed, nothing left over); false leaves `out` unspecified.
bool parse_int64(std::string_view s, int64_t& out);
bool parse_double(std::string_view s, double& out);
// A float is accepted for an integer key only when nothing is lost ("max_steps = 300.0").
bool integral_double_to_int64(double v, int64_t& out);

}  // namespace ganpo::config_detail
