// model.lora.target_modules read against a model: which of its projections get LoRA adapters.
//
// A name is ours (q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj: the same in
// every family), or the family's Hugging Face module name as PEFT matches it: the module's own
// name or the end of its path inside a layer ("c_attn", "attn.c_proj", "self_attn.q_proj");
// "all-linear" is every projection of the model; whole module names, one per layer, as PEFT
// saves "all-linear" ("transformer.h.0.attn.c_proj"), pick a projection when every layer is
// named. GPT-2 keeps q, k and v in one module, c_attn: picked by that module's name (or
// "all-linear"), the three get one A, as PEFT's one adapter on c_attn (its B and DoRA's
// magnitudes split by rows into q's, k's and v's), so PEFT loads the adapter folder and the run
// trains PEFT's number of parameters. Named by our names (q_proj, k_proj, v_proj) each gets its
// own adapter, which only a merged checkpoint can hold. Without LibTorch.
#pragma once

#include <string>
#include <vector>

#include "core/model/model_shape.h"

namespace ganpo {

struct LoraTargets {
  std::vector<std::string> projections;  // ours, in a layer's order: q_proj, k_proj, ..., down_proj
  bool shared_qkv = false;               // q, k and v adapted as one fused module (GPT-2's c_attn): one A
  bool has(const std::string& projection) const;
};

// Throws ConfigError for a name that matches no projection of this model, listing its names,
// and for whole module names that leave some layers out.
LoraTargets resolve_lora_targets(const ModelShape& shape, const std::vector<std::string>& names);

// The names that pick some projection of the model: PEFT ignores the others of a list (an
// adapter folder's target_modules) as long as one name matches.
std::vector<std::string> peft_picked_names(const ModelShape& shape, const std::vector<std::string>& names);

// Whether some family has a projection of this name (ours or a Hugging Face path's end), for
// checking a config before its model is known.
bool is_known_lora_target(const std::string& name);

// The Hugging Face module of one of our projections, as its path inside a layer
// ("self_attn.q_proj"; GPT-2: "attn.c_attn" for q_proj, k_proj and v_proj).
std::string hf_projection_path(const std::string& family, const std::string& projection);

// The adapted projections for a run's log: "q_proj, v_proj", or with one A for q, k and v
// "q_proj, k_proj, v_proj (one A: PEFT's adapter on attn.c_attn), o_proj".
std::string lora_targets_text(const ModelShape& shape, const LoraTargets& targets);

// PEFT's target_modules for the adapted projections of a model: each adapted module's own name
// where no unadapted projection shares it, else its path inside a layer (GPT-2's "attn.c_proj"
// when mlp.c_proj is not adapted); a fused module once.
std::vector<std::string> peft_target_modules(const ModelShape& shape, const LoraTargets& targets);

}  // namespace ganpo
