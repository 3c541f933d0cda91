#include "core/model_flops.h"

#include <algorithm>
#include <string>


namespace ganpo {

double forward_flops_per_token(const ModelShape& s, int64_t T, bool head) {
  const double d = static_cast<double>(s.d_model), hd = static_cast<double>(s.head_size());
  const double q = static_cast<double>(s.n_heads) * hd, kv = static_cast<double>(s.n_kv_heads) * hd;
  const double ff = static_cast<double>(s.d_ff);
  const double attention = d * (q + 2 * kv) + q * d;
  const double mlp = (s.mlp == MlpKind::gelu_tanh ? 2 : 3) * d * ff;
  const double layers = static_cast<double>(s.n_layers);
  double matrices = layers * (attention + mlp);
  if (head) matrices += static_cast<double>(s.vocab_size) * d;
  return 2 * matrices + 4 * layers * q * static_cast<double>(T);
}

double critic_forward_flops_per_position(const GanpoConfig& g, int64_t input_dim, int64_t positions) {
  const double h = static_cast<double>(g.critic_hidden), ffn = h * static_cast<double>(g.critic_ffn_mult);
  const double layers = static_cast<double>(g.critic_layers);
  const double matrices = static_cast<double>(input_dim) * h + layers * (4 * h * h + 2 * h * ffn);
  return 2 * matrices + 4 * layers * h * static_cast<double>(positions);
}

double micro_batch_flops(const RunConfig& c, const ModelShape& shape, const MicroBatchWork& w) {
  const double tokens = static_cast<double>(w.tokens);
  const double policy_tokens = tokens - static_cast<double>(w.policy_shared_prompt_tokens);
  double flops = (w.lora ? 2 : 3) * forward_flops_per_token(shape, w.length) * policy_tokens;
  if (w.pairs == 0) return flops;  // SFT: the policy alone
  if (w.reference)
    flops += forward_flops_per_token(shape, w.length, w.reference_head) *
             (tokens - static_cast<double>(w.reference_shared_prompt_tokens));
  if (w.critics) {
    const int64_t positions = std::min(w.length, c.ganpo.critic_max_len);
    const double rows = 2.0 * (3 * 3 + 2) * static_cast<double>(w.pairs);
    flops += rows * static_cast<double>(positions) *
             critic_forward_flops_per_position(c.ganpo, shape.d_model, positions);
  }
  return flops;
}

double peak_flops_per_second(const std::string& name, bool bf16) {
  // Dense (not sparse) tensor-core bf16 and plain fp32 peaks from the vendors' data sheets, SXM
  // boards; the first entry whose key the name contains wins (so "H100 PCIe" and "H100 NVL"
  // before "H100").
  struct Peak {
    const char* key;
    double bf16_tflops, fp32_tflops;
  };
  static const Peak peaks[] = {
      {"GH200", 989.4, 66.9},   {"B200", 2250, 80},   {"H200", 989.4, 66.9},    {"H100 PCIe", 756, 51.2},
      {"H100 NVL", 835, 60},    {"H100", 989.4, 66.9}, {"A100", 312, 19.5},      {"L40S", 362, 91.6},
      {"L4", 121, 30.3},        {"A10G", 70, 31.2},    {"A10", 125, 31.2},       {"RTX 4090", 165, 82.6},
      {"RTX 3090", 71, 35.6},   {"V100", 0, 15.7},     {"T4", 0, 8.1},
  };
  for (const auto& p : peaks)
    if (name.find(p.key) != std::string::npos) return 1e12 * (bf16 ? p.bf16_tflops : p.fp32_tflops);
  return 0;
}

}  // namespace ganpo
