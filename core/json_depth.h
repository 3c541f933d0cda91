// How deeply a parsed JSON value nests, found without recursion.
//
// nlohmann::json parses and destroys any depth iteratively, but dump(), copies and conversions
// between json and ordered_json recurse once per level, so a file nesting [[[[...]]]] 100000
// levels deep (a few hundred KB) overflows the stack the first time such a value is printed or
// copied. Readers of outside files (config.json of model folders, stored evaluation results)
// check the depth once after parsing and refuse or quote what is deeper than any real file.
#pragma once

#include <cstddef>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace ganpo {

template <typename Json>
bool json_nested_deeper_than(const Json& root, size_t limit) {
  std::vector<std::pair<const Json*, size_t>> todo{{&root, 1}};
  while (!todo.empty()) {
    const auto [value, depth] = todo.back();
    todo.pop_back();
    if (depth > limit) return true;
    if (value->is_structured())
      for (const auto& child : *value) todo.emplace_back(&child, depth + 1);
  }
  return false;
}

}  // namespace ganpo
