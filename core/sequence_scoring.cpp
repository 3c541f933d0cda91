#include "core/sequence_scoring.h"

namespace ganpo {

ScoredSequences score_sequences(CausalLM& model, const SequenceBatch& batch) {
  // The token at first_response is predicted by the logits at first_response - 1.
  auto out = model->forward_from(batch.input_ids, batch.first_response - 1);
  auto logps = response_logps(out.logits, batch.input_ids, batch.response_mask, out.logits_from);
  return {std::move(out), std::move(logps)};
}

}  // namespace ganpo
