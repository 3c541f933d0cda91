// Tokenized examples and the padded batches the trainer feeds to the model.
//
// A preference batch stacks chosen rows then rejected rows ([chosen; rejected], 2B rows) so
// policy and reference each need one forward. Rows are right-padded; response_mask marks the
// response tokens (the ones the losses score) at their own positions. Truncation follows TRL:
// the prompt keeps its last max_prompt_length tokens when prompt + response is too long, then
// the response is cut to fit max_length.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <vector>

#include "core/text_examples.h"
#include "core/tokenizer.h"

namespace ganpo {

struct TokenizedPair {
  std::vector<int64_t> prompt;    // [BOS] prompt "\n"
  std::vector<int64_t> chosen;    // response [EOS]
  std::vector<int64_t> rejected;  // response [EOS]
};

struct TokenizedSft {
  std::vector<int64_t> prompt;
  std::vector<int64_t> completion;
};

struct SequenceBatch {
  torch::Tensor input_ids;       // [N, T] long, right-padded with pad_id
  torch::Tensor attention_mask;  // [N, T] float, 1 = real token
  torch::Tensor response_mask;   // [N, T] float, 1 = response token (scored by the losses)
  int64_t tokens = 0;            // real tokens in the batch
  // Smallest prompt length over the rows, known on the host: no response token sits before it,
  // so the output head only needs positions from first_response - 1 on (sequence_scoring.h).
  int64_t first_response = 0;
};

// Preference batch: rows [0, B) chosen, [B, 2B) rejected, same prompts.
struct PreferenceBatch {
  SequenceBatch sequences;
  int64_t pairs = 0;  // B
};

TokenizedPair tokenize_pair(const Tokenizer& tok, const PreferenceExample& ex, int64_t max_length,
                            int64_t max_prompt_length);
TokenizedSft tokenize_sft(const Tokenizer& tok, const SftExample& ex, int64_t max_length,
                          int64_t max_prompt_length);

PreferenceBatch collate_pairs(const std::vector<const TokenizedPair*>& pairs, int64_t pad_id,
                              const torch::Device& device);
SequenceBatch collate_sft(const std::vector<const TokenizedSft*>& rows, int64_t pad_id,
                          const torch::Device& device);

// Deterministic epoch order: a permutation of [0, n) from (seed, epoch).
std::vector<int64_t> epoch_order(int64_t n, uint64_t seed, int64_t epoch);

}  // namespace ganpo
