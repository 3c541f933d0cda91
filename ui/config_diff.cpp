#include "ui/config_diff.h"

#include <map>
#include <set>

namespace ganpo::ui {
namespace {

void flatten(const nlohmann::json& j, const std::string& prefix, std::map<std::string, nlohmann::json>& out) {
  if (j.is_object() && !(j.empty() && !prefix.empty())) {
    for (auto it = j.begin(); it != j.end(); ++it)
      flatten(it.value(), prefix.empty() ? it.key() : prefix + "." + it.key(), out);
    return;
  }
  if (!prefix.empty()) out[prefix] = j;
}

// The same setting: equal JSON, or the same number written as an integer in one and a float in
// the other (1 and 1.0). Two integers compare exactly, not through double.
bool same_value(const nlohmann::json& a, const nlohmann::json& b) {
  if (a == b) return true;
  if (!a.is_number() || !b.is_number()) return false;
  if (a.is_number_integer() && b.is_number_integer()) return false;  // == compared them exactly
  return a.get<double>() == b.get<double>();
}

}  // namespace

nlohmann::json known_fields_only(const nlohmann::json& stored, const nlohmann::json& known) {
  if (!stored.is_object() || !known.is_object()) return stored;
  nlohmann::json out = nlohmann::json::object();
  for (auto it = stored.begin(); it != stored.end(); ++it) {
    const auto k = known.find(it.key());
    if (k != known.end()) out[it.key()] = known_fields_only(it.value(), *k);
    else if (it.key() == "pipeline") out[it.key()] = it.value();
  }
  return out;
}

std::string config_value_text(const nlohmann::json& value) {
  if (value.is_string()) return value.get<std::string>();
  return value.dump();
}

std::vector<ConfigDiffRow> config_diff(const std::vector<nlohmann::json>& configs,
                                       const std::vector<nlohmann::json>* stored) {
  std::vector<ConfigDiffRow> rows;
  if (configs.size() < 2) return rows;
  std::vector<std::map<std::string, nlohmann::json>> flat(configs.size()), flat_stored(configs.size());
  std::vector<std::set<std::string>> not_read(configs.size());  // stored fields configs[i] lacks
  std::set<std::string> fields;
  for (size_t i = 0; i < configs.size(); ++i) {
    if (configs[i].is_object()) flatten(configs[i], "", flat[i]);
    if (stored && i < stored->size() && (*stored)[i].is_object()) flatten((*stored)[i], "", flat_stored[i]);
    for (const auto& [name, value] : flat[i]) fields.insert(name);
    // A field stored but not read by this build is compared as stored.
    for (const auto& [name, value] : flat_stored[i])
      if (flat[i].emplace(name, value).second) {
        fields.insert(name);
        not_read[i].insert(name);
      }
  }
  for (const std::string& field : fields) {
    bool differs = false;
    const auto first = flat[0].find(field);
    for (size_t i = 1; i < flat.size() && !differs; ++i) {
      const auto other = flat[i].find(field);
      const bool a = first != flat[0].end(), b = other != flat[i].end();
      differs = a != b || (a && !same_value(first->second, other->second));
    }
    if (!differs) continue;
    ConfigDiffRow row{field, {}};
    for (size_t i = 0; i < flat.size(); ++i) {
      const auto it = flat[i].find(field);
      const bool filled_in = stored && i < stored->size() && !flat_stored[i].count(field);
      row.values.push_back(it == flat[i].end() ? kAbsent
                                               : config_value_text(it->second) + (filled_in ? kDefaultMark : "") +
                                                     (not_read[i].count(field) ? kNotReadMark : ""));
    }
    rows.push_back(std::move(row));
  }
  return rows;
}

}  // namespace ganpo::ui
