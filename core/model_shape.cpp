#include "core/model_shape.h"

#include <nlohmann/json.hpp>

#include "core/error.h"

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
  s.rope_theta = c.rope_theta;
  s.vocab_size = vocab_size;
  // SwiGLU's 8/3 d keeps the parameter count of a 4d GELU MLP; rounded for matmul efficiency.
  s.d_ff = c.d_ff > 0 ? c.d_ff
                      : (s.arch == "llama" ? round_up(s.d_model * 8 / 3, 64) : 4 * s.d_model);
  return s;
}

nlohmann::json shape_to_json(const ModelShape& s) {
  return {{"model_type", s.arch == "llama" ? "llama" : "gpt2"},
          {"architectures", {s.arch == "llama" ? "LlamaForCausalLM" : "GPT2LMHeadModel"}},
          {"vocab_size", s.vocab_size},
          {"hidden_size", s.d_model},
          {"num_hidden_layers", s.n_layers},
          {"num_attention_heads", s.n_heads},
          {"num_key_value_heads", s.n_kv_heads},
          {"intermediate_size", s.d_ff},
          {"max_position_embeddings", s.max_seq_len},
          {"rope_theta", s.rope_theta},
          {"rms_norm_eps", s.norm_eps},
          {"tie_word_embeddings", s.tie_embeddings},
          {"hidden_act", s.arch == "llama" ? "silu" : "gelu_new"}};
}

ModelShape shape_from_json(const nlohmann::json& j) {
  ModelShape s;
  try {
    const std::string type = j.at("model_type").get<std::string>();
    if (type != "llama" && type != "gpt2")
      throw ModelFileError("config.json: model_type \"" + type +
                           "\" is not supported (llama or gpt2)");
    s.arch = type;
    s.vocab_size = j.at("vocab_size").get<int64_t>();
    s.d_model = j.at("hidden_size").get<int64_t>();
    s.n_layers = j.at("num_hidden_layers").get<int64_t>();
    s.n_heads = j.at("num_attention_heads").get<int64_t>();
    s.n_kv_heads = j.value("num_key_value_heads", s.n_heads);
    s.d_ff = j.at("intermediate_size").get<int64_t>();
    s.max_seq_len = j.at("max_position_embeddings").get<int64_t>();
    s.rope_theta = j.value("rope_theta", 10000.0);
    s.norm_eps = j.value("rms_norm_eps", 1e-5);
    s.tie_embeddings = j.value("tie_word_embeddings", true);
  } catch (const nlohmann::json::exception& e) {
    throw ModelFileError(std::string("config.json is missing a field or has a wrong type (") +
                         e.what() + "); re-export the checkpoint");
  }
  if (s.d_model <= 0 || s.n_layers <= 0 || s.n_heads <= 0 || s.d_model % s.n_heads != 0 ||
      s.n_kv_heads <= 0 || s.n_heads % s.n_kv_heads != 0 || s.vocab_size <= 0 || s.d_ff <= 0)
    throw ModelFileError("config.json describes an impossible model shape; re-export the checkpoint");
  return s;
}

int64_t parameter_count(const ModelShape& s) {
  const int64_t hd = s.d_model / s.n_heads;
  const bool bias = s.arch == "gpt2";
  int64_t attn = s.d_model * s.n_heads * hd * 2 + s.d_model * s.n_kv_heads * hd * 2;
  int64_t mlp = (s.arch == "llama" ? 3 : 2) * s.d_model * s.d_ff;
  int64_t norms = (bias ? 4 : 2) * s.d_model;
  if (bias) attn += s.n_heads * hd * 2 + s.n_kv_heads * hd * 2, mlp += s.d_ff + s.d_model;
  int64_t total = s.n_layers * (attn + mlp + norms) + s.vocab_size * s.d_model +
                  (bias ? 2 : 1) * s.d_model;
  if (s.arch == "gpt2") total += s.max_seq_len * s.d_model;
  if (!s.tie_embeddings) total += s.vocab_size * s.d_model;
  return total;
}

}  // namespace ganpo
