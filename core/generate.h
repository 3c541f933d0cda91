// Sampling from a CausalLM with a KV cache: temperature, top-k, top-p, max new tokens, seed.
//
// Prompts of different lengths are left-padded into one batch; each row stops at EOS (the
// tokenizer's, or any eos_token_id of the model folder: generation_stop_ids below) or after its
// own budget of new tokens (max_new_tokens, or what the model's length leaves after its prompt),
// and leaves the batch then. Each row draws from a CPU generator of its own, seeded from the
// seed and the prompt's number, so a prompt's text depends on neither the device nor the
// prompts batched with it (up to float rounding of different batch shapes). temperature 0 means
// greedy decoding. A bf16 run decodes under CUDA's bf16 autocast, as its training passes compute.
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
  // Each row's number in the caller's whole list of prompts: row i draws from a generator seeded
  // with sample_seed(seed, prompt_numbers[i]). Empty: 0, 1, 2, ... A caller that samples a list
  // in batches gives each batch its prompts' numbers, so the batch size changes no text.
  std::vector<int64_t> prompt_numbers = {};
  // The products under CUDA's bf16 autocast (core/bf16_autocast.h; nothing changes on the CPU):
  // a bf16 run's samples, as TRL's generation under mixed precision runs. Weights stored in bf16
  // (a LoRA run's frozen base, a bf16 run's reference of its own) are read as they are, where
  // outside autocast each product would first write a float32 copy of its weight. The logits a
  // token is drawn from are upcast to float32 either way.
  bool bf16_autocast = false;
  // With bf16_autocast: a trainable float32 weight (a policy's) cast to bf16 once per call and
  // kept until it returns (2 bytes per parameter, as a training step's forward keeps them until
  // its backward pass) rather than once per product. Off for a run with gradient checkpointing,
  // whose steps never hold all those copies at once.
  bool cache_casts = true;
};

// After each sampling step: the step (1-based) and, per row, the token it appended then, or -1
// when the row had already stopped or stopped now (EOS is never appended).
using OnTokens = std::function<void(int64_t step, const std::vector<int64_t>& appended)>;

// Returns the new tokens of each row (the stop id that ended it excluded). `cancel`, when set to
// true by another thread, stops after the current token; `on_tokens` reports progress and lets
// text stream; `stopped_by`, when given, gets per row the stop id that ended it, or -1 where
// max_new_tokens, the model's length or `cancel` did.
std::vector<std::vector<int64_t>> generate(CausalLM& model,
                                           const std::vector<std::vector<int64_t>>& prompts,
                                           const SamplingOptions& options, int64_t eos_id,
                                           int64_t pad_id,
                                           const std::atomic<bool>* cancel = nullptr,
                                           const OnTokens& on_tokens = {},
                                           std::vector<int64_t>* stopped_by = nullptr);

// The seed of one prompt's draws (a splitmix64 mix of the two).
uint64_t sample_seed(uint64_t seed, int64_t prompt_number);

// The ids a row stops at: eos_id (the tokenizer's EOS) and, as transformers' generate stops, every
// eos_token_id of the model folder's generation_config.json, or of its config.json where that
// has none (an id or a list: Llama 3 Instruct's [128001, 128008, 128009], Gemma 2 IT's [1, 107],
// whose chat turns end with <end_of_turn>). Ids outside the vocabulary are passed over.
std::vector<int64_t> generation_stop_ids(const ModelShape& shape, int64_t eos_id);

// Filters a [N, V] probability matrix in place per top-k then top-p (nucleus) and renormalises.
torch::Tensor filter_probs(torch::Tensor probs, int64_t top_k, double top_p);

}  // namespace ganpo
