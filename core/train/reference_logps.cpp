#include "core/train/reference_logps.h"

#include <optional>

#include "core/sequence_scoring.h"

namespace ganpo {

torch::Tensor PairLogps::rows(const std::vector<int64_t>& idx) const {
  auto at = upload(torch::tensor(idx, torch::TensorOptions().dtype(torch::kLong)), chosen.device());
  return torch::cat({chosen.index_select(0, at), rejected.index_select(0, at)});
}

PairLogps PairLogps::select(const std::vector<int64_t>& idx) const {
  auto at = upload(torch::tensor(idx, torch::TensorOptions().dtype(torch::kLong)), chosen.device());
  return {chosen.index_select(0, at), rejected.index_select(0, at)};
}

PairLogps precompute_pair_logps(CausalLM& reference, const std::vector<TokenizedPair>& pairs, int64_t pad_id,
                                int64_t batch_size, bool share_prompts) {
  torch::NoGradGuard guard;
  const bool was_training = reference->is_training();
  reference->eval();
  const auto device = reference->parameters().front().device();
  std::vector<torch::Tensor> chosen, rejected;
  for (size_t start = 0; start < pairs.size(); start += static_cast<size_t>(batch_size)) {
    std::vector<const TokenizedPair*> chunk;
    for (size_t i = start; i < std::min(pairs.size(), start + static_cast<size_t>(batch_size)); ++i)
      chunk.push_back(&pairs[i]);
    const auto plain = collate_pairs(chunk, pad_id, device).sequences;
    const auto shared = share_prompts ? std::optional(collate_shared_prompts(chunk, pad_id, device)) : std::nullopt;
    const auto sums = score_pair_logps(reference, plain, shared ? &*shared : nullptr).sum.to(torch::kFloat32);  // [2 B]
    const auto B = static_cast<int64_t>(chunk.size());
    chosen.push_back(sums.slice(0, 0, B));
    rejected.push_back(sums.slice(0, B));
  }
  if (was_training) reference->train();
  if (pairs.empty()) {
    auto none = torch::zeros({0}, torch::TensorOptions().dtype(torch::kFloat32).device(device));
    return {none, none.clone()};
  }
  return {torch::cat(chosen), torch::cat(rejected)};
}

}  // namespace ganpo
