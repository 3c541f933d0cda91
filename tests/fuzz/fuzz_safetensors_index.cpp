// model.safetensors.index.json of sharded model folders: the input is the index text. Whatever
// is accepted names only plain file names of the index's own folder (no path traversal), and
// every tensor points at one of them.
#include <cstddef>
#include <cstdint>
#include <string>

#include "core/error.h"
#include "core/model/safetensors_header.h"
#include "tests/fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ganpo;
  SafetensorsIndex index;
  try {
    index = parse_safetensors_index(std::string(reinterpret_cast<const char*>(data), size),
                                    "model.safetensors.index.json");
  } catch (const ModelFileError&) {
    return 0;
  }
  if (index.shards.empty() || index.tensor_shard.empty()) fuzz::invariant_failed("empty index accepted", "");
  for (const std::string& shard : index.shards)
    if (shard.empty() || shard == "." || shard == ".." || shard.find_first_of(std::string("/\\\0", 3)) != std::string::npos)
      fuzz::invariant_failed("shard name outside the folder accepted", shard);
  for (const auto& [tensor, at] : index.tensor_shard)
    if (at >= index.shards.size()) fuzz::invariant_failed("tensor mapped to no shard", tensor);
  return 0;
}
