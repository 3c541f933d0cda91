// PEFT's modules_to_save read against a model: the whole modules a LoRA run trains besides its
// adapters. Each gets a trained copy (the original stays, for the adapters-off reference), as
// PEFT's ModulesToSaveWrapper does. Without LibTorch.
//
// A name picks every module whose Hugging Face name ends with it, as PEFT's key.endswith(name)
// (no dot needed: "norm" picks model.norm and every layer's input_layernorm and
// post_attention_layernorm); a run's config may also use our names (embed_tokens, norm,
// layers.3.input_layernorm). A module that holds others ("mlp", "model.layers.3") stands for
// the modules with weights under it, which is what PEFT's copy of it trains and saves.
// GPT-2's c_attn is our q_proj, k_proj and v_proj, trained together.
// Where the output head is the token embedding (tie_word_embeddings), PEFT by default unties
// them: a picked embedding trains a copy for the input while the head keeps the original, and a
// picked lm_head trains its own copy (untie_head below: the head becomes a module of its own).
// With ensure_weight_tying, picking either trains one copy that stays both (in an adapter file
// only where a name's last part is embed_tokens or lm_head, as PEFT reads it, or where the file
// holds the head's tensor, which PEFT saves where it tied them: GPT-2's lm_head saved as
// "transformer.wte").
// PEFT adapts no module under one of modules_to_save (resolve_lora_targets leaves them out).
// trainable_token_indices (PEFT's TrainableTokens): only some rows of the token embedding (or of
// the output head) train, as new values for those rows (PEFT's trainable_tokens_delta); a head
// tied to the embedding uses the embedding's rows unless it is given other indices.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/model/model_shape.h"

namespace ganpo {

struct LoraTargets;

// Our modules with weights, in the model's parameter order ("embed_tokens", "layers.0.input_layernorm",
// "layers.0.self_attn.q_proj", ..., "norm", "lm_head" where not tied).
std::vector<std::string> model_modules(const ModelShape& shape);

// A module and every module above it ("a.b.c" -> "a.b.c", "a.b", "a"), as named_modules lists them.
std::vector<std::string> with_parents(const std::string& name);

// Whether PEFT's _check_tied_modules reads a name as one of the tied layers under
// ensure_weight_tying: its last part is embed_tokens or lm_head (GPT-2's "wte" is not).
bool is_peft_tying_name(const std::string& name);

// A module's whole Hugging Face name ("model.layers.0.input_layernorm", GPT-2's
// "transformer.h.0.attn.c_attn" for q_proj, k_proj and v_proj).
std::string hf_module_name(const ModelShape& shape, const std::string& module);

struct ModulesToSaveSettings {
  std::vector<std::string> names;  // modules_to_save
  // trainable_token_indices: layer name -> token ids ("" = the input embedding, PEFT's list form)
  std::vector<std::pair<std::string, std::vector<int64_t>>> token_rows;
  bool ensure_weight_tying = false;
  bool head_saved = false;         // an adapter file holds lm_head's tensor (PEFT tied it to the embedding's copy)
  bool ours_too = true;            // a run's config: our names pick modules too, and a name that picks none is an error
  std::string key_prefix;          // "model.lora." for a run's config, "" for adapter_config.json
};

struct TrainedModules {
  std::vector<std::string> modules;  // ours, in model_modules' order ("embed_tokens" also for a tied head kept tied)
  bool untie_head = false;           // the tied head becomes a module of its own (frozen: the embedding's weight, shared)
  std::vector<int64_t> embedding_rows;  // trainable_token_indices of the embedding (a tied head follows them)
  std::vector<int64_t> head_rows;       // of the head, where it has its own
};

// Throws ConfigError for a name that picks no module (ours_too), for a module that is also
// adapted (a name ending its name without a dot: PEFT would copy the adapter with it), for
// ensure_weight_tying on a model whose head is not tied (a run's config; PEFT only warns) or
// with head rows of its own while the head stays on the embedding's trained copy, and for
// token rows on a layer that is neither the embedding nor the head, on one trained whole,
// beyond the vocabulary or repeated.
TrainedModules resolve_modules_to_save(const ModelShape& shape, const ModulesToSaveSettings& settings,
                                       const LoraTargets& adapted);

// The parameters of one of our modules (its weight and bias), and of the trained copies of these.
int64_t module_parameter_count(const ModelShape& shape, const std::string& module);
// The size of one of our modules' bias (0: it has none).
int64_t module_bias_size(const ModelShape& shape, const std::string& module);
int64_t trained_copy_parameter_count(const ModelShape& shape, const std::vector<std::string>& modules);

// adapter_config.json's "trainable_token_indices": the embedding's ids as a list where the head
// has none of its own, else by layer name; null without token rows.
nlohmann::json peft_trainable_token_indices(const ModelShape& shape, const TrainedModules& trained);

// adapter_config.json's "modules_to_save" for these modules: each one's whole Hugging Face name
// (GPT-2's c_attn once), the embedding's alone where one copy stays tied.
std::vector<std::string> peft_modules_to_save(const ModelShape& shape, const TrainedModules& trained);

}  // namespace ganpo
