#include "core/model/safetensors_header.h"

#include <algorithm>
#include <limits>

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace ganpo {
namespace {

constexpr const char* kMetadataKey = "__metadata__";
constexpr uint64_t kInt64Max = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());

// A non-negative JSON integer that fits in int64, or false.
bool as_count(const nlohmann::json& v, uint64_t& out) {
  if (!v.is_number_integer()) return false;  // floats, strings, ... (booleans are not numbers)
  if (v.is_number_unsigned()) {
    out = v.get<uint64_t>();
  } else {
    const int64_t s = v.get<int64_t>();
    if (s < 0) return false;
    out = static_cast<uint64_t>(s);
  }
  return out <= kInt64Max;
}

// A shape as written in the file, for messages. Only a flat list is dumped: serialising a deeply
// nested value recurses once per level, and a hostile header can nest a million levels.
std::string shape_excerpt(const nlohmann::json& shape) {
  for (const auto& d : shape)
    if (d.is_structured()) return "(a list holding lists or objects)";
  return safetensors_printable(shape.dump());
}

SafetensorsEntry parse_entry(const std::string& path, const std::string& name, const nlohmann::json& v,
                             uint64_t buffer_size) {
  SafetensorsEntry e;
  e.name = name;
  const std::string who = "tensor " + safetensors_quote(name);
  if (!v.is_object()) safetensors_corrupt(path, who + " is not described by a JSON object");

  auto dt = v.find("dtype");
  if (dt == v.end() || !dt->is_string()) safetensors_corrupt(path, who + " has no \"dtype\" string");
  e.dtype = safetensors_dtype(dt->get<std::string>());
  if (!e.dtype)
    safetensors_corrupt(path, who + " has unknown dtype " + safetensors_quote(dt->get<std::string>()) +
                                  " (supported: F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL)");

  auto sh = v.find("shape");
  if (sh == v.end() || !sh->is_array()) safetensors_corrupt(path, who + " has no \"shape\" list");
  // numel, and the product of max(dim, 1) which bounds LibTorch's stride arithmetic.
  uint64_t numel = 1, span = 1;
  for (const auto& d : *sh) {
    uint64_t n = 0;
    if (!as_count(d, n))
      safetensors_corrupt(path, who + " has shape " + shape_excerpt(*sh) +
                                    ", which is not a list of non-negative integers");
    const uint64_t m = std::max<uint64_t>(n, 1);
    if (span > kInt64Max / m)
      safetensors_corrupt(path, who + " has shape " + shape_excerpt(*sh) + ", which is too large");
    span *= m;
    numel *= n;  // <= span, cannot overflow
    e.shape.push_back(static_cast<int64_t>(n));
  }
  if (numel > kInt64Max / static_cast<uint64_t>(e.dtype->size))
    safetensors_corrupt(path, who + " has shape " + shape_excerpt(*sh) + ", which is too large");
  const uint64_t nbytes = numel * static_cast<uint64_t>(e.dtype->size);

  auto off = v.find("data_offsets");
  if (off == v.end() || !off->is_array() || off->size() != 2 || !as_count((*off)[0], e.begin) ||
      !as_count((*off)[1], e.end))
    safetensors_corrupt(path, who + " has no \"data_offsets\" pair of non-negative integers");
  const std::string range = "data_offsets [" + std::to_string(e.begin) + ", " + std::to_string(e.end) + "]";
  if (e.begin > e.end) safetensors_corrupt(path, who + " has " + range + " with begin after end");
  if (e.end > buffer_size)
    safetensors_corrupt(path, who + " has " + range + " past the end of the " + std::to_string(buffer_size) +
                                  "-byte data section (is the file truncated?)");
  if (e.end - e.begin != nbytes)
    safetensors_corrupt(path, who + " has " + range + " spanning " + std::to_string(e.end - e.begin) +
                                  " bytes, but " + e.dtype->name + " shape " +
                                  safetensors_shape_string(e.shape) + " needs " + std::to_string(nbytes));
  return e;
}

// A file name from an index must name a file in the folder, not a path elsewhere.
bool plain_file_name(const std::string& name) {
  return !name.empty() && name.find('/') == std::string::npos && name.find('\\') == std::string::npos &&
         name != "." && name != ".." && name.find('\0') == std::string::npos;
}

}  // namespace

const std::vector<SafetensorsDtype>& safetensors_dtypes() {
  static const std::vector<SafetensorsDtype> table = {
      {"F64", 8}, {"F32", 4}, {"F16", 2}, {"BF16", 2}, {"I64", 8},
      {"I32", 4}, {"I16", 2}, {"I8", 1},  {"U8", 1},   {"BOOL", 1},
  };
  return table;
}

const SafetensorsDtype* safetensors_dtype(const std::string& name) {
  for (const auto& d : safetensors_dtypes())
    if (name == d.name) return &d;
  return nullptr;
}

std::string safetensors_printable(const std::string& s, size_t max_len) {
  std::string out;
  for (char c : s) {
    if (out.size() >= max_len) {
      out += "...";
      break;
    }
    const unsigned char u = static_cast<unsigned char>(c);
    out += (u >= 0x20 && u < 0x7f) ? c : '?';
  }
  return out;
}

std::string safetensors_quote(const std::string& s) { return "\"" + safetensors_printable(s) + "\""; }

std::string safetensors_shape_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

void safetensors_corrupt(const std::string& path, const std::string& what) {
  throw ModelFileError(path + " is not a valid safetensors file (" + what +
                       "); re-export the model or restore the file from a backup");
}

uint64_t safetensors_header_length(const unsigned char (&first_bytes)[8], uint64_t file_size,
                                   const std::string& path) {
  if (file_size < 8)
    safetensors_corrupt(path, "it is " + std::to_string(file_size) +
                                  " bytes long, shorter than the 8-byte header length");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | first_bytes[i];
  if (n > file_size - 8)
    safetensors_corrupt(path, "header length " + std::to_string(n) + " exceeds file size " + std::to_string(file_size));
  if (n > kMaxSafetensorsHeaderBytes)
    safetensors_corrupt(path, "header length " + std::to_string(n) + " exceeds the " +
                                  std::to_string(kMaxSafetensorsHeaderBytes) + "-byte limit");
  if (n < 2) safetensors_corrupt(path, "header length " + std::to_string(n) + " is too small for a JSON object");
  return n;
}

SafetensorsHeader parse_safetensors_header(const std::string& text, uint64_t file_size, const std::string& path) {
  GANPO_ASSERT(text.size() >= 2 && 8 + text.size() <= file_size, "header text outside the file " + path);
  if (text[0] != '{')
    safetensors_corrupt(path, "the header does not start with '{' (the file is not safetensors, or is damaged)");
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    safetensors_corrupt(path, "the header is not valid JSON: error at byte " + std::to_string(e.byte) + " of " +
                                  std::to_string(text.size()));
  } catch (const nlohmann::json::exception& e) {  // out_of_range: a number such as 1e999
    safetensors_corrupt(path, "the header is not valid JSON: " + safetensors_printable(e.what()));
  }
  if (!header.is_object()) safetensors_corrupt(path, "the header is not a JSON object");

  SafetensorsHeader out;
  out.data_start = 8 + text.size();
  const uint64_t buffer_size = file_size - out.data_start;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == kMetadataKey) {
      if (it->is_null()) continue;
      if (!it->is_object()) safetensors_corrupt(path, "\"__metadata__\" is not a JSON object");
      for (auto m = it->begin(); m != it->end(); ++m) {
        if (!m->is_string())
          safetensors_corrupt(path, "metadata value for " + safetensors_quote(m.key()) + " is not a string");
        out.metadata[m.key()] = m->get<std::string>();
      }
      continue;
    }
    out.tensors.push_back(parse_entry(path, it.key(), *it, buffer_size));
  }

  // Byte ranges must not overlap (empty tensors take no space and cannot overlap).
  std::vector<const SafetensorsEntry*> by_offset;
  for (const auto& e : out.tensors)
    if (e.end > e.begin) by_offset.push_back(&e);
  std::sort(by_offset.begin(), by_offset.end(),
            [](const SafetensorsEntry* a, const SafetensorsEntry* b) { return a->begin < b->begin; });
  for (size_t i = 1; i < by_offset.size(); ++i)
    if (by_offset[i]->begin < by_offset[i - 1]->end)
      safetensors_corrupt(path, "tensors " + safetensors_quote(by_offset[i - 1]->name) + " and " +
                                    safetensors_quote(by_offset[i]->name) + " have overlapping data_offsets");
  return out;
}

SafetensorsIndex parse_safetensors_index(const std::string& text, const std::string& path) {
  nlohmann::json index;
  try {
    index = nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    throw ModelFileError(path + " is not valid JSON (error at byte " + std::to_string(e.byte) +
                         "); restore the file or re-export the model");
  } catch (const nlohmann::json::exception& e) {  // out_of_range: a number such as 1e999
    throw ModelFileError(path + " is not valid JSON (" + safetensors_printable(e.what()) +
                         "); restore the file or re-export the model");
  }
  const auto map = index.is_object() ? index.find("weight_map") : index.end();
  if (!index.is_object() || map == index.end() || !map->is_object() || map->empty())
    throw ModelFileError(path + " has no \"weight_map\" object naming each tensor's shard; "
                                "restore the file or re-export the model");
  SafetensorsIndex out;
  std::map<std::string, size_t> shard_at;
  for (auto it = map->begin(); it != map->end(); ++it) {
    const std::string tensor = "tensor " + safetensors_quote(it.key());
    if (!it->is_string())
      throw ModelFileError(path + ": " + tensor +
                           " is mapped to something that is not a file name in the folder (a JSON " +
                           it->type_name() + ", not a string); restore the file or re-export the model");
    const std::string file = it->get<std::string>();
    if (!plain_file_name(file))
      throw ModelFileError(path + ": " + tensor + " is mapped to " + safetensors_quote(file) +
                           ", which is not a file name in the folder (a shard must sit beside the index: no "
                           "'/', '\\' or '..'); the index may be damaged or hostile: restore the file or "
                           "re-export the model");
    const auto [at, fresh] = shard_at.emplace(file, out.shards.size());
    if (fresh) out.shards.push_back(file);
    out.tensor_shard[it.key()] = at->second;
  }
  return out;
}

}  // namespace ganpo
