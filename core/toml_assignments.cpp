#include "core/toml_assignments.h"

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <map>
#include <sstream>

#include "core/error.h"
#include "core/run_files.h"

namespace ganpo {
namespace {

std::string in_quotes(const std::string& s) { return "\"" + s + "\""; }

void flatten(const toml::table& table, const std::string& prefix,
             std::vector<std::pair<std::string, const toml::node*>>& out,
             std::vector<toml::source_position>& positions) {
  for (auto&& [key, node] : table) {
    const std::string name = prefix + std::string(key.str());
    if (const toml::table* nested = node.as_table()) {
      flatten(*nested, name + ".", out, positions);
    } else {
      out.emplace_back(name, &node);
      positions.push_back(key.source().begin);
    }
  }
}

}  // namespace

std::string toml_quoted(std::string_view s) {
  std::string out = "\"";
  for (char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      case '\r': out += "\\r"; break;
      default:
        if (c < 0x20 || c == 0x7f) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += ch;
        }
    }
  }
  return out + "\"";
}

std::string override_text(const toml::node& node, const std::string& where) {
  if (auto s = node.as_string()) return s->get();
  if (auto b = node.as_boolean()) return b->get() ? "true" : "false";
  if (auto i = node.as_integer()) return std::to_string(i->get());
  if (auto f = node.as_floating_point()) {
    // The shortest text that reads back as the same double, whatever the locale.
    char buf[64];
    const auto [end, ec] = std::to_chars(buf, buf + sizeof buf, f->get());
    if (ec == std::errc()) return std::string(buf, end);
  }
  throw ConfigError(where + " must be a string, number or boolean");
}

void check_assignment(const std::string& assignment, const std::string& where) {
  RunConfig probe;
  try {
    apply_override(probe, assignment);
  } catch (const ConfigError& e) {
    throw ConfigError(where + ": " + e.what());
  }
}

std::string trimmed_key(const std::string& key) {
  const size_t first = key.find_first_not_of(" \t"), last = key.find_last_not_of(" \t");
  return first == std::string::npos ? "" : key.substr(first, last - first + 1);
}

void refuse_same_settings(const std::string& key, const std::vector<std::string>& values, const std::string& where) {
  std::map<std::string, std::string> value_of_setting;  // as the config holds it -> as written
  for (const std::string& v : values) {
    RunConfig probe;
    apply_override(probe, key + "=" + v);
    const auto [it, fresh] = value_of_setting.emplace(config_value_text(probe, trimmed_key(key)), v);
    if (!fresh)
      throw ConfigError(where + ": " + toml_quoted(it->second) + " and " + toml_quoted(v) + " set " + trimmed_key(key) +
                        " alike (" + it->first + "); list each value once");
  }
}

void refuse_per_run_keys(const std::string& key, const std::string& where) {
  const std::string k = trimmed_key(key);
  if (k == "seed" || k == "output_dir" || k == "name")
    throw ConfigError(where + ": " + k + " is set per run by the study or pipeline" +
                      (k == "seed" ? "; a study lists seeds in its top-level seeds = [...]" : ""));
}

std::vector<std::pair<std::string, const toml::node*>> entries_in_file_order(const toml::table& table) {
  std::vector<std::pair<std::string, const toml::node*>> entries;
  std::vector<toml::source_position> positions;
  flatten(table, "", entries, positions);
  std::vector<size_t> order(entries.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return positions[a].line != positions[b].line ? positions[a].line < positions[b].line
                                                  : positions[a].column < positions[b].column;
  });
  std::vector<std::pair<std::string, const toml::node*>> sorted;
  for (size_t i : order) sorted.push_back(entries[i]);
  return sorted;
}

std::vector<PipelineStage> stages_from_toml(const toml::node& node, const std::string& label, const std::string& what) {
  const std::string where = label + ": " + in_quotes(what);
  const toml::array* stages = node.as_array();
  if (!stages)
    throw ConfigError(where + " must be [[" + what + "]] tables, each with a name and a set = { ... } table");
  std::vector<PipelineStage> out;
  for (const auto& s : *stages) {
    const toml::table* t = s.as_table();
    if (!t || !(*t)["name"].is_string())
      throw ConfigError(where + ": every [[" + what + "]] needs name = \"...\"");
    PipelineStage stage;
    stage.name = (*t)["name"].as_string()->get();
    const std::string stage_where = label + ": " + what + " " + in_quotes(stage.name);
    if (stage.name.empty()) throw ConfigError(where + ": a [[" + what + "]] has an empty name");
    for (auto&& [key, value] : *t)
      if (key.str() != "name" && key.str() != "set")
        throw ConfigError(stage_where + ": " + in_quotes(std::string(key.str())) + " is not a " + what +
                          " key; it has name = \"...\" and set = { \"section.key\" = value, ... }");
    const toml::table* set = (*t)["set"].as_table();
    if (!set)
      throw ConfigError(stage_where + " needs set = { \"section.key\" = value, ... } saying how it differs from "
                        "the run after it (e.g. set = { stage = \"sft\" })");
    for (const auto& [key, value] : entries_in_file_order(*set)) {
      const std::string swhere = stage_where + " set " + in_quotes(key);
      refuse_per_run_keys(key, swhere);
      stage.assignments.push_back(key + "=" + override_text(*value, swhere));
      check_assignment(stage.assignments.back(), swhere);
    }
    for (const auto& other : out)
      if (safe_file_name(other.name, "-_.") == safe_file_name(stage.name, "-_."))
        throw ConfigError(stage_where + ": another " + (what == "stage" ? what : what + " stage") + " is named " +
                          in_quotes(other.name) +
                          " (their folders would be the same); give each its own name");
    out.push_back(std::move(stage));
  }
  return out;
}

std::string toml_value_of_assignment(const std::string& value_text) {
  // Bare only for plain number and boolean text: nothing that could end the table or comment.
  const bool plain = !value_text.empty() && std::all_of(value_text.begin(), value_text.end(), [](char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '+' || c == '-' ||
           c == '.' || c == '_';
  });
  if (!plain) return toml_quoted(value_text);
  try {
    const toml::table probe = toml::parse("v = " + value_text);
    const toml::node* v = probe.get("v");
    // Bare only when it reads back as the very same text ("1e3" would come back as "1000").
    if (v && (v->is_boolean() || v->is_integer() || v->is_floating_point()) && probe.size() == 1 &&
        override_text(*v, "") == value_text)
      return value_text;
  } catch (const toml::parse_error&) {
  }
  return toml_quoted(value_text);
}

std::string toml_inline_assignments(const std::vector<std::string>& assignments) {
  std::string out;
  for (const auto& a : assignments) {
    const size_t eq = a.find('=');
    const std::string key = a.substr(0, eq), value = eq == std::string::npos ? "" : a.substr(eq + 1);
    out += (out.empty() ? "" : ", ") + toml_quoted(key) + " = " + toml_value_of_assignment(value);
  }
  return out;
}

}  // namespace ganpo
