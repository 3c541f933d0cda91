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

}  // namespace

std::string config_value_text(const nlohmann::json& value) {
  if (value.is_string()) return value.get<std::string>();
  return value.dump();
}

std::vector<ConfigDiffRow> config_diff(const std::vector<nlohmann::json>& configs) {
  std::vector<ConfigDiffRow> rows;
  if (configs.size() < 2) return rows;
  std::vector<std::map<std::string, nlohmann::json>> flat(configs.size());
  std::set<std::string> fields;
  for (size_t i = 0; i < configs.size(); ++i) {
    if (configs[i].is_object()) flatten(configs[i], "", flat[i]);
    for (const auto& [name, value] : flat[i]) fields.insert(name);
  }
  for (const std::string& field : fields) {
    bool differs = false;
    const auto first = flat[0].find(field);
    for (size_t i = 1; i < flat.size() && !differs; ++i) {
      const auto other = flat[i].find(field);
      const bool a = first != flat[0].end(), b = other != flat[i].end();
      // 1 and 1.0 are the same setting, though JSON keeps them as different number types.
      differs = a != b || (a && first->second != other->second &&
                           !(first->second.is_number() && other->second.is_number() &&
                             first->second.get<double>() == other->second.get<double>()));
    }
    if (!differs) continue;
    ConfigDiffRow row{field, {}};
    for (const auto& f : flat) {
      const auto it = f.find(field);
      row.values.push_back(it == f.end() ? kAbsent : config_value_text(it->second));
    }
    rows.push_back(std::move(row));
  }
  return rows;
}

}  // namespace ganpo::ui
