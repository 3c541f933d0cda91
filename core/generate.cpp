#include "core/generate.h"

#include <ATen/CPUGeneratorImpl.h>
#include <nlohmann/json.hpp>

#include <algorithm>

#include "core/bf16_autocast.h"
#include "core/error.h"
#include "core/model/architectures.h"

namespace ganpo {

torch::Tensor filter_probs(torch::Tensor probs, int64_t top_k, double top_p) {
  const auto V = probs.size(-1);
  if (top_k > 0 && top_k < V) {
    auto kth = std::get<0>(probs.topk(top_k, -1)).select(-1, top_k - 1).unsqueeze(-1);
    probs = probs.masked_fill(probs < kth, 0.0);
    // Renormalise over the top k before the nucleus cut, as Hugging Face's samplers do.
    probs = probs / probs.sum(-1, true).clamp_min(1e-30);
  }
  if (top_p < 1.0) {
    auto sorted = probs.sort(-1, /*descending=*/true);
    auto sorted_probs = std::get<0>(sorted);
    auto cum = sorted_probs.cumsum(-1);
    // Keep the smallest prefix whose mass reaches top_p: a token stays if the mass before it
    // is below top_p, so the most likely token always stays.
    auto drop_sorted = (cum - sorted_probs) >= top_p;
    drop_sorted.select(-1, 0).fill_(false);  // (top_p <= 0 too: greedy, as transformers' min_tokens_to_keep)
    auto drop = torch::zeros_like(drop_sorted).scatter(-1, std::get<1>(sorted), drop_sorted);
    probs = probs.masked_fill(drop, 0.0);
  }
  return probs / probs.sum(-1, true).clamp_min(1e-30);
}

uint64_t sample_seed(uint64_t seed, int64_t prompt_number) {
  // splitmix64 of the pair: neighbouring numbers and seeds give unrelated streams.
  uint64_t z = seed + 0x9e3779b97f4a7c15ULL * (static_cast<uint64_t>(prompt_number) + 1);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

std::vector<int64_t> generation_stop_ids(const ModelShape& shape, int64_t eos_id) {
  std::vector<int64_t> out{eos_id};
  auto eos = eos_token_ids(shape.hf_generation_config);
  if (!eos) eos = eos_token_ids(shape.hf_config);  // (transformers' GenerationConfig.from_model_config)
  if (!eos) return out;
  for (const auto& id : eos->is_array() ? *eos : nlohmann::json::array({*eos}))
    if (id.is_number_integer() && id.get<int64_t>() >= 0 && id.get<int64_t>() < shape.vocab_size)
      out.push_back(id.get<int64_t>());
  return out;
}

std::vector<std::vector<int64_t>> generate(CausalLM& model,
                                           const std::vector<std::vector<int64_t>>& prompts,
                                           const SamplingOptions& opt, int64_t eos_id,
                                           int64_t pad_id, const std::atomic<bool>* cancel,
                                           const OnTokens& on_tokens, std::vector<int64_t>* stopped_by) {
  torch::NoGradGuard no_grad;
  // (Per thread: set on the lane that decodes. Each float32 weight cast to bf16 once per call.)
  const Bf16Autocast autocast(opt.bf16_autocast, opt.cache_casts);
  // Only a model in training mode is switched (a LoRA reference view, never in training mode,
  // shares its modules with the policy, which may be sampled at the same time on another lane);
  // it is switched back however this returns (an error such as running out of memory included).
  struct EvalWhileSampling {
    CausalLM& model;
    const bool was_training = model->is_training();
    explicit EvalWhileSampling(CausalLM& m) : model(m) {
      if (was_training) model->eval();
    }
    ~EvalWhileSampling() {
      if (was_training) model->train();
    }
  } eval_mode(model);
  const auto device = model->parameters().front().device();
  const int64_t N = static_cast<int64_t>(prompts.size());
  std::vector<std::vector<int64_t>> out(static_cast<size_t>(N));
  if (stopped_by) stopped_by->assign(static_cast<size_t>(N), -1);
  if (N == 0) return out;
  if (!opt.prompt_numbers.empty() && opt.prompt_numbers.size() != prompts.size())
    throw Error("generate: " + std::to_string(opt.prompt_numbers.size()) + " prompt numbers for " + std::to_string(N) +
                " prompts");

  // Each row's own budget of new tokens: a prompt of n tokens has max_seq_len - n positions
  // left, whatever the lengths of the prompts beside it. Rows without one are never run.
  std::vector<int64_t> budget(static_cast<size_t>(N));
  std::vector<int64_t> rows;  // the rows still sampled, in batch order
  std::vector<at::Generator> gens;
  for (int64_t i = 0; i < N; ++i) {
    const auto n = static_cast<int64_t>(prompts[static_cast<size_t>(i)].size());
    budget[static_cast<size_t>(i)] = std::min<int64_t>(opt.max_new_tokens, model->shape().max_seq_len - n);
    if (budget[static_cast<size_t>(i)] > 0) rows.push_back(i);
    const int64_t number = opt.prompt_numbers.empty() ? i : opt.prompt_numbers[static_cast<size_t>(i)];
    gens.push_back(at::detail::createCPUGenerator(sample_seed(opt.seed, number)));
  }
  if (rows.empty()) return out;
  int64_t T = 0, most_new = 0;  // the prompt columns (the longest prompt), the longest budget
  for (int64_t i : rows) {
    T = std::max<int64_t>(T, static_cast<int64_t>(prompts[static_cast<size_t>(i)].size()));
    most_new = std::max(most_new, budget[static_cast<size_t>(i)]);
  }

  // Left padding: row b's prompt ends at column T - 1. pad[b] columns of padding before it.
  int64_t n = static_cast<int64_t>(rows.size());
  std::vector<int64_t> pad;
  auto ids = torch::full({n, T}, pad_id, torch::kLong);
  auto key_mask = torch::zeros({n, T + most_new}, torch::kLong);  // [n, T + most_new]: 1 = a real key
  for (int64_t b = 0; b < n; ++b) {
    const auto& p = prompts[static_cast<size_t>(rows[static_cast<size_t>(b)])];
    pad.push_back(T - static_cast<int64_t>(p.size()));
    for (size_t t = 0; t < p.size(); ++t) ids[b][pad.back() + static_cast<int64_t>(t)] = p[t];
    key_mask[b].slice(0, pad.back(), T).fill_(1);
  }
  key_mask = key_mask.to(device);
  auto positions = (key_mask.slice(1, 0, T).cumsum(1) - 1).clamp_min(0);  // [n, T]
  auto next_pos = positions.select(1, T - 1) + 1;                        // [n]

  const std::vector<int64_t> stop = generation_stop_ids(model->shape(), eos_id);
  KVCache cache;
  auto input = ids.to(device);
  auto pos = positions;
  for (int64_t step = 0;; ++step) {
    if (cancel && cancel->load()) break;
    // Keys so far: the (left-padded) prompt plus one per token already sampled.
    auto keys = key_mask.slice(1, 0, T + step);
    // Only the last position's logits: the prompt's would be [n, T, V] for nothing.
    auto logits = model->forward(input, pos, keys, &cache, input.size(1) - 1)
                      .logits.select(1, -1).to(torch::kFloat32).cpu();  // [n, V]
    // Each row draws from its own generator, so its text does not depend on its neighbours.
    std::vector<int64_t> next(static_cast<size_t>(n));
    if (opt.temperature <= 0.0) {
      const auto best = logits.argmax(-1);
      const auto best_acc = best.accessor<int64_t, 1>();
      for (int64_t b = 0; b < n; ++b) next[static_cast<size_t>(b)] = best_acc[b];
    } else {
      auto probs = filter_probs(torch::softmax(logits / opt.temperature, -1), opt.top_k, opt.top_p);  // [n, V]
      for (int64_t b = 0; b < n; ++b)
        next[static_cast<size_t>(b)] =
            torch::multinomial(probs[b], 1, false, gens[static_cast<size_t>(rows[static_cast<size_t>(b)])]).item<int64_t>();
    }
    std::vector<int64_t> appended(static_cast<size_t>(N), -1);
    std::vector<int64_t> keep;  // batch positions of the rows that go on
    for (int64_t b = 0; b < n; ++b) {
      const auto i = static_cast<size_t>(rows[static_cast<size_t>(b)]);
      const int64_t token = next[static_cast<size_t>(b)];
      if (std::find(stop.begin(), stop.end(), token) != stop.end()) {
        if (stopped_by) (*stopped_by)[i] = token;
        continue;
      }
      out[i].push_back(appended[i] = token);
      if (static_cast<int64_t>(out[i].size()) < budget[i]) keep.push_back(b);
    }
    if (on_tokens) on_tokens(step + 1, appended);
    if (keep.empty()) break;
    key_mask.select(1, T + step).fill_(1);
    auto next_ids = torch::tensor(next, torch::kLong);  // [n]
    if (static_cast<int64_t>(keep.size()) < n) {
      // Rows that stopped leave the batch (no more work for them), and the leading columns
      // every remaining row pads leave the cache, so a short prompt's budget fits the model.
      const auto kept = torch::tensor(keep, torch::kLong);
      const auto kept_dev = kept.to(device);
      int64_t drop = T;
      std::vector<int64_t> kept_rows, kept_pad;
      for (int64_t b : keep) {
        kept_rows.push_back(rows[static_cast<size_t>(b)]);
        kept_pad.push_back(pad[static_cast<size_t>(b)]);
        drop = std::min(drop, pad[static_cast<size_t>(b)]);
      }
      for (auto* part : {&cache.keys, &cache.values})
        for (auto& t : *part) t = t.index_select(0, kept_dev).slice(2, drop);  // [n', kv_heads, cached - drop, hd]
      key_mask = key_mask.index_select(0, kept_dev).slice(1, drop);
      next_pos = next_pos.index_select(0, kept_dev);
      next_ids = next_ids.index_select(0, kept);
      for (auto& p : kept_pad) p -= drop;
      rows = std::move(kept_rows);
      pad = std::move(kept_pad);
      T -= drop;
      n = static_cast<int64_t>(rows.size());
    }
    input = next_ids.view({n, 1}).to(device);
    pos = next_pos.view({n, 1}) + step;
  }
  return out;
}

}  // namespace ganpo
