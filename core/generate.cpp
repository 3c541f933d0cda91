#include "core/generate.h"

#include <ATen/CPUGeneratorImpl.h>
#include <nlohmann/json.hpp>

#include <algorithm>

#include "core/bf16_autocast.h"
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
  size_t T = 0;
  for (const auto& p : prompts) T = std::max(T, p.size());
  const int64_t max_new =
      std::min<int64_t>(opt.max_new_tokens, model->shape().max_seq_len - static_cast<int64_t>(T));

  auto ids = torch::full({N, static_cast<int64_t>(T)}, pad_id, torch::kLong);
  auto key_mask = torch::zeros({N, static_cast<int64_t>(T) + std::max<int64_t>(max_new, 0)}, torch::kLong);
  for (int64_t i = 0; i < N; ++i) {
    const auto& p = prompts[static_cast<size_t>(i)];
    const int64_t offset = static_cast<int64_t>(T - p.size());
    for (size_t t = 0; t < p.size(); ++t) ids[i][offset + static_cast<int64_t>(t)] = p[t];
    key_mask[i].slice(0, offset, static_cast<int64_t>(T)).fill_(1);
  }
  key_mask = key_mask.to(device);
  auto positions = (key_mask.slice(1, 0, static_cast<int64_t>(T)).cumsum(1) - 1).clamp_min(0);
  auto next_pos = positions.select(1, static_cast<int64_t>(T) - 1) + 1;  // [N]

  const std::vector<int64_t> stop = generation_stop_ids(model->shape(), eos_id);
  auto gen = at::detail::createCPUGenerator(opt.seed);
  std::vector<char> done(static_cast<size_t>(N), 0);
  KVCache cache;
  auto input = ids.to(device);
  auto pos = positions;
  for (int64_t step = 0; step < max_new; ++step) {
    if (cancel && cancel->load()) break;
    // Keys so far: the (left-padded) prompt plus one per token already sampled.
    auto keys = key_mask.slice(1, 0, static_cast<int64_t>(T) + step);
    // Only the last position's logits: the prompt's would be [N, T, V] for nothing.
    auto logits = model->forward(input, pos, keys, &cache, input.size(1) - 1)
                      .logits.select(1, -1).to(torch::kFloat32).cpu();  // [N, V]
    torch::Tensor next;
    if (opt.temperature <= 0.0) {
      next = logits.argmax(-1);
    } else {
      auto probs = torch::softmax(logits / opt.temperature, -1);
      probs = filter_probs(probs, opt.top_k, opt.top_p);
      next = torch::multinomial(probs, 1, false, gen).squeeze(-1);
    }
    bool all_done = true;
    auto next_acc = next.accessor<int64_t, 1>();
    std::vector<int64_t> appended(static_cast<size_t>(N), -1);
    for (int64_t i = 0; i < N; ++i) {
      char& d = done[static_cast<size_t>(i)];
      if (!d) {
        if (std::find(stop.begin(), stop.end(), next_acc[i]) != stop.end()) {
          d = 1;
          if (stopped_by) (*stopped_by)[static_cast<size_t>(i)] = next_acc[i];
        } else {
          out[static_cast<size_t>(i)].push_back(appended[static_cast<size_t>(i)] = next_acc[i]);
        }
      }
      all_done = all_done && d;
    }
    if (on_tokens) on_tokens(step + 1, appended);
    if (all_done) break;
    key_mask.select(1, static_cast<int64_t>(T) + step).fill_(1);
    input = next.view({N, 1}).to(device);
    pos = next_pos.view({N, 1}) + step;
  }
  return out;
}

}  // namespace ganpo
