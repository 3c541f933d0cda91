// TRL's precompute_ref_log_probs: the frozen reference's summed response log-probs of every pair
// in a split, computed once before training (no gradients, in batches), so training and
// evaluation read two numbers per pair instead of running the reference's output head.
//
// With GANPO off the reference does not run again during training at all. With GANPO on it still
// runs for its hidden states (the critics' reference latents) but stops after the final norm: no
// output head and no log-softmax over the vocabulary, which for a 128k vocabulary is most of a
// forward pass over the response positions.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <vector>

#include "core/batching.h"
#include "core/model/causal_lm.h"

namespace ganpo {

struct PairLogps {
  torch::Tensor chosen;    // [N] float32 summed response log-probs, on the model's device
  torch::Tensor rejected;  // [N]

  bool empty() const { return !chosen.defined(); }
  // Pairs idx as a [chosen; rejected] batch would score them: [2 B].
  torch::Tensor rows(const std::vector<int64_t>& idx) const;
  // The log-probs of pairs idx, in that order (a rank's shard of a split).
  PairLogps select(const std::vector<int64_t>& idx) const;
};

// The reference's log-probs of pairs[i] at i, batch_size pairs per forward pass; with
// share_prompts each prompt runs once for both responses where the batch allows it
// (train.prefix_sharing, sequence_scoring.h), as the training steps then score them.
PairLogps precompute_pair_logps(CausalLM& reference, const std::vector<TokenizedPair>& pairs, int64_t pad_id,
                                int64_t batch_size, bool share_prompts);

}  // namespace ganpo
