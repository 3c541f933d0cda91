// How deeply a parsed JSON value nests, found without recursion.
//
// nlohmann::json parses and destroys any depth iteratively, but dump(), copies and conversions
// between json and ordered_json recurse once per level, so a file nesting [[[[...]]]] 100000
// levels deep (a few hundred KB) overflows the stack the first time such a value is printed or
// copied. Readers of outside files (config.json of model folders, stored evaluation results, a
// workspace's run configs) check the depth once and refuse or quote what is deeper than any real file.
#pragma once

#include <cstddef>
#include <string_view>
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

// The same for JSON text, before it is parsed: the deepest nesting of [ and { outside strings is
// above `limit`. One pass over the characters, for text read often (a stored run's config).
inline bool json_text_nested_deeper_than(std::string_view text, size_t limit) {
  size_t depth = 0;
  bool in_string = false, escaped = false;
  for (const char c : text) {
    if (in_string) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > limit) return true;
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
  return false;
}

}  // namespace ganpo
