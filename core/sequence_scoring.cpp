#include "core/sequence_scoring.h"

#include <algorithm>

#include "core/chunked_logps.h"

namespace ganpo {
namespace {

// Sums of log-probs through the chunked head: hidden [N, L, d] at the positions that predict
// targets [N, L]; mask [N, L] marks the response tokens among them.
ResponseLogps chunked_response_logps(CausalLM& model, const torch::Tensor& hidden, const torch::Tensor& targets,
                                     const torch::Tensor& mask) {
  const int64_t N = hidden.size(0), L = hidden.size(1), d = hidden.size(2);
  const auto rows = hidden.reshape({N * L, d});
  auto token_logp = chunked_token_logps(rows, model->head_weight(), targets.reshape({N * L}), model->shape().final_softcap,
                                        0, model->head_low_rank(rows))
                        .view({N, L});
  const auto m = mask.to(torch::kFloat32);
  return {(token_logp * m).sum(-1), m.sum(-1)};
}

}  // namespace

ScoredSequences score_sequences(CausalLM& model, const SequenceBatch& batch) {
  const int64_t T = batch.input_ids.size(1);
  if (model->chunked_logps()) {
    // Hidden states only; position i predicts token i + 1, from first_response - 1 on.
    auto out = model->forward_from(batch.input_ids, T);  // hidden [N, T, d]
    const int64_t from = std::clamp<int64_t>(batch.first_response - 1, 0, std::max<int64_t>(T - 1, 0));
    auto logps = chunked_response_logps(model, out.hidden.slice(1, from, T - 1), batch.input_ids.slice(1, from + 1, T),
                                        batch.response_mask.slice(1, from + 1, T));
    return {std::move(out), std::move(logps)};
  }
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
  const bool head = logps && !model->chunked_logps();  // the chunked head reads the hidden states
  auto prompt = b.prompts_padded ? model->forward(b.prompt_ids, b.prompt_positions, b.prompt_mask, &cache, head ? P - 1 : P)
                                 : model->forward(b.prompt_ids, {}, {}, &cache, head ? P - 1 : P);
  // 2. The prompt's keys and values for both rows of the pair, [chosen; rejected].
  for (auto& k : cache.keys) k = torch::cat({k, k});    // [2B, Hkv, P, hd]
  for (auto& v : cache.values) v = torch::cat({v, v});
  auto response = model->forward(b.response_ids, b.response_positions, b.key_mask, &cache, head ? 0 : R);
  ScoredSequences out;
  if (logps && !head) {
    // Response token j is predicted by the prompt's last position for j = 0, by response
    // position j - 1 after: [2B, R, d] in that order.
    auto last = prompt.hidden.slice(1, P - 1, P);  // [B, 1, d]
    // (R = 0: no response tokens, nothing predicted; the slice keeps [2B, R, d] then too.)
    auto predicting = torch::cat({torch::cat({last, last}), response.hidden.slice(1, 0, R - 1)}, 1).slice(1, 0, R);
    out.logps = chunked_response_logps(model, predicting, b.response_ids, b.response_mask);
  } else if (logps) {
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
