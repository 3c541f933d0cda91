// Which modules of a model get LoRA adapters, with which rank and alpha: PEFT's LoraConfig
// (target_modules, exclude_modules, layers_to_transform, layers_pattern, rank_pattern,
// alpha_pattern) read against a model, as PEFT reads it. Without LibTorch.
//
// A target name is ours (q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj: the same
// in every family), or the family's Hugging Face module name as PEFT matches it: a whole module
// name ("model.layers.0.self_attn.q_proj", as PEFT saves "all-linear") or its end
// ("c_attn", "attn.c_proj", "self_attn.q_proj"); "all-linear" is every projection of the model.
// target_modules as one string is PEFT's regular expression over whole module names (Python's
// re.fullmatch, run with PCRE2: core/text/regex.h). layers_to_transform keeps the modules a name
// picks by its end to the layers listed; exclude_modules takes modules out; rank_pattern and
// alpha_pattern give a module another rank or alpha where a pattern matches the end of its whole
// name (the first that does, in the file's order).
// GPT-2 keeps q, k and v in one module, c_attn: picked by that module's name (or "all-linear",
// or a pattern), the three get one A, as PEFT's one adapter on c_attn (its B and DoRA's
// magnitudes split by rows into q's, k's and v's), so PEFT loads the adapter folder and the run
// trains PEFT's number of parameters. Named by our names (q_proj, k_proj, v_proj) each gets its
// own adapter, which only a merged checkpoint can hold.
// The token embedding is adapted where a name picks it ("embed_tokens", GPT-2's "wte", its whole
// name, or a pattern matching that): PEFT's LoRA Embedding, lora_embedding_A [r, V] and
// lora_embedding_B [d, r], which adds scale * B A's column of each token to its embedding row
// (no dropout, as PEFT). A head tied to that embedding keeps the original weight (PEFT's default:
// its lm_head still holds the base weight), so the head becomes a module of its own.
// The output head is adapted where "lm_head" or the pattern names it (a Linear LoRA: logits gain
// scale * dropout(h) A^T B^T, A [r, d], B [V, r]); an embedding tied to it keeps the original.
// PEFT's bias option: "all" trains every bias (PEFT's any parameter named "bias": GPT-2's
// projections and LayerNorms, Qwen2's q, k and v), "lora_only" the biases of the adapted modules
// (GPT-2's c_attn: q's, k's and v's).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/config.h"
#include "core/model/model_shape.h"

namespace ganpo {

// The adapters of a model, as PEFT's LoraConfig chooses them (from [model.lora] or an adapter
// folder's adapter_config.json); r = 0: none.
struct LoraSpec {
  int64_t r = 0;        // rank, where rank_pattern gives none
  double alpha = 16.0;  // lora_alpha, where alpha_pattern gives none
  bool rslora = false;  // PEFT's use_rslora: scale alpha / sqrt(r) instead of alpha / r
  bool dora = false;    // PEFT's use_dora: a magnitude per output row (LoraConfig::use_dora)
  double dropout = 0.0;  // lora_dropout, as the adapter folder records it
  bool dropout_off = false;  // the adapters run without it (a preference stage's policy)
  double applied_dropout() const { return dropout_off ? 0.0 : dropout; }
  std::vector<std::string> targets;  // target_modules as a list of names (above)
  std::string target_regex;          // target_modules as a regular expression (then `targets` is empty)
  std::vector<std::string> exclude;  // exclude_modules as names: a whole module name, its end, or ours
  std::string exclude_regex;         // exclude_modules as a regular expression
  std::vector<int64_t> layers;       // layers_to_transform; empty: every layer
  std::vector<std::string> layers_pattern;  // the module list a layer index follows ("layers", "h"); empty: any
  std::vector<std::pair<std::string, int64_t>> rank_pattern;  // pattern -> rank, in order
  std::vector<std::pair<std::string, double>> alpha_pattern;  // pattern -> alpha, in order
  // Whole modules trained besides the adapters (core/model/modules_to_save.h).
  std::vector<std::string> modules_to_save;
  // trainable_token_indices: layer name ("" = the input embedding) -> the token ids whose rows train
  std::vector<std::pair<std::string, std::vector<int64_t>>> trainable_tokens;
  bool ensure_weight_tying = false;  // a tied embedding and head picked there stay one trained matrix
  // PEFT's bias: "none", "all" (every bias of the model trains) or "lora_only" (the adapted
  // modules' biases); each trains as a copy, and the adapters-off reference keeps the original.
  std::string bias = "none";
  // An adapter file holds the head's tensor (base_model.model.lm_head.weight): with
  // ensure_weight_tying, PEFT tied the head to the embedding's trained copy.
  bool head_saved = false;
  // How messages name these settings: "model.lora." for a run's config, "" for adapter_config.json.
  std::string key_prefix;
  // An adapter_config.json: names pick modules only as PEFT matches them (not by our names where
  // the family's differ, GPT-2's), and layers beyond the model are skipped as PEFT skips them
  // (a run's config is refused for one).
  bool from_adapter_file = false;
  // An adapter file's init_lora_weights where PEFT changes the base weights as it loads the
  // folder: "pissa" (the base minus its top-r singular part) or "olora" (minus scale times the
  // first r columns of its QR factors), computed again from the base; "" otherwise.
  std::string residual_init;
  // A run's init_lora_weights (LoraConfig::init_lora_weights): "default", "gaussian", "pissa" or "olora".
  std::string init = "default";
  // The factor of the adapters' update B A at the spec's r and alpha (PEFT's LoraLayer.update_layer).
  double scale() const;
};
double lora_scale(int64_t r, double alpha, bool rslora);  // alpha / r, or alpha / sqrt(r) with rsLoRA
// init_lora_weights that start the adapters from each weight's factors (PiSSA, OLoRA).
inline bool starts_from_factors(const std::string& init) { return init == "pissa" || init == "olora"; }
LoraSpec lora_spec(const LoraConfig& config);  // throws ConfigError for unknown targets

// One adapted projection in one layer.
struct LoraModule {
  int64_t layer = 0;
  std::string projection;  // ours: q_proj ... down_proj
  int64_t r = 0;
  double alpha = 0;
  double scale = 0;  // lora_scale(r, alpha, rslora)
};

struct LoraTargets {
  std::vector<LoraModule> modules;       // layer by layer, each in a layer's order
  LoraModule embedding;                  // the token embedding's adapter (layer -1, "embed_tokens"); r = 0: none
  LoraModule head;                       // the output head's adapter (layer -1, "lm_head"); r = 0: none
  std::vector<std::string> projections;  // adapted in some layer, in a layer's order
  bool shared_qkv = false;               // q, k and v adapted as one fused module (GPT-2's c_attn): one A
  int64_t r = 0;                         // the spec's r and alpha, which a module has unless a pattern says otherwise
  double alpha = 0;
  // modules_to_save: our whole modules trained as copies ("norm", "layers.0.input_layernorm",
  // "lm_head"), and whether a tied head becomes a weight of its own (modules_to_save.h).
  std::vector<std::string> trained;
  bool untie_head = false;
  // trainable_token_indices: the embedding's trained rows (a tied head follows them) and the
  // head's own.
  std::vector<int64_t> embedding_rows, head_rows;
  // bias "all" / "lora_only": our modules whose bias trains (as a copy) besides those trained whole.
  std::vector<std::string> biases;
  bool has(const std::string& projection) const;  // in some layer
  bool adapts_embedding() const { return embedding.r > 0; }
  bool adapts_head() const { return head.r > 0; }
  const LoraModule* find(int64_t layer, const std::string& projection) const;  // nullptr: not adapted there
  // The lowest layer a gradient reaches (0 when the embedding trains); n_layers when only the
  // final norm or the head train (a trained bias counts as its module).
  int64_t first_trained_layer(int64_t n_layers) const;
};

// Modules under one of modules_to_save are not adapted, as PEFT leaves them out.
// Throws ConfigError for a name that matches no projection of this model (listing its names),
// a regular expression that matches none or matches a module that is not a projection, the token
// embedding or the head (a norm, a container, GPT-2's positions), settings that leave nothing
// adapted, and patterns that do not compile or that backtrack without end; for an adapted
// embedding or head with DoRA, with token rows of its own, or kept tied to the other
// (ensure_weight_tying: not built here); and for modules_to_save as resolve_modules_to_save does.
LoraTargets resolve_lora_targets(const ModelShape& shape, const LoraSpec& spec);
// The same for target names alone (every layer, rank 8, alpha 16).
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

// The adapted projections for a run's log: "q_proj, v_proj", with the layers and ranks where
// they are not every layer and the spec's ("q_proj in layers 0-3", "o_proj (r 16, alpha 32)"),
// and with one A for q, k and v "q_proj, k_proj, v_proj (one A: PEFT's adapter on attn.c_attn)";
// then the modules trained whole ("; trained whole: input_layernorm in layers 0-1, norm, lm_head
// (untied from the embedding)") and those whose bias trains ("; trained biases: q_proj, k_proj,
// v_proj in layers 0-3").
std::string lora_targets_text(const ModelShape& shape, const LoraTargets& targets);

// adapter_config.json's fields that make PEFT adapt exactly these modules with their ranks:
// "r", "lora_alpha", "target_modules" (each adapted module's own name where no unadapted
// projection shares it, else its path inside a layer, GPT-2's "attn.c_proj"; a fused module
// once), "layers_to_transform" where every module is adapted in the same layers but not all;
// whole module names where the layers differ between modules; "rank_pattern" and
// "alpha_pattern" for the modules whose rank or alpha is not r's or lora_alpha's.
nlohmann::json peft_target_config(const ModelShape& shape, const LoraTargets& targets);

}  // namespace ganpo
