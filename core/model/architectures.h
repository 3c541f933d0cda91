// The model families the workbench reads and writes as Hugging Face folders: one table entry
// per family, without LibTorch.
//
// An entry knows its `architectures` class and `model_type`, how to read its config.json into a
// ModelShape (sizes and block layout) and write it back, and how HF names its tensors relative
// to our parameter names (layers.N.self_attn.q_proj.weight, ...), including fused or transposed
// storage (GPT-2's Conv1D c_attn). Adding a family is one entry here; the forward pass
// (causal_lm.cpp) and the weight loader (hf_weights.cpp) never ask which family they run.
//
//   family   HF class              what differs
//   llama    LlamaForCausalLM      RMSNorm, SwiGLU, RoPE (+ linear / llama3 scaling), GQA
//   mistral  MistralForCausalLM    llama + sliding window on every layer
//   qwen2    Qwen2ForCausalLM      llama + q/k/v biases (+ optional window on upper layers)
//   qwen3    Qwen3ForCausalLM      llama + per-head q/k RMSNorm, explicit head_dim
//   gemma2   Gemma2ForCausalLM     (1 + w) RMSNorm, four norms per layer, gated tanh-GELU,
//                                  sqrt(d) embedding scale, soft-caps, window on even layers
//   gpt2     GPT2LMHeadModel       LayerNorm, learned positions, GELU, biases, Conv1D weights
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/model/model_shape.h"

namespace ganpo {

// How an HF tensor holds our parameter(s).
enum class WeightLayout {
  same,        // identical shape
  transposed,  // Conv1D: HF [in, out] = our [out, in]^T
  fused_qkv,   // q, k and v concatenated on HF's last dim (transposed when 2-D, as GPT-2's c_attn)
};

// Where one of our parameters lives in an HF file.
struct HfTensorName {
  std::string name;  // full HF name, e.g. "model.layers.0.self_attn.q_proj.weight"
  WeightLayout layout = WeightLayout::same;
  int part = 0;  // for fused_qkv: 0 = q, 1 = k, 2 = v
};

struct Architecture {
  const char* family;      // our name, ModelShape::arch
  const char* hf_class;    // config.json "architectures"[0]
  const char* model_type;  // config.json "model_type"
  // Reads the family's config.json keys (sizes, layout options) into shape; errors name source.
  void (*read_config)(const nlohmann::json& config, const std::string& source, ModelShape& shape);
  // Writes the family's keys of a config.json for shape.
  void (*write_config)(const ModelShape& shape, nlohmann::json& config);
  // Sets the block layout options of this family on a shape (used for built-in presets).
  void (*set_layout)(ModelShape& shape);
  // HF name of one of our parameters.
  HfTensorName (*hf_name)(const std::string& parameter);
  const char* optional_prefix;  // a prefix some files use and some omit ("transformer." for GPT-2)
  std::vector<std::string> ignored_suffixes;  // stored buffers that carry no weights
};

const std::vector<Architecture>& architectures();
const Architecture& architecture(const std::string& family);  // asserts it exists
std::string supported_architectures();  // "LlamaForCausalLM, MistralForCausalLM, ..."

// config.json -> shape; throws ModelFileError naming `source` and the field for anything
// unsupported, missing or impossible. Recognises the family by "architectures", then "model_type".
ModelShape read_hf_config(const nlohmann::json& config, const std::string& source = "config.json");
// The embedding's padding_idx that transformers builds from config.json's pad_token_id
// (nn.Embedding(V, d, pad_token_id) in Llama, Mistral, Qwen and Gemma, a negative one counted from
// the end as nn.Embedding counts it); -1: none (GPT-2's embedding has none, or no pad_token_id).
int64_t hf_padding_idx(const ModelShape& shape, const nlohmann::json& config);
// shape -> config.json of the same family. A shape read from a file keeps every key of the
// original (so transformers sees the same model), with torch_dtype set to `dtype`.
nlohmann::json write_hf_config(const ModelShape& shape, const std::string& dtype = "float32");
// generation_config.json for shape (bos / eos / pad ids as the model's config gives them).
nlohmann::json generation_config(const ModelShape& shape, int64_t bos_id, int64_t eos_id, int64_t pad_id);
// The eos_token_id of a config.json or generation_config.json's text (an id or a list), if it has
// one (null, no key and unreadable text: none).
std::optional<nlohmann::json> eos_token_ids(const std::string& file_text);

}  // namespace ganpo
