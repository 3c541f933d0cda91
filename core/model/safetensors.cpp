#include "core/model/safetensors.h"

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>
#include <system_error>

#include <nlohmann/json.hpp>

#include "core/cpu_runtime.h"

#if defined(__unix__) || defined(__APPLE__)
#include <fcntl.h>
#include <unistd.h>
#endif

namespace ganpo {
namespace {

namespace fs = std::filesystem;

constexpr const char* kMetadataKey = "__metadata__";
// Same limit as the reference implementation: a real header is far smaller than this.
constexpr uint64_t kMaxHeaderSize = 100'000'000;

struct DtypeInfo {
  const char* name;
  torch::ScalarType type;
  int64_t size;
};

constexpr DtypeInfo kDtypes[] = {
    {"F64", torch::kFloat64, 8}, {"F32", torch::kFloat32, 4}, {"F16", torch::kFloat16, 2},
    {"BF16", torch::kBFloat16, 2}, {"I64", torch::kInt64, 8}, {"I32", torch::kInt32, 4},
    {"I16", torch::kInt16, 2},   {"I8", torch::kInt8, 1},     {"U8", torch::kUInt8, 1},
    {"BOOL", torch::kBool, 1},
};

const DtypeInfo* dtype_by_name(const std::string& name) {
  for (const auto& d : kDtypes)
    if (name == d.name) return &d;
  return nullptr;
}

const DtypeInfo* dtype_by_type(torch::ScalarType type) {
  for (const auto& d : kDtypes)
    if (type == d.type) return &d;
  return nullptr;
}

// Keeps messages printable whatever bytes a corrupt file holds.
std::string printable(const std::string& s, size_t max_len = 120) {
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

std::string quote_name(const std::string& name) { return "\"" + printable(name) + "\""; }

[[noreturn]] void corrupt(const std::string& path, const std::string& what) {
  throw ModelFileError(path + " is not a valid safetensors file (" + what +
                       "); re-export the model or restore the file from a backup");
}

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
  return out <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
}

struct Entry {
  std::string name;
  const DtypeInfo* dtype = nullptr;
  std::vector<int64_t> shape;
  uint64_t begin = 0;
  uint64_t end = 0;
};

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

Entry parse_entry(const std::string& path, const std::string& name, const nlohmann::json& v,
                  uint64_t buffer_size) {
  Entry e;
  e.name = name;
  const std::string who = "tensor " + quote_name(name);
  if (!v.is_object()) corrupt(path, who + " is not described by a JSON object");

  auto dt = v.find("dtype");
  if (dt == v.end() || !dt->is_string()) corrupt(path, who + " has no \"dtype\" string");
  e.dtype = dtype_by_name(dt->get<std::string>());
  if (!e.dtype)
    corrupt(path, who + " has unknown dtype " + quote_name(dt->get<std::string>()) +
                      " (supported: F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL)");

  auto sh = v.find("shape");
  if (sh == v.end() || !sh->is_array())
    corrupt(path, who + " has no \"shape\" list");
  // numel, and the product of max(dim, 1) which bounds LibTorch's stride arithmetic.
  uint64_t numel = 1, span = 1;
  const uint64_t limit = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
  for (const auto& d : *sh) {
    uint64_t n = 0;
    if (!as_count(d, n))
      corrupt(path, who + " has shape " + printable(sh->dump()) +
                        ", which is not a list of non-negative integers");
    const uint64_t m = std::max<uint64_t>(n, 1);
    if (span > limit / m)
      corrupt(path, who + " has shape " + printable(sh->dump()) + ", which is too large");
    span *= m;
    numel *= n;  // <= span, cannot overflow
    e.shape.push_back(static_cast<int64_t>(n));
  }
  if (numel > limit / static_cast<uint64_t>(e.dtype->size))
    corrupt(path, who + " has shape " + printable(sh->dump()) + ", which is too large");
  const uint64_t nbytes = numel * static_cast<uint64_t>(e.dtype->size);

  auto off = v.find("data_offsets");
  if (off == v.end() || !off->is_array() || off->size() != 2 || !as_count((*off)[0], e.begin) ||
      !as_count((*off)[1], e.end))
    corrupt(path, who + " has no \"data_offsets\" pair of non-negative integers");
  const std::string range =
      "data_offsets [" + std::to_string(e.begin) + ", " + std::to_string(e.end) + "]";
  if (e.begin > e.end) corrupt(path, who + " has " + range + " with begin after end");
  if (e.end > buffer_size)
    corrupt(path, who + " has " + range + " past the end of the " +
                      std::to_string(buffer_size) + "-byte data section (is the file truncated?)");
  if (e.end - e.begin != nbytes)
    corrupt(path, who + " has " + range + " spanning " + std::to_string(e.end - e.begin) +
                      " bytes, but " + e.dtype->name + " shape " + shape_string(e.shape) +
                      " needs " + std::to_string(nbytes));
  return e;
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
    torch::Tensor t;  // contiguous CPU
    const DtypeInfo* dtype;
    uint64_t nbytes;
  };
  std::vector<Item> items;
  items.reserve(tensors.size());
  for (const auto& [name, tensor] : tensors) {
    if (name == kMetadataKey)
      throw Error("cannot save a tensor named \"__metadata__\" to " + path +
                  ": the name is reserved for metadata");
    if (!tensor.defined())
      throw Error("cannot save tensor " + quote_name(name) + " to " + path + ": it is undefined");
    if (tensor.layout() != torch::kStrided || tensor.is_quantized())
      throw Error("cannot save tensor " + quote_name(name) + " to " + path +
                  ": only dense tensors can be written; call .to_dense() first");
    const DtypeInfo* d = dtype_by_type(tensor.scalar_type());
    if (!d)
      throw Error("cannot save tensor " + quote_name(name) + " to " + path + ": dtype " +
                  std::string(c10::toString(tensor.scalar_type())) +
                  " is not supported (use F64, F32, F16, BF16, I64, I32, I16, I8, U8 or BOOL)");
    torch::Tensor t = tensor.contiguous().cpu();
    items.push_back({name, t, d, static_cast<uint64_t>(t.numel()) * d->size});
  }
  std::sort(items.begin(), items.end(),
            [](const Item& a, const Item& b) { return a.name < b.name; });
  for (size_t i = 1; i < items.size(); ++i)
    if (items[i].name == items[i - 1].name)
      throw Error("cannot save to " + path + ": tensor name " + quote_name(items[i].name) +
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
  auto fail = [&](const std::string& what) {
    std::error_code ec;
    fs::remove(tmp, ec);
    throw ModelFileError("cannot write " + path + " (" + what +
                         "); check that the folder exists, is writable and the disk has space");
  };
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) fail("cannot create " + tmp);
    out.write(reinterpret_cast<const char*>(len), 8);
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
    for (const auto& it : items)
      if (it.nbytes)
        out.write(static_cast<const char*>(it.t.data_ptr()),
                  static_cast<std::streamsize>(it.nbytes));
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
  if (ec) fail("renaming " + tmp + " failed: " + ec.message());
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

  if (file_size < 8)
    corrupt(path, "it is " + std::to_string(file_size) +
                      " bytes long, shorter than the 8-byte header length");
  unsigned char len[8];
  read_exact(in_, path, 0, len, 8, "the header length");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | len[i];
  if (n > file_size - 8)
    corrupt(path, "header length " + std::to_string(n) + " exceeds file size " +
                      std::to_string(file_size));
  if (n > kMaxHeaderSize)
    corrupt(path, "header length " + std::to_string(n) + " exceeds the " +
                      std::to_string(kMaxHeaderSize) + "-byte limit");
  if (n < 2) corrupt(path, "header length " + std::to_string(n) + " is too small for a JSON object");

  std::string text(static_cast<size_t>(n), '\0');
  read_exact(in_, path, 8, text.data(), n, "the header");
  if (text[0] != '{')
    corrupt(path, "the header does not start with '{' (the file is not safetensors, or is "
                  "damaged)");
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    corrupt(path, "the header is not valid JSON: error at byte " + std::to_string(e.byte) +
                      " of " + std::to_string(n));
  }
  if (!header.is_object()) corrupt(path, "the header is not a JSON object");

  const uint64_t data_start = 8 + n;
  const uint64_t buffer_size = file_size - data_start;

  std::vector<Entry> entries;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == kMetadataKey) {
      if (it->is_null()) continue;
      if (!it->is_object()) corrupt(path, "\"__metadata__\" is not a JSON object");
      for (auto m = it->begin(); m != it->end(); ++m) {
        if (!m->is_string())
          corrupt(path, "metadata value for " + quote_name(m.key()) + " is not a string");
        metadata_[m.key()] = m->get<std::string>();
      }
      continue;
    }
    entries.push_back(parse_entry(path, it.key(), *it, buffer_size));
  }

  // Byte ranges must not overlap (empty tensors take no space and cannot overlap).
  std::vector<const Entry*> by_offset;
  for (const auto& e : entries)
    if (e.end > e.begin) by_offset.push_back(&e);
  std::sort(by_offset.begin(), by_offset.end(),
            [](const Entry* a, const Entry* b) { return a->begin < b->begin; });
  for (size_t i = 1; i < by_offset.size(); ++i)
    if (by_offset[i]->begin < by_offset[i - 1]->end)
      corrupt(path, "tensors " + quote_name(by_offset[i - 1]->name) + " and " +
                        quote_name(by_offset[i]->name) + " have overlapping data_offsets");

  for (const auto& e : entries) {
    names_.push_back(e.name);
    tensors_[e.name] = {e.dtype->type, e.dtype->name, e.shape, data_start + e.begin, e.end - e.begin};
  }
}

const SafetensorsInfo* SafetensorsReader::find(const std::string& name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

torch::Tensor SafetensorsReader::read(const std::string& name) {
  const SafetensorsInfo* info = find(name);
  if (!info)
    throw ModelFileError(path_ + " has no tensor " + quote_name(name) +
                         "; the file does not match the model description");
  torch::Tensor t;
  try {
    t = torch::empty(info->shape, torch::TensorOptions().dtype(info->dtype).device(torch::kCPU));
  } catch (const c10::Error&) {
    throw ModelFileError("cannot allocate tensor " + quote_name(name) + " (" + info->dtype_name +
                         " " + shape_string(info->shape) + ") from " + path_ +
                         "; free some memory and try again");
  }
  read_exact(in_, path_, info->offset, t.data_ptr(), info->nbytes, "tensor " + quote_name(name));
  if (info->dtype == torch::kBool) {
    const auto* p = static_cast<const unsigned char*>(t.data_ptr());
    for (uint64_t i = 0; i < info->nbytes; ++i)
      if (p[i] > 1)
        corrupt(path_, "BOOL tensor " + quote_name(name) + " holds byte value " +
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
  ensure_staging(staging, info->nbytes, "tensor " + quote_name(name) + " from " + path_);
  read_exact(in_, path_, info->offset, staging.data_ptr(), info->nbytes, "tensor " + quote_name(name));
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
  ensure_staging(staging, bytes, "tensor " + quote_name(name) + " from " + path_);
  read_exact(in_, path_, info->offset + row_bytes * static_cast<uint64_t>(row_begin), staging.data_ptr(), bytes,
             "tensor " + quote_name(name));
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
