#include "core/model/safetensors.h"

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <system_error>

#include <nlohmann/json.hpp>

#include "core/cpu_runtime.h"
#include "core/model/safetensors_header.h"

#if defined(__unix__) || defined(__APPLE__)
#include <fcntl.h>
#include <unistd.h>
#endif

namespace ganpo {
namespace {

namespace fs = std::filesystem;

constexpr const char* kMetadataKey = "__metadata__";

// The LibTorch type of each safetensors dtype (core/model/safetensors_header.h has the sizes).
struct TorchDtype {
  const char* name;
  torch::ScalarType type;
};

constexpr TorchDtype kTorchDtypes[] = {
    {"F64", torch::kFloat64}, {"F32", torch::kFloat32}, {"F16", torch::kFloat16}, {"BF16", torch::kBFloat16},
    {"I64", torch::kInt64},   {"I32", torch::kInt32},   {"I16", torch::kInt16},   {"I8", torch::kInt8},
    {"U8", torch::kUInt8},    {"BOOL", torch::kBool},
};

torch::ScalarType torch_dtype(const SafetensorsDtype& dtype) {
  for (const auto& d : kTorchDtypes)
    if (std::strcmp(d.name, dtype.name) == 0) return d.type;
  GANPO_ASSERT(false, std::string("safetensors dtype without a LibTorch type: ") + dtype.name);
  return torch::kFloat32;
}

const SafetensorsDtype* dtype_by_type(torch::ScalarType type) {
  for (const auto& d : kTorchDtypes)
    if (type == d.type) return safetensors_dtype(d.name);
  return nullptr;
}

void read_exact(std::ifstream& in, const std::string& path, uint64_t pos, void* dst, uint64_t n,
                const std::string& what) {
  if (n == 0) return;
  in.clear();
  in.seekg(static_cast<std::streamoff>(pos));
  in.read(static_cast<char*>(dst), static_cast<std::streamsize>(n));
  if (!in || static_cast<uint64_t>(in.gcount()) != n)
    throw ModelFileError("cannot read " + what + " from " + path +
                         " (the file is unreadable or was changed while loading); check the file "
                         "and its disk, then try again");
}

}  // namespace

void save_safetensors(const std::string& path,
                      const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  struct Item {
    std::string name;
    torch::Tensor t;  // as given: copied to a contiguous CPU tensor one at a time while writing
    const SafetensorsDtype* dtype;
    uint64_t nbytes;
  };
  std::vector<Item> items;
  items.reserve(tensors.size());
  for (const auto& [name, tensor] : tensors) {
    if (name == kMetadataKey)
      throw Error("cannot save a tensor named \"__metadata__\" to " + path +
                  ": the name is reserved for metadata");
    if (!tensor.defined())
      throw Error("cannot save tensor " + safetensors_quote(name) + " to " + path + ": it is undefined");
    if (tensor.layout() != torch::kStrided || tensor.is_quantized())
      throw Error("cannot save tensor " + safetensors_quote(name) + " to " + path +
                  ": only dense tensors can be written; call .to_dense() first");
    const SafetensorsDtype* d = dtype_by_type(tensor.scalar_type());
    if (!d)
      throw Error("cannot save tensor " + safetensors_quote(name) + " to " + path + ": dtype " +
                  std::string(c10::toString(tensor.scalar_type())) +
                  " is not supported (use F64, F32, F16, BF16, I64, I32, I16, I8, U8 or BOOL)");
    items.push_back({name, tensor, d, static_cast<uint64_t>(tensor.numel()) * d->size});
  }
  std::sort(items.begin(), items.end(),
            [](const Item& a, const Item& b) { return a.name < b.name; });
  for (size_t i = 1; i < items.size(); ++i)
    if (items[i].name == items[i - 1].name)
      throw Error("cannot save to " + path + ": tensor name " + safetensors_quote(items[i].name) +
                  " appears twice");

  // Metadata first, then tensors by name, each entry's keys in the reference order.
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json meta = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) meta[k] = v;
    header[kMetadataKey] = std::move(meta);
  }
  uint64_t offset = 0;
  for (const auto& it : items) {
    nlohmann::ordered_json e = nlohmann::ordered_json::object();
    e["dtype"] = it.dtype->name;
    e["shape"] = it.t.sizes().vec();
    e["data_offsets"] = {offset, offset + it.nbytes};
    header[it.name] = std::move(e);
    offset += it.nbytes;
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::json::exception& e) {
    throw Error("cannot save to " + path +
                ": a tensor name or metadata string is not valid UTF-8 (" + e.what() + ")");
  }
  text.append((8 - text.size() % 8) % 8, ' ');

  unsigned char len[8];
  uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>((n >> (8 * i)) & 0xff);

  const std::string tmp = path + ".tmp";
  auto fail = [&](std::string what) {
    if (errno) what += ": " + std::string(std::strerror(errno));  // e.g. "No space left on device"
    std::error_code ec;
    fs::remove(tmp, ec);
    throw ModelFileError("cannot write " + path + " (" + what +
                         "); check that the folder exists, is writable and the disk has space");
  };
  errno = 0;
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) fail("cannot create " + tmp);
    out.write(reinterpret_cast<const char*>(len), 8);
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
    for (const auto& it : items)
      if (it.nbytes) {
        // One host copy at a time (a GPU model's weights need not fit in host memory at once).
        torch::Tensor t;
        try {
          t = it.t.contiguous().cpu();
        } catch (...) {  // out of memory for the copy: no partial file is left behind
          out.close();
          std::error_code ec;
          fs::remove(tmp, ec);
          throw;
        }
        out.write(static_cast<const char*>(t.data_ptr()), static_cast<std::streamsize>(it.nbytes));
      }
    out.flush();
    if (!out) fail("writing " + tmp + " failed");
    out.close();
    if (out.fail()) fail("closing " + tmp + " failed");
  }
#if defined(__unix__) || defined(__APPLE__)
  // Make the data durable before the rename makes it visible, so a crash cannot leave an
  // empty or partial file under the final name.
  {
    const int fd = ::open(tmp.c_str(), O_RDONLY);
    if (fd < 0 || ::fsync(fd) != 0) {
      if (fd >= 0) ::close(fd);
      fail("syncing " + tmp + " to disk failed");
    }
    ::close(fd);
  }
#endif
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) {
    errno = 0;
    fail("renaming " + tmp + " failed: " + ec.message());
  }
}

SafetensorsReader::SafetensorsReader(const std::string& path) : path_(path) {
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (!fs::exists(st))
    throw ModelFileError(path + " does not exist; check the model folder (a complete export "
                                "has its weights in *.safetensors files)");
  if (!fs::is_regular_file(st))
    throw ModelFileError(path + " is not a regular file; point at a .safetensors file");
  const uintmax_t fsize = fs::file_size(path, ec);
  if (ec)
    throw ModelFileError("cannot read " + path + " (" + ec.message() +
                         "); check that the file is readable");
  in_.open(path, std::ios::binary);
  if (!in_)
    throw ModelFileError("cannot open " + path + " (" + std::strerror(errno) +
                         "); check that the file is readable");
  const uint64_t file_size = static_cast<uint64_t>(fsize);
  unsigned char len[8] = {};
  if (file_size >= 8) read_exact(in_, path, 0, len, 8, "the header length");
  const uint64_t n = safetensors_header_length(len, file_size, path);
  std::string text(static_cast<size_t>(n), '\0');
  read_exact(in_, path, 8, text.data(), n, "the header");
  SafetensorsHeader header = parse_safetensors_header(text, file_size, path);
  metadata_ = std::move(header.metadata);
  for (const auto& e : header.tensors) {
    names_.push_back(e.name);
    tensors_[e.name] = {torch_dtype(*e.dtype), e.dtype->name, e.shape, header.data_start + e.begin, e.end - e.begin};
  }
}

const SafetensorsInfo* SafetensorsReader::find(const std::string& name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

torch::Tensor SafetensorsReader::read(const std::string& name) {
  const SafetensorsInfo* info = find(name);
  if (!info)
    throw ModelFileError(path_ + " has no tensor " + safetensors_quote(name) +
                         "; the file does not match the model description");
  torch::Tensor t;
  try {
    t = torch::empty(info->shape, torch::TensorOptions().dtype(info->dtype).device(torch::kCPU));
  } catch (const c10::Error&) {
    throw ModelFileError("cannot allocate tensor " + safetensors_quote(name) + " (" + info->dtype_name +
                         " " + safetensors_shape_string(info->shape) + ") from " + path_ +
                         "; free some memory and try again");
  }
  read_exact(in_, path_, info->offset, t.data_ptr(), info->nbytes, "tensor " + safetensors_quote(name));
  if (info->dtype == torch::kBool) {
    const auto* p = static_cast<const unsigned char*>(t.data_ptr());
    for (uint64_t i = 0; i < info->nbytes; ++i)
      if (p[i] > 1)
        safetensors_corrupt(path_, "BOOL tensor " + safetensors_quote(name) + " holds byte value " +
                           std::to_string(p[i]) + " (only 0 and 1 are allowed)");
  }
  return t;
}

namespace {

// Grows the reused read buffer to at least `bytes` (the old one is released first).
void ensure_staging(torch::Tensor& staging, uint64_t bytes, const std::string& what) {
  if (staging.defined() && static_cast<uint64_t>(staging.numel()) >= bytes) return;
  staging = torch::Tensor();
  try {
    staging = torch::empty({static_cast<int64_t>(std::max<uint64_t>(bytes, 1))}, torch::kUInt8);
    advise_huge_pages(staging.data_ptr(), bytes);
  } catch (const c10::Error&) {
    throw ModelFileError("cannot allocate " + std::to_string(bytes) + " bytes to read " + what +
                         "; free some memory and try again");
  }
}

}  // namespace

torch::Tensor SafetensorsReader::read(const std::string& name, torch::Tensor& staging) {
  const SafetensorsInfo* info = find(name);
  if (!info || info->dtype == torch::kBool) return read(name);
  ensure_staging(staging, info->nbytes, "tensor " + safetensors_quote(name) + " from " + path_);
  read_exact(in_, path_, info->offset, staging.data_ptr(), info->nbytes, "tensor " + safetensors_quote(name));
  return torch::from_blob(staging.data_ptr(), info->shape, torch::TensorOptions().dtype(info->dtype));
}

torch::Tensor SafetensorsReader::read_rows(const std::string& name, int64_t row_begin, int64_t row_end,
                                           torch::Tensor& staging) {
  const SafetensorsInfo* info = find(name);
  GANPO_ASSERT(info && info->dtype != torch::kBool && !info->shape.empty() && 0 <= row_begin &&
                   row_begin <= row_end && row_end <= info->shape[0],
               "read_rows outside the tensor " + name);
  const uint64_t row_bytes = info->shape[0] > 0 ? info->nbytes / static_cast<uint64_t>(info->shape[0]) : 0;
  const uint64_t bytes = row_bytes * static_cast<uint64_t>(row_end - row_begin);
  ensure_staging(staging, bytes, "tensor " + safetensors_quote(name) + " from " + path_);
  read_exact(in_, path_, info->offset + row_bytes * static_cast<uint64_t>(row_begin), staging.data_ptr(), bytes,
             "tensor " + safetensors_quote(name));
  auto shape = info->shape;
  shape[0] = row_end - row_begin;
  return torch::from_blob(staging.data_ptr(), shape, torch::TensorOptions().dtype(info->dtype));
}

SafetensorsFile load_safetensors(const std::string& path) {
  SafetensorsReader reader(path);
  SafetensorsFile result;
  result.metadata = reader.metadata();
  for (const auto& name : reader.names()) result.tensors.emplace(name, reader.read(name));
  return result;
}

}  // namespace ganpo
