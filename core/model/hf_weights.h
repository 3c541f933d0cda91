// A model's weights as Hugging Face stores them: names, layouts, shards and dtypes.
//
// Reading: `model.safetensors`, or `model-0000i-of-0000n.safetensors` shards listed in
// `model.safetensors.index.json`. Each of our parameters is found under its family's HF name
// (core/model/architectures.h), checked against the expected shape, read on its own (streamed,
// so peak memory stays near the model's own size) and converted to the parameter's dtype
// (float32 on CPU) whatever the stored dtype (F32, F16, BF16, F64). Missing or mis-shaped
// tensors, bad indexes and truncated shards are ModelFileErrors naming the file and tensor;
// tensors the model does not use are reported through `warn`.
//
// Writing: the same names and layouts, in a chosen dtype, one file or shards of at most
// `max_shard_bytes` with the index, each file written atomically.
#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <torch/torch.h>

#include "core/error.h"
#include "core/model/causal_lm.h"

namespace ganpo {

// Our parameters as the family's HF tensors (fused / transposed where HF stores them so), with
// LoRA adapters merged into the weights they adapt (a model transformers loads as it is).
std::vector<std::pair<std::string, torch::Tensor>> model_state(CausalLM& model);

// Copies HF-named tensors into the model; throws ModelFileError naming missing or mis-shaped
// ones (source names where they came from).
void load_model_state(CausalLM& model, const std::map<std::string, torch::Tensor>& tensors,
                      const std::string& source);

// The trained copies of the modules a LoRA model trains whole (PEFT's modules_to_save,
// "norm.trained_weight") and of the biases it trains ("layers.0.self_attn.q_proj.trained_bias")
// under the HF names of the tensors they copy ("model.norm.weight"),
// fused / transposed as the family stores those (GPT-2's c_attn from q's, k's and v's copies).
std::vector<std::pair<std::string, torch::Tensor>> trained_copies_state(CausalLM& model);
// Copies tensors into the trained copies, each read from key_of(its HF name); returns the keys
// used. Throws ModelFileError naming a missing or mis-shaped one.
using TensorKey = std::function<std::string(const std::string& hf_name)>;
std::set<std::string> load_trained_copies(CausalLM& model, const std::map<std::string, torch::Tensor>& tensors,
                                          const TensorKey& key_of, const std::string& source);

using WarningSink = std::function<void(const std::string&)>;

// Loads the weights of an HF model folder into model (built from the folder's config.json).
// Returns the dtype most of them were stored in ("float32" | "bfloat16" | "float16").
// Gives up with LoadCancelled where a LoadCancelGuard of this thread holds a flag that is set.
std::string load_model_weights(CausalLM& model, const std::string& dir, const WarningSink& warn = {});

// A load that may be given up (the playground's Cancel, a tab closing while an 8B model loads):
// while a guard on this thread holds a flag, load_model_weights looks at it before each tensor
// (and each 64 MiB piece of a large one) and throws LoadCancelled once it is set; the half-loaded
// model is the caller's to drop. Without a guard a load runs to its end, as before.
class LoadCancelled : public Error {
public:
  LoadCancelled() : Error("the model load was cancelled") {}
};
class LoadCancelGuard {
public:
  explicit LoadCancelGuard(const std::atomic<bool>* cancel);
  ~LoadCancelGuard();
  LoadCancelGuard(const LoadCancelGuard&) = delete;
  LoadCancelGuard& operator=(const LoadCancelGuard&) = delete;

private:
  const std::atomic<bool>* previous_;
};

// Total bytes of the weights files in dir (what `ganpo inspect` and load figures compare to).
uint64_t model_weights_bytes(const std::string& dir);

// The dtype most of the folder's weights are stored in ("float32" | "bfloat16" | "float16"), as
// load_model_weights returns it, from the safetensors headers alone (no tensor data is read;
// config.json's torch_dtype may be missing or say otherwise). Opens the files as a load does, so
// it throws the ModelFileError a load would: no model.safetensors nor index (pytorch_model.bin
// only), a shard the index names missing, a damaged header.
std::string stored_weights_dtype(const std::string& dir);

constexpr uint64_t kDefaultMaxShardBytes = 5'000'000'000ULL;  // transformers' default "5GB"

// Writes model.safetensors (or shards + model.safetensors.index.json) into dir.
// dtype: torch::kFloat32, kBFloat16 or kFloat16.
void save_model_weights(const std::string& dir, CausalLM& model, torch::ScalarType dtype,
                        uint64_t max_shard_bytes = kDefaultMaxShardBytes);

// "float32" | "bfloat16" | "float16" <-> dtype; throws ganpo::Error for other names.
torch::ScalarType dtype_from_name(const std::string& name);
std::string dtype_name(torch::ScalarType dtype);

}  // namespace ganpo
