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
#include <optional>
#include <string>
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

// A pass's numbers over both splits, kept for a later start of the stage (a retry of
// train.auto_find_batch_size, ranks their launcher starts again, a resume) with what they were
// computed from; the start takes them only under the same terms (Trainer::State says which).
struct KeptPairLogps {
  PairLogps train, eval;
  int64_t batch = 0;   // the pass's batch (pairs per forward)
  bool prefix_sharing = true;
  uint64_t pairs = 0;  // hash_of_pairs of both splits: the same pairs (a data file may change)
  int64_t world = 1;   // the ranks that shared the pass (each scores every world-th pair)
  std::string from;    // where they were kept, for the log: "before ...", a checkpoint folder
};
inline constexpr const char* kKeptPairLogpsFile = "precomputed_ref_logps.safetensors";

// Both splits' token ids, hashed (FNV-1a).
uint64_t hash_of_pairs(const std::vector<TokenizedPair>& train, const std::vector<TokenizedPair>& eval);

// In a safetensors file: the four tensors, and what they were computed from. Reading gives none
// where the file is missing or not one of these (the numbers are computed again then).
void write_kept_pair_logps(const std::string& path, const KeptPairLogps& kept);
std::optional<KeptPairLogps> read_kept_pair_logps(const std::string& path, const torch::Device& device,
                                                  std::string from);

// The reference's log-probs of pairs[i] at i, batch_size pairs per forward pass; with
// share_prompts each prompt runs once for both responses where the batch allows it
// (train.prefix_sharing, sequence_scoring.h), as the training steps then score them.
PairLogps precompute_pair_logps(CausalLM& reference, const std::vector<TokenizedPair>& pairs, int64_t pad_id,
                                int64_t batch_size, bool share_prompts);

}  // namespace ganpo
