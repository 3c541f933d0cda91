// Scoring padded batches: one forward of a causal LM and each row's summed response log-probs.
//
// Every loss and evaluation scores responses, never prompts, so the output head runs only from
// the batch's first response position on (SequenceBatch::first_response - 1). With a 128k
// vocabulary the head over [N, T, V] is most of a step and chat-formatted prompts are long, so
// this removes most of that work. Hidden states stay full length for GANPO's critics.
#pragma once

#include "core/batching.h"
#include "core/model/causal_lm.h"
#include "core/opo_losses.h"

namespace ganpo {

struct ScoredSequences {
  LMOutput out;        // logits from out.logits_from on; hidden [N, T, d]
  ResponseLogps logps; // [N] sums and counts of response tokens
};

ScoredSequences score_sequences(CausalLM& model, const SequenceBatch& batch);

}  // namespace ganpo
