// The run configuration read from and written to TOML and JSON files, overrides from the
// command line, and the small helpers of core/config.h (validation: config_validation.cpp;
// [model.lora]'s lists: config_lora.cpp; the field registry: config_fields.cpp).

#include "core/config.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>
#include <sstream>
#include <string_view>
#include <variant>

#include <nlohmann/json.hpp>
#include <toml++/toml.h>

#include "core/config_fields.h"
#include "core/error.h"
#include "core/text/utf8.h"
#include "core/toml_assignments.h"

namespace ganpo {

using namespace config_detail;

namespace {

// ---------------------------------------------------------------------------------------------
// Error messages.

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t subst = prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1);
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, subst});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

// The closest candidate if it is close enough to be a plausible typo, else "".
std::string closest(const std::string& word, const std::vector<std::string>& candidates) {
  // No key is this long: no suggestion, and no quadratic work on a pasted blob (found by fuzzing).
  if (word.size() > 64) return "";
  const std::string w = lower(word);
  std::string best;
  size_t best_d = std::numeric_limits<size_t>::max();
  for (const auto& c : candidates) {
    const size_t d = edit_distance(w, lower(c));
    if (d < best_d) best_d = d, best = c;
  }
  const size_t allowed = std::max<size_t>(2, w.size() / 3);
  return best_d <= allowed ? best : "";
}

// `unknown key "train.learning_rat" (did you mean "learning_rate"?)`, or the list of valid
// names when nothing is close, so the message always says what would have worked. `where` is a
// location prefix ("line 3: ") when the source has one.
[[noreturn]] void throw_unknown(const std::string& what, const std::string& shown, const std::string& typed,
                               const std::vector<std::string>& candidates, const std::string& allowed_label,
                               const std::string& where = "") {
  std::string msg = "unknown " + what + " " + quote(shown.size() > 100 ? shown.substr(0, 100) + "..." : shown);
  const std::string guess = closest(typed, candidates);
  if (!guess.empty())
    msg += " (did you mean " + quote(guess) + "?)";
  else
    msg += "; " + allowed_label + ": " + join(candidates, ", ");
  throw ConfigError(where + msg);
}

std::vector<std::string> top_level_names() {
  std::vector<std::string> names = keys_of("");
  for (const auto& s : sections())
    if (is_top_section(s)) names.push_back(s);
  return names;
}

[[noreturn]] void throw_unknown_key(std::string_view section, const std::string& key, const std::string& where) {
  if (section.empty()) throw_unknown("key", key, key, top_level_names(), "allowed top-level keys and tables", where);
  throw_unknown("key", std::string(section) + "." + key, key, keys_of(section),
                "keys allowed in [" + std::string(section) + "]", where);
}

// Overrides are typed by hand on a command line, so the suggestion is a complete, corrected
// "section.key" and the fallback list is as short as the mistake allows.
[[noreturn]] void throw_unknown_override(const std::string& path, const std::string& section, const std::string& key) {
  if (is_section(path))
    throw ConfigError(quote(path) + " is a table; override one of its keys, e.g. " + path + "." + keys_of(path).front() +
                      "=...; keys allowed in [" + path + "]: " + join(keys_of(path), ", "));
  std::vector<std::string> all;
  for (const Field& g : fields()) all.push_back(g.path());
  std::string guess;
  if (section.empty()) {
    // "learning_rate=1e-4": the key exists, only its table is missing.
    for (const Field& g : fields())
      if (key == g.key) guess = g.path();
  }
  if (guess.empty()) guess = closest(path, all);
  if (!guess.empty()) throw ConfigError("unknown key " + quote(path) + " (did you mean " + quote(guess) + "?)");
  if (section.empty() || is_section(section)) throw_unknown_key(section, key, "");
  const std::string table_guess = closest(section, sections());
  std::string msg = "unknown key " + quote(path) + ": there is no table " + quote(section);
  msg += table_guess.empty() ? "; tables are: " + join(sections(), ", ") : " (did you mean " + quote(table_guess) + "?)";
  throw ConfigError(msg);
}

const char* kind_name(const FieldRef& ref) {
  switch (ref.index()) {
    case 0: return "a string";
    case 1: return "an integer";
    case 2: return "a number";
    default: return "true or false";
  }
}

[[noreturn]] void throw_type(const Field& f, const FieldRef& ref, const std::string& got, const std::string& where = "") {
  const std::string kind = f.list ? "a comma-separated string or an array of names and numbers" : kind_name(ref);
  throw ConfigError(where + f.path() + " must be " + kind + ", got " + got);
}

// A list field's items as its comma-separated text ("q_proj, v_proj"; numbers as written back
// by format_double). `item` gives each item's text, or nullopt for an item that is neither a
// string nor a number, which `describe` names in the message.
template <typename Items, typename ItemText, typename Describe>
std::string list_text(const Field& f, const Items& items, ItemText item, Describe describe, const std::string& where = "") {
  std::vector<std::string> texts;
  for (const auto& node : items) {
    const std::optional<std::string> t = item(node);
    if (!t) throw ConfigError(where + f.path() + " lists names and numbers; the array holds " + describe(node));
    texts.push_back(trim(*t));
  }
  return join(texts, ", ");
}

// ---------------------------------------------------------------------------------------------
// TOML.

std::string toml_where(const toml::source_region& src) {
  return src.begin.line ? "line " + std::to_string(src.begin.line) + ": " : "";
}

std::string describe_toml(const toml::node& node) {
  if (auto s = node.as_string()) return quote(s->get());
  if (auto i = node.as_integer()) return std::to_string(i->get());
  if (auto d = node.as_floating_point()) return format_double(d->get());
  if (auto b = node.as_boolean()) return b->get() ? "true" : "false";
  if (node.is_table()) return "a table";
  if (node.is_array()) return "an array";
  return "a date/time";
}

std::optional<std::string> toml_list_item(const toml::node& node) {
  if (auto s = node.as_string()) return s->get();
  if (auto i = node.as_integer()) return std::to_string(i->get());
  if (auto d = node.as_floating_point()) return format_double(d->get());
  return std::nullopt;
}

void set_from_toml(const Field& f, RunConfig& config, const toml::node& node) {
  const FieldRef ref = f.get(config);
  const std::string where = toml_where(node.source());
  auto fail = [&]() { throw_type(f, ref, describe_toml(node), where); };
  if (auto p = std::get_if<std::string*>(&ref)) {
    if (const toml::array* items = node.as_array(); items && f.list) {
      **p = list_text(f, *items, toml_list_item, describe_toml, where);
      return;
    }
    if (f.list && (node.is_integer() || node.is_floating_point())) {  // one item: layers_to_transform = 3
      **p = *toml_list_item(node);
      return;
    }
    auto s = node.as_string();
    if (!s) fail();
    **p = s->get();
  } else if (auto p = std::get_if<int64_t*>(&ref)) {
    if (auto i = node.as_integer()) {
      **p = i->get();
    } else if (auto d = node.as_floating_point(); d && integral_double_to_int64(d->get(), **p)) {
    } else {
      fail();
    }
  } else if (auto p = std::get_if<double*>(&ref)) {
    if (auto d = node.as_floating_point())
      **p = d->get();
    else if (auto i = node.as_integer())
      **p = static_cast<double>(i->get());
    else
      fail();
  } else if (auto p = std::get_if<bool*>(&ref)) {
    auto b = node.as_boolean();
    if (!b) fail();
    **p = b->get();
  }
}

// The keys of section `name` (node must be its table); a key naming a section inside it ("lora"
// in [model]) is read as that section.
void read_toml_section(const std::string& name, const toml::node& node, const std::string& where, RunConfig& config) {
  const toml::table* table = node.as_table();
  if (!table) throw ConfigError(where + quote(name) + " must be a table ([" + name + "]), got " + describe_toml(node));
  for (auto&& [sub_key, sub_node] : *table) {
    const std::string sub(sub_key.str());
    if (is_section(name + "." + sub)) {
      read_toml_section(name + "." + sub, sub_node, toml_where(sub_key.source()), config);
      continue;
    }
    const Field* f = find_field(name, sub);
    if (!f) throw_unknown_key(name, sub, toml_where(sub_key.source()));
    set_from_toml(*f, config, sub_node);
  }
}

RunConfig config_from_toml_table(const toml::table& root) {
  RunConfig config;
  for (auto&& [key, node] : root) {
    const std::string name(key.str());
    const std::string where = toml_where(key.source());
    if (name == "pipeline") {
      config.pipeline = stages_from_toml(node, where.empty() ? "config" : where.substr(0, where.size() - 2), "pipeline");
    } else if (is_top_section(name)) {
      read_toml_section(name, node, where, config);
    } else {
      const Field* f = find_field("", name);
      if (!f) {
        if (node.is_table())
          throw_unknown("table", name, name, sections(), "allowed tables", where);
        throw_unknown_key("", name, where);
      }
      set_from_toml(*f, config, node);
    }
  }
  return config;
}

toml::table parse_toml(const std::string& text, const std::string& source_label) {
  try {
    return toml::parse(text);
  } catch (const toml::parse_error& e) {
    const auto& pos = e.source().begin;
    throw ConfigError("invalid TOML in " + source_label + " at line " + std::to_string(pos.line) + ", column " +
                      std::to_string(pos.column) + ": " + std::string(e.description()));
  }
}

std::string toml_value(const FieldRef& ref) {
  if (auto p = std::get_if<std::string*>(&ref)) return quote(**p);
  if (auto p = std::get_if<int64_t*>(&ref)) return std::to_string(**p);
  if (auto p = std::get_if<double*>(&ref)) return format_toml_double(**p);
  return *std::get<bool*>(ref) ? "true" : "false";
}

// ---------------------------------------------------------------------------------------------
// JSON.

std::string describe_json(const nlohmann::json& v) {
  if (v.is_string()) return quote(v.get<std::string>());
  if (v.is_object()) return "an object";
  if (v.is_array()) return "an array";
  if (v.is_number_float()) return format_double(v.get<double>());
  return v.dump();
}

void set_from_json(const Field& f, RunConfig& config, const nlohmann::json& v) {
  const FieldRef ref = f.get(config);
  auto fail = [&]() { throw_type(f, ref, describe_json(v)); };
  if (auto p = std::get_if<std::string*>(&ref)) {
    if (v.is_array() && f.list) {
      **p = list_text(f, v, [](const nlohmann::json& item) -> std::optional<std::string> {
        if (item.is_string()) return item.get<std::string>();
        if (item.is_number_integer()) return item.dump();
        if (item.is_number()) return format_double(item.get<double>());
        return std::nullopt;
      }, describe_json);
      return;
    }
    if (f.list && v.is_number()) {  // one item: "layers_to_transform": 3
      **p = v.is_number_integer() ? v.dump() : format_double(v.get<double>());
      return;
    }
    if (!v.is_string()) fail();
    **p = v.get<std::string>();
  } else if (auto p = std::get_if<int64_t*>(&ref)) {
    if (v.is_number_unsigned()) {
      const auto u = v.get<uint64_t>();
      if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) fail();
      **p = static_cast<int64_t>(u);
    } else if (v.is_number_integer()) {
      **p = v.get<int64_t>();
    } else if (!(v.is_number_float() && integral_double_to_int64(v.get<double>(), **p))) {
      fail();
    }
  } else if (auto p = std::get_if<double*>(&ref)) {
    if (!v.is_number()) fail();
    **p = v.get<double>();
  } else if (auto p = std::get_if<bool*>(&ref)) {
    if (!v.is_boolean()) fail();
    **p = v.get<bool>();
  }
}

nlohmann::json json_value(const FieldRef& ref) {
  if (auto p = std::get_if<std::string*>(&ref)) return **p;
  if (auto p = std::get_if<int64_t*>(&ref)) return **p;
  if (auto p = std::get_if<double*>(&ref)) return **p;
  return *std::get<bool*>(ref);
}

// ---------------------------------------------------------------------------------------------
// Files.

std::string extension_of(const std::string& path) {
  return lower(std::filesystem::path(path).extension().string());
}

std::string read_file(const std::string& path) {
  // fopen/fread rather than ifstream: they leave errno set, so the message can say why.
  errno = 0;
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) throw ConfigError("cannot read config file " + path + ": " + std::strerror(errno));
  std::string text;
  char buf[65536];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) text.append(buf, n);
  const bool failed = std::ferror(f);
  const int err = errno;
  std::fclose(f);
  if (failed) throw ConfigError("cannot read config file " + path + ": " + std::strerror(err ? err : EIO));
  return text;
}

}  // namespace

// =============================================================================================

RunConfig config_from_toml(const std::string& toml_text) {
  return config_from_toml_table(parse_toml(toml_text, "config text"));
}

std::string config_to_toml(const RunConfig& config, const std::string& table_prefix) {
  const std::string prefix = table_prefix.empty() ? "" : table_prefix + ".";
  std::ostringstream out;
  if (table_prefix.empty())
    out << "# GANPO Workbench run configuration (every field written out).\n";
  else
    out << "[" << table_prefix << "]\n";
  for (const Field& f : fields())
    if (!*f.section) out << f.key << " = " << toml_value(f.get(config)) << "\n";
  for (const auto& section : sections()) {
    out << "\n[" << prefix << section << "]\n";
    for (const Field& f : fields())
      if (section == f.section) out << f.key << " = " << toml_value(f.get(config)) << "\n";
  }
  for (const auto& stage : config.pipeline)
    out << "\n[[" << prefix << "pipeline]]\nname = " << quote(stage.name)
        << "\nset = { " << toml_inline_assignments(stage.assignments) << " }\n";
  return out.str();
}

nlohmann::json config_to_json(const RunConfig& config) {
  nlohmann::json j = nlohmann::json::object();
  // "model.lora" -> j["model"]["lora"]
  auto object_of = [&j](const std::string& section) -> nlohmann::json& {
    std::string pointer = "/" + section;
    std::replace(pointer.begin(), pointer.end(), '.', '/');
    return j[nlohmann::json::json_pointer(pointer)];
  };
  for (const auto& section : sections()) object_of(section) = nlohmann::json::object();
  for (const Field& f : fields()) {
    if (*f.section)
      object_of(f.section)[f.key] = json_value(f.get(config));
    else
      j[f.key] = json_value(f.get(config));
  }
  // Only when there is one: stored runs are single stages.
  for (const auto& stage : config.pipeline) j["pipeline"].push_back({{"name", stage.name}, {"set", stage.assignments}});
  return j;
}

// The keys of section `name` from its object; a key naming a section inside it ("lora" in
// "model") is read as that section.
void read_json_section(const std::string& name, const nlohmann::json& object, RunConfig& config) {
  if (!object.is_object()) throw ConfigError(quote(name) + " must be an object, got " + describe_json(object));
  for (auto sub = object.begin(); sub != object.end(); ++sub) {
    if (is_section(name + "." + sub.key())) {
      read_json_section(name + "." + sub.key(), *sub, config);
      continue;
    }
    const Field* f = find_field(name, sub.key());
    if (!f) throw_unknown_key(name, sub.key(), "");
    set_from_json(*f, config, *sub);
  }
}

RunConfig config_from_json(const nlohmann::json& j) {
  if (!j.is_object()) throw ConfigError("a JSON run configuration must be an object, got " + describe_json(j));
  RunConfig config;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& name = it.key();
    if (name == "pipeline") {
      if (!it->is_array()) throw ConfigError("\"pipeline\" must be an array of {\"name\", \"set\": [\"section.key=value\", ...]}");
      for (const auto& stage : *it) {
        if (!stage.is_object() || !stage.contains("name") || !stage["name"].is_string() || !stage.contains("set") ||
            !stage["set"].is_array())
          throw ConfigError("every \"pipeline\" stage must be {\"name\": \"...\", \"set\": [\"section.key=value\", ...]}");
        PipelineStage p;
        p.name = stage["name"].get<std::string>();
        for (const auto& a : stage["set"]) {
          if (!a.is_string()) throw ConfigError("pipeline stage " + quote(p.name) + ": \"set\" must hold strings");
          p.assignments.push_back(a.get<std::string>());
          check_assignment(p.assignments.back(), "pipeline stage " + quote(p.name));
        }
        config.pipeline.push_back(std::move(p));
      }
    } else if (is_top_section(name)) {
      read_json_section(name, *it, config);
    } else {
      const Field* f = find_field("", name);
      if (!f) {
        if (it->is_object()) throw_unknown("table", name, name, sections(), "allowed tables");
        throw_unknown_key("", name, "");
      }
      set_from_json(*f, config, *it);
    }
  }
  return config;
}

RunConfig load_config_file(const std::string& path) {
  const std::string ext = extension_of(path);
  if (ext != ".toml" && ext != ".json")
    throw ConfigError("cannot read config file " + path + ": the name must end in .toml or .json");
  const std::string text = read_file(path);
  if (ext == ".json") {
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(text);
    } catch (const nlohmann::json::parse_error& e) {
      throw ConfigError("invalid JSON in " + path + ": " + e.what());
    }
    try {
      return config_from_json(j);
    } catch (const ConfigError& e) {
      throw ConfigError("config file " + path + ": " + e.what());
    }
  }
  const toml::table table = parse_toml(text, path);
  try {
    return config_from_toml_table(table);
  } catch (const ConfigError& e) {
    throw ConfigError("config file " + path + ": " + e.what());
  }
}

namespace {

// Tables (objects) holding no value at any depth: "[model]" or {"train": {}} set nothing.
bool holds_no_value(const toml::table& table) {
  for (const auto& [key, node] : table) {
    const toml::table* inner = node.as_table();
    if (!inner || !holds_no_value(*inner)) return false;
  }
  return true;
}

bool holds_no_value(const nlohmann::json& object) {
  for (const auto& item : object) {
    if (!item.is_object() || !holds_no_value(item)) return false;
  }
  return true;
}

}  // namespace

bool config_file_sets_nothing(const std::string& path) {
  try {
    const std::string text = read_file(path);
    if (extension_of(path) == ".json") {
      const nlohmann::json j = nlohmann::json::parse(text);
      return j.is_object() && holds_no_value(j);
    }
    return holds_no_value(parse_toml(text, path));
  } catch (const std::exception&) {
    return false;  // not readable: load_config_file says why
  }
}

void save_config_file(const RunConfig& config, const std::string& path) {
  const std::string ext = extension_of(path);
  if (ext != ".toml" && ext != ".json")
    throw ConfigError("cannot write config file " + path + ": the name must end in .toml or .json");
  const std::string text = ext == ".json" ? config_to_json(config).dump(2) + "\n" : config_to_toml(config);

  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::path parent = fs::path(path).parent_path();
  if (!parent.empty()) fs::create_directories(parent, ec);
  // Write a sibling then rename, so a crash never leaves a half-written config behind.
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw ConfigError("cannot write config file " + path + ": " + std::strerror(errno));
    out << text;
    out.flush();
    if (!out) throw ConfigError("cannot write config file " + path + ": " + std::strerror(errno));
  }
  fs::rename(tmp, path, ec);
  if (ec) {
    fs::remove(tmp);
    throw ConfigError("cannot write config file " + path + ": " + ec.message());
  }
}

void apply_override(RunConfig& config, const std::string& assignment) {
  const auto eq = assignment.find('=');
  if (eq == std::string::npos)
    throw ConfigError("override " + quote(assignment) +
                      " must look like section.key=value (or key=value for a top-level key), e.g. "
                      "train.learning_rate=3e-4");
  const std::string path = trim(std::string_view(assignment).substr(0, eq));
  std::string value = trim(std::string_view(assignment).substr(eq + 1));

  const auto dot = path.rfind('.');  // "model.lora.r": section "model.lora", key "r"
  const std::string section = dot == std::string::npos ? "" : path.substr(0, dot);
  const std::string key = dot == std::string::npos ? path : path.substr(dot + 1);
  const Field* f = find_field(section, key);
  if (!f) throw_unknown_override(path, section, key);

  const FieldRef ref = f->get(config);
  if (auto p = std::get_if<std::string*>(&ref)) {
    // A config file is UTF-8 text (TOML and JSON both require it): anything else could not be saved.
    if (!text::is_valid_utf8(value))
      throw ConfigError(path + " must be UTF-8 text; the value given has bytes that are not (check the terminal's encoding)");
    // A list field also takes a TOML array: model.lora.target_modules=["q_proj","v_proj"].
    if (f->list && value.size() >= 2 && value.front() == '[' && value.back() == ']') {
      toml::table parsed;
      try {
        parsed = toml::parse("items = " + value);
      } catch (const toml::parse_error& e) {
        throw ConfigError(path + " = " + value + " is not a TOML array (" + std::string(e.description()) +
                          "); write [\"q_proj\", \"v_proj\"] or q_proj,v_proj");
      }
      **p = list_text(*f, *parsed["items"].as_array(), toml_list_item, describe_toml);
      return;
    }
    // Quotes are optional so `name=demo` works, and needed only to keep surrounding spaces.
    if (value.size() >= 2 && (value.front() == '"' || value.front() == '\'') && value.back() == value.front())
      value = value.substr(1, value.size() - 2);
    **p = value;
  } else if (auto p = std::get_if<int64_t*>(&ref)) {
    // Parse into a local: from_chars may store a prefix ("1" of "1.5") before failing.
    int64_t v = 0;
    if (!parse_int64(value, v)) throw_type(*f, ref, quote(value));
    **p = v;
  } else if (auto p = std::get_if<double*>(&ref)) {
    double v = 0;
    if (!parse_double(value, v)) throw_type(*f, ref, quote(value));
    **p = v;
  } else if (auto p = std::get_if<bool*>(&ref)) {
    const std::string v = lower(value);
    if (v == "true")
      **p = true;
    else if (v == "false")
      **p = false;
    else
      throw_type(*f, ref, quote(value));
  }
}

std::vector<std::string> config_keys() {
  std::vector<std::string> keys;
  for (const Field& f : fields()) keys.push_back(f.path());
  return keys;
}

double applied_lora_dropout(const RunConfig& config) {
  return config.stage == "preference" ? 0.0 : config.model.lora.dropout;
}

std::string config_value_text(const RunConfig& config, const std::string& key) {
  const auto dot = key.rfind('.');
  const Field* f = dot == std::string::npos ? find_field("", key) : find_field(key.substr(0, dot), key.substr(dot + 1));
  if (!f) throw_unknown_override(key, dot == std::string::npos ? "" : key.substr(0, dot),
                                 dot == std::string::npos ? key : key.substr(dot + 1));
  const FieldRef ref = f->get(config);
  if (auto p = std::get_if<std::string*>(&ref)) return **p;
  if (auto p = std::get_if<double*>(&ref)) return format_double(**p);
  return toml_value(ref);
}

void make_paths_absolute(RunConfig& config) {
  for (std::string* p : {&config.output_dir, &config.model.checkpoint, &config.model.reference, &config.data.train,
                         &config.data.eval})
    if (!p->empty()) *p = std::filesystem::absolute(*p).lexically_normal().string();
}

bool uses_chunked_logps(const TrainConfig& train, int64_t vocab_size) {
  return train.chunked_logps == "on" || (train.chunked_logps == "auto" && vocab_size > 100000);
}

int64_t eval_batch_size(const TrainConfig& train) {
  return train.per_device_eval_batch_size > 0 ? train.per_device_eval_batch_size
                                               : std::max<int64_t>(8, train.per_device_train_batch_size);
}

int64_t chunked_logps_rows(int64_t vocab_size, bool cuda) {
  // On the CPU, chunks the heap serves again (core/cpu_runtime.cpp keeps allocations up to
  // 32 MiB out of fresh mmaps, whose pages fault in at each use): twice as fast here as 128 MiB.
  // On a GPU, products with more rows; the caching allocator reuses the blocks anyway.
  const int64_t bytes = cuda ? int64_t{128} << 20 : int64_t{32} << 20;
  return std::max<int64_t>(16, bytes / (4 * std::max<int64_t>(vocab_size, 1)));
}

bool uses_builtin_task(const DataConfig& data) {
  return data.builtin == "auto" ? data.train.empty() : !data.builtin.empty();
}

std::string builtin_task_name(const DataConfig& data) {
  if (!uses_builtin_task(data)) return "";
  return data.builtin == "auto" ? "lists" : data.builtin;
}

std::vector<double> parse_temperatures(const std::string& text) {
  std::vector<double> out;
  std::string_view rest = text;
  while (!trim(rest).empty()) {
    const size_t comma = rest.find(',');
    const std::string item = trim(rest.substr(0, comma));
    double v = 0;
    if (!parse_double(item, v) || !std::isfinite(v) || v < 0)
      throw ConfigError("eval.temperatures must be numbers >= 0 separated by commas, got " + quote(item) + " in " +
                        quote(text));
    out.push_back(v);
    if (comma == std::string_view::npos) break;
    rest.remove_prefix(comma + 1);
  }
  return out;
}

void resolve_data_source(DataConfig& data) {
  if (data.builtin == "auto") data.builtin = data.train.empty() ? "lists" : "";
}

double effective_beta(const ObjectiveConfig& objective) {
  if (objective.beta > 0) return objective.beta;
  return objective.loss_type == "simpo" ? 2.5 : 0.1;
}

}  // namespace ganpo
