// The shape of the decoder-only model, without LibTorch: presets, HF config.json mapping and the
// parameter count.
//
// ModelShape is what CausalLM (core/model.h) is built from. It lives apart from the model so the
// GUI and other torch-free code (the memory estimate, the New Run dialog) can resolve a preset
// or an explicit shape from a RunConfig and count parameters without pulling in torch headers.
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json_fwd.hpp>

#include "core/config.h"

namespace ganpo {

struct ModelShape {
  std::string arch = "llama";  // "llama" | "gpt2"
  int64_t vocab_size = 259;
  int64_t d_model = 128;
  int64_t n_layers = 4;
  int64_t n_heads = 4;
  int64_t n_kv_heads = 4;
  int64_t d_ff = 384;
  int64_t max_seq_len = 256;
  double rope_theta = 10000.0;
  double norm_eps = 1e-5;
  bool tie_embeddings = true;
};

// Fills the preset's values, then the explicit ones from the config.
ModelShape resolve_model_shape(const ModelConfig& config, int64_t vocab_size);
// HF-style config.json fields (model_type, hidden_size, num_hidden_layers, ...).
nlohmann::json shape_to_json(const ModelShape& shape);
ModelShape shape_from_json(const nlohmann::json& j);  // throws ModelFileError on bad fields
int64_t parameter_count(const ModelShape& shape);

}  // namespace ganpo
