// Tokenized examples and the padded batches the trainer feeds to the model.
//
// A preference batch stacks chosen rows then rejected rows ([chosen; rejected], 2B rows) so
// policy and reference each need one forward. Rows are right-padded; response_mask marks the
// response tokens (the ones the losses score) at their own positions. Truncation follows TRL:
// the prompt keeps its last max_prompt_length tokens when prompt + response is too long, then
// the response is cut to fit max_length.
#pragma once

#include <torch/torch.h>

#include <algorithm>
#include <cstdint>
#include <limits>
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

// A tensor built on the host, on `device`. To a GPU through page-locked memory without waiting
// (a copy from pageable memory waits for everything queued on the device first: a host sync at
// the start of every micro-batch); LibTorch's pinned-memory cache keeps the host buffer until
// the copy is done.
torch::Tensor upload(const torch::Tensor& host, const torch::Device& device);

// Preference batch: rows [0, B) chosen, [B, 2B) rejected, same prompts.
struct PreferenceBatch {
  SequenceBatch sequences;
  int64_t pairs = 0;  // B
};

// The same pairs laid out so that each prompt runs through the model once (train.prefix_sharing,
// sequence_scoring.h): the prompts left-padded [B, P], both responses of every pair right-padded
// [2B, R] ([chosen; rejected]), each continuing its own prompt's positions and attending to its
// prompt's keys. A pair then costs P + 2R token positions instead of 2 (P + R).
struct SharedPromptBatch {
  torch::Tensor prompt_ids;          // [B, P] long, left-padded with pad_id
  torch::Tensor prompt_mask;         // [B, P] long, 1 = real token
  torch::Tensor prompt_positions;    // [B, P] long, 0.. on the real tokens
  torch::Tensor response_ids;        // [2B, R] long, right-padded
  torch::Tensor response_mask;       // [2B, R] float, 1 = real token (the scored ones)
  torch::Tensor response_positions;  // [2B, R] long, continuing the row's prompt
  torch::Tensor key_mask;            // [2B, P + R] long: the row's real prompt and response tokens
  // Where each position of the standard [2B, T] layout (collate_pairs) lies among the P + R
  // positions of a row here; pads point at position 0 (masked for GANPO's critics).
  torch::Tensor standard_index;      // [2B, T] long
  int64_t standard_length = 0;       // T of collate_pairs()' layout for the same pairs
  bool prompts_padded = false;       // prompts of different lengths (the prompts' pass needs a key mask)
  bool every_prompt_has_a_token = true;  // else the first response token has nothing to predict it
};

// What data.max_length and data.max_prompt_length cut from the rows tokenize_pair and
// tokenize_sft tokenized (each adds its row where it is given).
struct RowCuts {
  int64_t rows = 0;       // rows tokenized
  int64_t cut = 0;        // rows that lost tokens
  int64_t prompts = 0;    // prompts that lost their start
  int64_t responses = 0;  // rows whose response (a pair's either) lost its end
};

// A row's tokens, cut to fit: where the prompt and the longer response exceed max_length, the
// prompt keeps its last max_prompt_length tokens (as TRL 0.11's DPOTrainer), then each response
// keeps what fits in the room the prompt leaves (TRL 0.11: max_length - max_prompt_length).
TokenizedPair tokenize_pair(const Tokenizer& tok, const PreferenceExample& ex, int64_t max_length,
                            int64_t max_prompt_length, RowCuts* cuts = nullptr);
TokenizedSft tokenize_sft(const Tokenizer& tok, const SftExample& ex, int64_t max_length,
                          int64_t max_prompt_length, RowCuts* cuts = nullptr);
// That cut alone, of rows tokenized whole (a preview that shows what it drops).
void cut_to_fit(TokenizedPair& pair, int64_t max_length, int64_t max_prompt_length, RowCuts* cuts = nullptr);
void cut_to_fit(TokenizedSft& row, int64_t max_length, int64_t max_prompt_length, RowCuts* cuts = nullptr);

PreferenceBatch collate_pairs(const std::vector<const TokenizedPair*>& pairs, int64_t pad_id,
                              const torch::Device& device);
SharedPromptBatch collate_shared_prompts(const std::vector<const TokenizedPair*>& pairs, int64_t pad_id,
                                         const torch::Device& device);
SequenceBatch collate_sft(const std::vector<const TokenizedSft*>& rows, int64_t pad_id,
                          const torch::Device& device);

// Deterministic epoch order: a permutation of [0, n) from (seed, epoch).
std::vector<int64_t> epoch_order(int64_t n, uint64_t seed, int64_t epoch);

// train.group_by_length, as transformers' LengthGroupedSampler orders an epoch: epoch_order's
// permutation cut into mega-batches of min(n / (4 step_rows), 50) (at least 1) x step_rows rows,
// each sorted by length, longest first (ties keep the shuffled order), and the epoch's longest
// row swapped into the first place. step_rows: the rows of one optimizer step (batch x
// processes x accumulation; transformers leaves the processes out, so with several the
// mega-batches here are larger), so consecutive micro-batches take rows of similar length. The
// trainer's cursor runs on across epochs: where the epoch's rows are not a whole number of steps,
// the batches of a later epoch straddle its mega-batches (one mixed batch each; order only).
std::vector<int64_t> length_grouped_order(const std::vector<int64_t>& lengths, int64_t step_rows, uint64_t seed,
                                          int64_t epoch);

// A row's length, to which a batch pads its rows (collate_pairs, collate_sft): prompt + its
// longer response (a pair), prompt + completion.
int64_t row_length(const TokenizedPair& pair);
int64_t row_length(const TokenizedSft& row);

// The response tokens the losses score in a row (a pair's chosen response, an SFT row's
// completion), known on the host: each is predicted by the position before it, so a row without a
// prompt token leaves its first response token unscored (response_logps).
int64_t scored_response_tokens(const std::vector<int64_t>& prompt, const std::vector<int64_t>& response);

// The lengths a batch of rows pads to, which its memory grows with: its longest prompt and
// longest response (what collate_shared_prompts pads to), its longest row (collate_pairs' and
// collate_sft's T) and the positions the plain layout's output head runs on, from the shortest
// prompt's end to T (their first_response). A batch at least as long in each needs at least the
// memory of the other. An SFT row's completion is its response.
struct PaddedExtent {
  int64_t prompt = 0, response = 0, row = 0;
  int64_t shortest_prompt = std::numeric_limits<int64_t>::max();  // (none yet: the largest)
  int64_t head() const { return row > 0 ? row - shortest_prompt : 0; }
  void include(const PaddedExtent& other) {
    prompt = std::max(prompt, other.prompt);
    response = std::max(response, other.response);
    row = std::max(row, other.row);
    shortest_prompt = std::min(shortest_prompt, other.shortest_prompt);
  }
  bool within(const PaddedExtent& other) const {
    return prompt <= other.prompt && response <= other.response && row <= other.row && head() <= other.head();
  }
};
PaddedExtent padded_extent(const TokenizedPair& pair);
PaddedExtent padded_extent(const TokenizedSft& row);

}  // namespace ganpo
