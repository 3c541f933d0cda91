// Scoring padded batches: one forward of a causal LM and each row's summed response log-probs.
//
// Every loss and evaluation scores responses, never prompts, so the output head runs only from
// the batch's first response position on (SequenceBatch::first_response - 1). With a 128k
// vocabulary the head over [N, T, V] is most of a step and chat-formatted prompts are long, so
// this removes most of that work. Hidden states stay full length for GANPO's critics. A model
// set to chunked log-probs (CausalLMImpl::set_chunked_logps, train.chunked_logps) runs no head in
// its forward pass; the log-probs come from its hidden states through core/chunked_logps.h, and
// out.logits stays empty.
#pragma once

#include "core/batching.h"
#include "core/model/causal_lm.h"
#include "core/train/opo_losses.h"

namespace ganpo {

struct ScoredSequences {
  LMOutput out;        // logits from out.logits_from on; hidden [N, T, d]
  ResponseLogps logps; // [N] sums and counts of response tokens
};

ScoredSequences score_sequences(CausalLM& model, const SequenceBatch& batch);

// A preference batch scored with each prompt run once (train.prefix_sharing): the prompts'
// forward pass fills a KV cache that both responses of the pair attend to in the responses'
// pass. Log-probs (with `logps`) equal score_sequences() on collate_pairs()'s batch up to
// rounding; with `latents` the final hidden states come back in that batch's [2B, T, d] layout
// for GANPO's critics, exact on real tokens (padded positions hold another position's state:
// read them only through a mask). out.logits is left empty. With LoRA dropout the prompt's
// adapters would draw one mask for both responses (the plain pass draws one per row); training
// runs never have it here, since a preference stage's policy runs without dropout.
ScoredSequences score_pairs_sharing_prompts(CausalLM& model, const SharedPromptBatch& batch, bool logps, bool latents);
// Whether the shared layout can score this batch on this model, and pays: every prompt has a
// token (the last one predicts the first response token), the longest prompt plus the longest
// response fit the model's positions, and the padded shared layout (B P + 2B R positions) is
// smaller than the plain one (2B T): a batch mixing long prompts with short answers and short
// prompts with long answers can be larger shared.
bool can_share_prompts(const SharedPromptBatch& batch, CausalLM& model);

// The response log-probs of a chunk of pairs on one model, as [chosen; rejected] rows: through
// `shared` (collate_shared_prompts() of the same pairs) where it is given and can_share_prompts()
// says so, else through `plain` (collate_pairs()). For evaluations and precomputed log-probs (no
// gradients, no latents); the caller collates once for both models.
ResponseLogps score_pair_logps(CausalLM& model, const SequenceBatch& plain, const SharedPromptBatch* shared);

}  // namespace ganpo
