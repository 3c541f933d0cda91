#include "core/batching.h"

#include <algorithm>
#include <random>

#include "core/error.h"

namespace ganpo {
namespace {

// (tokenize_pair's rule, in core/batching.h)
void truncate(std::vector<int64_t>& prompt, std::vector<std::vector<int64_t>*> responses,
              int64_t max_length, int64_t max_prompt_length, RowCuts* cuts) {
  size_t longest = 0;
  for (auto* r : responses) longest = std::max(longest, r->size());
  bool prompt_cut = false, response_cut = false;
  if (static_cast<int64_t>(prompt.size() + longest) > max_length &&
      static_cast<int64_t>(prompt.size()) > max_prompt_length) {
    prompt.erase(prompt.begin(), prompt.end() - max_prompt_length);
    prompt_cut = true;
  }
  const int64_t room = std::max<int64_t>(1, max_length - static_cast<int64_t>(prompt.size()));
  for (auto* r : responses)
    if (static_cast<int64_t>(r->size()) > room) {
      r->resize(static_cast<size_t>(room));
      response_cut = true;
    }
  if (!cuts) return;
  ++cuts->rows;
  cuts->cut += prompt_cut || response_cut;
  cuts->prompts += prompt_cut;
  cuts->responses += response_cut;
}

void fill_row(int64_t* ids, float* attn, float* resp, const std::vector<int64_t>& prompt,
              const std::vector<int64_t>& response) {
  size_t t = 0;
  for (int64_t id : prompt) ids[t] = id, attn[t] = 1.f, resp[t] = 0.f, ++t;
  for (int64_t id : response) ids[t] = id, attn[t] = 1.f, resp[t] = 1.f, ++t;
}

}  // namespace

torch::Tensor upload(const torch::Tensor& host, const torch::Device& device) {
  if (!device.is_cuda()) return host.to(device);
  return host.pin_memory().to(device, /*non_blocking=*/true);
}

TokenizedPair tokenize_pair(const Tokenizer& tok, const PreferenceExample& ex, int64_t max_length,
                            int64_t max_prompt_length, RowCuts* cuts) {
  TokenizedPair p{encode_prompt(tok, ex.prompt), encode_response(tok, ex.prompt, ex.chosen),
                  encode_response(tok, ex.prompt, ex.rejected)};
  cut_to_fit(p, max_length, max_prompt_length, cuts);
  return p;
}

TokenizedSft tokenize_sft(const Tokenizer& tok, const SftExample& ex, int64_t max_length,
                          int64_t max_prompt_length, RowCuts* cuts) {
  // A text row (no prompt) starts with the special tokens the tokenizer puts before a text, as
  // TRL's SFT tokenizes it: Llama's BOS; none for GPT-2 or Qwen, so its first token is unscored.
  TokenizedSft s{ex.prompt.empty() ? tok.leading_special_tokens() : encode_prompt(tok, ex.prompt),
                 encode_response(tok, ex.prompt, ex.completion)};
  cut_to_fit(s, max_length, max_prompt_length, cuts);
  return s;
}

void cut_to_fit(TokenizedPair& p, int64_t max_length, int64_t max_prompt_length, RowCuts* cuts) {
  truncate(p.prompt, {&p.chosen, &p.rejected}, max_length, max_prompt_length, cuts);
}

void cut_to_fit(TokenizedSft& s, int64_t max_length, int64_t max_prompt_length, RowCuts* cuts) {
  truncate(s.prompt, {&s.completion}, max_length, max_prompt_length, cuts);
}

PreferenceBatch collate_pairs(const std::vector<const TokenizedPair*>& pairs, int64_t pad_id,
                              const torch::Device& device) {
  GANPO_ASSERT(!pairs.empty(), "empty batch");
  const int64_t B = static_cast<int64_t>(pairs.size());
  int64_t T = 0;
  for (auto* p : pairs) T = std::max(T, row_length(*p));
  auto ids = torch::full({2 * B, T}, pad_id, torch::kLong);
  auto attn = torch::zeros({2 * B, T}, torch::kFloat32);
  auto resp = torch::zeros({2 * B, T}, torch::kFloat32);
  int64_t tokens = 0, first_response = T;
  for (int64_t i = 0; i < B; ++i) {
    const auto* p = pairs[static_cast<size_t>(i)];
    first_response = std::min<int64_t>(first_response, static_cast<int64_t>(p->prompt.size()));
    fill_row(ids[i].data_ptr<int64_t>(), attn[i].data_ptr<float>(), resp[i].data_ptr<float>(),
             p->prompt, p->chosen);
    fill_row(ids[B + i].data_ptr<int64_t>(), attn[B + i].data_ptr<float>(),
             resp[B + i].data_ptr<float>(), p->prompt, p->rejected);
    tokens += static_cast<int64_t>(2 * p->prompt.size() + p->chosen.size() + p->rejected.size());
  }
  PreferenceBatch batch;
  batch.sequences = {upload(ids, device), upload(attn, device), upload(resp, device), tokens, first_response};
  batch.pairs = B;
  return batch;
}

SharedPromptBatch collate_shared_prompts(const std::vector<const TokenizedPair*>& pairs, int64_t pad_id,
                                         const torch::Device& device) {
  GANPO_ASSERT(!pairs.empty(), "empty batch");
  const int64_t B = static_cast<int64_t>(pairs.size());
  int64_t P = 0, R = 0, T = 0;
  for (auto* p : pairs) {
    const auto longest = static_cast<int64_t>(std::max(p->chosen.size(), p->rejected.size()));
    P = std::max<int64_t>(P, static_cast<int64_t>(p->prompt.size()));
    R = std::max<int64_t>(R, longest);
    T = std::max<int64_t>(T, static_cast<int64_t>(p->prompt.size()) + longest);  // collate_pairs' T
  }
  SharedPromptBatch b;
  b.standard_length = T;
  auto prompt_ids = torch::full({B, P}, pad_id, torch::kLong);
  auto prompt_mask = torch::zeros({B, P}, torch::kLong);
  auto prompt_pos = torch::zeros({B, P}, torch::kLong);
  auto response_ids = torch::full({2 * B, R}, pad_id, torch::kLong);
  auto response_mask = torch::zeros({2 * B, R}, torch::kFloat32);
  auto response_pos = torch::zeros({2 * B, R}, torch::kLong);
  auto key_mask = torch::zeros({2 * B, P + R}, torch::kLong);
  auto index = torch::zeros({2 * B, T}, torch::kLong);
  auto pid = prompt_ids.accessor<int64_t, 2>(), pm = prompt_mask.accessor<int64_t, 2>();
  auto pp = prompt_pos.accessor<int64_t, 2>(), rid = response_ids.accessor<int64_t, 2>();
  auto rm = response_mask.accessor<float, 2>();
  auto rp = response_pos.accessor<int64_t, 2>(), km = key_mask.accessor<int64_t, 2>(), ix = index.accessor<int64_t, 2>();
  for (int64_t i = 0; i < B; ++i) {
    const auto* p = pairs[static_cast<size_t>(i)];
    const auto plen = static_cast<int64_t>(p->prompt.size());
    if (plen == 0) b.every_prompt_has_a_token = false;
    if (plen != P) b.prompts_padded = true;
    for (int64_t t = 0; t < plen; ++t) {
      pid[i][P - plen + t] = p->prompt[static_cast<size_t>(t)];
      pm[i][P - plen + t] = 1;
      pp[i][P - plen + t] = t;
    }
    for (int64_t half = 0; half < 2; ++half) {
      const auto& response = half == 0 ? p->chosen : p->rejected;
      const int64_t row = half * B + i;
      for (int64_t t = 0; t < plen; ++t) km[row][P - plen + t] = 1, ix[row][t] = P - plen + t;
      for (int64_t j = 0; j < R; ++j) rp[row][j] = plen + j;
      for (int64_t j = 0; j < static_cast<int64_t>(response.size()); ++j) {
        rid[row][j] = response[static_cast<size_t>(j)];
        rm[row][j] = 1.f;
        km[row][P + j] = 1;
        ix[row][plen + j] = P + j;
      }
    }
  }
  b.prompt_ids = upload(prompt_ids, device);
  b.prompt_mask = upload(prompt_mask, device);
  b.prompt_positions = upload(prompt_pos, device);
  b.response_ids = upload(response_ids, device);
  b.response_mask = upload(response_mask, device);
  b.response_positions = upload(response_pos, device);
  b.key_mask = upload(key_mask, device);
  b.standard_index = upload(index, device);
  return b;
}

SequenceBatch collate_sft(const std::vector<const TokenizedSft*>& rows, int64_t pad_id,
                          const torch::Device& device) {
  GANPO_ASSERT(!rows.empty(), "empty batch");
  const int64_t N = static_cast<int64_t>(rows.size());
  int64_t T = 0;
  for (auto* r : rows) T = std::max(T, row_length(*r));
  auto ids = torch::full({N, T}, pad_id, torch::kLong);
  auto attn = torch::zeros({N, T}, torch::kFloat32);
  auto resp = torch::zeros({N, T}, torch::kFloat32);
  int64_t tokens = 0, first_response = T;
  for (int64_t i = 0; i < N; ++i) {
    const auto* r = rows[static_cast<size_t>(i)];
    first_response = std::min<int64_t>(first_response, static_cast<int64_t>(r->prompt.size()));
    fill_row(ids[i].data_ptr<int64_t>(), attn[i].data_ptr<float>(), resp[i].data_ptr<float>(),
             r->prompt, r->completion);
    tokens += row_length(*r);
  }
  return {upload(ids, device), upload(attn, device), upload(resp, device), tokens, first_response};
}

std::vector<int64_t> epoch_order(int64_t n, uint64_t seed, int64_t epoch) {
  std::vector<int64_t> order(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) order[static_cast<size_t>(i)] = i;
  std::mt19937_64 rng(seed * 1000003ULL + static_cast<uint64_t>(epoch));
  for (size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[rng() % i]);
  return order;
}

std::vector<int64_t> length_grouped_order(const std::vector<int64_t>& lengths, int64_t step_rows, uint64_t seed,
                                          int64_t epoch) {
  const auto n = static_cast<int64_t>(lengths.size());
  auto order = epoch_order(n, seed, epoch);
  if (n == 0) return order;
  step_rows = std::clamp<int64_t>(step_rows, 1, n);  // more rows a step than the epoch has: one block
  const int64_t mega = std::max<int64_t>(1, std::min<int64_t>(n / (4 * step_rows), 50)) * step_rows;
  auto length = [&](int64_t row) { return lengths[static_cast<size_t>(row)]; };
  size_t longest_group = 0;
  for (int64_t start = 0; start < n; start += mega) {
    const auto first = order.begin() + start, last = order.begin() + std::min(n, start + mega);
    std::stable_sort(first, last, [&](int64_t a, int64_t b) { return length(a) > length(b); });
    if (length(*first) > length(order[longest_group])) longest_group = static_cast<size_t>(start);
  }
  std::swap(order[0], order[longest_group]);
  return order;
}

int64_t row_length(const TokenizedPair& p) {
  return static_cast<int64_t>(p.prompt.size() + std::max(p.chosen.size(), p.rejected.size()));
}

int64_t row_length(const TokenizedSft& r) { return static_cast<int64_t>(r.prompt.size() + r.completion.size()); }

int64_t scored_response_tokens(const std::vector<int64_t>& prompt, const std::vector<int64_t>& response) {
  const auto n = static_cast<int64_t>(response.size());
  return prompt.empty() && n > 0 ? n - 1 : n;
}

PaddedExtent padded_extent(const TokenizedPair& p) {
  const auto prompt = static_cast<int64_t>(p.prompt.size());
  return {prompt, static_cast<int64_t>(std::max(p.chosen.size(), p.rejected.size())), row_length(p), prompt};
}

PaddedExtent padded_extent(const TokenizedSft& r) {
  const auto prompt = static_cast<int64_t>(r.prompt.size());
  return {prompt, static_cast<int64_t>(r.completion.size()), row_length(r), prompt};
}

}  // namespace ganpo
