// The decoder-only causal language model: one class for every supported family.
//
// Built from a ModelShape, whose options select the block layout: RMSNorm or (1 + w) RMSNorm or
// LayerNorm, rotary (with linear / llama3 scaling) or learned positions, gated SiLU / gated
// tanh-GELU / GELU MLP, biases, per-head q/k norms, Gemma 2's extra norms, embedding scale,
// attention and logit soft-caps, and sliding windows per layer. forward() returns the logits and
// the final-layer hidden states after the final norm (the latents GANPO's critics read).
// Padding is on the right for training (causality alone keeps real tokens from seeing pads) and
// on the left for batched sampling, where position ids and a key mask come from the attention
// mask. A KVCache makes sampling one forward per new token. Parameter names follow HF Llama
// (embed_tokens, layers.N.self_attn.q_proj, ..., norm, lm_head); core/model/architectures.h
// maps them to each family's names in files.
// LoRA: add_lora() puts adapters (lora_A, lora_B) on the targeted projections and freezes the
// rest (k and v use q's A where the family fuses them, as PEFT on GPT-2's c_attn: their lora_A
// is q_proj's); without_adapters() is the same model seen with its adapters off, sharing every
// tensor, which a LoRA run uses as its reference (no second copy of the weights). Modules the
// spec trains whole (PEFT's modules_to_save) get a trained copy of their weight and bias
// ("norm.trained_weight"), biases it trains (PEFT's bias option) a trained copy of the bias
// alone ("layers.0.self_attn.q_proj.trained_bias"), and token rows it trains
// (trainable_token_indices) new values ("embed_tokens.trainable_tokens_delta"), none of which the
// adapters-off view uses.
#pragma once

#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include "core/chunked_logps.h"
#include "core/config.h"
#include "core/model/lora_targets.h"
#include "core/model/model_shape.h"

namespace ganpo {

// Per-layer key/value cache for sampling.
struct KVCache {
  std::vector<torch::Tensor> keys;    // per layer [B, n_kv_heads, T_cached, head_dim]
  std::vector<torch::Tensor> values;  // per layer [B, n_kv_heads, T_cached, head_dim]
  int64_t length() const { return keys.empty() || !keys[0].defined() ? 0 : keys[0].size(2); }
};

// "....q_proj.lora_A" / ".lora_B" / ".lora_magnitude_vector", a trained copy or token rows
bool is_adapter_parameter(const std::string& name);
bool is_trained_copy(const std::string& name);  // ".trained_weight" / ".trained_bias"
// Whether weight decay applies to a parameter, as transformers' Trainer (TRL's too) chooses
// (get_decay_parameter_names): every parameter but biases and the norms' weights (a trained
// copy as its original).
bool is_weight_decayed(const std::string& name);

struct LMOutput {
  torch::Tensor logits;     // [B, T - logits_from, V]: logits[:, i] predicts the token after position logits_from + i
  torch::Tensor hidden;     // [B, T, d] after the final norm (every position)
  int64_t logits_from = 0;
};

class CausalLMImpl : public torch::nn::Module {
public:
  // init = false leaves the weights uninitialised (they are about to be loaded from a file).
  explicit CausalLMImpl(const ModelShape& shape, bool init = true);

  // input_ids [B, T]. position_ids [B, T] (default 0..T-1 after the cache). key_mask [B, T_cache+T]
  // (1 = real token) is only needed when rows are left-padded; cache, when given, is extended.
  // The output head runs only from position logits_from on (clamped to [0, T]; T = no head, the
  // hidden states alone): with a 128k vocabulary it is most of the work, and prompt positions
  // are never scored.
  LMOutput forward(const torch::Tensor& input_ids, const torch::Tensor& position_ids = {},
                   const torch::Tensor& key_mask = {}, KVCache* cache = nullptr, int64_t logits_from = 0);
  LMOutput forward_from(const torch::Tensor& input_ids, int64_t logits_from) {
    return forward(input_ids, {}, {}, nullptr, logits_from);
  }

  const ModelShape& shape() const { return shape_; }

  // Adds adapters to the projections the spec picks (core/model/lora_targets.h: the layers and
  // ranks PEFT's settings give; A drawn from the global generator, B zero: the model is
  // unchanged until it trains), trained copies of the modules it trains whole (a tied head
  // that is to differ from the embedding first becomes a weight of its own, and the shape says
  // so), and freezes every other parameter. Throws ConfigError for a target name this model has
  // no projection of.
  void add_lora(const LoraSpec& spec);
  // The adapters in use: none for a without_adapters() view.
  const LoraSpec& lora() const {
    static const LoraSpec none;
    return adapters_off_ ? none : lora_;
  }
  // The adapted modules, their layers and ranks (empty without adapters and for a view).
  const LoraTargets& lora_targets() const {
    static const LoraTargets none;
    return adapters_off_ ? none : lora_targets_;
  }
  // The adapters' parameters by name ("layers.0.self_attn.q_proj.lora_A" [r, in], "...lora_B" [out, r]);
  // none for a view.
  std::vector<std::pair<std::string, torch::Tensor>> adapter_parameters();
  // This model with its adapters switched off during its forward passes: the same modules and
  // tensors, no copy. Safe while this model runs on another thread (the switch is per thread).
  std::shared_ptr<CausalLMImpl> without_adapters_impl();
  // W + scale B A (the module's LoraModule::scale; with DoRA each row then scaled to its magnitude) for an
  // adapted weight ("layers.0.self_attn.q_proj.weight"), the trained copy of a module trained
  // whole, else the weight itself; no gradient.
  torch::Tensor merged_weight(const std::string& name);
  // The same with this model's named_parameters() already at hand (one lookup per tensor when
  // every weight is written, instead of listing the parameters again for each).
  torch::Tensor merged_weight(const std::string& name, const torch::OrderedDict<std::string, torch::Tensor>& params);
  // As Module::train, except on a without_adapters() view, which stays in evaluation mode and
  // leaves the modules it shares with the policy alone.
  void train(bool on = true) override;
  // Gradient checkpointing: while training with gradients on, each block keeps only its input
  // and is run again in the backward pass (with the random state it had, so dropout repeats).
  void set_gradient_checkpointing(bool on) { checkpoint_blocks_ = on; }
  // Scoring reads response log-probs through core/chunked_logps.h from the hidden states instead
  // of through forward()'s logits (train.chunked_logps; core/sequence_scoring.h).
  void set_chunked_logps(bool on) { chunked_logps_ = on; }
  bool chunked_logps() const { return chunked_logps_; }
  // The output head's weight [V, d]: lm_head's, or the token embedding where the two are tied
  // (while the adapters are on, the trained copy where the head is trained whole, or the weight
  // with its trained token rows put in).
  // (A LoRA adapter on the head is not in it: head_low_rank.)
  torch::Tensor head_weight() const;
  // The head's LoRA part for hidden states [M, d] (after the final norm), for the chunked head:
  // down = scale * dropout(hidden) A^T [M, r], up = B [V, r]; none (undefined) while the head
  // has no adapter or the adapters are off.
  HeadLowRank head_low_rank(const torch::Tensor& hidden);
  // A PEFT PiSSA / OLoRA folder's base as PEFT loads it: each adapted weight (and the head's)
  // minus scale B0 A0 drawn from it (initial_lora_factors), in its own dtype.
  void subtract_initial_adapters(const std::string& init);
  // A frozen model, or a LoRA model's frozen base, used under CUDA's bf16 autocast
  // (train.precision = "bf16"): the projections' weights and biases (attention's, the MLP's, an
  // untied head's) stored in bf16, half their memory, with the same numbers in every training
  // pass, since autocast rounds every product's weight to bf16 anyway. exact_only: only those
  // whose values bf16 holds exactly (a folder stored in bf16, as Hugging Face's models mostly
  // are), so no number changes anywhere, outside autocast and in merged folders included;
  // otherwise all of them (a reference, which nothing writes back; not for a model with adapters).
  // Embeddings and norms stay float32 (autocast keeps their outputs so), as does what trains
  // (adapters, trained copies; a head with trained token rows, or one sharing the embedding's
  // storage). Outside autocast each product casts them to its input's dtype. Every tensor it
  // stores must be frozen. Returns how many values are in bf16 then (parameter_parts(shape())
  // .projections when all are).
  int64_t store_projections_in_bf16(bool exact_only);
  // The dtype the weights were stored in ("bfloat16", ...), which checkpoints keep by default.
  void set_stored_dtype(const std::string& dtype) { shape_.dtype = dtype; }

private:
  // init_lora_weights other than PEFT's default for the adapted projections (LoraConfig).
  void initialise_adapters(const LoraTargets& targets, const std::string& init);
  ModelShape shape_;
  LoraSpec lora_;
  LoraTargets lora_targets_;  // lora_ read against this model
  bool adapters_off_ = false;  // a without_adapters() view
  bool checkpoint_blocks_ = false;
  bool chunked_logps_ = false;
  // Modules of causal_lm.cpp's own types (Linear holds weight [out, in] and an optional bias).
  std::shared_ptr<torch::nn::Module> embed_tokens_;     // weight [V, d]
  std::shared_ptr<torch::nn::Module> embed_positions_;  // weight [max_seq_len, d]; learned positions only
  torch::nn::ModuleList layers_{nullptr};
  std::shared_ptr<torch::nn::Module> norm_;
  std::shared_ptr<torch::nn::Module> lm_head_;  // weight [V, d]; absent when embeddings are tied
  torch::Tensor rope_inv_freq_;                 // [head_dim/2] float64; rotary positions only
};
TORCH_MODULE(CausalLM);

// PiSSA's or OLoRA's first adapter values for a weight [out, in] of an adapter of rank r and scale
// s, in float32 as PEFT's pissa_init / olora_init draw them: PiSSA A0 = sqrt(S_r / s) Vh_r and
// B0 = U_r sqrt(S_r / s) (so s B0 A0 is the top-r singular part), OLoRA A0 = R_r, B0 = Q_r (the
// first r rows / columns of the QR factors). Returns {A0 [r, in], B0 [out, r]}.
std::pair<torch::Tensor, torch::Tensor> initial_lora_factors(const torch::Tensor& weight, int64_t r, double scale,
                                                             const std::string& init);

// The model with its adapters off (see CausalLMImpl::without_adapters_impl).
inline CausalLM without_adapters(CausalLM& model) { return CausalLM(model->without_adapters_impl()); }

// How this build computes a model's attention, for the run log: scaled_dot_product_attention
// where LibTorch has it (core/sdpa.h) and the scores are not soft-capped, which no fused kernel
// does; explicit softmax otherwise (by blocks of causal queries where the rows are long enough).
std::string attention_kernel_note(const ModelShape& shape);

// Rotary inverse frequencies of HF's rope_init_fn for the shape (default, linear or llama3).
torch::Tensor rope_inverse_frequencies(const ModelShape& shape);  // [head_dim/2] float64

}  // namespace ganpo
