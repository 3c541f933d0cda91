#include "core/checkpoint.h"

#include <filesystem>
#include <fstream>

#include "core/cpu_runtime.h"
#include "core/error.h"
#include "core/gpu_monitor.h"
#include "core/json_depth.h"
#include "core/model/architectures.h"
#include "core/model/hf_weights.h"
#include "core/model/lora_adapter.h"
#include "core/model/safetensors.h"
#include "core/run_files.h"

namespace fs = std::filesystem;

namespace ganpo {

void write_json_file(const std::string& path, const nlohmann::json& j) { write_text_file(path, j.dump(2) + "\n"); }

namespace {
template <typename Json>
Json parse_json_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw ModelFileError("missing file " + path + "; the folder is incomplete");
  try {
    return Json::parse(in);
  } catch (const std::exception& e) {
    throw ModelFileError(path + " is not valid JSON (" + std::string(e.what()) +
                         "); the file is corrupt, use another checkpoint");
  }
}
}  // namespace

nlohmann::json read_json_file(const std::string& path) { return parse_json_file<nlohmann::json>(path); }

nlohmann::ordered_json read_ordered_json_file(const std::string& path) {
  return parse_json_file<nlohmann::ordered_json>(path);
}

std::string saved_dtype(const ModelShape& shape, const SaveOptions& options) {
  if (!options.dtype.empty()) return options.dtype;
  return shape.dtype == "bfloat16" || shape.dtype == "float16" ? shape.dtype : "float32";
}

void save_model_files(const std::string& dir, CausalLM& model, const Tokenizer& tokenizer,
                      const SaveOptions& options) {
  fs::create_directories(dir);
  const ModelShape& shape = model->shape();
  const std::string dtype = saved_dtype(shape, options);
  save_model_weights(dir, model, dtype_from_name(dtype), options.max_shard_bytes);
  auto config = write_hf_config(shape, dtype);
  if (shape.hf_config.empty()) {  // a built-in preset: its token ids come from our tokenizer
    config["bos_token_id"] = tokenizer.bos_id();
    config["eos_token_id"] = tokenizer.eos_id();
    config["pad_token_id"] = tokenizer.pad_id();
  }
  write_json_file((fs::path(dir) / "config.json").string(), config);
  const auto generation =
      shape.hf_generation_config.empty()
          ? generation_config(shape, tokenizer.bos_id(), tokenizer.eos_id(), tokenizer.pad_id())
          : nlohmann::json::parse(shape.hf_generation_config);
  write_json_file((fs::path(dir) / "generation_config.json").string(), generation);
  tokenizer.save(dir);
}

ModelShape read_model_config(const std::string& dir) {
  if (!fs::is_directory(dir))
    throw ModelFileError("model folder " + dir +
                         " does not exist; give a Hugging Face model folder or a checkpoint-<step> / final folder");
  const std::string path = (fs::path(dir) / "config.json").string();
  ModelShape shape = read_hf_config(read_json_file(path), path);
  const auto generation = fs::path(dir) / "generation_config.json";
  if (fs::exists(generation)) {
    const auto j = read_json_file(generation.string());
    if (json_nested_deeper_than(j, 64))  // dump() recurses once per level
      throw ModelFileError(generation.string() + " nests deeper than 64 levels; it is damaged, "
                           "delete it (generation settings then take their defaults)");
    shape.hf_generation_config = j.dump();
  }
  return shape;
}

CausalLM load_model(const std::string& dir, const std::function<void(const std::string&)>& warn) {
  if (is_peft_adapter_folder(dir)) {
    // A PEFT adapter folder: its base model, with the adapters on.
    const PeftAdapterConfig adapter = read_peft_adapter_config(dir);
    CausalLM model = load_model(adapter.base_model, warn);
    try {
      model->add_lora(adapter.spec);
    } catch (const ConfigError& e) {  // what its settings pick in the base model
      throw ModelFileError((fs::path(dir) / "adapter_config.json").string() + ": " + e.what());
    }
    load_peft_adapter_weights(model, dir);
    return model;
  }
  if (is_written_checkpoint(dir)) require_complete_checkpoint(dir, "use an earlier checkpoint-<step> folder of the run");
  tune_allocator_for_tensors();
  CausalLM model(read_model_config(dir), /*init=*/false);
  for (auto& p : model->parameters()) advise_huge_pages(p.data_ptr(), p.nbytes());
  model->set_stored_dtype(load_model_weights(model, dir, warn));
  return model;
}

namespace {

void keep_frozen(CausalLM& model, FrozenProjections frozen) {
  if (frozen == FrozenProjections::float32) return;
  for (auto& p : model->parameters()) p.requires_grad_(false);
  model->store_projections_in_bf16(frozen == FrozenProjections::bf16_where_exact || model->lora().r > 0);
}

}  // namespace

LoadedModel load_model_folder(const std::string& dir, const torch::Device& device,
                              const std::function<void(const std::string&)>& warn, FrozenProjections frozen) {
  // (A PEFT adapter folder's tokenizer is its base model's.)
  const std::string tokenizer_dir = is_peft_adapter_folder(dir) ? read_peft_adapter_config(dir).base_model : dir;
  LoadedModel out;
  out.model = load_model(dir, warn);
  out.shape = out.model->shape();
  out.tokenizer = load_tokenizer(tokenizer_dir);
  if (out.tokenizer->vocab_size() > out.shape.vocab_size)
    throw ModelFileError(tokenizer_dir + ": tokenizer has " + std::to_string(out.tokenizer->vocab_size()) +
                         " tokens but config.json vocab_size is " + std::to_string(out.shape.vocab_size));
  keep_frozen(out.model, frozen);
  out.model->to(device);
  out.model->eval();
  return out;
}

LoadedModel load_model_for_inference(const std::string& dir, const torch::Device& device, const std::string& precision,
                                     const std::function<void(const std::string&)>& warn) {
  if (precision != "auto" && precision != "fp32" && precision != "bf16")
    throw Error("the precision to run a model at must be auto, fp32 or bf16, got \"" + precision + "\"");
  if (precision == "bf16" && !device.is_cuda())
    throw Error("precision bf16 needs a CUDA device; on the CPU a model computes in float32 (LibTorch's CPU bf16 "
                "kernels are slower, not faster): choose precision auto or fp32, or a CUDA device");
  LoadedModel out = load_model_folder(dir, torch::kCPU, warn);
  for (auto& p : out.model->parameters()) p.requires_grad_(false);
  // (A GPU before Ampere, where NVML says so, has no native bf16: "auto" keeps float32 there.)
  const auto gpu = device.is_cuda() ? read_gpu(device.has_index() ? device.index() : 0) : std::nullopt;
  const bool native_bf16 = !gpu || gpu->compute_capability_major == 0 || gpu->compute_capability_major >= 8;
  out.bf16_autocast = device.is_cuda() && (precision == "bf16" || (precision == "auto" && native_bf16 &&
                                                                   out.shape.dtype == "bfloat16"));
  if (out.bf16_autocast)  // (before the move: the device never holds the projections in float32)
    keep_frozen(out.model, precision == "bf16" ? FrozenProjections::bf16 : FrozenProjections::bf16_where_exact);
  out.model->to(device);
  return out;
}

}  // namespace ganpo
