// The decoder-only causal language model: one class, Llama or GPT-2 family.
//
// Llama: RMSNorm, rotary positions (RoPE), SwiGLU MLP, grouped-query attention, no biases.
// GPT-2: LayerNorm, learned positions, GELU MLP, biases. forward() returns the logits and the
// final-layer hidden states after the final norm (the latents GANPO's critics read). Padding is
// on the right for training (causality alone keeps real tokens from seeing pads) and on the
// left for batched sampling, where position ids and a key mask come from the attention mask.
// A KVCache makes sampling one forward per new token. Parameter names follow HF Llama
// (embed_tokens, layers.N.self_attn.q_proj, ..., norm, lm_head).
#pragma once

#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include "core/config.h"
#include "core/model_shape.h"

namespace ganpo {

// Per-layer key/value cache for sampling.
struct KVCache {
  std::vector<torch::Tensor> keys;    // per layer [B, n_kv_heads, T_cached, head_dim]
  std::vector<torch::Tensor> values;  // per layer [B, n_kv_heads, T_cached, head_dim]
  int64_t length() const { return keys.empty() || !keys[0].defined() ? 0 : keys[0].size(2); }
};

struct LMOutput {
  torch::Tensor logits;  // [B, T, V]
  torch::Tensor hidden;  // [B, T, d] after the final norm
};

class CausalLMImpl : public torch::nn::Module {
public:
  explicit CausalLMImpl(const ModelShape& shape);

  // input_ids [B, T]. position_ids [B, T] (default 0..T-1 after the cache). key_mask [B, T_cache+T]
  // (1 = real token) is only needed when rows are left-padded; cache, when given, is extended.
  LMOutput forward(const torch::Tensor& input_ids, const torch::Tensor& position_ids = {},
                   const torch::Tensor& key_mask = {}, KVCache* cache = nullptr);

  const ModelShape& shape() const { return shape_; }

private:
  ModelShape shape_;
  torch::nn::Embedding embed_tokens_{nullptr};
  torch::nn::Embedding embed_positions_{nullptr};  // gpt2 only
  torch::nn::ModuleList layers_{nullptr};
  std::shared_ptr<torch::nn::Module> norm_;
  torch::nn::Linear lm_head_{nullptr};  // absent when embeddings are tied
  torch::Tensor rope_cos_, rope_sin_;   // [max_seq_len, head_dim/2]
};
TORCH_MODULE(CausalLM);

// Named parameters and buffers to save (HF names: "model." prefix except lm_head).
std::vector<std::pair<std::string, torch::Tensor>> model_state(CausalLM& model);
// Copies tensors by name into the model; throws ModelFileError naming missing or mis-shaped ones.
void load_model_state(CausalLM& model, const std::map<std::string, torch::Tensor>& tensors,
                      const std::string& source);

}  // namespace ganpo
