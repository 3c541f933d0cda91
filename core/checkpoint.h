// Checkpoint folders: a model that can be loaded on its own, plus the trainer's state.
//
//   model.safetensors     policy weights in HF names and layout (or model-0000i-of-0000n shards
//                         + model.safetensors.index.json above the shard size)
//   config.json           the model's HF config (the source folder's, when it came from one)
//   generation_config.json
//   tokenizer files       tokenizer_config.json (+ tokenizer.json, ... for HF tokenizers)
//   meta.json             step, stage, run name, the newest held-out evaluation at save time
//                         and the step it was of ("eval", "eval_step")
//   run_config.toml       the resolved run configuration
//   trainer_state/        optimizer.pt, critic_optimizer.pt, critics.safetensors, state.json
//                         (step, epoch, data cursor, tokens seen, EMA means), rng.safetensors;
//                         a LoRA run's lora.safetensors (the trained adapters); and where
//                         model.safetensors rounds the trained weights (stored in bf16 or fp16:
//                         model.save_dtype, or a folder's dtype kept), master_weights.safetensors,
//                         the float32 weights the optimizer updates, which a resume continues from;
//                         with train.precompute_ref_log_probs, precomputed_ref_logps.safetensors
//                         (the reference's log-probs of every pair, which a resume may keep)
//   complete.json         written last: the folder is complete (core/atomic_folder.h)
// A folder is written as NAME.tmp and renamed when complete, so a crash never leaves a
// half-written checkpoint under its final name.
#pragma once

#include <torch/torch.h>

#include <functional>
#include <map>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "core/atomic_folder.h"
#include "core/model/causal_lm.h"
#include "core/tokenizer.h"

namespace ganpo {

struct LoadedModel {
  CausalLM model{nullptr};
  std::unique_ptr<Tokenizer> tokenizer;
  ModelShape shape;
  // Its passes run under CUDA's bf16 autocast (load_model_for_inference's bf16): decoding with
  // SamplingOptions::bf16_autocast, scoring inside a Bf16Autocast.
  bool bf16_autocast = false;
};

struct SaveOptions {
  std::string dtype;  // "float32" | "bfloat16" | "float16"; "" = the dtype the model was loaded from
  uint64_t max_shard_bytes = 5'000'000'000ULL;
};

// The dtype save_model_files writes a model's weights in: options.dtype, else the one its folder
// was stored in (bfloat16, float16), else float32.
std::string saved_dtype(const ModelShape& shape, const SaveOptions& options);
// Writes the weights, config.json, generation_config.json and the tokenizer files into dir
// (created): a folder transformers' from_pretrained loads unchanged.
void save_model_files(const std::string& dir, CausalLM& model, const Tokenizer& tokenizer,
                      const SaveOptions& options = {});
// Reads config.json into a shape (sizes, layout, the family). Throws ModelFileError.
ModelShape read_model_config(const std::string& dir);
// Builds the model of dir's config.json and loads its weights (float32, on CPU); a PEFT adapter
// folder gives its base model with the adapters on. Unused tensors are reported through warn.
// Throws ModelFileError with a message saying what to do.
CausalLM load_model(const std::string& dir, const std::function<void(const std::string&)>& warn = {});
// How load_model_folder keeps a model whose weights all stay frozen (a bf16 run's reference, a
// bf16 LoRA run's base; CausalLMImpl::store_projections_in_bf16): every weight frozen and, before
// the move, so the device never holds them in float32, its projections in bf16: those whose
// values bf16 holds (a folder stored in bf16), or all of them (a reference, which nothing writes
// back; where exactly only, if the folder is a PEFT adapter's).
enum class FrozenProjections { float32, bf16_where_exact, bf16 };

// load_model plus the folder's tokenizer, moved to device and in eval mode.
LoadedModel load_model_folder(const std::string& dir, const torch::Device& device,
                              const std::function<void(const std::string&)>& warn = {},
                              FrozenProjections frozen = FrozenProjections::float32);

// A model folder loaded to sample from and score with (ganpo generate and ganpo eval's
// --precision, the Checkpoints tab's playground: "auto"), every weight frozen:
//   "fp32": float32 weights and products;
//   "bf16": on CUDA only, every projection stored in bf16 (rounded; exactly only, a PEFT adapter
//     folder's) and the products under bf16 autocast, half the memory of float32 weights;
//   "auto": on CUDA, a folder stored in bf16 (most Hugging Face models) as "bf16", which changes
//     none of its weights, as transformers' dtype="auto" loads a model as stored; a folder stored
//     otherwise (float32, float16), any folder on a GPU before Ampere (no native bf16, where NVML
//     tells) and any folder on the CPU (where LibTorch's bf16 kernels are slower) as "fp32".
// (ganpo eval runs both models' passes under bf16 autocast when either is loaded in bf16, as a
// bf16 run evaluates, and then keeps the other's projections in bf16 too: the same numbers.)
// Throws Error for another name, and for "bf16" on the CPU, saying what to choose instead.
LoadedModel load_model_for_inference(const std::string& dir, const torch::Device& device, const std::string& precision,
                                     const std::function<void(const std::string&)>& warn = {});

void write_json_file(const std::string& path, const nlohmann::json& j);
nlohmann::json read_json_file(const std::string& path);  // throws ModelFileError
// The same keeping the file's order of keys (where it means something: PEFT's rank_pattern).
nlohmann::ordered_json read_ordered_json_file(const std::string& path);

}  // namespace ganpo
