#include "core/memory_estimate.h"

#include <algorithm>
#include <limits>

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
  const double params = static_cast<double>(e.parameters);
  e.weights_bytes = saturate(params * width);
  e.gradients_bytes = saturate(params * width);
  e.optimizer_bytes = saturate(params * 2 * 4);
  e.reference_bytes = preference ? saturate(params * width) : 0;

  const double policy_rows = batch * (preference ? 2 : 1);
  const double values_per_token = static_cast<double>(kActivationValuesPerLayer) * static_cast<double>(shape.d_model) *
                                      static_cast<double>(shape.n_layers) +
                                  2.0 * static_cast<double>(shape.vocab_size);
  e.activation_bytes = saturate(policy_rows * static_cast<double>(length) * values_per_token * activation_width);

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

}  // namespace ganpo
