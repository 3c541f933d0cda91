#include "core/model/architectures.h"

#include <cmath>
#include <cstdint>

#include "core/error.h"
#include "core/json_depth.h"

namespace ganpo {
namespace {

bool starts_with(const std::string& s, const std::string& prefix) { return s.rfind(prefix, 0) == 0; }
bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Reads config.json fields with messages that name the file and the key.
class ConfigReader {
public:
  ConfigReader(const nlohmann::json& j, std::string source) : j_(j), source_(std::move(source)) {}

  bool has(const char* key) const { return j_.contains(key) && !j_.at(key).is_null(); }
  bool present(const char* key) const { return j_.contains(key); }  // null included
  const nlohmann::json& raw(const char* key) const { return j_.at(key); }

  int64_t integer(const char* key, int64_t fallback) const {
    return has(key) ? integer_value(key, j_.at(key)) : fallback;
  }
  // A size the model allocates by: checked against [least, most] as it is read, so no absurd or
  // negative value reaches a loop, an allocation or a product of sizes.
  int64_t size(const char* key, int64_t least, int64_t most) const {
    if (!has(key)) fail(key, "is missing");
    return size_value(key, j_.at(key), least, most);
  }
  int64_t size_or(const char* key, int64_t fallback, int64_t least, int64_t most) const {
    return has(key) ? size_value(key, j_.at(key), least, most) : fallback;
  }
  double number(const char* key, double fallback) const {
    if (!has(key)) return fallback;
    if (!j_.at(key).is_number()) fail(key, "is not a number");
    return j_.at(key).get<double>();
  }
  bool boolean(const char* key, bool fallback) const {
    if (!has(key)) return fallback;
    if (!j_.at(key).is_boolean()) fail(key, "is not true or false");
    return j_.at(key).get<bool>();
  }
  std::string text(const char* key, const std::string& fallback) const {
    if (!has(key)) return fallback;
    if (!j_.at(key).is_string()) fail(key, "is not a string");
    return j_.at(key).get<std::string>();
  }
  [[noreturn]] void fail(const std::string& key, const std::string& what) const {
    throw ModelFileError(source_ + ": \"" + key + "\" " + what +
                         "; the folder's config.json does not describe a model this build can run");
  }

private:
  int64_t integer_value(const char* key, const nlohmann::json& v) const {
    if (!v.is_number_integer()) fail(key, "is not an integer");
    if (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX))
      fail(key, "is " + v.dump() + ", too large for any model");
    return v.get<int64_t>();
  }
  int64_t size_value(const char* key, const nlohmann::json& v, int64_t least, int64_t most) const {
    const int64_t n = integer_value(key, v);
    if (n < least || n > most)
      fail(key, "is " + std::to_string(n) + "; it must be between " + std::to_string(least) + " and " +
                    std::to_string(most) + (n > most ? " (no real model is that large: the file is damaged)" : ""));
    return n;
  }
  const nlohmann::json& j_;
  std::string source_;
};

// Upper bounds on config.json sizes, each far above every released model (vocabularies reach
// ~262k, hidden sizes ~25k, depths ~160, contexts ~10M). Together they keep parameter_count()
// and the memory estimate far from int64 overflow; read_hf_config also caps the total.
constexpr int64_t kMaxVocab = int64_t{1} << 24;
constexpr int64_t kMaxHidden = int64_t{1} << 17;
constexpr int64_t kMaxLayers = int64_t{1} << 12;
constexpr int64_t kMaxHeads = int64_t{1} << 14;
constexpr int64_t kMaxHeadDim = int64_t{1} << 14;
constexpr int64_t kMaxFeedForward = int64_t{1} << 20;
constexpr int64_t kMaxPositions = int64_t{1} << 24;
constexpr int64_t kMaxParameters = int64_t{1} << 41;  // 2.2 trillion

constexpr size_t kMaxConfigDepth = 64;  // real config.json files nest 3 levels

// ---- Llama and its relatives -------------------------------------------------------------

void set_llama_layout(ModelShape& s) {
  s.norm = NormKind::rms;
  s.mlp = MlpKind::gated_silu;
  s.positions = PositionKind::rope;
}

void read_rope(const ConfigReader& r, ModelShape& s) {
  s.rope_theta = r.number("rope_theta", s.rope_theta);
  // Rotary embedding on part of each head (Phi, GPT-NeoX): these families rotate the whole head.
  const auto whole_head_rotary = [&r](const ConfigReader& c, const std::string& where) {
    if (c.has("partial_rotary_factor") && c.number("partial_rotary_factor", 1.0) != 1.0)
      r.fail(where + "partial_rotary_factor", "is not 1; this build rotates every dimension of a head");
  };
  whole_head_rotary(r, "");
  // transformers >= 4.56 keeps theta and scaling together in rope_parameters.
  const char* key = r.has("rope_parameters") ? "rope_parameters" : "rope_scaling";
  if (!r.has(key)) return;
  const auto& rs = r.raw(key);
  if (!rs.is_object()) r.fail(key, "is not an object");
  ConfigReader sub(rs, std::string(key));
  s.rope_theta = sub.number("rope_theta", s.rope_theta);
  whole_head_rotary(sub, std::string(key) + ".");
  std::string type = sub.text("rope_type", sub.text("type", "default"));
  if (type == "default") return;
  if (type != "linear" && type != "llama3")
    r.fail(key, "has rope type \"" + type + "\"; this build supports \"linear\" and \"llama3\"");
  s.rope_scaling.type = type;
  s.rope_scaling.factor = sub.number("factor", 1.0);
  if (s.rope_scaling.factor <= 0) r.fail(key, "has a factor <= 0");
  if (type == "llama3") {
    s.rope_scaling.low_freq_factor = sub.number("low_freq_factor", 1.0);
    s.rope_scaling.high_freq_factor = sub.number("high_freq_factor", 4.0);
    s.rope_scaling.original_max_position_embeddings =
        sub.size_or("original_max_position_embeddings", 8192, 1, kMaxPositions);
    if (!(s.rope_scaling.high_freq_factor > s.rope_scaling.low_freq_factor))
      r.fail(key, "needs high_freq_factor > low_freq_factor");
  }
}

void read_activation(const ConfigReader& r, const char* key, const std::string& fallback, MlpKind gated) {
  const std::string act = r.text(key, fallback);
  const bool silu = act == "silu" || act == "swish";
  const bool gelu_tanh = act == "gelu_pytorch_tanh" || act == "gelu_new";
  if ((gated == MlpKind::gated_silu && !silu) || (gated != MlpKind::gated_silu && !gelu_tanh))
    r.fail(key, "is \"" + act + "\", which this family does not use in any released model");
}

// Per-layer windows: "layer_types" when the file lists them, else the family's rule.
void read_layer_types(const ConfigReader& r, ModelShape& s) {
  if (!r.has("layer_types")) return;
  const auto& types = r.raw("layer_types");
  if (!types.is_array() || static_cast<int64_t>(types.size()) != s.n_layers)
    r.fail("layer_types", "is not a list with one entry per layer");
  s.sliding_layers.clear();
  for (const auto& t : types) {
    if (!t.is_string() || (t != "sliding_attention" && t != "full_attention"))
      r.fail("layer_types", "has an entry other than \"sliding_attention\" / \"full_attention\"");
    s.sliding_layers.push_back(t == "sliding_attention");
  }
}

// kv_heads_default: the family's config class default where num_key_value_heads is left out
// (0: the head count, as LlamaConfig; MistralConfig 8, Qwen2Config / Qwen3Config 32, Gemma2Config 4);
// null is the head count, as the config classes' `if num_key_value_heads is None`.
void read_llama_sizes(const ConfigReader& r, ModelShape& s, int64_t kv_heads_default = 0) {
  s.vocab_size = r.size("vocab_size", 1, kMaxVocab);
  s.d_model = r.size("hidden_size", 1, kMaxHidden);
  s.n_layers = r.size("num_hidden_layers", 1, kMaxLayers);
  s.n_heads = r.size("num_attention_heads", 1, kMaxHeads);
  const bool kv_left_out = !r.present("num_key_value_heads") && kv_heads_default > 0;
  s.n_kv_heads = r.size_or("num_key_value_heads", kv_left_out ? kv_heads_default : s.n_heads, 1, kMaxHeads);
  s.head_dim = r.size_or("head_dim", 0, 0, kMaxHeadDim);
  s.d_ff = r.size("intermediate_size", 1, kMaxFeedForward);
  s.max_seq_len = r.size("max_position_embeddings", 1, kMaxPositions);
  s.norm_eps = r.number("rms_norm_eps", 1e-6);
  read_rope(r, s);
}

void write_llama_sizes(const ModelShape& s, nlohmann::json& j) {
  j["vocab_size"] = s.vocab_size;
  j["hidden_size"] = s.d_model;
  j["num_hidden_layers"] = s.n_layers;
  j["num_attention_heads"] = s.n_heads;
  j["num_key_value_heads"] = s.n_kv_heads;
  j["head_dim"] = s.head_size();
  j["intermediate_size"] = s.d_ff;
  j["max_position_embeddings"] = s.max_seq_len;
  j["rope_theta"] = s.rope_theta;
  j["rms_norm_eps"] = s.norm_eps;
  j["tie_word_embeddings"] = s.tie_embeddings;
  j["attention_dropout"] = 0.0;
  if (s.rope_scaling.type.empty()) {
    j["rope_scaling"] = nullptr;
  } else {
    j["rope_scaling"] = {{"rope_type", s.rope_scaling.type}, {"factor", s.rope_scaling.factor}};
    if (s.rope_scaling.type == "llama3") {
      j["rope_scaling"]["low_freq_factor"] = s.rope_scaling.low_freq_factor;
      j["rope_scaling"]["high_freq_factor"] = s.rope_scaling.high_freq_factor;
      j["rope_scaling"]["original_max_position_embeddings"] = s.rope_scaling.original_max_position_embeddings;
    }
  }
}

void read_llama(const nlohmann::json& j, const std::string& source, ModelShape& s) {
  ConfigReader r(j, source);
  set_llama_layout(s);
  read_llama_sizes(r, s);
  read_activation(r, "hidden_act", "silu", MlpKind::gated_silu);
  s.tie_embeddings = r.boolean("tie_word_embeddings", false);
  s.qkv_bias = s.o_bias = r.boolean("attention_bias", false);
  s.mlp_bias = r.boolean("mlp_bias", false);
}

void write_llama(const ModelShape& s, nlohmann::json& j) {
  write_llama_sizes(s, j);
  j["hidden_act"] = "silu";
  j["attention_bias"] = s.qkv_bias;
  j["mlp_bias"] = s.mlp_bias;
}

void read_mistral(const nlohmann::json& j, const std::string& source, ModelShape& s) {
  ConfigReader r(j, source);
  set_llama_layout(s);
  read_llama_sizes(r, s, 8);
  read_activation(r, "hidden_act", "silu", MlpKind::gated_silu);
  s.tie_embeddings = r.boolean("tie_word_embeddings", false);
  // MistralConfig's 4096 where the key is left out (Mistral 7B v0.1's); null: no window.
  s.sliding_window = r.present("sliding_window") ? r.size_or("sliding_window", 0, 0, INT64_MAX) : 4096;
  s.sliding_layers.assign(static_cast<size_t>(s.n_layers), s.sliding_window > 0);
  read_layer_types(r, s);
}

void write_mistral(const ModelShape& s, nlohmann::json& j) {
  write_llama_sizes(s, j);
  j["hidden_act"] = "silu";
  j["sliding_window"] = s.sliding_window > 0 ? nlohmann::json(s.sliding_window) : nlohmann::json();
}

// Qwen2 / Qwen3: a window only when use_sliding_window, on layers >= max_window_layers.
void read_qwen_window(const ConfigReader& r, ModelShape& s) {
  if (!r.boolean("use_sliding_window", false)) return;  // HF then ignores sliding_window
  s.sliding_window = r.present("sliding_window") ? r.size_or("sliding_window", 0, 0, INT64_MAX) : 4096;
  const int64_t from = r.integer("max_window_layers", 28);  // (Qwen2Config's and Qwen3Config's defaults)
  for (int64_t i = 0; i < s.n_layers; ++i) s.sliding_layers.push_back(i >= from);
  read_layer_types(r, s);
}

void write_qwen_window(const ModelShape& s, nlohmann::json& j) {
  j["use_sliding_window"] = s.sliding_window > 0;
  j["sliding_window"] = s.sliding_window > 0 ? nlohmann::json(s.sliding_window) : nlohmann::json();
  int64_t first = s.n_layers;
  for (int64_t i = s.n_layers - 1; i >= 0 && s.layer_is_sliding(i); --i) first = i;
  j["max_window_layers"] = first;
}

void read_qwen2(const nlohmann::json& j, const std::string& source, ModelShape& s) {
  ConfigReader r(j, source);
  set_llama_layout(s);
  read_llama_sizes(r, s, 32);
  read_activation(r, "hidden_act", "silu", MlpKind::gated_silu);
  s.tie_embeddings = r.boolean("tie_word_embeddings", false);
  s.qkv_bias = true;
  read_qwen_window(r, s);
}

void write_qwen2(const ModelShape& s, nlohmann::json& j) {
  write_llama_sizes(s, j);
  j["hidden_act"] = "silu";
  write_qwen_window(s, j);
}

void read_qwen3(const nlohmann::json& j, const std::string& source, ModelShape& s) {
  ConfigReader r(j, source);
  set_llama_layout(s);
  read_llama_sizes(r, s, 32);
  if (s.head_dim == 0) s.head_dim = 128;  // Qwen3Config's default, not hidden / heads
  read_activation(r, "hidden_act", "silu", MlpKind::gated_silu);
  s.tie_embeddings = r.boolean("tie_word_embeddings", false);
  s.qkv_bias = s.o_bias = r.boolean("attention_bias", false);
  s.qk_norm = true;
  read_qwen_window(r, s);
}

void write_qwen3(const ModelShape& s, nlohmann::json& j) {
  write_llama_sizes(s, j);
  j["hidden_act"] = "silu";
  j["attention_bias"] = s.qkv_bias;
  write_qwen_window(s, j);
}

void set_qwen3_layout(ModelShape& s) {
  set_llama_layout(s);
  s.qk_norm = true;
}

void set_gemma2_layout(ModelShape& s) {
  s.norm = NormKind::rms_plus_one;
  s.mlp = MlpKind::gated_gelu_tanh;
  s.positions = PositionKind::rope;
  s.sandwich_norms = true;
  s.embed_scale = true;
  s.tie_embeddings = true;
}

void read_gemma2(const nlohmann::json& j, const std::string& source, ModelShape& s) {
  ConfigReader r(j, source);
  set_gemma2_layout(s);
  read_llama_sizes(r, s, 4);
  if (s.head_dim == 0) s.head_dim = 256;  // Gemma2Config's default
  read_activation(r, r.has("hidden_activation") ? "hidden_activation" : "hidden_act",
                  "gelu_pytorch_tanh", MlpKind::gated_gelu_tanh);
  s.tie_embeddings = r.boolean("tie_word_embeddings", true);  // (false: a head of its own, PEFT's untied lm_head merged)
  s.qkv_bias = s.o_bias = r.boolean("attention_bias", false);
  s.query_pre_attn_scalar = r.number("query_pre_attn_scalar", 256);
  // Gemma2Config's defaults where a key is left out (50 and 30); null turns a cap off.
  const auto softcap = [&](const char* key, double fallback) { return r.present(key) ? r.number(key, 0.0) : fallback; };
  s.attn_softcap = softcap("attn_logit_softcapping", 50.0);
  s.final_softcap = softcap("final_logit_softcapping", 30.0);
  s.sliding_window = r.size_or("sliding_window", 4096, 0, INT64_MAX);
  for (int64_t i = 0; i < s.n_layers; ++i) s.sliding_layers.push_back(i % 2 == 0);
  read_layer_types(r, s);
}

void write_gemma2(const ModelShape& s, nlohmann::json& j) {
  write_llama_sizes(s, j);
  j.erase("hidden_act");
  j["hidden_activation"] = "gelu_pytorch_tanh";
  j["attention_bias"] = s.qkv_bias;
  j["query_pre_attn_scalar"] = s.query_pre_attn_scalar > 0 ? s.query_pre_attn_scalar
                                                            : static_cast<double>(s.head_size());
  j["attn_logit_softcapping"] = s.attn_softcap > 0 ? nlohmann::json(s.attn_softcap) : nlohmann::json();
  j["final_logit_softcapping"] = s.final_softcap > 0 ? nlohmann::json(s.final_softcap) : nlohmann::json();
  j["sliding_window"] = s.sliding_window;
}

HfTensorName llama_name(const std::string& p) {
  if (starts_with(p, "lm_head.")) return {p};
  return {"model." + p};
}

// ---- GPT-2 -----------------------------------------------------------------------------------

void set_gpt2_layout(ModelShape& s) {
  s.norm = NormKind::layer_norm;
  s.mlp = MlpKind::gelu_tanh;
  s.positions = PositionKind::learned;
  s.qkv_bias = s.o_bias = s.mlp_bias = true;
}

void read_gpt2(const nlohmann::json& j, const std::string& source, ModelShape& s) {
  ConfigReader r(j, source);
  set_gpt2_layout(s);
  s.vocab_size = r.size("vocab_size", 1, kMaxVocab);
  s.d_model = r.size("n_embd", 1, kMaxHidden);
  s.n_layers = r.size("n_layer", 1, kMaxLayers);
  s.n_heads = s.n_kv_heads = r.size("n_head", 1, kMaxHeads);
  s.d_ff = r.size_or("n_inner", 4 * s.d_model, 1, kMaxFeedForward);
  s.max_seq_len = r.size("n_positions", 1, kMaxPositions);
  s.norm_eps = r.number("layer_norm_epsilon", 1e-5);
  s.tie_embeddings = r.boolean("tie_word_embeddings", true);
  const std::string act = r.text("activation_function", "gelu_new");
  if (act != "gelu_new" && act != "gelu_pytorch_tanh")
    r.fail("activation_function", "is \"" + act + "\"; this build runs GPT-2 with gelu_new");
  if (!r.boolean("scale_attn_weights", true))
    r.fail("scale_attn_weights", "is false; this build scales attention by 1/sqrt(head_dim)");
  if (r.boolean("scale_attn_by_inverse_layer_idx", false))
    r.fail("scale_attn_by_inverse_layer_idx", "is true; this build does not support it");
}

void write_gpt2(const ModelShape& s, nlohmann::json& j) {
  j["vocab_size"] = s.vocab_size;
  j["n_embd"] = s.d_model;
  j["n_layer"] = s.n_layers;
  j["n_head"] = s.n_heads;
  j["n_inner"] = s.d_ff;
  j["n_positions"] = s.max_seq_len;
  j["n_ctx"] = s.max_seq_len;
  j["layer_norm_epsilon"] = s.norm_eps;
  j["activation_function"] = "gelu_new";
  j["tie_word_embeddings"] = s.tie_embeddings;
  j["resid_pdrop"] = j["embd_pdrop"] = j["attn_pdrop"] = 0.0;
  j["scale_attn_weights"] = true;
  j["use_cache"] = true;
}

// GPT-2 stores q, k, v fused in c_attn and its linear weights as Conv1D [in, out].
HfTensorName gpt2_name(const std::string& p) {
  static const std::pair<const char*, const char*> kTop[] = {
      {"embed_tokens.weight", "wte.weight"}, {"embed_positions.weight", "wpe.weight"},
      {"norm.weight", "ln_f.weight"}, {"norm.bias", "ln_f.bias"}};
  for (const auto& [ours, theirs] : kTop)
    if (p == ours) return {std::string("transformer.") + theirs};
  if (starts_with(p, "lm_head.")) return {p};
  GANPO_ASSERT(starts_with(p, "layers."), "unexpected GPT-2 parameter " + p);
  const size_t dot = p.find('.', 7);
  const std::string layer = "transformer.h." + p.substr(7, dot - 7) + ".";
  const std::string rest = p.substr(dot + 1);
  const bool weight = ends_with(rest, ".weight");
  const std::string leaf = weight ? "weight" : "bias";
  static const char* kQkv[] = {"self_attn.q_proj.", "self_attn.k_proj.", "self_attn.v_proj."};
  for (int part = 0; part < 3; ++part)
    if (starts_with(rest, kQkv[part])) return {layer + "attn.c_attn." + leaf, WeightLayout::fused_qkv, part};
  static const std::pair<const char*, const char*> kBlock[] = {
      {"input_layernorm.", "ln_1."}, {"post_attention_layernorm.", "ln_2."},
      {"self_attn.o_proj.", "attn.c_proj."}, {"mlp.up_proj.", "mlp.c_fc."},
      {"mlp.down_proj.", "mlp.c_proj."}};
  for (const auto& [ours, theirs] : kBlock)
    if (starts_with(rest, ours)) {
      const bool conv = weight && std::string(ours).find("norm") == std::string::npos;
      return {layer + theirs + leaf, conv ? WeightLayout::transposed : WeightLayout::same};
    }
  GANPO_ASSERT(false, "unexpected GPT-2 parameter " + p);
  return {};
}

}  // namespace

const std::vector<Architecture>& architectures() {
  static const std::vector<Architecture> table = {
      {"llama", "LlamaForCausalLM", "llama", read_llama, write_llama, set_llama_layout, llama_name, "",
       {"rotary_emb.inv_freq"}},
      {"mistral", "MistralForCausalLM", "mistral", read_mistral, write_mistral, set_llama_layout,
       llama_name, "", {"rotary_emb.inv_freq"}},
      {"qwen2", "Qwen2ForCausalLM", "qwen2", read_qwen2, write_qwen2, set_llama_layout, llama_name, "",
       {"rotary_emb.inv_freq"}},
      {"qwen3", "Qwen3ForCausalLM", "qwen3", read_qwen3, write_qwen3, set_qwen3_layout, llama_name, "",
       {"rotary_emb.inv_freq"}},
      {"gemma2", "Gemma2ForCausalLM", "gemma2", read_gemma2, write_gemma2, set_gemma2_layout,
       llama_name, "", {}},
      {"gpt2", "GPT2LMHeadModel", "gpt2", read_gpt2, write_gpt2, set_gpt2_layout, gpt2_name,
       "transformer.", {".attn.bias", ".attn.masked_bias"}},
  };
  return table;
}

const Architecture& architecture(const std::string& family) {
  for (const auto& a : architectures())
    if (family == a.family) return a;
  GANPO_ASSERT(false, "unknown model family " + family);
  return architectures().front();
}

std::string supported_architectures() {
  std::string out;
  for (const auto& a : architectures()) out += (out.empty() ? "" : ", ") + std::string(a.hf_class);
  return out;
}

int64_t hf_padding_idx(const ModelShape& shape, const nlohmann::json& config) {
  if (shape.arch == "gpt2" || !config.contains("pad_token_id") || !config["pad_token_id"].is_number_integer()) return -1;
  const int64_t pad = config["pad_token_id"].get<int64_t>();
  if (pad >= shape.vocab_size || pad < -shape.vocab_size) return -1;  // (nn.Embedding would refuse it; it names no row)
  return pad < 0 ? pad + shape.vocab_size : pad;
}

ModelShape read_hf_config(const nlohmann::json& j, const std::string& source) {
  if (!j.is_object()) throw ModelFileError(source + " is not a JSON object; the model folder is damaged");
  if (json_nested_deeper_than(j, kMaxConfigDepth))
    throw ModelFileError(source + " nests JSON values more than " + std::to_string(kMaxConfigDepth) +
                         " levels deep, which no model config does; the file is damaged or not a config.json");
  const Architecture* arch = nullptr;
  std::string named;
  if (j.contains("architectures") && j["architectures"].is_array() && !j["architectures"].empty() &&
      j["architectures"][0].is_string()) {
    named = j["architectures"][0].get<std::string>();
    for (const auto& a : architectures())
      if (named == a.hf_class) arch = &a;
  }
  if (!arch && j.contains("model_type") && j["model_type"].is_string()) {
    const std::string type = j["model_type"].get<std::string>();
    if (named.empty()) named = "model_type \"" + type + "\"";
    for (const auto& a : architectures())
      if (type == a.model_type) arch = &a;
  }
  if (!arch)
    throw ModelFileError(source + ": architecture " + (named.empty() ? "(none given)" : named) +
                         " is not supported; this build runs " + supported_architectures());
  ModelShape s;
  s.arch = arch->family;
  s.sliding_layers.clear();
  arch->read_config(j, source, s);
  ConfigReader r(j, source);
  s.dtype = r.text("torch_dtype", r.text("dtype", "float32"));
  if (s.n_heads % s.n_kv_heads != 0)
    r.fail("num_key_value_heads", "(" + std::to_string(s.n_kv_heads) + ") does not divide num_attention_heads (" +
                                      std::to_string(s.n_heads) + ")");
  if (s.head_dim == 0 && s.d_model % s.n_heads != 0)
    r.fail("hidden_size", "does not divide by num_attention_heads and no head_dim is given");
  if (s.head_dim < 0 || (s.positions == PositionKind::rope && s.head_size() % 2 != 0))
    r.fail("head_dim", "must be a positive even number for rotary positions, got " + std::to_string(s.head_size()));
  if (parameter_count(s) > kMaxParameters)
    throw ModelFileError(source + " describes a model of " + std::to_string(parameter_count(s)) +
                         " parameters, more than this build loads (" + std::to_string(kMaxParameters) +
                         "); the folder's config.json is damaged or not a model's");
  s.padding_idx = hf_padding_idx(s, j);
  s.hf_config = j.dump();
  return s;
}

nlohmann::json write_hf_config(const ModelShape& s, const std::string& dtype) {
  nlohmann::json j;
  if (!s.hf_config.empty()) {
    j = nlohmann::json::parse(s.hf_config);
  } else {
    const Architecture& a = architecture(s.arch);
    j["architectures"] = {a.hf_class};
    j["model_type"] = a.model_type;
    a.write_config(s, j);
  }
  // A kept config says what the model now is where modules_to_save untied the head.
  if (!s.hf_config.empty() && read_hf_config(j).tie_embeddings != s.tie_embeddings) j["tie_word_embeddings"] = s.tie_embeddings;
  if (j.contains("dtype")) j["dtype"] = dtype;  // transformers >= 4.56 writes "dtype"
  j["torch_dtype"] = dtype;
  return j;
}

nlohmann::json generation_config(const ModelShape& s, int64_t bos_id, int64_t eos_id, int64_t pad_id) {
  nlohmann::json j = {{"_from_model_config", true}, {"eos_token_id", eos_id}};
  // config.json's eos_token_id where it has one (a list too), as transformers' from_model_config
  // takes it: the ids sampling stops at (core/generate.h) stay the folder's.
  if (const auto eos = eos_token_ids(s.hf_config)) j["eos_token_id"] = *eos;
  if (bos_id >= 0) j["bos_token_id"] = bos_id;
  if (pad_id >= 0) j["pad_token_id"] = pad_id;
  return j;
}

std::optional<nlohmann::json> eos_token_ids(const std::string& file_text) {
  const auto j = nlohmann::json::parse(file_text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object() || !j.contains("eos_token_id") || j["eos_token_id"].is_null()) return std::nullopt;
  return std::optional<nlohmann::json>(std::in_place, j["eos_token_id"]);  // (in_place: nlohmann 3.11.3 converts to optional too)
}

}  // namespace ganpo
