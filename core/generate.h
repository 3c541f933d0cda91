// Sampling from a CausalLM with a KV cache: temperature, top-k, top-p, max new tokens, seed.
//
// Prompts of different lengths are left-padded into one batch; each row stops at EOS. The
// random draws come from a CPU generator seeded per call, so the same seed gives the same
// text on any device. temperature 0 means greedy decoding.
#pragma once

#include <torch/torch.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <vector>

#include "core/model/causal_lm.h"

namespace ganpo {

struct SamplingOptions {
  double temperature = 0.7;
  double top_p = 1.0;
  int64_t top_k = 0;
  int64_t max_new_tokens = 64;
  uint64_t seed = 0;
};

// After each sampling step: the step (1-based) and, per row, the token it appended then, or -1
// when the row had already stopped or stopped now (EOS is never appended).
using OnTokens = std::function<void(int64_t step, const std::vector<int64_t>& appended)>;

// Returns the new tokens of each row (EOS excluded). `cancel`, when set to true by another
// thread, stops after the current token; `on_tokens` reports progress and lets text stream.
std::vector<std::vector<int64_t>> generate(CausalLM& model,
                                           const std::vector<std::vector<int64_t>>& prompts,
                                           const SamplingOptions& options, int64_t eos_id,
                                           int64_t pad_id,
                                           const std::atomic<bool>* cancel = nullptr,
                                           const OnTokens& on_tokens = {});

// Filters a [N, V] probability matrix in place per top-k then top-p (nucleus) and renormalises.
torch::Tensor filter_probs(torch::Tensor probs, int64_t top_k, double top_p);

}  // namespace ganpo
