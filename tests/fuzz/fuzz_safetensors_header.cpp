// safetensors files as a model folder holds them: the input is the whole file (8-byte length,
// JSON header, data). Whatever the header validation accepts must be safe to read with: every
// tensor's bytes lie inside the data section, match its dtype and shape, and overlap no other.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "core/error.h"
#include "core/model/safetensors_header.h"
#include "tests/fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ganpo;
  unsigned char first[8] = {};
  std::memcpy(first, data, size < 8 ? size : 8);
  SafetensorsHeader header;
  try {
    const uint64_t n = safetensors_header_length(first, size, "fuzz.safetensors");
    header = parse_safetensors_header(std::string(reinterpret_cast<const char*>(data) + 8, n), size,
                                      "fuzz.safetensors");
  } catch (const ModelFileError&) {
    return 0;
  }
  const uint64_t data_bytes = size - header.data_start;
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  std::string previous;
  for (const auto& e : header.tensors) {
    uint64_t numel = 1;
    for (int64_t d : e.shape) {
      if (d < 0) fuzz::invariant_failed("negative dimension accepted", e.name);
      numel *= static_cast<uint64_t>(d);
    }
    if (e.begin > e.end || e.end > data_bytes)
      fuzz::invariant_failed("byte range outside the data section accepted", e.name);
    if (e.end - e.begin != numel * static_cast<uint64_t>(e.dtype->size))
      fuzz::invariant_failed("byte count that does not match the shape accepted", e.name);
    if (!previous.empty() && e.name <= previous) fuzz::invariant_failed("tensors not sorted by name", e.name);
    previous = e.name;
    if (e.end > e.begin) ranges.emplace_back(e.begin, e.end);
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i)
    if (ranges[i].first < ranges[i - 1].second) fuzz::invariant_failed("overlapping byte ranges accepted", "");
  return 0;
}
