#include "core/memory_estimate.h"

#include <algorithm>
#include <optional>
#include <cstdio>
#include <fstream>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/model/lora_targets.h"
#include "core/model/modules_to_save.h"

// Whether the LibTorch this build links has scaled_dot_product_attention (LibTorch 2.1 on, as
// core/sdpa.h decides from LibTorch's own headers). CMake sets it from the version it found; the
// torch-free builds (fuzz, sanitized) count explicit attention.
#ifndef GANPO_TORCH_HAS_SDPA
#define GANPO_TORCH_HAS_SDPA 0
#endif

namespace ganpo {
namespace {

// Products are formed in double so absurd typed values (a batch of 1e15) saturate instead of
// overflowing; every realistic figure is far below 2^53 and so exact.
int64_t saturate(double v) {
  constexpr double kMax = static_cast<double>(std::numeric_limits<int64_t>::max());
  if (!(v < kMax)) return std::numeric_limits<int64_t>::max();
  return v > 0 ? static_cast<int64_t>(v) : 0;
}

// model.lora read against the model; none where it has no adapters or names what the model lacks
// (the dialog shows the config's own message for that).
std::optional<LoraTargets> lora_targets_of(const ModelShape& s, const LoraConfig& lora) {
  if (lora.r <= 0) return std::nullopt;
  try {
    return resolve_lora_targets(s, lora_spec(lora));
  } catch (const ConfigError&) {
    return std::nullopt;
  }
}

int64_t lora_parameter_count(const ModelShape& s, const LoraTargets& targets, bool dora) {
  const int64_t q = s.n_heads * s.head_size(), kv = s.n_kv_heads * s.head_size();
  int64_t count = 0;  // r x (in + out) for each adapted projection, and DoRA's out magnitudes
  for (const LoraModule& m : targets.modules) {
    const std::string& t = m.projection;
    const int64_t in = t == "o_proj" ? q : t == "down_proj" ? s.d_ff : s.d_model;
    const int64_t out = t == "q_proj"                           ? q
                        : t == "k_proj" || t == "v_proj"        ? kv
                        : t == "gate_proj" || t == "up_proj"    ? s.d_ff
                                                                : s.d_model;
    count += m.r * (in + out) + (dora ? out : 0);
    if (targets.shared_qkv && (t == "k_proj" || t == "v_proj")) count -= m.r * in;  // k and v use q's A
  }
  // the token embedding's and the head's adapters, r x (V + d) each, and the modules trained whole, and the token rows trained
  if (targets.adapts_embedding()) count += targets.embedding.r * (s.vocab_size + s.d_model);
  if (targets.adapts_head()) count += targets.head.r * (s.d_model + s.vocab_size);  // A [r, d], B [V, r]
  const int64_t rows = static_cast<int64_t>(targets.embedding_rows.size() + targets.head_rows.size());
  for (const std::string& m : targets.biases) count += module_bias_size(s, m);  // PEFT's bias option
  return count + trained_copy_parameter_count(s, targets.trained) + rows * s.d_model;
}

// Whether the output head's weight trains: every weight does without LoRA; with it, where the
// head (or the tied embedding it stays) is trained whole.
bool head_trains(const ModelShape& s, const std::optional<LoraTargets>& targets) {
  if (!targets) return true;
  const auto& t = targets->trained;
  const bool head = std::find(t.begin(), t.end(), "lm_head") != t.end();
  const bool tied_embedding = s.tie_embeddings && !targets->untie_head &&
                              (std::find(t.begin(), t.end(), "embed_tokens") != t.end() || !targets->embedding_rows.empty());
  return head || tied_embedding || !targets->head_rows.empty();
}


}  // namespace

bool torch_has_sdpa() { return GANPO_TORCH_HAS_SDPA != 0; }

int64_t critic_parameter_count(const GanpoConfig& g, int64_t input_dim) {
  const int64_t h = g.critic_hidden, ffn = g.critic_hidden * g.critic_ffn_mult;
  const int64_t input_proj = input_dim * h + h;
  const int64_t positions = g.critic_max_len * h;
  const int64_t norms = 2 * 2 * h;
  const int64_t attention = (h * 3 * h + 3 * h) + (h * h + h);
  const int64_t mlp = (h * ffn + ffn) + (ffn * h + h);
  const int64_t head = (h * h + h) + (h + 1);
  return input_proj + positions + g.critic_layers * (norms + attention + mlp) + head;
}

int64_t lora_parameter_count(const ModelShape& s, const LoraConfig& lora) {
  const std::optional<LoraTargets> targets = lora_targets_of(s, lora);
  return targets ? lora_parameter_count(s, *targets, lora.use_dora) : 0;
}

std::optional<ModelShape> fresh_model_shape(const ModelConfig& model) {
  try {
    return resolve_model_shape(model, kByteTokenizerVocab);
  } catch (const ConfigError&) {
    return std::nullopt;
  }
}

MemoryEstimate estimate_training_memory(const RunConfig& config) {
  return estimate_training_memory(config, resolve_model_shape(config.model, kByteTokenizerVocab));
}

namespace {

// The positions one policy forward pass runs, of one micro-batch at full length: `tokens` in
// the blocks, `kv_tokens` whose keys and values attention keeps (a response of a shared prompt
// also keeps the prompt's), `scored` by the output head (response positions and the one
// before), and `keys_per_query`, the keys whose probabilities the explicit attention keeps per
// query: full rows of T keys below 128 queries, else LibTorch 1.13's blocks of causal queries
// (core/model/causal_lm.cpp: up to 4 blocks, block i seeing keys up to its own end).
struct PolicyPass {
  bool shared = false;            // the policy runs each prompt once (train.prefix_sharing)
  bool reference_shared = false;  // the reference does (also under gradient checkpointing)
  double tokens = 0, kv_tokens = 0, scored = 0, keys_per_query = 0;
  double shared_kv_tokens = 0;    // keys and values of a shared pass (the reference's, when it shares)
  double mask_entries = 0;        // the shared responses' additive mask, [2B, 1, R, P + R]
};

// A norm's statistics per token, float32: LayerNorm's mean and 1/std, RMSNorm's 1/rms.
double norm_scale_bytes(const ModelShape& s) { return s.norm == NormKind::layer_norm ? 8 : 4; }

double explicit_keys(double past, double queries, bool softcap) {
  if (softcap || queries < 128) return past + queries;
  const double blocks = std::min(4.0, std::floor(queries / 64));
  return past + queries * (blocks + 1) / (2 * blocks);
}

PolicyPass policy_pass(const RunConfig& c, const ModelShape& shape) {
  const bool preference = c.stage == "preference";
  const double B = static_cast<double>(std::max<int64_t>(c.train.per_device_train_batch_size, 0));
  const double T = static_cast<double>(std::max<int64_t>(c.data.max_length, 0));
  const double P = std::min(static_cast<double>(std::max<int64_t>(c.data.max_prompt_length, 0)), std::max(T - 1, 0.0));
  const double R = T - P, rows = preference ? 2 * B : B;
  const bool softcap = shape.attn_softcap > 0;
  // train.prefix_sharing as the trainer decides it for a batch of full-length rows; the policy
  // keeps its plain pass under gradient checkpointing.
  const bool shares = preference && c.train.prefix_sharing && P > 0 &&
                      !(c.ganpo.enabled && c.ganpo.critic_mask == "none") && B * P + 2 * B * R < 2 * B * T;
  const bool shared = shares && !c.train.gradient_checkpointing;
  PolicyPass p;
  p.shared = shared;
  p.reference_shared = shares;
  p.shared_kv_tokens = B * P + 2 * B * (P + R);
  p.mask_entries = shares ? 2 * B * R * (P + R) : 0;
  if (shared) {
    p.tokens = B * P + 2 * B * R;
    p.kv_tokens = p.shared_kv_tokens;
    p.scored = 2 * B * R + B;
    p.keys_per_query = (B * P * explicit_keys(0, P, softcap) + 2 * B * R * explicit_keys(P, R, softcap)) / p.tokens;
  } else {
    p.tokens = p.kv_tokens = rows * T;
    p.scored = rows * (R + 1);
    p.keys_per_query = explicit_keys(0, T, softcap);
  }
  return p;
}

// What one position costs, in bytes, as this code's tensors are laid out: w is the width of the
// products' outputs (2 under bf16 autocast); the residual stream, the norms' scales and the
// softmax stay float32.
struct Inventory {
  bool bf16 = false, gpu = false;  // gpu: a CUDA device ("cuda", "cuda:N")
  double w = 4;
  bool lora = false;  // false: every weight trains
  LoraTargets lora_targets;
  int64_t layer = 0;  // the block the per-block counts below are of (adapters may differ by layer)
  bool dora = false;  // DoRA keeps each adapted product's output for its magnitude's gradient
  bool lora_dropout = false;  // and with the adapters' dropout a second product of W (on x')

  // A product keeps its input for its weight's gradient: with LoRA only the adapted ones do
  // (their adapter's A reads it; the frozen weight needs no gradient), and those trained whole.
  double keeps_input(const char* name) const {
    if (!lora) return 1;
    if (lora_targets.find(layer, name)) return 1;
    const std::string path = std::string(is_attention(name) ? "self_attn." : "mlp.") + name;
    const std::string module = "layers." + std::to_string(layer) + "." + path;
    return std::find(lora_targets.trained.begin(), lora_targets.trained.end(), module) != lora_targets.trained.end() ? 1 : 0;
  }
  static bool is_attention(const std::string& name) {
    return name == "q_proj" || name == "k_proj" || name == "v_proj" || name == "o_proj";
  }
  // The rank of this block's adapter on a projection (0: none).
  double rank(const char* name) const {
    const LoraModule* m = lora ? lora_targets.find(layer, name) : nullptr;
    return m ? static_cast<double>(m->r) : 0;
  }
  // A norm's float32 output as the products after it keep it: once in float32, a bf16 copy each
  // under autocast.
  double norm_output(double width, double products) const {
    return products <= 0 ? 0 : bf16 ? 2 * width * products : 4 * width;
  }

  // Bytes one block's backward pass keeps per token (core/model/causal_lm.cpp).
  double policy_layer(const ModelShape& s, const PolicyPass& pass, bool sdpa) const {
    const double d = static_cast<double>(s.d_model), ff = static_cast<double>(s.d_ff);
    const double H = static_cast<double>(s.n_heads), dq = H * static_cast<double>(s.head_size());
    const double dkv = static_cast<double>(s.n_kv_heads * s.head_size());
    const bool gated = s.mlp != MlpKind::gelu_tanh, softcap = s.attn_softcap > 0;
    const double norm_scale = norm_scale_bytes(s);
    const double qkv = keeps_input("q_proj") + keeps_input("k_proj") + keeps_input("v_proj");
    const bool shared = lora_targets.shared_qkv;  // q, k and v on one A (GPT-2's c_attn)
    const double qkv_adapters = shared ? std::min(qkv, 1.0) : qkv;
    // The products that read the norm's output for their gradient: the adapters' A under LoRA.
    const double qkv_readers = lora ? qkv_adapters : qkv;
    const double up = (gated ? keeps_input("gate_proj") : 0) + keeps_input("up_proj");
    const double kv_share = pass.tokens > 0 ? pass.kv_tokens / pass.tokens : 1;
    double b = 4 * d + norm_scale;                             // block input, its norm's scale
    b += norm_output(d, qkv_readers);                          // the norm's output for q k v
    if (s.qk_norm) b += w * (dq + dkv) + 8 * H;               // q and k before their norms
    b += w * dq * (1 + 2 * kv_share);                          // q; k and v per head, per key
    if (sdpa)  // its output (a [B, T, H, hd] buffer, which o_proj reads as it is) and log-sum-exp
      b += w * dq + 4 * H;
    else       // the probabilities (float32, autocast's bf16 copy, the soft-cap's tanh), the
               // heads' output as o_proj reads it
      b += H * pass.keys_per_query * (4 + (bf16 ? 2 : 0) + (softcap ? w : 0)) + w * dq * keeps_input("o_proj");
    if (s.sandwich_norms) b += w * d + 4;                      // o_proj's output into its norm
    b += 4 * d + norm_scale;                                   // the residual, its norm's scale
    b += norm_output(d, up);                                   // the norm's output for the MLP
    b += w * ff * ((gated ? 3 : 1) + keeps_input("down_proj"));  // gate, act, up; the product
    if (s.sandwich_norms) b += w * d + 4;                      // the MLP's output into its norm
    if (lora)                                                  // each adapter's r values
      b += w * ((shared ? rank("q_proj") : rank("q_proj") + rank("k_proj") + rank("v_proj")) + rank("o_proj") +
                (gated ? rank("gate_proj") : 0) + rank("up_proj") + rank("down_proj"));
    if (lora && lora_dropout)                     // each adapter's own dropped input, which A reads
      b += ((bf16 ? 2 : 4) + (gpu ? 1 : 0)) *     // (CUDA's dropout keeps a byte mask too)
           (d * (qkv_adapters + up) + dq * keeps_input("o_proj") + ff * keeps_input("down_proj"));
    if (dora)  // x (W + s B A)^T, which k multiplies; with dropout x' W^T and x' A^T B^T
      b += w * (lora_dropout ? 2 : 1) *
           (keeps_input("q_proj") * dq + (keeps_input("k_proj") + keeps_input("v_proj")) * dkv +
            keeps_input("o_proj") * d + up * ff + keeps_input("down_proj") * d);
    return b;
  }

  // The weights of one block's adapted projections, in parameters.
  double adapted_weights(const ModelShape& s) const {
    const double d = static_cast<double>(s.d_model), ff = static_cast<double>(s.d_ff);
    const double dq = static_cast<double>(s.n_heads * s.head_size()), dkv = static_cast<double>(s.n_kv_heads * s.head_size());
    const double gate = s.mlp != MlpKind::gelu_tanh ? keeps_input("gate_proj") : 0;
    return d * (keeps_input("q_proj") * dq + (keeps_input("k_proj") + keeps_input("v_proj")) * dkv) +
           dq * d * keeps_input("o_proj") + d * ff * (gate + keeps_input("up_proj")) + ff * d * keeps_input("down_proj");
  }

  // Bytes a GANPO critic (core/train/critic.cpp) keeps per latent position: its input as the first
  // product reads it, and per layer the norms' inputs, statistics and outputs, q k v, the heads'
  // output and, with explicit attention, the probabilities (and their dropout), the MLP's two.
  // Frozen (the adversarial term) a product keeps no input, the MLP only its first output.
  double critic_position(const GanpoConfig& g, double positions, double latent_width, bool training, bool sdpa) const {
    const double h = static_cast<double>(g.critic_hidden), heads = static_cast<double>(g.critic_heads);
    const double ffn = h * static_cast<double>(g.critic_ffn_mult);
    double layer = 2 * (4 * h + 8) + 3 * h * w + ffn * w;
    if (training) layer += 2 * norm_output(h, 1) + ffn * w;
    if (sdpa)  // the output, which the output product reads as it is
      layer += h * w + 4 * heads;
    else
      layer += heads * positions * (4 + (training && g.critic_dropout > 0 ? 4 : 0)) + (training ? h * w : 0);
    if (training && gpu && g.critic_dropout > 0) layer += 2 * h + ffn;  // CUDA dropout's masks, a byte each
    return (training ? norm_output(latent_width, 1) : 0) + static_cast<double>(g.critic_layers) * layer;
  }
};

}  // namespace

MemoryEstimate estimate_training_memory(const RunConfig& c, const ModelShape& shape) {
  MemoryEstimate e;
  const bool preference = c.stage == "preference";
  const double batch = static_cast<double>(std::max<int64_t>(c.train.per_device_train_batch_size, 0));
  const int64_t length = std::max<int64_t>(c.data.max_length, 0);

  e.parameters = parameter_count(shape);
  const std::optional<LoraTargets> lora_targets = lora_targets_of(shape, c.model.lora);
  e.lora_parameters = lora_targets ? lora_parameter_count(shape, *lora_targets, c.model.lora.use_dora) : 0;
  const double params = static_cast<double>(e.parameters);
  // With LoRA only the adapters have gradients and AdamW moments, and the reference is the
  // policy with its adapters off (unless model.reference names another model).
  const double trained = e.lora_parameters > 0 ? static_cast<double>(e.lora_parameters) : params;
  // (A tied head that modules_to_save unties keeps sharing the embedding's frozen weight.)
  e.weights_bytes = saturate((params + static_cast<double>(e.lora_parameters)) * 4);
  if (lora_targets && starts_from_factors(c.model.lora.init_lora_weights)) {
    // PiSSA / OLoRA keep the adapters' first values A0 and B0 beside them.
    LoraTargets adapters = *lora_targets;
    adapters.trained.clear();
    adapters.biases.clear();
    adapters.embedding_rows.clear();
    adapters.head_rows.clear();
    e.weights_bytes = saturate((params + static_cast<double>(e.lora_parameters + lora_parameter_count(shape, adapters, false))) * 4);
  }
  const bool bf16_base = shape.dtype == "bfloat16" || c.model.random_weights || c.model.checkpoint.empty();
  if (lora_targets && c.train.precision == "bf16" && bf16_base) {
    // The frozen base's projections in bf16 where bf16 holds their values: a folder stored in
    // bf16, or random weights (drawn as bf16 values under bf16)
    // (CausalLMImpl::store_projections_in_bf16, exact_only). (A run's trained token rows are
    // the embedding's, never those of a head of its own.)
    e.weights_bytes = saturate(static_cast<double>(e.weights_bytes) - static_cast<double>(parameter_parts(shape).projections) * 2);
  }
  e.gradients_bytes = saturate(trained * 4);
  e.optimizer_bytes = saturate(trained * 2 * 4);
  const bool shared_reference = e.lora_parameters > 0 && c.model.reference.empty();
  // Under bf16 (CUDA autocast) a reference of its own keeps its projections in bf16
  // (CausalLMImpl::store_projections_in_bf16), its embeddings and norms in float32.
  const double bf16_values = c.train.precision == "bf16" ? static_cast<double>(parameter_parts(shape).projections) : 0;
  e.reference_bytes = preference && !shared_reference ? saturate(params * 4 - bf16_values * 2) : 0;

  // ---- the policy's activations: what its backward pass keeps, and the transients on top ----
  Inventory inv;
  const bool bf16 = c.train.precision == "bf16", lora = e.lora_parameters > 0;
  inv.bf16 = bf16;
  inv.gpu = c.device.rfind("cuda", 0) == 0;  // callers pass the resolved device for "auto"
  inv.w = bf16 ? 2 : 4;
  inv.lora = lora;
  if (lora) inv.lora_targets = *lora_targets;
  inv.dora = lora && c.model.lora.use_dora;
  inv.lora_dropout = applied_lora_dropout(c) > 0;
  const double w = inv.w, d = static_cast<double>(shape.d_model), ff = static_cast<double>(shape.d_ff);
  const double dkv = static_cast<double>(shape.n_kv_heads * shape.head_size());
  const PolicyPass pass = policy_pass(c, shape);
  const bool sdpa = torch_has_sdpa() && shape.attn_softcap == 0;
  // Blocks differ where adapters do (layers_to_transform, rank_pattern): all blocks' bytes, and
  // the largest block's (which gradient checkpointing runs again), per token. Below the first
  // adapted layer nothing needs a gradient: those blocks keep nothing for the backward pass.
  const int64_t first_trained = lora ? inv.lora_targets.first_trained_layer(shape.n_layers) : 0;
  double blocks = 0, largest_block = 0, adapted_weights = 0, largest_adapted = 0;
  for (inv.layer = first_trained; inv.layer < shape.n_layers; ++inv.layer) {
    const double block = inv.policy_layer(shape, pass, sdpa), adapted = inv.adapted_weights(shape);
    blocks += block;
    largest_block = std::max(largest_block, block);
    adapted_weights += adapted;
    largest_adapted = std::max(largest_adapted, adapted);
  }

  const double layers = static_cast<double>(shape.n_layers);
  const double graph_layers = static_cast<double>(shape.n_layers - first_trained);  // blocks the backward pass runs through
  // Gradient checkpointing keeps each block's input, and one block's set while it runs again in
  // the backward pass.
  const double recompute = c.train.gradient_checkpointing ? pass.tokens * largest_block : 0;
  double kept = pass.tokens * (c.train.gradient_checkpointing ? 4 * d * graph_layers : blocks);
  // Under autocast each product keeps its bf16 copy of the weight until the backward pass (the
  // cast cache is off, core/bf16_autocast.h): the blocks' weights in bf16, one block's under
  // gradient checkpointing.
  const double vocab = static_cast<double>(shape.vocab_size);
  const double block_params = std::max(0.0, params - vocab * d * (shape.tie_embeddings ? 1 : 2));
  if (bf16) kept += 2 * block_params / std::max(layers, 1.0) * (c.train.gradient_checkpointing ? 1 : graph_layers);
  // DoRA with dropout multiplies each adapted weight twice (x W^T and x' W^T): a second copy.
  if (bf16 && inv.dora && inv.lora_dropout)
    kept += 2 * (c.train.gradient_checkpointing ? largest_adapted : adapted_weights);
  // The shared responses' additive mask, kept once in float32; under autocast
  // scaled_dot_product_attention keeps a bf16 copy of its own in every layer.
  if (pass.shared && sdpa) kept += pass.mask_entries * (bf16 ? 2 * graph_layers : 4);
  // After the blocks: the last block's output and the final norm's (the latents, the head's input).
  kept += pass.tokens * (4 * d + norm_scale_bytes(shape) + 4 * d);
  // Trained token rows in the head (its own, or a tied embedding's): the head's weight with them
  // put in is a new [V, d] matrix each pass, which the head's product keeps.
  if (lora_targets && (!lora_targets->head_rows.empty() ||
                       (shape.tie_embeddings && !lora_targets->untie_head && !lora_targets->embedding_rows.empty())))
    kept += static_cast<double>(shape.vocab_size) * d * 4;

  // The output head over the scored positions. In full it keeps the logits (float32; bf16 and
  // a float32 copy under autocast, with the bf16 copy of its input), which the log-sum-exp of
  // the log-probs reads again in the backward pass: its exp and their products, the gather's
  // gradient and the logits' own, about 16 bytes per vocabulary entry at once. Through the
  // chunked head (train.chunked_logps) a scored position keeps a copy of its hidden state and
  // two floats; one chunk of logits lives at a time, in either pass: the float32 logits, their
  // exp or gradient in place and a temporary of the log-sum-exp, 8 bytes per entry (and under
  // autocast the bf16 copy of the gradient, 10; 6 more with a soft-cap, whose tanh is kept),
  // plus the weight cast to bf16 once per call under autocast and, training the head in bf16,
  // the bf16 gradients of 4 chunks of logits gathered for one [V, d] product.
  const bool chunked = uses_chunked_logps(c.train, shape.vocab_size), head_trained = head_trains(shape, lora_targets);
  const double cap = shape.final_softcap > 0 ? vocab * w : 0;  // the soft-capped logits' tanh
  double head_kept = 0, head_backward = 0, reference_head = 0;
  if (chunked) {
    const double rows =
        std::min(pass.scored, static_cast<double>(chunked_logps_rows(shape.vocab_size, inv.gpu)));
    head_kept = pass.scored * (4 * d + 8);
    head_backward = rows * vocab * ((bf16 ? 10 : 8) + (shape.final_softcap > 0 ? 6 : 0)) + (bf16 ? vocab * d * 2 : 0) +
                    (bf16 && head_trained ? vocab * (d * 2 + rows * 4 * 2) : 0);
    reference_head = head_backward;
  } else {
    head_kept = pass.scored * (vocab * (bf16 ? 6 : 4) + cap + (bf16 ? 2 * d : 0)) + (bf16 ? vocab * d * 2 : 0);
    head_backward = pass.scored * vocab * 16;
    reference_head = pass.scored * (vocab * (bf16 ? 10 : 8) + cap);  // logits, a float32 copy, exp
  }
  // A LoRA adapter on the head keeps its input's down-projection (and the dropped input with
  // dropout) per scored position. (The plain head's backward also scales the logits' gradient
  // for B into one more [scored, V], which measured peaks do not show: it is not at the peak.)
  if (lora_targets && lora_targets->adapts_head())
    head_kept += pass.scored * (lora_targets->head.r * w + (applied_lora_dropout(c) > 0 ? d * w : 0));
  // The frozen reference's forward pass (no gradients) runs while the policy's activations are
  // kept: its keys and values while the responses of shared prompts attend to them (the keys as
  // float32 after RoPE), else one layer's temporaries, and its head unless its log-probs were
  // precomputed. LoRA's reference is the policy with its adapters off: the same.
  const bool reference_runs = preference && (!c.train.precompute_ref_log_probs || c.ganpo.enabled);
  double reference = 0;
  if (reference_runs) {
    reference = pass.reference_shared ? pass.shared_kv_tokens * dkv * (4 + w) * layers
                                      : pass.tokens * (8 * d + 3 * w * ff);
    if (!c.train.precompute_ref_log_probs) reference += reference_head;
  }
  // The head's weight gradient, float32 [V, d]: with tied embeddings it waits through the whole
  // backward pass for the embedding's, which comes last as a dense [V, d] of its own, and the
  // two are summed before they reach .grad (three [V, d] at the end, when the activations are
  // gone); an untied head's goes into .grad at once.
  const double head_weight_grad = head_trained ? vocab * d * 4 : 0;
  const double backward = head_weight_grad + std::max(head_backward, recompute);
  // Trained rows of an embedding the head does not share end the pass the same way: a dense
  // float32 [V, d] gradient of the weight with the rows put in, of which the rows' part is taken.
  const bool own_embedding_rows = lora_targets && !lora_targets->embedding_rows.empty() &&
                                  !(shape.tie_embeddings && !lora_targets->untie_head);
  const double end_of_backward =
      head_weight_grad * (shape.tie_embeddings ? 3 : 1) + (own_embedding_rows ? vocab * d * 4 : 0);
  // The policy's own key/value cache of a shared pass lives until its forward pass ends: the keys
  // as float32 after RoPE and, with grouped queries, the values, beside the per-head copies
  // attention keeps (under float32 without grouped queries, they are the same tensors).
  const bool grouped = shape.n_kv_heads != shape.n_heads;
  const double policy_cache =
      pass.shared ? pass.shared_kv_tokens * layers * dkv * ((bf16 || grouped ? 4 : 0) + (grouped ? w : 0)) : 0;
  const double transient = std::max({policy_cache, reference, backward});
  e.activation_bytes = saturate(std::max(kept + head_kept + transient, end_of_backward));

  if (preference && c.ganpo.enabled) {
    // Each critic scores 3 x batch rows in its own phase and keeps batch rows of the policy's
    // latents through the policy's backward pass (its adversarial term, during which the head's
    // gradients come).
    const GanpoConfig& g = c.ganpo;
    const double critic_params = 2.0 * static_cast<double>(critic_parameter_count(g, shape.d_model));
    const double positions = static_cast<double>(length);
    const bool critic_sdpa = torch_has_sdpa() && (inv.gpu || g.critic_dropout == 0);
    // The CPU's two lanes run both critics' phases at once (one thread: one lane).
    const double lanes = !inv.gpu && c.train.num_threads != 1 ? 2 : 1;
    const double phase = lanes * 3 * batch * positions * inv.critic_position(g, positions, d, true, critic_sdpa);
    const double adversarial = 2 * batch * positions * inv.critic_position(g, positions, d, false, critic_sdpa);
    // The reference's latents, and with shared prompts the policy's copied to the plain layout.
    const double latents = 2 * batch * positions * 4 * d * (pass.shared ? 2 : 1);
    const double with_critics =
        std::max(kept + head_kept + std::max({policy_cache, reference, phase, adversarial + backward}) + latents, end_of_backward);
    e.critic_bytes = saturate(critic_params * 16 + with_critics - static_cast<double>(e.activation_bytes));
  }

  // ---- held-out evaluations: passes without gradients, between two steps ----
  // At train.per_device_eval_batch_size, prompts shared as the steps share them (with gradient
  // checkpointing too). The step's activations are gone by then; the weights, their gradients
  // (kept until the next step), AdamW's moments, the reference and the critics' weights stay.
  // Each pass keeps nothing for a backward pass: the shared prompts' keys and values while the
  // responses attend to them, and one layer's temporaries (attention's scores and probabilities
  // among them, but for CUDA's kernels) or, after the blocks, its head: the scored positions'
  // logits, a float32 copy and their exp (a chunk of them through the chunked head, and under
  // autocast the weight's bf16 copy). On the CPU's two lanes the policy and the reference run
  // side by side: counted as if their peaks met (when they do depends on the two threads'
  // timing).
  {
    RunConfig held_out = c;
    held_out.train.per_device_train_batch_size = eval_batch_size(c.train);
    held_out.train.gradient_checkpointing = false;
    held_out.ganpo.enabled = false;  // (critic_mask "none" keeps the steps' prompts unshared, not the evaluations')
    const PolicyPass eval = policy_pass(held_out, shape);
    const double H = static_cast<double>(shape.n_heads);
    const double cache = eval.reference_shared ? eval.shared_kv_tokens * dkv * (4 + w) * layers : 0;
    // (The scores: explicit attention's, and on the CPU scaled_dot_product_attention's too, whose
    // masked calls LibTorch 2.x computes there with the math kernel: measured as much.)
    const double scores = sdpa && inv.gpu ? 0 : H * eval.keys_per_query * 8;
    const double layer = eval.tokens * (8 * d + 3 * w * ff + scores);
    double head = 0;
    if (chunked) {
      const double rows = std::min(eval.scored, static_cast<double>(chunked_logps_rows(shape.vocab_size, inv.gpu)));
      head = rows * vocab * ((bf16 ? 10 : 8) + (shape.final_softcap > 0 ? 6 : 0)) + (bf16 ? vocab * d * 2 : 0);
    } else {
      head = eval.scored * (vocab * (bf16 ? 10 : 8) + cap);
    }
    const double one = cache + std::max(layer, head);  // (a layer's temporaries are gone when the head runs)
    const double lanes = preference && !inv.gpu && c.train.num_threads != 1 ? 2 : 1;
    e.evaluation_bytes = saturate(lanes * one);
  }

  const double lasting = static_cast<double>(e.weights_bytes) + static_cast<double>(e.gradients_bytes) +
                         static_cast<double>(e.optimizer_bytes) + static_cast<double>(e.reference_bytes);
  const double critic_weights = preference && c.ganpo.enabled
                                    ? 2.0 * static_cast<double>(critic_parameter_count(c.ganpo, shape.d_model)) * 16
                                    : 0;
  e.step_total_bytes =
      saturate(lasting + static_cast<double>(e.critic_bytes) + static_cast<double>(e.activation_bytes));
  e.evaluation_total_bytes = saturate(lasting + critic_weights + static_cast<double>(e.evaluation_bytes));
  e.total_bytes = std::max(e.step_total_bytes, e.evaluation_total_bytes);
  return e;
}

int64_t system_memory_bytes(const std::string& field) {
  std::ifstream in("/proc/meminfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(field + ":", 0) != 0) continue;
    std::istringstream values(line.substr(field.size() + 1));
    int64_t kib = -1;
    values >> kib;  // "MemAvailable:   23456789 kB"
    return kib >= 0 ? kib * 1024 : -1;
  }
  return -1;
}

std::string format_gib(double bytes) {
  char text[32];
  std::snprintf(text, sizeof text, "%.1f GiB", bytes / (1024.0 * 1024.0 * 1024.0));
  return text;
}

std::string ways_to_use_less_memory(const RunConfig& config, int64_t vocab_size, MemoryUse use) {
  const TrainConfig& t = config.train;
  std::vector<std::string> ways;
  const auto now = [](int64_t v) { return " (now " + std::to_string(v) + ")"; };
  const bool gpu_fp32 = config.device.rfind("cuda", 0) == 0 && t.precision == "fp32";
  // Where the run could find the batch itself (not yet asked to), say so once, beside the batch.
  const std::string finds = t.auto_find_batch_size
                                ? std::string()
                                : "train.auto_find_batch_size = true does that where memory runs out";
  if (use == MemoryUse::models) {
    if (config.model.lora.r == 0) ways.push_back("train LoRA adapters ([model.lora] r > 0)");
    if (gpu_fp32) ways.push_back("set train.precision = \"bf16\"");
    ways.push_back("train a smaller model");
  } else if (use == MemoryUse::training) {
    if (!t.gradient_checkpointing) ways.push_back("set train.gradient_checkpointing = true");
    if (t.per_device_train_batch_size > 1)
      ways.push_back("lower train.per_device_train_batch_size" + now(t.per_device_train_batch_size) +
                     " and raise train.gradient_accumulation_steps to keep " +
                     std::to_string(t.per_device_train_batch_size * t.gradient_accumulation_steps) +
                     " rows per optimizer step" + (t.num_processes > 1 ? " in each process" : "") + (finds.empty() ? "" : " (" + finds + ")"));
  } else if (use == MemoryUse::evaluation) {
    if (eval_batch_size(t) > 1)
      ways.push_back("lower train.per_device_eval_batch_size (now " + std::to_string(eval_batch_size(t)) +
                     (finds.empty() ? "" : "; " + finds) + ")");
  } else if (use == MemoryUse::sampling) {
    ways.push_back("lower sampling.num_prompts" + now(config.sampling.num_prompts) + " or sampling.max_new_tokens" +
                   now(config.sampling.max_new_tokens));
  } else {
    const int64_t judge_tokens = config.eval.max_new_tokens > 0 ? config.eval.max_new_tokens : config.sampling.max_new_tokens;
    ways.push_back("lower eval.num_prompts" + now(config.eval.num_prompts) + " or eval.max_new_tokens" + now(judge_tokens));
  }
  if (use != MemoryUse::models) {
    if (use == MemoryUse::training || use == MemoryUse::evaluation)
      ways.push_back("lower data.max_length" + now(config.data.max_length));
    if ((use == MemoryUse::training || use == MemoryUse::evaluation) && vocab_size >= 32000 &&
        !uses_chunked_logps(t, vocab_size))
      ways.push_back("set train.chunked_logps = \"on\"");
    if (gpu_fp32) ways.push_back("set train.precision = \"bf16\"");
    if (use == MemoryUse::training && config.model.lora.r == 0) ways.push_back("train LoRA adapters ([model.lora] r > 0)");
  }
  // Processes on the CPU share this machine's RAM, each with its own copy of the models.
  if (config.device.rfind("cpu", 0) == 0 && t.num_processes > 1 && use != MemoryUse::sampling && use != MemoryUse::judging)
    ways.push_back("run fewer processes (train.num_processes, now " + std::to_string(t.num_processes) +
                   ": each holds its own copy of the models in this machine's RAM)");
  std::string text;
  for (size_t i = 0; i < ways.size(); ++i)
    text += (i == 0 ? "" : i + 1 == ways.size() ? ", or " : ", ") + ways[i];
  return text;
}

std::string memory_shortfall_warning(const MemoryEstimate& e, int processes, int64_t available,
                                     const std::string& where, const RunConfig& config, int64_t vocab_size) {
  const double need = static_cast<double>(e.total_bytes) * std::max(processes, 1);
  if (available < 0 || need <= static_cast<double>(available)) return "";
  std::string text = "estimated training memory " + format_gib(static_cast<double>(e.total_bytes));
  if (processes > 1)
    text += " per process, " + format_gib(need) + " for the " + std::to_string(processes) + " processes,";
  return text + " (weights, gradients and AdamW " +
         format_gib(static_cast<double>(e.weights_bytes + e.gradients_bytes + e.optimizer_bytes)) + ", reference " +
         format_gib(static_cast<double>(e.reference_bytes)) + ", activations " +
         format_gib(static_cast<double>(e.activation_bytes)) + ", critics " +
         format_gib(static_cast<double>(e.critic_bytes)) + ")" +
         (peak_use(e) == MemoryUse::evaluation
              ? ", at its peak in the held-out evaluations (their passes " +
                    format_gib(static_cast<double>(e.evaluation_bytes)) + " instead of the activations),"
              : std::string()) +
         " is more than the " + format_gib(static_cast<double>(available)) + " of " + where +
         ", and the estimate leaves out the CUDA context and the allocators' slack: the run is likely to be killed or to "
         "run out of memory. To need less memory, " +
         ways_to_use_less_memory(config, vocab_size, peak_use(e));
}

}  // namespace ganpo
