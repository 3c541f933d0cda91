#include "core/model/causal_lm.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <cstdio>
#include <mutex>

#include "core/bf16_autocast.h"
#include "core/counter_dropout.h"
#include "core/error.h"
#include "core/model/lora_targets.h"
#include "core/model/rms_norm.h"
#include "core/sdpa.h"

namespace ganpo {
namespace {

constexpr double kInitStd = 0.02;

// LoRA adapters switched off on this thread, for the duration of a forward through a model view
// made by without_adapters(). Per thread, so the reference pass (adapters off) and the policy
// pass (adapters on) can run at once on two lanes over the same modules.
thread_local bool t_adapters_off = false;

class AdaptersOff {
public:
  explicit AdaptersOff(bool off) : before_(t_adapters_off) { t_adapters_off = before_ || off; }
  ~AdaptersOff() { t_adapters_off = before_; }
  AdaptersOff(const AdaptersOff&) = delete;
  AdaptersOff& operator=(const AdaptersOff&) = delete;

private:
  bool before_;
};

// A weight stored in another dtype than its input (a frozen reference's projections in bf16),
// as the product needs it: unchanged under bf16 autocast (CUDA's, or the CPU's testing aid),
// which rounds both sides to bf16 itself, else cast to the input's dtype (a bf16 weight used in
// float32: on the CPU, where nothing autocasts).
torch::Tensor as_input_dtype(const torch::Tensor& weight, const torch::Tensor& x) {
  if (!weight.defined() || weight.scalar_type() == x.scalar_type() || bf16_autocast_for(x))
    return weight;
  return weight.to(x.scalar_type());
}

torch::Tensor new_weight(const std::vector<int64_t>& sizes, bool init, double std, double fill = 0.0,
                         bool constant = false) {
  if (!init) return torch::empty(sizes);
  if (constant) return torch::full(sizes, fill);
  return torch::empty(sizes).normal_(0.0, std);
}

// What an adapter reads of one input x: x' = dropout(x) (x itself without dropout) and x' A^T.
// Computed once per input; where q, k and v share one A (GPT-2's c_attn) once for the three.
struct AdapterInput {
  torch::Tensor dropped;  // x' [..., in]
  torch::Tensor down;     // x' A^T [..., r]
  torch::Tensor down0;    // x A0^T [..., r]: PiSSA's / OLoRA's first values, subtracted (else undefined)
  bool is_dropped = false;
};

// A module's weight and optional bias, and PEFT's modules_to_save for it: a trained copy of both
// (trained_weight, trained_bias), used while the adapters are on; the originals stay for the
// adapters-off reference (core/model/modules_to_save.h). PEFT's bias option trains a copy of
// the bias alone (trained_bias), the same way.
// PEFT's trainable_token_indices for an embedding table or output head: new values for some rows
// (trainable_tokens_delta [n, d], starting at those rows), which replace them while the adapters
// are on: W.index_copy(0, rows, delta), as PEFT's TrainableTokensLayer computes it.
struct WeightAndBias : torch::nn::Module {
  // What is trained (adapters, copies, token rows) is float32 on the weight's device, whatever
  // the frozen weight's storage (bf16 under CausalLMImpl::store_projections_in_bf16).
  torch::TensorOptions float32_options() const { return weight.options().dtype(torch::kFloat32); }
  static torch::Tensor float32_copy(const torch::Tensor& t) {
    return t.detach().to(torch::kFloat32, /*non_blocking=*/false, /*copy=*/true);
  }
  // The weight in use on this thread (a handle, or the weight with its trained rows put in).
  torch::Tensor w() const {
    if (t_adapters_off) return weight;
    if (trained_weight.defined()) return trained_weight;
    if (token_rows.defined()) return weight.index_copy(0, token_rows, trainable_tokens_delta);
    return weight;
  }
  // (a trained bias without a trained weight: PEFT's bias "all" / "lora_only")
  torch::Tensor b() const { return trained_bias.defined() && !t_adapters_off ? trained_bias : bias; }
  void add_trained_copy() {
    torch::NoGradGuard guard;
    trained_weight = register_parameter("trained_weight", float32_copy(weight));
    if (bias.defined()) add_trained_bias();
  }
  void add_trained_bias() {
    torch::NoGradGuard guard;
    trained_bias = register_parameter("trained_bias", float32_copy(bias));
  }
  void add_trainable_rows(const std::vector<int64_t>& rows) {
    torch::NoGradGuard guard;
    // (Rows put into the weight in use: a weight kept in bf16 goes back to float32, exactly.)
    if (weight.scalar_type() != torch::kFloat32) weight.set_data(weight.to(torch::kFloat32));
    token_rows = register_buffer("token_rows", torch::tensor(rows, torch::kLong).to(weight.device()));
    trainable_tokens_delta = register_parameter("trainable_tokens_delta", weight.index_select(0, token_rows).clone());
  }
  torch::Tensor weight, bias;
  torch::Tensor trained_weight, trained_bias;  // undefined unless the module (or its bias) is trained
  torch::Tensor token_rows;                    // [n] long; undefined unless some rows train
  torch::Tensor trainable_tokens_delta;        // [n, d]: those rows' trained values
};

// weight [out, in] and an optional bias [out]; also used as an embedding table (weight [V, d]).
// With a LoRA adapter: y = x W^T + b + scale * dropout(x) A^T B^T, A [r, in], B [out, r].
// With DoRA (PEFT's DoraLinearVariant), k = m / ||W + scale B A|| per output row, the norm a
// constant for the backward pass, and x' = dropout(x):
//   y = x W^T + b + (k - 1) * x' W^T + k * scale * x' A^T B^T
// which without dropout is k * x (W + scale B A)^T + b.
// An adapter may use another projection's A (a_owner): k and v on q's, as PEFT's one adapter on
// GPT-2's fused c_attn, whose B is q's, k's and v's stacked.
struct LinearImpl : WeightAndBias {
  LinearImpl(int64_t in, int64_t out, bool with_bias, bool init, double std) {
    torch::NoGradGuard guard;
    weight = register_parameter("weight", new_weight({out, in}, init, std));
    if (with_bias) bias = register_parameter("bias", new_weight({out}, init, 0, 0.0, true));
  }
  bool adapted() const { return lora_B.defined() && !t_adapters_off; }
  const torch::Tensor& A() const { return a_owner ? a_owner->lora_A : lora_A; }
  const torch::Tensor& A0() const { return a_owner ? a_owner->lora_A0 : lora_A0; }
  AdapterInput adapter_input(const torch::Tensor& x) {
    const bool dropped = lora_dropout > 0 && is_training();
    auto h = dropped ? ganpo::dropout(x, lora_dropout, true) : x;
    auto down = torch::linear(h, A());  // [..., r]
    auto down0 = A0().defined() ? torch::linear(x, A0()) : torch::Tensor();  // [..., r], no dropout (it is the base's part)
    return {std::move(h), std::move(down), std::move(down0), dropped};
  }
  torch::Tensor forward(const torch::Tensor& x) {
    if (!adapted()) return torch::linear(x, as_input_dtype(w(), x), as_input_dtype(b(), x));  // [..., out]
    return forward_adapted(x, adapter_input(x));
  }
  // With the adapter on (adapted()); `in` is adapter_input(x), of this adapter's A (or of the
  // projection whose A it uses).
  torch::Tensor forward_adapted(const torch::Tensor& x, const AdapterInput& in) {
    const auto adapter = torch::linear(in.down, lora_B);  // [..., r] -> [..., out]
    if (lora_magnitude.defined()) return dora_forward(x, in, adapter);
    // In place, scale folded in: no [..., out] temporaries beyond the adapter's own output (the
    // linear's backward does not need its output, so changing it is safe).
    auto y = torch::linear(x, as_input_dtype(weight, x), as_input_dtype(b(), x)).add_(adapter, lora_scale);
    // PiSSA / OLoRA: x (W - scale B0 A0)^T + scale x' A^T B^T, W left as it is (the reference's).
    return lora_B0.defined() ? y.sub_(torch::linear(in.down0, lora_B0), lora_scale) : y;
  }
  // k = m / ||W + scale B A|| per output row [out] (float32), without gradient through the norm.
  // Without gradients (evaluation, sampling) it is kept until one of its tensors changes, so
  // decoding does not rebuild W + scale B A for every token.
  torch::Tensor dora_factor() {
    if (torch::GradMode::is_enabled()) return lora_magnitude / dora_norm();
    // (The tensors' version counters move with every in-place change: an optimizer step, a load.)
    const std::vector<int64_t> key = {reinterpret_cast<int64_t>(weight.data_ptr()), static_cast<int64_t>(weight._version()),
                                      static_cast<int64_t>(A()._version()), static_cast<int64_t>(lora_B._version()),
                                      static_cast<int64_t>(lora_magnitude._version()),
                                      reinterpret_cast<int64_t>(lora_magnitude.data_ptr())};
    std::lock_guard<std::mutex> lock(*dora_mutex);
    if (!dora_cached.defined() || dora_cache_key != key) {
      dora_cached = lora_magnitude / dora_norm();
      dora_cache_key = key;
    }
    return dora_cached;
  }
  torch::Tensor dora_norm() const {  // ||W + scale B A|| per output row [out], in float32
    torch::NoGradGuard guard;
    return (weight.to(torch::kFloat32) + torch::mm(lora_B, A()).to(torch::kFloat32) * lora_scale).norm(2, {1});
  }
  // Under bf16 autocast the outputs are bf16, k stays float32 and only k - 1 is rounded (k is
  // near 1: rounded itself it would lose the magnitude's small changes).
  torch::Tensor dora_forward(const torch::Tensor& x, const AdapterInput& in, const torch::Tensor& adapter) {
    const auto k = dora_factor();  // [out], float32
    const auto k_minus_1 = (k - 1).to(adapter.scalar_type());
    const auto w = as_input_dtype(weight, x);  // [out, in]
    if (!in.is_dropped) {
      auto z = torch::linear(x, w).add_(adapter, lora_scale);  // x (W + scale B A)^T
      auto y = z + z * k_minus_1;                               // k * z
      return bias.defined() ? y.add_(b()) : y;
    }
    return torch::linear(x, w, as_input_dtype(b(), x)) + k_minus_1 * torch::linear(in.dropped, w) +
           (k * lora_scale).to(adapter.scalar_type()) * adapter;
  }
  // PEFT's initialisation: A Kaiming-uniform (a = sqrt(5), as nn.Linear), B zero, so the adapted
  // model starts as the base model; DoRA's magnitude starts at ||W|| per row, the same start.
  // With a_from, the adapter uses that projection's A (same input width) and has none of its own.
  void add_lora(int64_t r, double scale, double dropout, bool dora, std::shared_ptr<LinearImpl> a_from = nullptr) {
    torch::NoGradGuard guard;
    if (a_from) {
      GANPO_ASSERT(a_from->lora_A.defined() && a_from->lora_A.size(1) == weight.size(1), "no A of this width to share");
      a_owner = std::move(a_from);
    } else {
      lora_A = register_parameter("lora_A", torch::empty({r, weight.size(1)}, float32_options()));
      torch::nn::init::kaiming_uniform_(lora_A, std::sqrt(5.0));
    }
    lora_B = register_parameter("lora_B", torch::zeros({weight.size(0), r}, float32_options()));
    lora_scale = scale;
    lora_dropout = dropout;
    if (dora) lora_magnitude = register_parameter("lora_magnitude_vector", weight.to(torch::kFloat32).norm(2, {1}));  // [out]
  }
  // As an embedding table with PEFT's LoRA Embedding: each token's row gains scale * B A[:, id]
  // (no dropout, as PEFT), computed from A's column of the token without a [V, d] product.
  //   ids [B, T] -> W[ids] + scale * A^T[ids] B^T   ([B, T, d] + [B, T, r] x [r, d])
  // The pad token's row (padding_idx) gets no gradient from the lookup, as Hugging Face's
  // nn.Embedding(V, d, pad_token_id): not in the weight, a trained copy, token rows or A's column
  // (a tied head's use of the row still trains it, as there).
  torch::Tensor lookup(const torch::Tensor& ids) {
    auto x = torch::embedding(w(), ids, padding_idx);  // [B, T, d]
    if (!lora_embedding_B.defined() || t_adapters_off) return x;
    const auto down = torch::embedding(lora_embedding_A.t(), ids, padding_idx);  // [B, T, r]
    // x is the embedding's own output, which its backward does not need: added to in place (the
    // adapter's part scaled in its own dtype first, as PEFT).
    return x.add_(torch::matmul(down, lora_embedding_B.t()) * lora_scale);
  }
  // PEFT's initialisation for an embedding: A zero, B normal (the model starts as the base model).
  void add_embedding_lora(int64_t r, double scale) {
    torch::NoGradGuard guard;
    lora_embedding_A = register_parameter("lora_embedding_A", torch::zeros({r, weight.size(0)}, float32_options()));  // [r, V]
    lora_embedding_B = register_parameter("lora_embedding_B", torch::empty({weight.size(1), r}, float32_options()).normal_());  // [d, r]
    lora_scale = scale;
  }
  // W + scale (B A)^T: the embedding with its adapter merged in [V, d].
  torch::Tensor merged_embedding() const {
    torch::NoGradGuard guard;
    return weight + torch::mm(lora_embedding_B, lora_embedding_A).t().to(weight.scalar_type()) * lora_scale;
  }
  // PiSSA / OLoRA (init_lora_weights): A and B start at A0 and B0 (buffers, kept), and scale B0 A0
  // is subtracted while the adapter is on, so the run starts at W and the adapters off are W.
  void set_initial(const torch::Tensor& a0, const torch::Tensor& b0) {
    torch::NoGradGuard guard;
    if (a0.defined()) {  // (a projection on another's A gets its B alone)
      lora_A.copy_(a0);
      lora_A0 = register_buffer("lora_A0", a0.to(float32_options()).clone());
    }
    lora_B.copy_(b0);
    lora_B0 = register_buffer("lora_B0", b0.to(float32_options()).clone());
  }
  torch::Tensor lora_A0, lora_B0;  // [r, in] and [out, r]; undefined unless PiSSA / OLoRA
  torch::Tensor lora_A, lora_B;  // undefined without an adapter (lora_A also where a_owner's is used)
  torch::Tensor lora_embedding_A, lora_embedding_B;  // [r, V] and [d, r]: an embedding table's adapter
  int64_t padding_idx = -1;                          // an embedding's pad token, whose row gets no gradient (-1: none)
  std::shared_ptr<LinearImpl> a_owner;
  torch::Tensor lora_magnitude;  // [out], DoRA only
  torch::Tensor dora_cached;     // dora_factor() computed without gradients, for dora_cache_key
  std::vector<int64_t> dora_cache_key;
  std::shared_ptr<std::mutex> dora_mutex = std::make_shared<std::mutex>();
  double lora_scale = 0.0, lora_dropout = 0.0;
};
TORCH_MODULE(Linear);

struct NormImpl : WeightAndBias {
  NormImpl(int64_t d, double eps, NormKind kind, bool init) : eps(eps), kind(kind) {
    torch::NoGradGuard guard;
    // (1 + w) norms start at w = 0, the others at w = 1, so a fresh norm is the identity scale.
    const double one = kind == NormKind::rms_plus_one ? 0.0 : 1.0;
    weight = register_parameter("weight", new_weight({d}, init, 0, one, true));
    if (kind == NormKind::layer_norm) bias = register_parameter("bias", new_weight({d}, init, 0, 0.0, true));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    if (kind == NormKind::layer_norm) return torch::layer_norm(x, {x.size(-1)}, w(), b(), eps);
    return rms_norm(x, w(), eps, kind == NormKind::rms_plus_one);  // core/model/rms_norm.h
  }
  double eps;
  NormKind kind;
};
TORCH_MODULE(Norm);

torch::Tensor soft_cap(const torch::Tensor& x, double cap) { return torch::tanh(x / cap) * cap; }

struct AttentionImpl : torch::nn::Module {
  AttentionImpl(const ModelShape& s, bool init)
      : n_heads(s.n_heads), n_kv_heads(s.n_kv_heads), head_dim(s.head_size()),
        rope(s.positions == PositionKind::rope), softcap(s.attn_softcap),
        scale(1.0 / std::sqrt(s.query_pre_attn_scalar > 0 ? s.query_pre_attn_scalar
                                                          : static_cast<double>(s.head_size()))) {
    const double out_std = kInitStd / std::sqrt(2.0 * s.n_layers);
    const int64_t q = n_heads * head_dim, kv = n_kv_heads * head_dim;
    q_proj = register_module("q_proj", Linear(s.d_model, q, s.qkv_bias, init, kInitStd));
    k_proj = register_module("k_proj", Linear(s.d_model, kv, s.qkv_bias, init, kInitStd));
    v_proj = register_module("v_proj", Linear(s.d_model, kv, s.qkv_bias, init, kInitStd));
    o_proj = register_module("o_proj", Linear(q, s.d_model, s.o_bias, init, out_std));
    if (s.qk_norm) {
      q_norm = register_module("q_norm", Norm(head_dim, s.norm_eps, s.norm, init));
      k_norm = register_module("k_norm", Norm(head_dim, s.norm_eps, s.norm, init));
    }
  }

  // Causal attention by blocks of queries: the queries of block i see keys up to the block's own
  // end only (past + q1), so the scores above the diagonal blocks are never computed (with 4
  // blocks and no cache, 10/16 of the T x T products and softmax, forward and backward). The same
  // numbers as the full product: a key a query may not see is absent instead of masked. `mask`
  // (additive [B or 1, 1, T, past + T], causal as attention_mask() builds it) or undefined for
  // plain causal attention without a cache.
  static constexpr int64_t kMinQueryBlock = 64;
  static torch::Tensor attention_by_query_blocks(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                                 double scale, const torch::Tensor& mask) {
    const auto B = q.size(0), H = q.size(1), T = q.size(2), hd = q.size(3), Tk = k.size(2), past = Tk - T;
    const int64_t blocks = std::min<int64_t>(4, T / kMinQueryBlock);
    auto q3 = q.reshape({B * H, T, hd}), k3 = k.reshape({B * H, Tk, hd}), v3 = v.reshape({B * H, Tk, hd});
    std::vector<torch::Tensor> outs;
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t q0 = T * b / blocks, q1 = T * (b + 1) / blocks, keys = past + q1;
      // Query q0 + i sees keys 0 .. past + q0 + i (and, with a mask, only the ones it allows).
      // A mask of one row for all (a window, no padding) broadcasts over the B H products as the
      // full path's does; a per-row (padding) mask is laid out once per head.
      torch::Tensor bias;
      if (!mask.defined())
        bias = torch::full({q1 - q0, keys}, -std::numeric_limits<float>::infinity(), q.options()).triu(past + q0 + 1);
      else if (mask.size(0) == 1)
        bias = mask.slice(2, q0, q1).slice(3, 0, keys).reshape({1, q1 - q0, keys});
      else
        bias = mask.slice(2, q0, q1).slice(3, 0, keys).expand({B, H, q1 - q0, keys}).reshape({B * H, q1 - q0, keys});
      auto scores = at::baddbmm(bias, q3.slice(1, q0, q1), k3.slice(1, 0, keys).transpose(1, 2), 1.0, scale);
      outs.push_back(torch::bmm(torch::softmax(scores, -1), v3.slice(1, 0, keys)));  // [B H, q1 - q0, hd]
    }
    return torch::cat(outs, 1).view({B, H, T, hd});
  }

  static torch::Tensor apply_rope(const torch::Tensor& x, const torch::Tensor& cos,
                                  const torch::Tensor& sin) {
    // x [B, H, T, hd]; cos/sin [B, 1, T, hd/2]; HF's rotate-half layout.
    auto halves = x.chunk(2, -1);
    const auto& x1 = halves[0];
    const auto& x2 = halves[1];
    return torch::cat({x1 * cos - x2 * sin, x2 * cos + x1 * sin}, -1);
  }

  // mask: additive [B or 1, 1, T, Tk], or undefined for plain causal attention without a cache.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                        const torch::Tensor& mask, KVCache* cache, size_t layer) {
    const auto B = x.size(0), T = x.size(1);
    // q, k and v on one adapter (GPT-2's c_attn): its dropout and x' A^T once for the three.
    const AdapterInput shared = shared_qkv_adapter && q_proj->adapted() ? q_proj->adapter_input(x) : AdapterInput{};
    const auto project = [&](Linear& p) { return shared.down.defined() ? p->forward_adapted(x, shared) : p(x); };
    auto q = project(q_proj).view({B, T, n_heads, head_dim});
    auto k = project(k_proj).view({B, T, n_kv_heads, head_dim});
    auto v = project(v_proj).view({B, T, n_kv_heads, head_dim}).transpose(1, 2);
    if (q_norm) {  // per head, before RoPE
      q = q_norm(q);
      k = k_norm(k);
    }
    q = q.transpose(1, 2);  // [B, H, T, hd]
    k = k.transpose(1, 2);  // [B, Hkv, T, hd]
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
      // Each key/value head for its n_heads / n_kv_heads query heads, [B, Hkv, Tk, hd] ->
      // [B, H, Tk, hd] (repeat_interleave's layout; repeat_interleave itself reads its repeat
      // count back from the device, a host sync in every layer).
      const auto rep = n_heads / n_kv_heads;
      const auto kv_heads = [&](const torch::Tensor& t) {
        return t.unsqueeze(2).expand({t.size(0), n_kv_heads, rep, t.size(2), t.size(3)})
            .reshape({t.size(0), n_heads, t.size(2), t.size(3)});
      };
      k = kv_heads(k);
      v = kv_heads(v);
    }
    torch::Tensor out;
#if GANPO_HAVE_SDPA
    // Without a mask the rows are causal from position 0 (no cache, no left padding): is_causal
    // lets the flash kernels run; otherwise the additive mask says what each query sees.
    if (softcap == 0.0)
      out = mask.defined() ? at::scaled_dot_product_attention(q, k, v, mask, 0.0, false, scale)
                           : at::scaled_dot_product_attention(q, k, v, c10::nullopt, 0.0, /*is_causal=*/true, scale);
#endif
    if (!out.defined() && softcap == 0.0 && T >= 2 * kMinQueryBlock) out = attention_by_query_blocks(q, k, v, scale, mask);
    if (!out.defined()) {
      const auto Tk = k.size(2);
      torch::Tensor scores;  // [B, H, T, Tk]
      if (softcap == 0.0 && (!mask.defined() || mask.size(0) == 1)) {
        // mask + scale * q k^T as one batched product (baddbmm, BLAS with beta = 1) instead of a
        // product, then a pass over the scores to scale and another to mask, each with its own
        // pass back in the backward: the T x Tk scores are the largest tensors of a layer.
        auto bias = mask.defined() ? mask.view({1, T, Tk})
                                   : torch::full({T, Tk}, -std::numeric_limits<float>::infinity(), x.options()).triu(1);
        scores = at::baddbmm(bias, q.reshape({B * n_heads, T, head_dim}),
                             k.reshape({B * n_heads, Tk, head_dim}).transpose(1, 2), 1.0, scale)
                     .view({B, n_heads, T, Tk});
      } else {
        scores = torch::matmul(q, k.transpose(-2, -1)) * scale;
        if (softcap > 0.0) scores = soft_cap(scores, softcap);
        if (mask.defined()) {
          scores = scores + mask;
        } else {
          auto causal = torch::ones({T, Tk}, x.options().dtype(torch::kBool)).triu(1);
          scores = scores.masked_fill(causal, -std::numeric_limits<float>::infinity());
        }
      }
      out = torch::matmul(torch::softmax(scores, -1), v);
    }
    return o_proj(out.transpose(1, 2).reshape({B, T, n_heads * head_dim}));
  }

  void add_lora(const LoraTargets& targets, int64_t layer, const LoraSpec& spec) {
    const auto add = [&](const char* name, Linear& p, std::shared_ptr<LinearImpl> a_from = nullptr) {
      if (const LoraModule* m = targets.find(layer, name)) p->add_lora(m->r, m->scale, spec.applied_dropout(), spec.dora, std::move(a_from));
    };
    shared_qkv_adapter = targets.shared_qkv && targets.find(layer, "q_proj") != nullptr;
    add("q_proj", q_proj);
    add("k_proj", k_proj, shared_qkv_adapter ? q_proj.ptr() : nullptr);
    add("v_proj", v_proj, shared_qkv_adapter ? q_proj.ptr() : nullptr);
    add("o_proj", o_proj);
  }

  int64_t n_heads, n_kv_heads, head_dim;
  bool rope;
  double softcap, scale;
  bool shared_qkv_adapter = false;  // k and v use q's adapter A (LoraTargets::shared_qkv)
  Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, o_proj{nullptr};
  Norm q_norm{nullptr}, k_norm{nullptr};
};
TORCH_MODULE(Attention);

struct MlpImpl : torch::nn::Module {
  MlpImpl(const ModelShape& s, bool init) : kind(s.mlp) {
    const double out_std = kInitStd / std::sqrt(2.0 * s.n_layers);
    if (kind != MlpKind::gelu_tanh)
      gate_proj = register_module("gate_proj", Linear(s.d_model, s.d_ff, s.mlp_bias, init, kInitStd));
    up_proj = register_module("up_proj", Linear(s.d_model, s.d_ff, s.mlp_bias, init, kInitStd));
    down_proj = register_module("down_proj", Linear(s.d_ff, s.d_model, s.mlp_bias, init, out_std));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    switch (kind) {
      case MlpKind::gated_silu: return down_proj(torch::silu(gate_proj(x)) * up_proj(x));
      case MlpKind::gated_gelu_tanh: return down_proj(torch::gelu(gate_proj(x), "tanh") * up_proj(x));
      case MlpKind::gelu_tanh: break;
    }
    return down_proj(torch::gelu(up_proj(x), "tanh"));
  }
  void add_lora(const LoraTargets& targets, int64_t layer, const LoraSpec& spec) {
    const auto add = [&](const char* name, Linear& p) {
      const LoraModule* m = targets.find(layer, name);
      if (p && m) p->add_lora(m->r, m->scale, spec.applied_dropout(), spec.dora);
    };
    add("gate_proj", gate_proj);
    add("up_proj", up_proj);
    add("down_proj", down_proj);
  }
  MlpKind kind;
  Linear gate_proj{nullptr}, up_proj{nullptr}, down_proj{nullptr};
};
TORCH_MODULE(Mlp);

// Pre-norm block; with sandwich norms (Gemma 2) the attention and MLP outputs are normed too:
//   x += post_attention_layernorm(attn(input_layernorm(x)))
//   x += post_feedforward_layernorm(mlp(pre_feedforward_layernorm(x)))
// Without them post_attention_layernorm is the norm before the MLP (HF Llama's naming).
struct BlockImpl : torch::nn::Module {
  BlockImpl(const ModelShape& s, bool init) : sandwich(s.sandwich_norms) {
    const auto norm = [&] { return Norm(s.d_model, s.norm_eps, s.norm, init); };
    input_layernorm = register_module("input_layernorm", norm());
    self_attn = register_module("self_attn", Attention(s, init));
    post_attention_layernorm = register_module("post_attention_layernorm", norm());
    if (sandwich) {
      pre_feedforward_layernorm = register_module("pre_feedforward_layernorm", norm());
      post_feedforward_layernorm = register_module("post_feedforward_layernorm", norm());
    }
    mlp = register_module("mlp", Mlp(s, init));
  }
  torch::Tensor forward(torch::Tensor x, const torch::Tensor& cos, const torch::Tensor& sin,
                        const torch::Tensor& mask, KVCache* cache, size_t layer) {
    auto attn = self_attn(input_layernorm(x), cos, sin, mask, cache, layer);
    if (!sandwich) {
      x = x + attn;
      return x + mlp(post_attention_layernorm(x));
    }
    x = x + post_attention_layernorm(attn);
    return x + post_feedforward_layernorm(mlp(pre_feedforward_layernorm(x)));
  }
  bool sandwich;
  Norm input_layernorm{nullptr}, post_attention_layernorm{nullptr};
  Norm pre_feedforward_layernorm{nullptr}, post_feedforward_layernorm{nullptr};
  Attention self_attn{nullptr};
  Mlp mlp{nullptr};
};
TORCH_MODULE(Block);

// What a block reads besides its input; kept out of the autograd function's tensor arguments
// (they need no gradient, and some are undefined).
struct BlockSideInputs {
  torch::Tensor cos, sin, mask;
};

// A block run without keeping its activations (gradient checkpointing): the forward pass saves
// the block's input and the random generator's state; the backward pass runs the block again
// from them, with gradients on, and backpropagates the incoming gradient through it (which
// also accumulates the gradients of the block's weights). Non-tensor arguments get no gradient.
struct CheckpointedBlock : torch::autograd::Function<CheckpointedBlock> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, torch::Tensor x, BlockImpl* block,
                               const BlockSideInputs* side, int64_t layer) {
    ctx->save_for_backward({x});
    ctx->saved_data["block"] = reinterpret_cast<int64_t>(block);
    ctx->saved_data["layer"] = layer;
    ctx->saved_data["adapters_off"] = t_adapters_off;
    ctx->saved_data["bf16_autocast"] = bf16_autocast_for(x);
    for (const auto& [name, t] : {std::pair{"cos", &side->cos}, std::pair{"sin", &side->sin}, std::pair{"mask", &side->mask}})
      if (t->defined()) ctx->saved_data[name] = *t;
    auto gen = at::globalContext().defaultGenerator(x.device());
    {
      std::lock_guard<std::mutex> lock(gen.mutex());
      ctx->saved_data["rng"] = gen.get_state();
    }
    torch::NoGradGuard no_grad;
    return block->forward(x, side->cos, side->sin, side->mask, nullptr, static_cast<size_t>(layer));  // [B, T, d]
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_out) {
    auto* block = reinterpret_cast<BlockImpl*>(ctx->saved_data["block"].toInt());
    const auto layer = static_cast<size_t>(ctx->saved_data["layer"].toInt());
    auto side = [&](const char* name) {
      auto it = ctx->saved_data.find(name);
      return it == ctx->saved_data.end() ? torch::Tensor() : it->second.toTensor();
    };
    torch::Tensor x = ctx->get_saved_variables()[0].detach().requires_grad_(true);
    torch::Tensor y;
    {
      // The forward pass again, as it ran: same adapters switch, same random numbers, and under
      // bf16 autocast when it ran under it (the backward pass runs on another thread, which
      // would otherwise compute in float32 or fp16).
      const AdaptersOff adapters(ctx->saved_data["adapters_off"].toBool());
      const Bf16Autocast autocast(ctx->saved_data["bf16_autocast"].toBool());
      auto gen = at::globalContext().defaultGenerator(x.device());
      torch::Tensor now;
      {
        std::lock_guard<std::mutex> lock(gen.mutex());
        now = gen.get_state();
        gen.set_state(ctx->saved_data["rng"].toTensor());
      }
      torch::AutoGradMode grad(true);
      y = block->forward(x, side("cos"), side("sin"), side("mask"), nullptr, layer);
      std::lock_guard<std::mutex> lock(gen.mutex());
      gen.set_state(now);  // the generator goes on where the whole backward pass left it
    }
    torch::autograd::backward({y}, {grad_out[0]});
    return {x.grad(), {}, {}, {}};
  }
};

// Additive mask [B or 1, 1, T, past + T]: causal, within the window when window > 0, and
// only real keys when key_mask [B, past + T] is given.
torch::Tensor attention_mask(int64_t past, int64_t T, int64_t window, const torch::Tensor& key_mask,
                             const torch::TensorOptions& ids, const torch::TensorOptions& values) {
  const int64_t Tk = past + T;
  auto q_idx = torch::arange(past, past + T, ids.dtype(torch::kLong)).view({T, 1});
  auto k_idx = torch::arange(0, Tk, ids.dtype(torch::kLong)).view({1, Tk});
  auto allowed = k_idx <= q_idx;
  if (window > 0) allowed = allowed & (q_idx - k_idx < window);  // HF: kv_idx > q_idx - window
  allowed = allowed.unsqueeze(0).unsqueeze(0);  // [1, 1, T, Tk]
  if (key_mask.defined()) allowed = allowed & key_mask.to(torch::kBool).view({key_mask.size(0), 1, 1, Tk});
  return torch::zeros(allowed.sizes(), values).masked_fill(allowed.logical_not(), -1e9);
}

}  // namespace

torch::Tensor rope_inverse_frequencies(const ModelShape& s) {
  const int64_t half = s.head_size() / 2;
  auto inv_freq = 1.0 / torch::pow(s.rope_theta, torch::arange(0, half, torch::kFloat64) * 2.0 /
                                                      static_cast<double>(s.head_size()));
  const auto& rs = s.rope_scaling;
  if (rs.type == "linear") return inv_freq / rs.factor;
  if (rs.type != "llama3") return inv_freq;
  // Llama 3.1: wavelengths above old_len / low_freq_factor are stretched by factor, those below
  // old_len / high_freq_factor kept, and the band between blended smoothly.
  const double old_len = static_cast<double>(rs.original_max_position_embeddings);
  const double low_wavelen = old_len / rs.low_freq_factor, high_wavelen = old_len / rs.high_freq_factor;
  auto wavelen = 2.0 * M_PI / inv_freq;
  auto scaled = torch::where(wavelen > low_wavelen, inv_freq / rs.factor, inv_freq);
  auto smooth = (old_len / wavelen - rs.low_freq_factor) / (rs.high_freq_factor - rs.low_freq_factor);
  auto smoothed = (1.0 - smooth) * scaled / rs.factor + smooth * scaled;
  auto medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen);
  return torch::where(medium, smoothed, scaled);
}

CausalLMImpl::CausalLMImpl(const ModelShape& shape, bool init) : shape_(shape) {
  GANPO_ASSERT(shape.head_dim > 0 || shape.d_model % shape.n_heads == 0, "d_model must divide by n_heads");
  GANPO_ASSERT(shape.n_heads % shape.n_kv_heads == 0, "n_heads must divide by n_kv_heads");
  embed_tokens_ = register_module("embed_tokens", Linear(shape.d_model, shape.vocab_size, false, init, kInitStd));
  embed_tokens_->as<LinearImpl>()->padding_idx = shape.padding_idx;
  if (init && shape.padding_idx >= 0) {  // transformers' _init_weights zeroes nn.Embedding's padding row
    torch::NoGradGuard guard;
    embed_tokens_->as<LinearImpl>()->weight[shape.padding_idx].zero_();
  }
  if (shape.positions == PositionKind::learned)
    embed_positions_ =
        register_module("embed_positions", Linear(shape.d_model, shape.max_seq_len, false, init, 0.01));
  layers_ = register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < shape.n_layers; ++i) layers_->push_back(Block(shape, init));
  norm_ = register_module("norm", Norm(shape.d_model, shape.norm_eps, shape.norm, init));
  if (!shape.tie_embeddings)
    lm_head_ = register_module("lm_head", Linear(shape.d_model, shape.vocab_size, false, init, kInitStd));
  if (shape.positions == PositionKind::rope)
    rope_inv_freq_ = register_buffer("rope_inv_freq", rope_inverse_frequencies(shape));
}

void CausalLMImpl::add_lora(const LoraSpec& spec) {
  GANPO_ASSERT(spec.r > 0 && (!spec.targets.empty() || !spec.target_regex.empty()), "LoRA needs a rank and target projections");
  GANPO_ASSERT(lora_.r == 0, "the model already has LoRA adapters");
  LoraTargets targets = resolve_lora_targets(shape_, spec);  // throws ConfigError for a name it lacks
  for (auto& p : parameters()) p.requires_grad_(false);  // the base stays frozen
  for (size_t i = 0; i < layers_->size(); ++i) {  // (A drawn in a layer's order: q, k, v, o, gate, up, down)
    BlockImpl* block = layers_->ptr<BlockImpl>(i).get();
    block->self_attn->add_lora(targets, static_cast<int64_t>(i), spec);
    block->mlp->add_lora(targets, static_cast<int64_t>(i), spec);
  }
  // modules_to_save: a tied head that is to differ from the embedding becomes a module of its
  // own first, whose frozen weight shares the embedding's frozen storage (both stay the
  // originals; what trains is a copy or rows beside them, so no second [V, d] is held); then
  // each picked module gets its trained copy.
  if (targets.untie_head) {
    const auto& embed = embed_tokens_->as<LinearImpl>()->weight;
    lm_head_ = register_module("lm_head", Linear(shape_.d_model, shape_.vocab_size, false, false, 0.0));
    lm_head_->train(is_training());  // (its adapter's dropout follows the model's mode)
    auto* head = lm_head_->as<LinearImpl>();
    {
      torch::NoGradGuard guard;
      head->weight.set_data(embed.detach());
    }
    head->weight.requires_grad_(false);
    shape_.tie_embeddings = false;
  }
  auto* embedding = embed_tokens_->as<LinearImpl>();
  if (targets.adapts_embedding()) embedding->add_embedding_lora(targets.embedding.r, targets.embedding.scale);
  if (targets.adapts_head()) {  // (tied, the head is its own module by now, on the embedding's weight)
    GANPO_ASSERT(lm_head_ != nullptr, "an adapter for a head that is the embedding");
    lm_head_->as<LinearImpl>()->add_lora(targets.head.r, targets.head.scale, spec.applied_dropout(), false);
  }
  if (!targets.embedding_rows.empty()) embedding->add_trainable_rows(targets.embedding_rows);
  if (!targets.head_rows.empty()) {
    GANPO_ASSERT(lm_head_ != nullptr, "token rows for a head that is the embedding");
    lm_head_->as<LinearImpl>()->add_trainable_rows(targets.head_rows);
  }
  const auto modules = named_modules();
  for (const std::string& name : targets.trained) {
    const auto* module = modules.find(name);
    GANPO_ASSERT(module != nullptr, "no module " + name + " to train whole");
    auto* copyable = dynamic_cast<WeightAndBias*>(module->get());
    GANPO_ASSERT(copyable != nullptr, name + " has no weight to train whole");
    copyable->add_trained_copy();
  }
  for (const std::string& name : targets.biases) {  // PEFT's bias "all" / "lora_only": the bias alone
    const auto* module = modules.find(name);
    auto* biased = module != nullptr ? dynamic_cast<WeightAndBias*>(module->get()) : nullptr;
    GANPO_ASSERT(biased != nullptr && biased->bias.defined(), "no bias of " + name + " to train");
    biased->add_trained_bias();
  }
  if (spec.init != "default") initialise_adapters(targets, spec.init);
  lora_ = spec;
  lora_targets_ = std::move(targets);
}

namespace {
// Each adapted projection's PEFT module (GPT-2's c_attn: q, k and v) with its parts.
void for_each_peft_module(torch::nn::ModuleList& layers, const LoraTargets& targets,
                          const std::function<void(const LoraModule&, std::vector<LinearImpl*>&)>& visit) {
  for (const LoraModule& m : targets.modules) {
    if (targets.shared_qkv && (m.projection == "k_proj" || m.projection == "v_proj")) continue;  // with q's
    BlockImpl* block = layers->ptr<BlockImpl>(static_cast<size_t>(m.layer)).get();
    const auto linear = [&](const std::string& p) -> LinearImpl* {
      if (p == "q_proj") return block->self_attn->q_proj.get();
      if (p == "k_proj") return block->self_attn->k_proj.get();
      if (p == "v_proj") return block->self_attn->v_proj.get();
      if (p == "o_proj") return block->self_attn->o_proj.get();
      if (p == "gate_proj") return block->mlp->gate_proj.get();
      if (p == "up_proj") return block->mlp->up_proj.get();
      return block->mlp->down_proj.get();
    };
    // One PEFT module: GPT-2's c_attn is q's, k's and v's rows with one A.
    std::vector<LinearImpl*> parts;
    for (const std::string& p : targets.shared_qkv && m.projection == "q_proj" ? std::vector<std::string>{"q_proj", "k_proj", "v_proj"}
                                                                               : std::vector<std::string>{m.projection})
      parts.push_back(linear(p));
    visit(m, parts);
  }
}

// The weights of one PEFT module's parts stacked by rows [out, in].
torch::Tensor stacked_weight(const std::vector<LinearImpl*>& parts) {
  std::vector<torch::Tensor> weights;
  for (const LinearImpl* part : parts) weights.push_back(part->weight);
  return torch::cat(weights, 0);
}
}  // namespace

void CausalLMImpl::initialise_adapters(const LoraTargets& targets, const std::string& init) {
  torch::NoGradGuard guard;
  for_each_peft_module(layers_, targets, [&](const LoraModule& m, std::vector<LinearImpl*>& parts) {
    if (init == "gaussian") {  // PEFT: A normal with std 1 / r, B zero
      parts.front()->lora_A.normal_(0.0, 1.0 / static_cast<double>(m.r));
      return;
    }
    const auto [a0, b0] = initial_lora_factors(stacked_weight(parts), m.r, m.scale, init);
    int64_t row = 0;
    for (size_t i = 0; i < parts.size(); ++i) {
      parts[i]->set_initial(i == 0 ? a0 : torch::Tensor(), b0.narrow(0, row, parts[i]->weight.size(0)));
      row += parts[i]->weight.size(0);
    }
  });
}

void CausalLMImpl::subtract_initial_adapters(const std::string& init) {
  torch::NoGradGuard guard;
  const auto residual = [&](const torch::Tensor& w, const LoraModule& m) {  // W - s B0 A0, in W's dtype
    const auto [a0, b0] = initial_lora_factors(w, m.r, m.scale, init);
    return (w.to(torch::kFloat32) - torch::mm(b0, a0) * m.scale).to(w.scalar_type());
  };
  for_each_peft_module(layers_, lora_targets_, [&](const LoraModule& m, std::vector<LinearImpl*>& parts) {
    const torch::Tensor r = residual(stacked_weight(parts), m);
    int64_t row = 0;
    for (LinearImpl* part : parts) {
      part->weight.copy_(r.narrow(0, row, part->weight.size(0)));
      row += part->weight.size(0);
    }
  });
  if (lora_targets_.adapts_head()) {
    auto& head = lm_head_->as<LinearImpl>()->weight;
    head.copy_(residual(head, lora_targets_.head));
  }
}

std::pair<torch::Tensor, torch::Tensor> initial_lora_factors(const torch::Tensor& weight, int64_t r, double scale,
                                                             const std::string& init) {
  const torch::Tensor w = weight.detach().to(torch::kFloat32);
  if (init == "pissa") {  // A0 = sqrt(S_r / s) Vh_r, B0 = U_r sqrt(S_r / s): s B0 A0 = U_r S_r Vh_r
    const auto [u, s, vh] = torch::linalg_svd(w, /*full_matrices=*/false);
    const auto root = (s.slice(0, 0, r) / scale).sqrt();
    return {(root.unsqueeze(1) * vh.slice(0, 0, r)).contiguous(), (u.slice(1, 0, r) * root).contiguous()};
  }
  GANPO_ASSERT(init == "olora", "no initial factors for init_lora_weights " + init);
  const auto [q, rr] = torch::linalg_qr(w);  // A0 = R_r, B0 = Q_r
  return {rr.slice(0, 0, r).contiguous(), q.slice(1, 0, r).contiguous()};
}

std::vector<std::pair<std::string, torch::Tensor>> CausalLMImpl::adapter_parameters() {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  if (adapters_off_) return out;  // a view uses none
  for (const auto& p : named_parameters())
    if (is_adapter_parameter(p.key())) out.emplace_back(p.key(), p.value());
  return out;
}

torch::Tensor CausalLMImpl::head_weight() const {
  const auto* head = (lm_head_ ? lm_head_ : embed_tokens_)->as<LinearImpl>();
  return adapters_off_ ? head->weight : head->w();
}

HeadLowRank CausalLMImpl::head_low_rank(const torch::Tensor& hidden) {
  if (adapters_off_ || !lm_head_) return {};
  auto* head = lm_head_->as<LinearImpl>();
  if (!head->lora_B.defined()) return {};
  return {head->adapter_input(hidden).down * head->lora_scale, head->lora_B};  // [M, r], [V, r]
}

int64_t CausalLMImpl::store_projections_in_bf16(bool exact_only) {
  GANPO_ASSERT(!adapters_off_ && (exact_only || lora_.r == 0), "only a model without adapters keeps all its projections in bf16");
  torch::NoGradGuard guard;
  int64_t stored = 0;
  const auto to_bf16 = [&](torch::Tensor& t) {
    if (!t.defined()) return;
    GANPO_ASSERT(!t.requires_grad(), "a trained tensor cannot be stored in bf16");
    if (t.scalar_type() == torch::kBFloat16) {  // (stored so when the model was loaded)
      stored += t.numel();
      return;
    }
    auto rounded = t.to(torch::kBFloat16);
    if (exact_only && !torch::equal(rounded.to(t.scalar_type()), t)) return;  // bf16 would change it
    t.set_data(rounded);
    stored += t.numel();
  };
  for (const auto& m : modules(/*include_self=*/false)) {
    auto* linear = m->as<LinearImpl>();
    // (The embedding tables are looked up, not multiplied: autocast leaves their rows float32,
    // and a tied head multiplies by the embedding, as does a head untied for its adapter or a
    // trained copy, which shares the embedding's storage. A head with trained token rows puts
    // float32 rows into its weight.)
    if (!linear || m == embed_tokens_ || m == embed_positions_ || linear->token_rows.defined() ||
        linear->weight.is_alias_of(embed_tokens_->as<LinearImpl>()->weight))
      continue;
    to_bf16(linear->weight);  // (a trained copy beside it stays float32: only the reference reads these)
    to_bf16(linear->bias);
  }
  return stored;
}

std::shared_ptr<CausalLMImpl> CausalLMImpl::without_adapters_impl() {
  // A copy of this module holds the same parameter tensors and child modules (handles, not data).
  // Made in evaluation mode (its own flag; train() / eval() on it then change nothing shared).
  const bool training = is_training();
  if (training) torch::nn::Module::train(false);
  auto view = std::make_shared<CausalLMImpl>(*this);
  if (training) torch::nn::Module::train(true);
  view->adapters_off_ = true;
  return view;
}

void CausalLMImpl::train(bool on) {
  // A view's modules are the policy's: only the policy switches their mode.
  if (!adapters_off_) torch::nn::Module::train(on);
}

torch::Tensor CausalLMImpl::merged_weight(const std::string& name) { return merged_weight(name, named_parameters()); }

torch::Tensor CausalLMImpl::merged_weight(const std::string& name,
                                          const torch::OrderedDict<std::string, torch::Tensor>& params) {
  const torch::Tensor* w = params.find(name);
  GANPO_ASSERT(w != nullptr, "no parameter " + name);
  if (lora_.r == 0 || adapters_off_) return *w;
  // A module trained whole: its trained copy ("norm.weight" -> "norm.trained_weight").
  const size_t leaf = name.rfind('.') + 1;
  if (const torch::Tensor* copy = params.find(name.substr(0, leaf) + "trained_" + name.substr(leaf))) return *copy;
  // The embedding's adapter, or trained token rows of the embedding or the head.
  if (name == "embed_tokens.weight" || (name == "lm_head.weight" && lm_head_)) {
    const auto* m = (name == "embed_tokens.weight" ? embed_tokens_ : lm_head_)->as<LinearImpl>();
    if (m->lora_embedding_B.defined()) return m->merged_embedding();
    if (m->lora_B.defined()) {  // the head's adapter: W + scale B A
      torch::NoGradGuard guard;
      return m->weight.to(torch::kFloat32) + torch::mm(m->lora_B, m->lora_A).to(torch::kFloat32) * m->lora_scale;
    }
    torch::NoGradGuard guard;
    if (m->token_rows.defined()) return m->weight.index_copy(0, m->token_rows, m->trainable_tokens_delta);
  }
  const std::string suffix = ".weight";
  if (name.size() <= suffix.size() || name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0)
    return *w;
  const std::string base = name.substr(0, name.size() - suffix.size());
  const torch::Tensor* a = params.find(base + ".lora_A");
  const torch::Tensor* b = params.find(base + ".lora_B");
  if (a == nullptr && b != nullptr)  // k or v on q's A (LoraTargets::shared_qkv)
    a = params.find(base.substr(0, base.rfind('.')) + ".q_proj.lora_A");
  if (a == nullptr || b == nullptr) return *w;
  // "layers.3.self_attn.q_proj": layer 3, q_proj
  const size_t first_dot = base.find('.'), second_dot = base.find('.', first_dot + 1);
  const LoraModule* module = lora_targets_.find(std::stoll(base.substr(first_dot + 1, second_dot - first_dot - 1)),
                                                base.substr(base.rfind('.') + 1));
  GANPO_ASSERT(module != nullptr, "an adapter the LoRA targets do not list: " + name);
  torch::NoGradGuard guard;
  auto adapted = w->to(torch::kFloat32) + torch::mm(*b, *a) * module->scale;  // [out, r] x [r, in] (a bf16 base: float32)
  if (starts_from_factors(lora_.init)) {  // minus scale B0 A0 (k and v on q's A0)
    const auto buffers = named_buffers();
    const torch::Tensor* a0 = buffers.find(base + ".lora_A0");
    if (a0 == nullptr) a0 = buffers.find(base.substr(0, base.rfind('.')) + ".q_proj.lora_A0");
    const torch::Tensor* b0 = buffers.find(base + ".lora_B0");
    GANPO_ASSERT(a0 != nullptr && b0 != nullptr, "no first values of the adapter of " + name);
    adapted -= torch::mm(*b0, *a0) * module->scale;
  }
  if (!lora_.dora) return adapted;
  const torch::Tensor* m = params.find(base + ".lora_magnitude_vector");
  GANPO_ASSERT(m != nullptr, "no DoRA magnitude for " + name);
  return adapted * (*m / adapted.norm(2, {1})).unsqueeze(1);  // row i scaled by m_i / ||row i||
}

bool is_trained_copy(const std::string& name) {
  const auto dot = name.rfind('.');
  const std::string leaf = dot == std::string::npos ? name : name.substr(dot + 1);
  return leaf == "trained_weight" || leaf == "trained_bias";
}

bool is_weight_decayed(const std::string& name) {
  // "layers.0.input_layernorm.trained_weight": the module "input_layernorm", the leaf "trained_weight"
  const auto dot = name.rfind('.');
  const std::string leaf = dot == std::string::npos ? name : name.substr(dot + 1);
  const std::string module = dot == std::string::npos ? "" : name.substr(0, dot);
  const std::string last = module.substr(module.rfind('.') + 1);  // (npos + 1 = 0: the whole name)
  const bool norm = last.size() >= 4 && last.compare(last.size() - 4, 4, "norm") == 0;
  return leaf.find("bias") == std::string::npos && !norm;
}

bool is_adapter_parameter(const std::string& name) {
  const auto dot = name.rfind('.');
  const std::string leaf = dot == std::string::npos ? name : name.substr(dot + 1);
  return leaf == "lora_A" || leaf == "lora_B" || leaf == "lora_magnitude_vector" || leaf == "trainable_tokens_delta" ||
         leaf == "lora_embedding_A" || leaf == "lora_embedding_B" || is_trained_copy(name);
}

std::string attention_kernel_note(const ModelShape& shape) {
  const std::string torch_version = TORCH_VERSION;
  if (shape.attn_softcap > 0) {
    char cap[32];
    std::snprintf(cap, sizeof cap, "%g", shape.attn_softcap);
    return std::string("explicit softmax: the model soft-caps its attention scores (attn_logit_softcapping ") + cap +
           "), which scaled_dot_product_attention's kernels cannot do";
  }
  if (GANPO_HAVE_SDPA)
    return "scaled_dot_product_attention (LibTorch " + torch_version + " picks flash, memory-efficient or math kernels per call)";
  return "explicit softmax by blocks of causal queries (LibTorch " + torch_version +
         " has no scaled_dot_product_attention; 2.1 or later has)";
}

LMOutput CausalLMImpl::forward(const torch::Tensor& input_ids, const torch::Tensor& position_ids_in,
                               const torch::Tensor& key_mask, KVCache* cache, int64_t logits_from) {
  const AdaptersOff adapters(adapters_off_);
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

  auto x = embed_tokens_->as<LinearImpl>()->lookup(input_ids);  // [B, T, d]
  if (shape_.embed_scale) x = x * std::sqrt(static_cast<double>(shape_.d_model));
  if (embed_positions_) x = x + torch::embedding(embed_positions_->as<LinearImpl>()->w(), pos);
  torch::Tensor cos, sin;
  if (rope_inv_freq_.defined()) {
    // Angles in float64: positions times frequencies lose digits in float32 at long contexts.
    auto angles = pos.to(torch::kFloat64).unsqueeze(-1) * rope_inv_freq_;  // [B, T, hd/2]
    cos = angles.cos().to(x.scalar_type()).unsqueeze(1);                   // [B, 1, T, hd/2]
    sin = angles.sin().to(x.scalar_type()).unsqueeze(1);
  }
  // Masks only where plain causal attention is not enough: padding, a cache, or a window
  // shorter than the keys.
  torch::Tensor full_mask, window_mask;
  const bool explicit_mask = key_mask.defined() || past > 0;
  if (explicit_mask) full_mask = attention_mask(past, T, 0, key_mask, input_ids.options(), x.options());
  const bool windowed = shape_.sliding_window > 0 && past + T > shape_.sliding_window;
  for (size_t i = 0; i < layers_->size(); ++i) {
    const bool sliding = windowed && shape_.layer_is_sliding(static_cast<int64_t>(i));
    if (sliding && !window_mask.defined())
      window_mask = attention_mask(past, T, shape_.sliding_window, key_mask, input_ids.options(), x.options());
    BlockImpl* block = layers_->ptr<BlockImpl>(i).get();
    const torch::Tensor& mask = sliding ? window_mask : full_mask;
    // Below the first adapted layer (LoRA on some layers only) nothing needs a gradient: those
    // blocks run plainly and keep nothing for the backward pass.
    const auto in_backward = [&] {
      return x.requires_grad() || lora_.r == 0 || static_cast<int64_t>(i) >= lora_targets_.first_trained_layer(shape_.n_layers);
    };
    if (checkpoint_blocks_ && cache == nullptr && is_training() && torch::GradMode::is_enabled() && in_backward()) {
      // The input must require a gradient for the backward pass to reach the block (frozen
      // embeddings under LoRA give one that does not; it is a leaf then, so this is allowed).
      if (!x.requires_grad()) x.requires_grad_(true);
      const BlockSideInputs side{cos, sin, mask};
      x = CheckpointedBlock::apply(x, block, &side, static_cast<int64_t>(i));
    } else {
      x = block->forward(x, cos, sin, mask, cache, i);
    }
  }
  auto hidden = norm_->as<NormImpl>()->forward(x);  // [B, T, d]
  // logits_from = T: the hidden states alone, no output head (a reference run for its latents).
  logits_from = std::clamp<int64_t>(logits_from, 0, T);
  auto head_in = logits_from > 0 ? hidden.slice(1, logits_from) : hidden;  // [B, T - from, d]
  // (A head with a LoRA adapter adds scale * dropout(h) A^T B^T.)
  auto* head = lm_head_ ? lm_head_->as<LinearImpl>() : nullptr;
  // (linear, not matmul with a transposed view: decoding's autocast caches the bf16 copy of a
  // weight it is given itself, core/bf16_autocast.h; the product is the same.)
  auto logits = head && head->adapted() && head_in.size(1) > 0 ? head->forward(head_in)
                                                                : torch::linear(head_in, as_input_dtype(head_weight(), head_in));
  if (shape_.final_softcap > 0) logits = soft_cap(logits, shape_.final_softcap);
  return {logits, hidden, logits_from};
}

}  // namespace ganpo
