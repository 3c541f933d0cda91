// The parts of the safetensors format that come from the file and must be checked before anything
// is trusted: the 8-byte header length, the JSON header (dtype, shape, data_offsets of each
// tensor, "__metadata__"), and the shard index of a sharded model (model.safetensors.index.json).
// Without LibTorch, so the checks can be fuzzed on their own (tests/fuzz/fuzz_safetensors_header
// and fuzz_safetensors_index); core/model/safetensors.cpp reads tensors with what they return,
// core/model/hf_weights.cpp opens the shards an index names.
//
// Everything here is a pure function of the bytes and the file size: the length is checked
// against the file and a 100 MB cap before the header is read, shape products and byte counts
// are checked for overflow, every byte range must lie inside the data section without overlap,
// and an index may name only plain file names in its own folder (no "../x", "/etc/passwd" or
// "sub/x"). Anything else throws ModelFileError naming the file, what is wrong and what to do.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace ganpo {

// A safetensors dtype: its name in the header ("BF16") and its element size in bytes.
struct SafetensorsDtype {
  const char* name;
  int64_t size;
};

// The dtypes this build reads and writes: F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL.
const std::vector<SafetensorsDtype>& safetensors_dtypes();
const SafetensorsDtype* safetensors_dtype(const std::string& name);  // nullptr when unknown

// One tensor of a validated header. begin / end are relative to the data section.
struct SafetensorsEntry {
  std::string name;
  const SafetensorsDtype* dtype = nullptr;
  std::vector<int64_t> shape;
  uint64_t begin = 0;
  uint64_t end = 0;  // end - begin == numel * dtype->size, end <= data section size
};

struct SafetensorsHeader {
  uint64_t data_start = 0;                 // 8 + header length: where the data section starts
  std::vector<SafetensorsEntry> tensors;   // sorted by name
  std::map<std::string, std::string> metadata;
};

// The largest header read (as the reference implementation): a real one is far smaller.
constexpr uint64_t kMaxSafetensorsHeaderBytes = 100'000'000;

// The header length from the file's first 8 bytes (little-endian), checked against file_size and
// kMaxSafetensorsHeaderBytes, so the caller can allocate and read that many bytes safely.
uint64_t safetensors_header_length(const unsigned char (&first_bytes)[8], uint64_t file_size,
                                   const std::string& path);

// Validates the header text (the header_length bytes after the first 8) of a file of file_size
// bytes: JSON object, entries, dtypes, shapes, byte ranges inside the data section, no overlaps.
SafetensorsHeader parse_safetensors_header(const std::string& header_text, uint64_t file_size,
                                           const std::string& path);

// Which shard file holds each tensor, from the text of a model.safetensors.index.json.
struct SafetensorsIndex {
  std::vector<std::string> shards;             // plain file names, in first-use order (by tensor name)
  std::map<std::string, size_t> tensor_shard;  // tensor name -> index into shards
};

// Refuses invalid JSON, a missing or empty weight_map, a value that is not a string, and a shard
// name that is not a plain file name of the index's own folder (path traversal).
SafetensorsIndex parse_safetensors_index(const std::string& index_text, const std::string& path);

// Text from a file made printable for a message (control and non-ASCII bytes as '?', cut at
// max_len), and the same in double quotes.
std::string safetensors_printable(const std::string& s, size_t max_len = 120);
std::string safetensors_quote(const std::string& s);

// "[2, 3]"
std::string safetensors_shape_string(const std::vector<int64_t>& shape);

// Throws the ModelFileError every corrupt safetensors file gets: path, what, what to do.
[[noreturn]] void safetensors_corrupt(const std::string& path, const std::string& what);

}  // namespace ganpo
