#include "core/model/model_shape.h"

#include <algorithm>

#include "core/error.h"
#include "core/model/architectures.h"

namespace ganpo {
namespace {

int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

}  // namespace

ModelShape resolve_model_shape(const ModelConfig& c, int64_t vocab_size) {
  ModelShape s;
  if (c.preset == "tiny") {
    s.arch = "llama", s.d_model = 128, s.n_layers = 4, s.n_heads = 4, s.n_kv_heads = 4;
    s.max_seq_len = 256;
  } else if (c.preset == "small") {
    s.arch = "llama", s.d_model = 384, s.n_layers = 6, s.n_heads = 6, s.n_kv_heads = 6;
    s.max_seq_len = 512;
  } else if (c.preset == "base") {
    s.arch = "gpt2", s.d_model = 768, s.n_layers = 12, s.n_heads = 12, s.n_kv_heads = 12;
    s.max_seq_len = 1024;
  }
  if (!c.arch.empty()) s.arch = c.arch;
  if (c.d_model > 0) s.d_model = c.d_model;
  if (c.n_layers > 0) s.n_layers = c.n_layers;
  if (c.n_heads > 0) s.n_heads = c.n_heads;
  s.n_kv_heads = c.n_kv_heads > 0 ? c.n_kv_heads : (c.n_heads > 0 ? c.n_heads : s.n_kv_heads);
  if (s.arch == "gpt2") s.n_kv_heads = s.n_heads;
  if (c.max_seq_len > 0) s.max_seq_len = c.max_seq_len;
  // (A form or a stored config may ask for a shape before validate_config has named the field.)
  const auto& table = architectures();
  if (std::none_of(table.begin(), table.end(), [&](const Architecture& a) { return s.arch == a.family; }))
    throw ConfigError("model.arch \"" + s.arch + "\" names no model family; a fresh model is \"llama\" or \"gpt2\"");
  architecture(s.arch).set_layout(s);
  s.rope_theta = c.rope_theta;
  s.vocab_size = vocab_size;
  // SwiGLU's 8/3 d keeps the parameter count of a 4d GELU MLP; rounded for matmul efficiency.
  s.d_ff = c.d_ff > 0 ? c.d_ff
                      : (s.arch == "llama" ? round_up(s.d_model * 8 / 3, 64) : 4 * s.d_model);
  return s;
}

ParameterParts parameter_parts(const ModelShape& s) {
  const int64_t d = s.d_model, hd = s.head_size(), q = s.n_heads * hd, kv = s.n_kv_heads * hd;
  const bool layer_norm = s.norm == NormKind::layer_norm;
  const int64_t norm = layer_norm ? 2 * d : d;
  int64_t attn = d * (q + 2 * kv) + q * d;
  if (s.qkv_bias) attn += q + 2 * kv;
  if (s.o_bias) attn += d;
  const bool gated = s.mlp != MlpKind::gelu_tanh;
  int64_t mlp = (gated ? 3 : 2) * d * s.d_ff;
  if (s.mlp_bias) mlp += (gated ? 2 : 1) * s.d_ff + d;
  ParameterParts parts;
  parts.projections = s.n_layers * (attn + mlp) + (s.tie_embeddings ? 0 : s.vocab_size * d);
  parts.embeddings = s.vocab_size * d + (s.positions == PositionKind::learned ? s.max_seq_len * d : 0);
  parts.norms = s.n_layers * ((s.sandwich_norms ? 4 : 2) * norm + (s.qk_norm ? 2 * hd : 0)) + norm;
  return parts;
}

int64_t parameter_count(const ModelShape& s) {
  const ParameterParts parts = parameter_parts(s);
  return parts.projections + parts.embeddings + parts.norms;
}

}  // namespace ganpo
