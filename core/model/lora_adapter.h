// LoRA adapters on disk, in PEFT's adapter folder format, so PEFT's PeftModel.from_pretrained
// loads what the workbench trained and the workbench loads adapters PEFT trained:
//   adapter_config.json        peft_type "LORA", task_type "CAUSAL_LM", r, lora_alpha,
//                              lora_dropout, target_modules, layers_to_transform, rank_pattern,
//                              alpha_pattern, modules_to_save, ensure_weight_tying,
//                              trainable_token_indices (a list, or by layer name),
//                              base_model_name_or_path, bias ("none", "all", "lora_only"),
//                              use_rslora, use_dora
//                              (read also: exclude_modules, layers_pattern, and
//                              init_lora_weights: "pissa" / "olora" load onto the base minus
//                              the adapters' first values, computed again from the base as
//                              PEFT does; a randomised SVD's, CorDA's and LoftQ's are refused)
//   adapter_model.safetensors  base_model.model.<HF module>.lora_A.weight [r, in]
//                              base_model.model.<HF module>.lora_B.weight [out, r]
//                              base_model.model.<HF module>.lora_magnitude_vector [out] (DoRA)
//                              base_model.model.<embedding>.lora_embedding_A [r, V] and
//                              .lora_embedding_B [d, r]: the token embedding's adapter (and,
//                              read where PEFT saved it, .base_layer.weight: its base weight)
//                              base_model.model.<HF module>.weight / .bias: a module trained
//                              whole (modules_to_save), as the family stores it; .bias alone:
//                              a trained bias (bias "all" / "lora_only"), .base_layer.bias
//                              where the module has an adapter
//                              base_model.model.lm_head.weight: a tied head kept on the
//                              embedding's trained copy (ensure_weight_tying), equal to it
//                              base_model.model.<embedding or lm_head>.token_adapter.
//                              trainable_tokens_delta [n, d]: trained token rows (a tied head
//                              following the embedding's rows has none of its own)
// <HF module> is the family's name of the projection (model.layers.0.self_attn.q_proj for
// Llama). GPT-2's modules are Conv1D (PEFT keeps their adapters as nn.Linear's, the shapes
// above, and sets fan_in_fan_out), and its q, k and v are one module, c_attn: its adapter is q's
// A (which k and v share, core/model/lora_targets.h) with q's, k's and v's B and magnitudes
// stacked by rows. Separate q, k and v adapters on GPT-2 have no PEFT form: no adapter folder
// is written for them (the merged checkpoint is), and the reason is given.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "core/model/causal_lm.h"

namespace ganpo {

// Empty when save_peft_adapter can write model's adapters, else why not.
std::string peft_adapter_unsupported(CausalLM& model);

// Writes dir/adapter_config.json and dir/adapter_model.safetensors (dir must exist).
// base_model: the folder of the weights the adapters apply to (written as base_model_name_or_path).
void save_peft_adapter(const std::string& dir, CausalLM& model, const std::string& base_model);

// Whether dir is a PEFT adapter folder: it has adapter_config.json and no whole model beside it
// (config.json with model.safetensors or its shard index). Some tools copy the base's
// config.json into an adapter folder; the adapter is then still what the folder holds.
bool is_peft_adapter_folder(const std::string& dir);

// adapter_config.json read and checked: the spec and the base folder (relative paths are taken
// from the adapter folder). rsLoRA, DoRA and PEFT's choice of modules, layers and ranks
// (core/model/lora_targets.h) are applied; throws ModelFileError for what the workbench cannot
// apply (other LoRA variants, a Hub id instead of a folder),
// saying what to do.
struct PeftAdapterConfig {
  LoraSpec spec;
  std::string base_model;
  ModelShape base_shape;  // the base model's config.json, which the target names were read against
};
PeftAdapterConfig read_peft_adapter_config(const std::string& dir);

// Copies the adapter folder's tensors into model, which has adapters of the same spec.
void load_peft_adapter_weights(CausalLM& model, const std::string& dir);

}  // namespace ganpo
