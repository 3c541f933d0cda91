// The shape and block layout of a decoder-only model, without LibTorch.
//
// ModelShape is everything CausalLM (core/model/causal_lm.h) is built from: sizes, and the
// options in which the model families differ (norm kind, MLP kind, positions, biases, q/k norms,
// soft-caps, sliding windows, embedding scale). The forward pass reads these options and never
// asks which family it runs; the family table (core/model/architectures.h) fills them from a
// Hugging Face config.json or from a built-in preset. It lives apart from the model so the GUI
// and other torch-free code (the memory estimate, the New Run dialog, `ganpo inspect`) can
// resolve a preset or read a model folder's config and count parameters without torch headers.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "core/config.h"

namespace ganpo {

enum class NormKind {
  rms,           // x / rms(x) * w                     (Llama, Mistral, Qwen)
  rms_plus_one,  // x / rms(x) * (1 + w)               (Gemma)
  layer_norm,    // (x - mean) / std * w + b           (GPT-2)
};

enum class MlpKind {
  gated_silu,       // down(silu(gate(x)) * up(x))       (Llama, Mistral, Qwen)
  gated_gelu_tanh,  // down(gelu_tanh(gate(x)) * up(x))  (Gemma)
  gelu_tanh,        // down(gelu_tanh(up(x)))            (GPT-2)
};

enum class PositionKind { rope, learned };

// HF's rope_scaling: "" (none), "linear" (positions / factor) or "llama3" (long wavelengths
// divided by factor, a smooth blend between low_freq_factor and high_freq_factor).
struct RopeScaling {
  std::string type;
  double factor = 1.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 8192;
};

struct ModelShape {
  std::string arch = "llama";  // family: a key of the architecture table
  int64_t vocab_size = 259;
  int64_t d_model = 128;
  int64_t n_layers = 4;
  int64_t n_heads = 4;
  int64_t n_kv_heads = 4;
  int64_t head_dim = 0;  // 0 = d_model / n_heads
  int64_t d_ff = 384;
  int64_t max_seq_len = 256;

  // Block layout.
  NormKind norm = NormKind::rms;
  MlpKind mlp = MlpKind::gated_silu;
  PositionKind positions = PositionKind::rope;
  bool sandwich_norms = false;  // norms after attention and MLP as well as before (Gemma 2)
  bool embed_scale = false;     // embeddings times sqrt(d_model) (Gemma)
  bool qkv_bias = false;
  bool o_bias = false;
  bool mlp_bias = false;
  bool qk_norm = false;  // RMSNorm over head_dim on queries and keys before RoPE (Qwen3)

  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  double norm_eps = 1e-5;
  bool tie_embeddings = true;
  // The Hugging Face embedding's padding_idx (config.json's pad_token_id; GPT-2's has none): the
  // lookup gives that token's row no gradient (nn.Embedding's padding_idx; PEFT's LoRA on the
  // embedding looks its A up with it too, so the pad token's column never trains). -1: none.
  int64_t padding_idx = -1;
  int64_t sliding_window = 0;        // keys with q - k >= window are hidden; 0 = none
  std::vector<bool> sliding_layers;  // per layer: true = windowed (empty = none)
  double attn_softcap = 0.0;         // scores = cap * tanh(scores / cap); 0 = off
  double final_softcap = 0.0;        // same on the logits
  double query_pre_attn_scalar = 0;  // scores scaled by its -1/2 power; 0 = head_dim

  std::string dtype = "float32";  // dtype the weights were stored in (config.json torch_dtype)
  std::string hf_config;             // the config.json this came from (written back on export)
  std::string hf_generation_config;  // its generation_config.json, when the folder had one

  int64_t head_size() const { return head_dim > 0 ? head_dim : d_model / n_heads; }
  bool layer_is_sliding(int64_t layer) const {
    return sliding_window > 0 && layer < static_cast<int64_t>(sliding_layers.size()) &&
           sliding_layers[static_cast<size_t>(layer)];
  }
};

// Fills the preset's values, then the explicit ones from the config. A ConfigError where
// model.arch names no family of the architecture table.
ModelShape resolve_model_shape(const ModelConfig& config, int64_t vocab_size);
int64_t parameter_count(const ModelShape& shape);
// The parameters by kind: the projections (attention's and the MLP's weights and biases, and an
// output head not tied to the embedding), the embedding tables (tokens, learned positions) and
// the norms' weights and biases (qk norms included). parameter_count is their sum.
struct ParameterParts {
  int64_t projections = 0, embeddings = 0, norms = 0;
};
ParameterParts parameter_parts(const ModelShape& shape);

}  // namespace ganpo
