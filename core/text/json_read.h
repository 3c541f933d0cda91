// Reading the parts of tokenizer.json with messages a person can act on.
//
// Every component factory (normalizers, pre-tokenizers, model, post-processor, decoders) reads
// its JSON object through a JsonPlace: the file name plus the path inside it
// ("tokenizer.json: pre_tokenizer.pretokenizers[1]"), so that any problem becomes one
// ganpo::ModelFileError saying which file, which part, what was found and what to do.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/json_depth.h"
#include "core/text/utf8.h"

namespace ganpo::text {

struct JsonPlace {
  std::string file;  // path of the file, as given to the loader
  std::string path;  // where inside it, e.g. "model.merges[12]"

  JsonPlace child(const std::string& key) const {
    return {file, path.empty() ? key : path + "." + key};
  }
  JsonPlace index(size_t i) const { return {file, path + "[" + std::to_string(i) + "]"}; }

  [[noreturn]] void fail(const std::string& what) const {
    throw ModelFileError(file + ": " + (path.empty() ? std::string() : path + ": ") + what);
  }
};

// Short rendering of a JSON value for messages (dump() recurses once per level: a value nested
// deeper than any real file is named, not printed).
inline std::string json_excerpt(const nlohmann::json& j) {
  if (j.is_structured() && json_nested_deeper_than(j, 32))
    return j.is_array() ? "an array nested more than 32 levels deep" : "an object nested more than 32 levels deep";
  std::string s = j.dump();
  if (s.size() > 80) s = s.substr(0, 77) + "...";
  return s;
}

// The "type" field of a component object.
inline std::string json_type(const nlohmann::json& j, const JsonPlace& at) {
  if (!j.is_object()) at.fail("expected an object, found " + json_excerpt(j));
  auto it = j.find("type");
  if (it == j.end() || !it->is_string()) at.fail("has no \"type\" string");
  return it->get<std::string>();
}

inline bool json_bool(const nlohmann::json& j, const char* key, bool fallback,
                      const JsonPlace& at) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_boolean())
    at.child(key).fail("expected true or false, found " + json_excerpt(*it));
  return it->get<bool>();
}

inline std::string json_string(const nlohmann::json& j, const char* key, const JsonPlace& at) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_string())
    at.child(key).fail(it == j.end() ? "is missing" : "expected a string, found " + json_excerpt(*it));
  return it->get<std::string>();
}

// A single-character string field (Metaspace replacement, Strip content).
inline std::string json_char(const nlohmann::json& j, const char* key, const JsonPlace& at) {
  const std::string s = json_string(j, key, at);
  size_t i = 0;
  if (s.empty() || !is_valid_utf8(s) || (next_char(s, i), i != s.size()))
    at.child(key).fail("expected exactly one character, found \"" + s + "\"");
  return s;
}

}  // namespace ganpo::text
