#include "core/memory_estimate.h"

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "core/error.h"

namespace ganpo {
namespace {

// Products are formed in double so absurd typed values (a batch of 1e15) saturate instead of
// overflowing; every realistic figure is far below 2^53 and so exact.
int64_t saturate(double v) {
  constexpr double kMax = static_cast<double>(std::numeric_limits<int64_t>::max());
  if (!(v < kMax)) return std::numeric_limits<int64_t>::max();
  return v > 0 ? static_cast<int64_t>(v) : 0;
}

}  // namespace

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
  if (lora.r <= 0) return 0;
  std::vector<std::string> targets;
  try {
    targets = lora_target_modules(lora.target_modules);
  } catch (const ConfigError&) {
    return 0;  // the dialog shows the config's own message for this
  }
  const int64_t q = s.n_heads * s.head_size(), kv = s.n_kv_heads * s.head_size();
  int64_t per_layer = 0;  // r x (in + out) for each adapted projection
  for (const std::string& t : targets) {
    if (t == "q_proj") per_layer += s.d_model + q;
    if (t == "k_proj" || t == "v_proj") per_layer += s.d_model + kv;
    if (t == "o_proj") per_layer += q + s.d_model;
    if (t == "gate_proj" && s.mlp != MlpKind::gelu_tanh) per_layer += s.d_model + s.d_ff;
    if (t == "up_proj") per_layer += s.d_model + s.d_ff;
    if (t == "down_proj") per_layer += s.d_ff + s.d_model;
  }
  return lora.r * per_layer * s.n_layers;
}

MemoryEstimate estimate_training_memory(const RunConfig& config) {
  return estimate_training_memory(config, resolve_model_shape(config.model, kByteTokenizerVocab));
}

MemoryEstimate estimate_training_memory(const RunConfig& c, const ModelShape& shape) {
  MemoryEstimate e;
  // bf16 autocast keeps float32 weights and gradients and halves the activations.
  const double width = 4, activation_width = c.train.precision == "bf16" ? 2 : 4;
  const bool preference = c.stage == "preference";
  const double batch = static_cast<double>(std::max<int64_t>(c.train.per_device_train_batch_size, 0));
  const int64_t length = std::max<int64_t>(c.data.max_length, 0);

  e.parameters = parameter_count(shape);
  e.lora_parameters = lora_parameter_count(shape, c.model.lora);
  const double params = static_cast<double>(e.parameters);
  // With LoRA only the adapters have gradients and AdamW moments, and the reference is the
  // policy with its adapters off (unless model.reference names another model).
  const double trained = e.lora_parameters > 0 ? static_cast<double>(e.lora_parameters) : params;
  e.weights_bytes = saturate((params + static_cast<double>(e.lora_parameters)) * width);
  e.gradients_bytes = saturate(trained * width);
  e.optimizer_bytes = saturate(trained * 2 * 4);
  const bool shared_reference = e.lora_parameters > 0 && c.model.reference.empty();
  e.reference_bytes = preference && !shared_reference ? saturate(params * width) : 0;

  const double policy_rows = batch * (preference ? 2 : 1);
  // Gradient checkpointing keeps each block's input (d values) and one block's activations at
  // a time, recomputed in the backward pass.
  const double d = static_cast<double>(shape.d_model), layers = static_cast<double>(shape.n_layers);
  const double per_layer = static_cast<double>(kActivationValuesPerLayer) * d;
  const double values_per_token = c.train.gradient_checkpointing ? d * layers + per_layer : per_layer * layers;
  // The logits and their gradient, float32: 8 bytes per vocabulary entry. Under bf16 autocast the
  // head writes bf16 logits that the log-probs read through a float32 copy (kept for the
  // backward pass), and the gradient comes back in both: 12 bytes.
  // Through the chunked head (train.chunked_logps) a position keeps its hidden state's copy (the
  // final norm's float32) and two floats instead; one chunk's logits live at a time: the float32 logits, their exp or
  // gradient in place, a temporary of the log-sum-exp and the bf16 copy of the gradient, about
  // 10 bytes per entry (16 with a soft-cap, whose tanh is kept), plus the weight cast to bf16
  // once per call under autocast and, training the head in bf16, the bf16 gradients of 4 chunks
  // of logits gathered for one [V, d] product.
  const double vocab = static_cast<double>(shape.vocab_size);
  const bool chunked = uses_chunked_logps(c.train, shape.vocab_size);
  const double rows = static_cast<double>(chunked_logps_rows(shape.vocab_size, c.device != "cpu"));
  const bool bf16 = c.train.precision == "bf16", head_trained = e.lora_parameters == 0;
  const double logits_bytes = chunked ? d * 4 + 8 : vocab * (bf16 ? 12 : 8);
  const double chunk_bytes =
      !chunked ? 0
               : rows * vocab * (shape.final_softcap > 0 ? 16 : 10) +             // one chunk's logits
                     (bf16 ? vocab * d * 2 : 0) +                                  // the bf16 weight
                     (bf16 && head_trained ? vocab * (d * 2 + rows * 4 * 2) : 0);  // its gradient's
  e.activation_bytes = saturate(
      policy_rows * static_cast<double>(length) * (values_per_token * activation_width + logits_bytes) + chunk_bytes);

  if (preference && c.ganpo.enabled) {
    const GanpoConfig& g = c.ganpo;
    const double critic_params = 2.0 * static_cast<double>(critic_parameter_count(g, shape.d_model));
    const double positions = static_cast<double>(std::min(length, std::max<int64_t>(g.critic_max_len, 0)));
    const double critic_rows = 2 * 3 * batch;
    const double values_per_position =
        static_cast<double>(g.critic_layers) * (static_cast<double>(kActivationValuesPerLayer * g.critic_hidden) +
                                                2.0 * static_cast<double>(g.critic_heads) * positions);
    e.critic_bytes = saturate(critic_params * 16 + critic_rows * positions * values_per_position * 4);
  }

  e.total_bytes = saturate(static_cast<double>(e.weights_bytes) + static_cast<double>(e.gradients_bytes) +
                           static_cast<double>(e.optimizer_bytes) + static_cast<double>(e.reference_bytes) +
                           static_cast<double>(e.critic_bytes) + static_cast<double>(e.activation_bytes));
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

std::string memory_shortfall_warning(const MemoryEstimate& e, int processes, int64_t available,
                                     const std::string& where) {
  const double need = static_cast<double>(e.total_bytes) * std::max(processes, 1);
  if (available < 0 || need <= static_cast<double>(available)) return "";
  const auto gib = [](double bytes) {
    char text[32];
    std::snprintf(text, sizeof text, "%.1f GiB", bytes / (1024.0 * 1024.0 * 1024.0));
    return std::string(text);
  };
  std::string text = "estimated training memory " + gib(static_cast<double>(e.total_bytes));
  if (processes > 1) text += " per process, " + gib(need) + " for the " + std::to_string(processes) + " processes,";
  return text + " (weights, gradients and AdamW " +
         gib(static_cast<double>(e.weights_bytes + e.gradients_bytes + e.optimizer_bytes)) + ", reference " +
         gib(static_cast<double>(e.reference_bytes)) + ", activations " + gib(static_cast<double>(e.activation_bytes)) +
         ", critics " + gib(static_cast<double>(e.critic_bytes)) + ") is more than the " +
         gib(static_cast<double>(available)) + " of " + where +
         ", and the estimate is a lower bound: the run is likely to be killed or to run out of memory. Lower "
         "train.per_device_train_batch_size or data.max_length, set train.gradient_checkpointing = true, or train "
         "LoRA adapters ([model.lora] r > 0)";
}

}  // namespace ganpo
