#include "core/model.h"

#include <torch/version.h>

#include <cmath>

#include "core/error.h"

namespace ganpo {
namespace {

// RMSNorm (llama) or LayerNorm (gpt2) with HF parameter names.
struct NormImpl : torch::nn::Module {
  NormImpl(int64_t d, double eps, bool layer_norm) : eps(eps), layer_norm(layer_norm) {
    weight = register_parameter("weight", torch::ones({d}));
    if (layer_norm) bias = register_parameter("bias", torch::zeros({d}));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    if (layer_norm) return torch::layer_norm(x, {x.size(-1)}, weight, bias, eps);
    auto rms = torch::rsqrt(x.pow(2).mean(-1, true) + eps);
    return x * rms * weight;
  }
  torch::Tensor weight, bias;
  double eps;
  bool layer_norm;
};
TORCH_MODULE(Norm);

torch::nn::Linear make_linear(int64_t in, int64_t out, bool bias, double std) {
  auto layer = torch::nn::Linear(torch::nn::LinearOptions(in, out).bias(bias));
  torch::NoGradGuard guard;
  layer->weight.normal_(0.0, std);
  if (bias) layer->bias.zero_();
  return layer;
}

struct AttentionImpl : torch::nn::Module {
  AttentionImpl(const ModelShape& s)
      : n_heads(s.n_heads), n_kv_heads(s.n_kv_heads), head_dim(s.d_model / s.n_heads),
        rope(s.arch == "llama") {
    const bool bias = s.arch == "gpt2";
    const double std = 0.02, out_std = 0.02 / std::sqrt(2.0 * s.n_layers);
    q_proj = register_module("q_proj", make_linear(s.d_model, n_heads * head_dim, bias, std));
    k_proj = register_module("k_proj", make_linear(s.d_model, n_kv_heads * head_dim, bias, std));
    v_proj = register_module("v_proj", make_linear(s.d_model, n_kv_heads * head_dim, bias, std));
    o_proj = register_module("o_proj", make_linear(n_heads * head_dim, s.d_model, bias, out_std));
  }

  static torch::Tensor apply_rope(const torch::Tensor& x, const torch::Tensor& cos,
                                  const torch::Tensor& sin) {
    // x [B, H, T, hd]; cos/sin [B, 1, T, hd/2]; HF's rotate-half layout.
    auto halves = x.chunk(2, -1);
    const auto& x1 = halves[0];
    const auto& x2 = halves[1];
    return torch::cat({x1 * cos - x2 * sin, x2 * cos + x1 * sin}, -1);
  }

  // mask: additive [B, 1, T, Tk] or undefined for plain causal attention without a cache.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                        const torch::Tensor& mask, KVCache* cache, size_t layer) {
    const auto B = x.size(0), T = x.size(1);
    auto q = q_proj(x).view({B, T, n_heads, head_dim}).transpose(1, 2);
    auto k = k_proj(x).view({B, T, n_kv_heads, head_dim}).transpose(1, 2);
    auto v = v_proj(x).view({B, T, n_kv_heads, head_dim}).transpose(1, 2);
    if (rope) {
      q = apply_rope(q, cos, sin);
      k = apply_rope(k, cos, sin);
    }
    if (cache) {
      if (cache->keys.size() <= layer) {
        cache->keys.resize(layer + 1);
        cache->values.resize(layer + 1);
      }
      if (cache->keys[layer].defined()) {
        k = torch::cat({cache->keys[layer], k}, 2);
        v = torch::cat({cache->values[layer], v}, 2);
      }
      cache->keys[layer] = k;
      cache->values[layer] = v;
    }
    if (n_kv_heads != n_heads) {
      k = k.repeat_interleave(n_heads / n_kv_heads, 1);
      v = v.repeat_interleave(n_heads / n_kv_heads, 1);
    }
    torch::Tensor out;
#if TORCH_VERSION_MAJOR >= 2
    if (mask.defined())
      out = at::scaled_dot_product_attention(q, k, v, mask);
    else
      out = at::scaled_dot_product_attention(q, k, v, {}, 0.0, /*is_causal=*/true);
#else
    auto scores = torch::matmul(q, k.transpose(-2, -1)) / std::sqrt(static_cast<double>(head_dim));
    if (mask.defined()) {
      scores = scores + mask;
    } else {
      auto causal = torch::ones({T, k.size(2)}, x.options().dtype(torch::kBool)).triu(1);
      scores = scores.masked_fill(causal, -std::numeric_limits<float>::infinity());
    }
    out = torch::matmul(torch::softmax(scores, -1), v);
#endif
    return o_proj(out.transpose(1, 2).reshape({B, T, n_heads * head_dim}));
  }

  int64_t n_heads, n_kv_heads, head_dim;
  bool rope;
  torch::nn::Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, o_proj{nullptr};
};
TORCH_MODULE(Attention);

struct MlpImpl : torch::nn::Module {
  explicit MlpImpl(const ModelShape& s) : swiglu(s.arch == "llama") {
    const bool bias = !swiglu;
    const double std = 0.02, out_std = 0.02 / std::sqrt(2.0 * s.n_layers);
    if (swiglu) gate_proj = register_module("gate_proj", make_linear(s.d_model, s.d_ff, false, std));
    up_proj = register_module("up_proj", make_linear(s.d_model, s.d_ff, bias, std));
    down_proj = register_module("down_proj", make_linear(s.d_ff, s.d_model, bias, out_std));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    if (swiglu) return down_proj(torch::silu(gate_proj(x)) * up_proj(x));
    return down_proj(torch::gelu(up_proj(x), "tanh"));
  }
  bool swiglu;
  torch::nn::Linear gate_proj{nullptr}, up_proj{nullptr}, down_proj{nullptr};
};
TORCH_MODULE(Mlp);

struct BlockImpl : torch::nn::Module {
  explicit BlockImpl(const ModelShape& s) {
    const bool ln = s.arch == "gpt2";
    input_layernorm = register_module("input_layernorm", Norm(s.d_model, s.norm_eps, ln));
    self_attn = register_module("self_attn", Attention(s));
    post_attention_layernorm =
        register_module("post_attention_layernorm", Norm(s.d_model, s.norm_eps, ln));
    mlp = register_module("mlp", Mlp(s));
  }
  torch::Tensor forward(torch::Tensor x, const torch::Tensor& cos, const torch::Tensor& sin,
                        const torch::Tensor& mask, KVCache* cache, size_t layer) {
    x = x + self_attn(input_layernorm(x), cos, sin, mask, cache, layer);
    return x + mlp(post_attention_layernorm(x));
  }
  Norm input_layernorm{nullptr}, post_attention_layernorm{nullptr};
  Attention self_attn{nullptr};
  Mlp mlp{nullptr};
};
TORCH_MODULE(Block);

}  // namespace

CausalLMImpl::CausalLMImpl(const ModelShape& shape) : shape_(shape) {
  GANPO_ASSERT(shape.d_model % shape.n_heads == 0, "d_model must divide by n_heads");
  GANPO_ASSERT(shape.n_heads % shape.n_kv_heads == 0, "n_heads must divide by n_kv_heads");
  embed_tokens_ = register_module("embed_tokens", torch::nn::Embedding(shape.vocab_size, shape.d_model));
  {
    torch::NoGradGuard guard;
    embed_tokens_->weight.normal_(0.0, 0.02);
  }
  if (shape.arch == "gpt2") {
    embed_positions_ =
        register_module("embed_positions", torch::nn::Embedding(shape.max_seq_len, shape.d_model));
    torch::NoGradGuard guard;
    embed_positions_->weight.normal_(0.0, 0.01);
  }
  layers_ = register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < shape.n_layers; ++i) layers_->push_back(Block(shape));
  norm_ = register_module("norm", Norm(shape.d_model, shape.norm_eps, shape.arch == "gpt2"));
  if (!shape.tie_embeddings)
    lm_head_ = register_module("lm_head", make_linear(shape.d_model, shape.vocab_size, false, 0.02));
  if (shape.arch == "llama") {
    const int64_t half = shape.d_model / shape.n_heads / 2;
    auto inv_freq = torch::pow(shape.rope_theta,
                               -torch::arange(0, half, torch::kFloat64) / static_cast<double>(half));
    auto angles = torch::outer(torch::arange(0, shape.max_seq_len, torch::kFloat64), inv_freq);
    rope_cos_ = register_buffer("rope_cos", angles.cos().to(torch::kFloat32));
    rope_sin_ = register_buffer("rope_sin", angles.sin().to(torch::kFloat32));
  }
}

LMOutput CausalLMImpl::forward(const torch::Tensor& input_ids, const torch::Tensor& position_ids_in,
                               const torch::Tensor& key_mask, KVCache* cache) {
  const auto B = input_ids.size(0), T = input_ids.size(1);
  const int64_t past = cache ? cache->length() : 0;
  torch::Tensor pos = position_ids_in;
  if (!pos.defined())
    pos = torch::arange(past, past + T, input_ids.options().dtype(torch::kLong)).unsqueeze(0).expand({B, T});
  // Checked on sizes, not on the position values, so no device sync happens per forward.
  if (past + T > shape_.max_seq_len)
    throw Error("sequence of " + std::to_string(past + T) + " tokens exceeds the model's " +
                "max_seq_len " + std::to_string(shape_.max_seq_len) +
                "; lower data.max_length or sampling.max_new_tokens");

  auto x = embed_tokens_(input_ids);
  if (embed_positions_) x = x + embed_positions_(pos);
  torch::Tensor cos, sin;
  if (rope_cos_.defined()) {
    cos = rope_cos_.index({pos}).unsqueeze(1);  // [B, 1, T, hd/2]
    sin = rope_sin_.index({pos}).unsqueeze(1);
  }
  torch::Tensor mask;  // additive [B, 1, T, past+T]
  if (key_mask.defined() || past > 0) {
    const int64_t Tk = past + T;
    auto q_idx = torch::arange(past, past + T, input_ids.options().dtype(torch::kLong)).view({T, 1});
    auto k_idx = torch::arange(0, Tk, input_ids.options().dtype(torch::kLong)).view({1, Tk});
    auto allowed = (k_idx <= q_idx).unsqueeze(0).unsqueeze(0);  // [1, 1, T, Tk]
    if (key_mask.defined()) allowed = allowed & key_mask.to(torch::kBool).view({B, 1, 1, Tk});
    mask = torch::zeros(allowed.sizes(), x.options()).masked_fill(allowed.logical_not(), -1e9);
  }
  for (size_t i = 0; i < layers_->size(); ++i)
    x = layers_->ptr<BlockImpl>(i)->forward(x, cos, sin, mask, cache, i);
  auto hidden = norm_->as<NormImpl>()->forward(x);
  auto logits = lm_head_ ? lm_head_(hidden) : torch::matmul(hidden, embed_tokens_->weight.t());
  return {logits, hidden};
}

std::vector<std::pair<std::string, torch::Tensor>> model_state(CausalLM& model) {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& p : model->named_parameters()) {
    const auto& name = p.key();
    out.emplace_back(name.rfind("lm_head", 0) == 0 ? name : "model." + name, p.value().detach());
  }
  return out;
}

void load_model_state(CausalLM& model, const std::map<std::string, torch::Tensor>& tensors,
                      const std::string& source) {
  torch::NoGradGuard guard;
  for (auto& p : model->named_parameters()) {
    const auto& name = p.key();
    const std::string key = name.rfind("lm_head", 0) == 0 ? name : "model." + name;
    auto it = tensors.find(key);
    if (it == tensors.end())
      throw ModelFileError(source + " has no tensor \"" + key +
                           "\": the weights do not match config.json; re-export the checkpoint");
    if (it->second.sizes() != p.value().sizes())
      throw ModelFileError(source + ": tensor \"" + key + "\" has shape " +
                           c10::str(it->second.sizes()) + " but the model expects " +
                           c10::str(p.value().sizes()));
    p.value().copy_(it->second);
  }
}

}  // namespace ganpo
