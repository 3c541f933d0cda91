#include "core/sequence_scoring.h"

namespace ganpo {

ScoredSequences score_sequences(CausalLM& model, const SequenceBatch& batch) {
  // The token at first_response is predicted by the logits at first_response - 1.
  auto out = model->forward_from(batch.input_ids, batch.first_response - 1);
  auto logps = response_logps(out.logits, batch.input_ids, batch.response_mask, out.logits_from);
  return {std::move(out), std::move(logps)};
}

bool can_share_prompts(const SharedPromptBatch& b, CausalLM& model) {
  const int64_t B = b.prompt_ids.size(0), P = b.prompt_ids.size(1), R = b.response_ids.size(1);
  return b.every_prompt_has_a_token && P + R <= model->shape().max_seq_len &&
         B * P + 2 * B * R < 2 * B * b.standard_length;
}

ScoredSequences score_pairs_sharing_prompts(CausalLM& model, const SharedPromptBatch& b, bool logps, bool latents) {
  const auto P = b.prompt_ids.size(1), R = b.response_ids.size(1);
  // 1. Each prompt once: every layer's keys and values, and the logits of its last position
  //    (every row ends at P - 1), which predict both responses' first token.
  //    Prompts of one length need no key mask: the pass is plain causal attention.
  KVCache cache;
  auto prompt = b.prompts_padded ? model->forward(b.prompt_ids, b.prompt_positions, b.prompt_mask, &cache, logps ? P - 1 : P)
                                 : model->forward(b.prompt_ids, {}, {}, &cache, logps ? P - 1 : P);
  // 2. The prompt's keys and values for both rows of the pair, [chosen; rejected].
  for (auto& k : cache.keys) k = torch::cat({k, k});    // [2B, Hkv, P, hd]
  for (auto& v : cache.values) v = torch::cat({v, v});
  auto response = model->forward(b.response_ids, b.response_positions, b.key_mask, &cache, logps ? 0 : R);
  ScoredSequences out;
  if (logps) {
    // Response token j is predicted by the position before it: the prompt's last one for j = 0
    // (scored on its own, so the [2B, R, V] logits are not copied), the responses' own after.
    auto first = torch::cat({prompt.logits, prompt.logits}).to(torch::kFloat32);  // [2B, 1, V]
    auto first_logp = first.gather(-1, b.response_ids.slice(1, 0, 1).unsqueeze(-1)).squeeze(-1) -
                      torch::logsumexp(first, -1);  // [2B, 1]
    auto first_mask = b.response_mask.slice(1, 0, 1);
    auto rest = response_logps(response.logits, b.response_ids, b.response_mask, 0);  // tokens 1 .. R-1
    out.logps = {rest.sum + (first_logp * first_mask).sum(-1), rest.count + first_mask.sum(-1)};
  }
  if (latents) {
    auto rows = torch::cat({torch::cat({prompt.hidden, prompt.hidden}), response.hidden}, 1);  // [2B, P + R, d]
    out.out.hidden = rows.gather(1, b.standard_index.unsqueeze(-1).expand({-1, -1, rows.size(2)}));  // [2B, T, d]
  }
  return out;
}

ResponseLogps score_pair_logps(CausalLM& model, const SequenceBatch& plain, const SharedPromptBatch* shared) {
  if (shared != nullptr && can_share_prompts(*shared, model))
    return score_pairs_sharing_prompts(model, *shared, true, false).logps;
  return score_sequences(model, plain).logps;
}

}  // namespace ganpo
