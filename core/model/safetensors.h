// Reading and writing the safetensors file format with LibTorch tensors.
//
// safetensors is the format Hugging Face uses for model weights: an 8-byte little-endian
// header length N, N bytes of JSON describing each tensor (dtype, shape, byte range), then the
// raw tensor bytes. We use it for the base models we load and for the checkpoints and
// adapters we write, so our files open in transformers/PEFT and theirs open here.
// Supported dtypes: F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL.
//
// Saving writes tensors sorted by name, pads the header with spaces to a multiple of 8 and
// replaces the target atomically (path + ".tmp", fsync, then rename). Loading validates the
// whole header before allocating anything, then reads each tensor's bytes straight into its
// own tensor; for any missing, truncated or corrupt file it throws ModelFileError naming the
// file, what is wrong and what to do, and never trusts sizes or offsets from the header (the
// checks are core/model/safetensors_header.h, torch-free and fuzzed).
// Assumes a little-endian host (as LibTorch effectively does).
#pragma once

#include <fstream>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <torch/torch.h>

#include "core/error.h"

namespace ganpo {

// Writes tensors (any order; written sorted by name as HF does) with optional string metadata
// ("__metadata__"). Tensors may be non-contiguous or on any device; they are written via
// .contiguous().cpu(), one at a time (the host holds one copy at once). Throws ganpo::Error for
// bad arguments (duplicate or reserved names, undefined tensors, unsupported dtypes) and
// ModelFileError when the file cannot be written.
void save_safetensors(const std::string& path,
                      const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

struct SafetensorsFile {
  std::map<std::string, torch::Tensor> tensors;
  std::map<std::string, std::string> metadata;
};

// CPU tensors, contiguous, owning their memory. Throws ModelFileError for a missing, short
// or corrupt file.
SafetensorsFile load_safetensors(const std::string& path);

struct SafetensorsInfo {
  torch::ScalarType dtype;
  std::string dtype_name;  // "BF16", ...
  std::vector<int64_t> shape;
  uint64_t offset = 0;  // absolute position of the bytes in the file
  uint64_t nbytes = 0;
};

// One file read tensor by tensor (streamed), so a model loads without holding the file and the
// model in memory at once. The constructor validates the whole header as load_safetensors does.
class SafetensorsReader {
public:
  explicit SafetensorsReader(const std::string& path);
  const std::string& path() const { return path_; }
  const std::vector<std::string>& names() const { return names_; }  // in header order
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const SafetensorsInfo* find(const std::string& name) const;  // nullptr when absent
  torch::Tensor read(const std::string& name);  // CPU, stored dtype, owning its memory
  // Same, but the bytes land in `staging` (a byte tensor grown as needed and reused across
  // calls), so loading a model does not allocate and fault in a fresh buffer per tensor. The
  // result views staging: copy it before the next call.
  torch::Tensor read(const std::string& name, torch::Tensor& staging);
  // Rows [row_begin, row_end) of the first dimension, into staging the same way: the largest
  // tensors (a 128k x 4096 embedding) are read in pieces, so staging stays small.
  torch::Tensor read_rows(const std::string& name, int64_t row_begin, int64_t row_end, torch::Tensor& staging);

private:
  std::string path_;
  std::ifstream in_;
  std::vector<std::string> names_;
  std::map<std::string, SafetensorsInfo> tensors_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace ganpo
