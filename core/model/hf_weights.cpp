#include "core/model/hf_weights.h"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <set>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/model/architectures.h"
#include "core/model/safetensors.h"
#include "core/model/safetensors_header.h"
#include "core/run_files.h"

namespace fs = std::filesystem;

namespace ganpo {
namespace {

constexpr const char* kSingleFile = "model.safetensors";
constexpr const char* kIndexFile = "model.safetensors.index.json";
// A real index is well under a megabyte even for the largest models.
constexpr uintmax_t kMaxIndexBytes = 100'000'000;

bool starts_with(const std::string& s, const std::string& prefix) { return s.rfind(prefix, 0) == 0; }
bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string shape_text(torch::IntArrayRef sizes) { return c10::str(sizes); }

// One HF tensor and the parameter(s) it holds (three for a fused q/k/v).
struct Binding {
  std::string hf_name;
  WeightLayout layout = WeightLayout::same;
  std::vector<std::string> params;  // our names, by part
  std::vector<torch::Tensor> values;

  std::vector<int64_t> hf_shape() const {
    auto s = values[0].sizes().vec();
    if (layout == WeightLayout::same) return s;
    if (layout == WeightLayout::transposed) return {s[1], s[0]};
    int64_t rows = 0;
    for (const auto& v : values) rows += v.size(0);
    if (s.size() == 1) return {rows};
    return {s[1], rows};
  }
  torch::Tensor to_hf() const {
    if (layout == WeightLayout::same) return values[0].detach();
    if (layout == WeightLayout::transposed) return values[0].detach().t();
    // (Parts may differ in dtype: a merged q in float32 beside a k kept in bf16.)
    const auto dtype = values[0].scalar_type() == values[1].scalar_type() && values[1].scalar_type() == values[2].scalar_type()
                           ? values[0].scalar_type()
                           : torch::kFloat32;
    auto fused = torch::cat({values[0].detach().to(dtype), values[1].detach().to(dtype), values[2].detach().to(dtype)}, 0);
    return fused.dim() == 2 ? fused.t() : fused;
  }
  void copy_from_hf(const torch::Tensor& t) {
    torch::NoGradGuard guard;
    if (layout == WeightLayout::same) {
      values[0].copy_(t);
    } else if (layout == WeightLayout::transposed) {
      values[0].copy_(t.t());
    } else {
      auto rows = t.dim() == 2 ? t.t() : t;
      int64_t at = 0;
      for (auto& v : values) {
        v.copy_(rows.narrow(0, at, v.size(0)));
        at += v.size(0);
      }
    }
  }
};

// Which parameters bindings() binds: the model's own, or the trained copies of the modules
// trained whole (modules_to_save), each under the HF name of the tensor it copies.
enum class Bound { weights, trained_copies };
constexpr const char* kTrainedPrefix = "trained_";

// merged: adapted weights as W + scale B A (for writing); otherwise the parameters themselves
// (for loading into). LoRA adapters are never HF tensors of the model (see lora_adapter.h).
std::vector<Binding> bindings(CausalLM& model, bool merged = false, Bound bound = Bound::weights) {
  const Architecture& arch = architecture(model->shape().arch);
  std::vector<Binding> out;
  std::map<std::string, size_t> at;
  const auto params = model->named_parameters();
  for (const auto& p : params) {
    std::string name = p.key();
    if (bound == Bound::trained_copies) {
      // "norm.trained_weight" is bound as "norm.weight"
      const size_t leaf = name.rfind('.') + 1;
      if (name.compare(leaf, std::string(kTrainedPrefix).size(), kTrainedPrefix) != 0) continue;
      name = name.substr(0, leaf) + name.substr(leaf + std::string(kTrainedPrefix).size());
    } else if (is_adapter_parameter(name)) {
      continue;
    }
    const HfTensorName n = arch.hf_name(name);
    auto [it, fresh] = at.emplace(n.name, out.size());
    if (fresh) out.push_back({n.name, n.layout, {}, {}});
    Binding& b = out[it->second];
    const size_t parts = n.layout == WeightLayout::fused_qkv ? 3 : 1;
    b.params.resize(parts);
    b.values.resize(parts);
    b.params[static_cast<size_t>(n.part)] = p.key();
    b.values[static_cast<size_t>(n.part)] = merged ? model->merged_weight(p.key(), params) : p.value();
  }
  for (const auto& b : out)
    for (const auto& v : b.values) GANPO_ASSERT(v.defined(), "fused tensor " + b.hf_name + " lacks a part");
  return out;
}

// The weights files of a folder and which file holds each tensor.
class WeightFiles {
public:
  explicit WeightFiles(const std::string& dir) {
    const fs::path folder(dir);
    if (fs::exists(folder / kIndexFile)) {
      read_index((folder / kIndexFile).string(), folder);
    } else if (fs::exists(folder / kSingleFile)) {
      readers_.push_back(std::make_unique<SafetensorsReader>((folder / kSingleFile).string()));
      for (const auto& name : readers_[0]->names()) where_[name] = 0;
      description_ = (folder / kSingleFile).string();
    } else {
      std::string hint;
      if (fs::exists(folder / "pytorch_model.bin") || fs::exists(folder / "pytorch_model.bin.index.json"))
        hint = " (it has pytorch_model.bin: convert it to safetensors with transformers' "
               "save_pretrained(..., safe_serialization=True))";
      else if (fs::exists(folder / "config.json"))
        hint = " (a run that trains its architecture from random weights sets model.random_weights = true)";
      throw ModelFileError(dir + " has no " + kSingleFile + " and no " + kIndexFile + hint +
                           "; a Hugging Face model folder keeps its weights in safetensors files");
    }
  }

  const std::string& description() const { return description_; }
  bool has(const std::string& name) const { return where_.count(name) > 0; }
  const std::map<std::string, size_t>& tensors() const { return where_; }
  SafetensorsReader& reader_of(const std::string& name) { return *readers_[where_.at(name)]; }

private:
  void read_index(const std::string& path, const fs::path& folder) {
    std::error_code ec;
    const uintmax_t size = fs::file_size(path, ec);
    if (ec) throw ModelFileError("cannot read " + path + " (" + ec.message() + "); check that the file is readable");
    if (size > kMaxIndexBytes)
      throw ModelFileError(path + " is " + std::to_string(size) + " bytes, more than any shard index needs (" +
                           std::to_string(kMaxIndexBytes) + "); restore the file or re-export the model");
    std::ifstream in(path, std::ios::binary);
    if (!in) throw ModelFileError("cannot open " + path + "; check that the file is readable");
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const SafetensorsIndex index = parse_safetensors_index(text, path);
    for (const std::string& file : index.shards) {
      const fs::path shard = folder / file;
      if (!fs::exists(shard))
        throw ModelFileError(path + " lists shard " + file + ", which is missing from the folder; copy the whole model folder");
      readers_.push_back(std::make_unique<SafetensorsReader>(shard.string()));
    }
    for (const auto& [tensor, at] : index.tensor_shard) {
      if (!readers_[at]->find(tensor))
        throw ModelFileError(path + " says tensor \"" + tensor + "\" is in " + index.shards[at] +
                             ", but that shard does not contain it; the index and shards do not match");
      where_[tensor] = at;
    }
    description_ = path + " (" + std::to_string(readers_.size()) + " shards)";
  }

  std::vector<std::unique_ptr<SafetensorsReader>> readers_;
  std::map<std::string, size_t> where_;
  std::string description_;
};

bool floating(torch::ScalarType t) {
  return t == torch::kFloat32 || t == torch::kFloat16 || t == torch::kBFloat16 || t == torch::kFloat64;
}

}  // namespace

std::vector<std::pair<std::string, torch::Tensor>> model_state(CausalLM& model) {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& b : bindings(model, /*merged=*/true)) out.emplace_back(b.hf_name, b.to_hf());
  return out;
}

namespace {

// Copies the bound tensors from `tensors` (each under key_of(its HF name)); returns the keys used.
std::set<std::string> copy_bound(std::vector<Binding> bound, const std::map<std::string, torch::Tensor>& tensors,
                                 const TensorKey& key_of, const std::string& source, const std::string& mismatch) {
  std::set<std::string> used;
  for (auto& b : bound) {
    const std::string key = key_of(b.hf_name);
    auto it = tensors.find(key);
    if (it == tensors.end()) throw ModelFileError(source + " has no tensor \"" + key + "\": " + mismatch);
    if (it->second.sizes().vec() != b.hf_shape())
      throw ModelFileError(source + ": tensor \"" + key + "\" has shape " + shape_text(it->second.sizes()) +
                           " but the model expects " + shape_text(b.hf_shape()));
    b.copy_from_hf(it->second);
    used.insert(key);
  }
  return used;
}

}  // namespace

void load_model_state(CausalLM& model, const std::map<std::string, torch::Tensor>& tensors,
                      const std::string& source) {
  copy_bound(bindings(model), tensors, [](const std::string& name) { return name; }, source,
             "the weights do not match config.json; re-export the checkpoint");
}

std::vector<std::pair<std::string, torch::Tensor>> trained_copies_state(CausalLM& model) {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& b : bindings(model, false, Bound::trained_copies)) out.emplace_back(b.hf_name, b.to_hf());
  return out;
}

std::set<std::string> load_trained_copies(CausalLM& model, const std::map<std::string, torch::Tensor>& tensors,
                                          const TensorKey& key_of, const std::string& source) {
  return copy_bound(bindings(model, false, Bound::trained_copies), tensors, key_of, source,
                    "the adapter's modules_to_save (or bias) names a module whose trained tensors it lacks; the adapter "
                    "does not match adapter_config.json or the base model");
}

// Tensors above this size are read in row pieces of about this size.
constexpr uint64_t kStagingBytes = 64ull << 20;

namespace {
thread_local const std::atomic<bool>* t_load_cancel = nullptr;

void throw_if_load_cancelled() {
  if (t_load_cancel && t_load_cancel->load()) throw LoadCancelled();
}
}  // namespace

LoadCancelGuard::LoadCancelGuard(const std::atomic<bool>* cancel) : previous_(t_load_cancel) { t_load_cancel = cancel; }
LoadCancelGuard::~LoadCancelGuard() { t_load_cancel = previous_; }

std::string load_model_weights(CausalLM& model, const std::string& dir, const WarningSink& warn) {
  const Architecture& arch = architecture(model->shape().arch);
  WeightFiles files(dir);
  std::set<std::string> used;
  std::map<std::string, int64_t> stored;  // dtype -> elements
  torch::Tensor staging;                  // one read buffer for every tensor
  for (auto& b : bindings(model)) {
    throw_if_load_cancelled();
    std::string name = b.hf_name;
    const std::string prefix = arch.optional_prefix;
    if (!files.has(name) && !prefix.empty() && starts_with(name, prefix) && files.has(name.substr(prefix.size())))
      name = name.substr(prefix.size());
    if (!files.has(name))
      throw ModelFileError(files.description() + " has no tensor \"" + b.hf_name + "\", which " + arch.hf_class +
                           " with this config.json needs; the weights do not match config.json");
    auto& reader = files.reader_of(name);
    const SafetensorsInfo& info = *reader.find(name);
    if (!floating(info.dtype))
      throw ModelFileError(reader.path() + ": tensor \"" + name + "\" is stored as " + info.dtype_name +
                           "; model weights must be F32, F16, BF16 or F64 (quantised checkpoints are "
                           "not supported: use the unquantised model)");
    if (info.shape != b.hf_shape())
      throw ModelFileError(reader.path() + ": tensor \"" + name + "\" has shape " + shape_text(info.shape) +
                           " but config.json implies " + shape_text(b.hf_shape()) +
                           "; the weights do not match config.json");
    stored[dtype_name(info.dtype)] += static_cast<int64_t>(info.nbytes / c10::elementSize(info.dtype));
    if (b.layout == WeightLayout::same && info.nbytes > kStagingBytes && info.shape[0] > 1) {
      // A large plain tensor (embedding, output head) in row pieces: staging stays small.
      const uint64_t row_bytes = info.nbytes / static_cast<uint64_t>(info.shape[0]);
      const int64_t rows = std::max<int64_t>(1, static_cast<int64_t>(kStagingBytes / std::max<uint64_t>(row_bytes, 1)));
      torch::NoGradGuard guard;
      for (int64_t r = 0; r < info.shape[0]; r += rows) {
        throw_if_load_cancelled();
        const int64_t end = std::min(info.shape[0], r + rows);
        b.values[0].slice(0, r, end).copy_(reader.read_rows(name, r, end, staging));
      }
    } else {
      b.copy_from_hf(reader.read(name, staging));
    }
    used.insert(name);
  }
  std::vector<std::string> extra;
  for (const auto& [name, file] : files.tensors()) {
    if (used.count(name)) continue;
    bool ignored = model->shape().tie_embeddings && ends_with(name, "lm_head.weight");
    for (const auto& suffix : arch.ignored_suffixes) ignored = ignored || ends_with(name, suffix);
    if (!ignored) extra.push_back(name);
  }
  if (!extra.empty() && warn) {
    std::string list;
    for (size_t i = 0; i < extra.size() && i < 8; ++i) list += (i ? ", " : "") + extra[i];
    if (extra.size() > 8) list += " and " + std::to_string(extra.size() - 8) + " more";
    warn(dir + ": " + std::to_string(extra.size()) + " tensor(s) in the weights are not used by " +
         arch.hf_class + " and were ignored: " + list);
  }
  std::string most = "float32";
  int64_t most_elements = -1;
  for (const auto& [dtype, n] : stored)
    if (n > most_elements) most = dtype, most_elements = n;
  return most;
}

std::string stored_weights_dtype(const std::string& dir) {
  WeightFiles files(dir);
  std::map<std::string, int64_t> stored;  // dtype -> elements, as load_model_weights counts them
  for (const auto& [name, shard] : files.tensors()) {
    const SafetensorsInfo& info = *files.reader_of(name).find(name);
    if (floating(info.dtype)) stored[dtype_name(info.dtype)] += static_cast<int64_t>(info.nbytes / c10::elementSize(info.dtype));
  }
  std::string most = "float32";
  int64_t most_elements = -1;
  for (const auto& [dtype, n] : stored)
    if (n > most_elements) most = dtype, most_elements = n;
  return most;
}

uint64_t model_weights_bytes(const std::string& dir) {
  uint64_t total = 0;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec))
    if (entry.path().extension() == ".safetensors") total += entry.file_size(ec);
  return total;
}

void save_model_weights(const std::string& dir, CausalLM& model, torch::ScalarType dtype,
                        uint64_t max_shard_bytes) {
  const auto state = model_state(model);
  const int64_t element = static_cast<int64_t>(c10::elementSize(dtype));
  std::vector<std::vector<size_t>> shards(1);
  uint64_t shard_bytes = 0, total = 0;
  for (size_t i = 0; i < state.size(); ++i) {
    const uint64_t bytes = static_cast<uint64_t>(state[i].second.numel() * element);
    if (shard_bytes > 0 && shard_bytes + bytes > max_shard_bytes) {
      shards.emplace_back();
      shard_bytes = 0;
    }
    shards.back().push_back(i);
    shard_bytes += bytes;
    total += bytes;
  }
  const fs::path folder(dir);
  std::error_code ec;
  fs::remove(folder / kSingleFile, ec);
  fs::remove(folder / kIndexFile, ec);
  // One shard's converted copies at a time, so saving needs little memory beyond the model.
  const auto write_shard = [&](const std::vector<size_t>& items, const std::string& path) {
    std::vector<std::pair<std::string, torch::Tensor>> tensors;
    for (size_t i : items) tensors.emplace_back(state[i].first, state[i].second.to(torch::kCPU, dtype));
    save_safetensors(path, tensors, {{"format", "pt"}});
  };
  if (shards.size() == 1) {
    write_shard(shards[0], (folder / kSingleFile).string());
    return;
  }
  nlohmann::json weight_map = nlohmann::json::object();
  for (size_t s = 0; s < shards.size(); ++s) {
    char name[64];
    std::snprintf(name, sizeof name, "model-%05zu-of-%05zu.safetensors", s + 1, shards.size());
    write_shard(shards[s], (folder / name).string());
    for (size_t i : shards[s]) weight_map[state[i].first] = name;
  }
  const nlohmann::json index = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
  write_text_file((folder / kIndexFile).string(), index.dump(2) + "\n");
}

torch::ScalarType dtype_from_name(const std::string& name) {
  if (name == "float32") return torch::kFloat32;
  if (name == "bfloat16") return torch::kBFloat16;
  if (name == "float16") return torch::kFloat16;
  throw Error("dtype \"" + name + "\" cannot store model weights; use float32, bfloat16 or float16");
}

std::string dtype_name(torch::ScalarType dtype) {
  if (dtype == torch::kBFloat16) return "bfloat16";
  if (dtype == torch::kFloat16) return "float16";
  return "float32";
}

}  // namespace ganpo
