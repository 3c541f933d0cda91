#include "core/train/reference_logps.h"

#include <filesystem>
#include <optional>

#include "core/model/safetensors.h"
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

uint64_t hash_of_pairs(const std::vector<TokenizedPair>& train_pairs, const std::vector<TokenizedPair>& eval_pairs) {
  uint64_t h = 14695981039346656037ULL;  // FNV-1a over every id, each list ended by -1
  const auto add = [&h](const std::vector<int64_t>& ids) {
    for (const int64_t id : ids) h = (h ^ static_cast<uint64_t>(id)) * 1099511628211ULL;
    h = (h ^ ~0ULL) * 1099511628211ULL;
  };
  for (const auto* split : {&train_pairs, &eval_pairs}) {
    for (const auto& pair : *split) add(pair.prompt), add(pair.chosen), add(pair.rejected);
    h = (h ^ 0x5eedULL) * 1099511628211ULL;
  }
  return h;
}

void write_kept_pair_logps(const std::string& path, const KeptPairLogps& p) {
  std::vector<std::pair<std::string, torch::Tensor>> tensors{{"train.chosen", p.train.chosen},
                                                             {"train.rejected", p.train.rejected}};
  if (!p.eval.empty()) tensors.insert(tensors.end(), {{"eval.chosen", p.eval.chosen}, {"eval.rejected", p.eval.rejected}});
  save_safetensors(path, tensors,
                   {{"batch", std::to_string(p.batch)}, {"prefix_sharing", p.prefix_sharing ? "1" : "0"},
                    {"pairs", std::to_string(p.pairs)}, {"world", std::to_string(p.world)}});
}

std::optional<KeptPairLogps> read_kept_pair_logps(const std::string& path, const torch::Device& device,
                                                  std::string from) {
  if (!std::filesystem::is_regular_file(path)) return std::nullopt;
  try {
    SafetensorsFile f = load_safetensors(path);
    const auto number = [&](const char* key) { return std::stoll(f.metadata.at(key)); };
    const auto on_device = [&](const char* name) { return f.tensors.at(name).to(device); };
    KeptPairLogps p;
    p.train = {on_device("train.chosen"), on_device("train.rejected")};
    if (f.tensors.count("eval.chosen")) p.eval = {on_device("eval.chosen"), on_device("eval.rejected")};
    p.batch = number("batch");
    p.prefix_sharing = number("prefix_sharing") != 0;
    p.pairs = std::stoull(f.metadata.at("pairs"));
    p.world = number("world");
    p.from = std::move(from);
    return p;
  } catch (const std::exception&) {
    return std::nullopt;
  }
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
