#include "core/batching.h"

#include <algorithm>
#include <iterator>
#include <numeric>
#include <random>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "core/tokenizer.h"
#include "core/train/opo_losses.h"

namespace ganpo {
namespace {

const ByteTokenizer kTok;
constexpr int64_t kBos = 256, kEos = 257, kPad = 258;

std::vector<int64_t> bytes(const std::string& s) {
  std::vector<int64_t> out;
  for (unsigned char c : s) out.push_back(c);
  return out;
}

std::vector<int64_t> cat(std::vector<int64_t> a, const std::vector<int64_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

std::vector<int64_t> row_ids(const torch::Tensor& t, int64_t i) {
  auto r = t[i].contiguous();
  return std::vector<int64_t>(r.data_ptr<int64_t>(), r.data_ptr<int64_t>() + r.numel());
}

std::vector<float> row_f(const torch::Tensor& t, int64_t i) {
  auto r = t[i].contiguous();
  return std::vector<float>(r.data_ptr<float>(), r.data_ptr<float>() + r.numel());
}

// ---- tokenization and truncation -----------------------------------------------------------

TEST(BatchingTokenize, PairFramingWithoutTruncation) {
  auto p = tokenize_pair(kTok, {"ab", "xyz", "q"}, 100, 50);
  EXPECT_EQ(p.prompt, cat({kBos}, bytes("ab\n")));
  EXPECT_EQ(p.chosen, cat(bytes("xyz"), {kEos}));
  EXPECT_EQ(p.rejected, cat(bytes("q"), {kEos}));
}

TEST(BatchingTokenize, LongPromptKeepsItsLastTokens) {
  // prompt: [BOS] a..j \n = 12 tokens; chosen xyz+EOS = 4; rejected pq+EOS = 3.
  auto p = tokenize_pair(kTok, {"abcdefghij", "xyz", "pq"}, 10, 5);
  EXPECT_EQ(p.prompt, bytes("ghij\n"));  // the last 5 tokens (BOS is cut, as in TRL's keep_end)
  EXPECT_EQ(p.chosen, cat(bytes("xyz"), {kEos}));
  EXPECT_EQ(p.rejected, cat(bytes("pq"), {kEos}));
}

TEST(BatchingTokenize, ResponsesAreCutToFitMaxLength) {
  auto p = tokenize_pair(kTok, {"abcdefghij", "xyz", "pq"}, 8, 5);
  EXPECT_EQ(p.prompt, bytes("ghij\n"));
  EXPECT_EQ(p.chosen, bytes("xyz"));  // room 3: EOS is cut
  EXPECT_EQ(p.rejected, cat(bytes("pq"), {kEos}));
  EXPECT_LE(p.prompt.size() + std::max(p.chosen.size(), p.rejected.size()), 8u);
}

TEST(BatchingTokenize, ShortPromptIsKeptAndResponsesAreCut) {
  // 12 + 4 > 14 but the prompt (12) is within max_prompt_length (13): only the responses shrink.
  auto p = tokenize_pair(kTok, {"abcdefghij", "xyz", "pq"}, 14, 13);
  EXPECT_EQ(p.prompt, cat({kBos}, bytes("abcdefghij\n")));
  EXPECT_EQ(p.chosen, bytes("xy"));
  EXPECT_EQ(p.rejected, bytes("pq"));
}

TEST(BatchingTokenize, PromptIsOnlyCutWhenTheWholeIsTooLong) {
  // The prompt (12) exceeds max_prompt_length (5) but prompt + longest response (16) fits.
  auto p = tokenize_pair(kTok, {"abcdefghij", "xyz", "pq"}, 16, 5);
  EXPECT_EQ(p.prompt.size(), 12u);
  EXPECT_EQ(p.chosen.size(), 4u);
}

TEST(BatchingTokenize, CutsAreCountedByWhereTheyFell) {
  RowCuts cuts;
  tokenize_pair(kTok, {"abcdefghij", "xyz", "pq"}, 16, 5, &cuts);  // fits
  tokenize_pair(kTok, {"abcdefghij", "xyz", "pq"}, 10, 5, &cuts);  // the prompt's start
  tokenize_pair(kTok, {"abcdefghij", "xyz", "pq"}, 8, 5, &cuts);   // the prompt's start and chosen's end
  tokenize_pair(kTok, {"abcdefghij", "xyz", "pq"}, 14, 13, &cuts); // both responses' ends
  tokenize_sft(kTok, {"ab", "xyz"}, 5, 5, &cuts);                  // the completion's end
  EXPECT_EQ(cuts.rows, 5);
  EXPECT_EQ(cuts.cut, 4);
  EXPECT_EQ(cuts.prompts, 2);
  EXPECT_EQ(cuts.responses, 3);
}

TEST(BatchingTokenize, SftFraming) {
  auto s = tokenize_sft(kTok, {"hi", "ok"}, 100, 50);
  EXPECT_EQ(s.prompt, cat({kBos}, bytes("hi\n")));
  EXPECT_EQ(s.completion, cat(bytes("ok"), {kEos}));
  auto e = tokenize_sft(kTok, {"", "plain text"}, 100, 50);
  EXPECT_EQ(e.prompt, std::vector<int64_t>{kBos});
  EXPECT_EQ(e.completion, cat(bytes("plain text"), {kEos}));
  auto t = tokenize_sft(kTok, {"abcdefghij", "0123456789"}, 10, 4);
  EXPECT_EQ(t.prompt, bytes("hij\n"));
  EXPECT_EQ(t.completion, bytes("012345"));
}

// ---- collate -------------------------------------------------------------------------------

TEST(BatchingCollate, PairsLayoutPaddingAndMasks) {
  TokenizedPair a{{kBos, 1, 2}, {10, 11, kEos}, {20, kEos}};
  TokenizedPair b{{kBos, 3}, {30, kEos}, {40, 41, 42, 43, kEos}};
  auto batch = collate_pairs({&a, &b}, kPad, torch::kCPU);
  const auto& s = batch.sequences;
  EXPECT_EQ(batch.pairs, 2);
  // T = max(3 + 3, 2 + 5) = 7; rows: a.chosen, b.chosen, a.rejected, b.rejected.
  ASSERT_EQ(s.input_ids.sizes(), torch::IntArrayRef({4, 7}));
  EXPECT_EQ(s.input_ids.scalar_type(), torch::kLong);
  EXPECT_EQ(s.attention_mask.scalar_type(), torch::kFloat32);
  EXPECT_EQ(s.response_mask.scalar_type(), torch::kFloat32);

  EXPECT_EQ(row_ids(s.input_ids, 0), (std::vector<int64_t>{kBos, 1, 2, 10, 11, kEos, kPad}));
  EXPECT_EQ(row_ids(s.input_ids, 1), (std::vector<int64_t>{kBos, 3, 30, kEos, kPad, kPad, kPad}));
  EXPECT_EQ(row_ids(s.input_ids, 2), (std::vector<int64_t>{kBos, 1, 2, 20, kEos, kPad, kPad}));
  EXPECT_EQ(row_ids(s.input_ids, 3), (std::vector<int64_t>{kBos, 3, 40, 41, 42, 43, kEos}));

  EXPECT_EQ(row_f(s.attention_mask, 0), (std::vector<float>{1, 1, 1, 1, 1, 1, 0}));
  EXPECT_EQ(row_f(s.attention_mask, 1), (std::vector<float>{1, 1, 1, 1, 0, 0, 0}));
  EXPECT_EQ(row_f(s.attention_mask, 2), (std::vector<float>{1, 1, 1, 1, 1, 0, 0}));
  EXPECT_EQ(row_f(s.attention_mask, 3), (std::vector<float>{1, 1, 1, 1, 1, 1, 1}));

  EXPECT_EQ(row_f(s.response_mask, 0), (std::vector<float>{0, 0, 0, 1, 1, 1, 0}));
  EXPECT_EQ(row_f(s.response_mask, 1), (std::vector<float>{0, 0, 1, 1, 0, 0, 0}));
  EXPECT_EQ(row_f(s.response_mask, 2), (std::vector<float>{0, 0, 0, 1, 1, 0, 0}));
  EXPECT_EQ(row_f(s.response_mask, 3), (std::vector<float>{0, 0, 1, 1, 1, 1, 1}));

  EXPECT_EQ(s.tokens, 6 + 4 + 5 + 7);
  EXPECT_EQ(s.tokens, static_cast<int64_t>(s.attention_mask.sum().item<float>()));
  EXPECT_EQ(s.first_response, 2);  // b's prompt is the shorter one
}

TEST(BatchingCollate, SingleRowHasNoPadding) {
  TokenizedPair a{{kBos, 5}, {6, kEos}, {7, 8, kEos}};
  auto batch = collate_pairs({&a}, kPad, torch::kCPU);
  EXPECT_EQ(batch.sequences.input_ids.sizes(), torch::IntArrayRef({2, 5}));
  EXPECT_EQ(row_ids(batch.sequences.input_ids, 0), (std::vector<int64_t>{kBos, 5, 6, kEos, kPad}));
  EXPECT_EQ(row_ids(batch.sequences.input_ids, 1), (std::vector<int64_t>{kBos, 5, 7, 8, kEos}));
}

TEST(BatchingCollate, SftLayout) {
  TokenizedSft a{{kBos, 1}, {2, 3, kEos}};
  TokenizedSft b{{kBos}, {4, kEos}};
  auto s = collate_sft({&a, &b}, kPad, torch::kCPU);
  ASSERT_EQ(s.input_ids.sizes(), torch::IntArrayRef({2, 5}));
  EXPECT_EQ(row_ids(s.input_ids, 0), (std::vector<int64_t>{kBos, 1, 2, 3, kEos}));
  EXPECT_EQ(row_ids(s.input_ids, 1), (std::vector<int64_t>{kBos, 4, kEos, kPad, kPad}));
  EXPECT_EQ(row_f(s.attention_mask, 1), (std::vector<float>{1, 1, 1, 0, 0}));
  EXPECT_EQ(row_f(s.response_mask, 0), (std::vector<float>{0, 0, 1, 1, 1}));
  EXPECT_EQ(row_f(s.response_mask, 1), (std::vector<float>{0, 1, 1, 0, 0}));
  EXPECT_EQ(s.tokens, 8);
  EXPECT_EQ(s.first_response, 1);
}

// The tokens a row's loss scores, counted on the host, are those the response mask lets
// response_logps score: every response token but a first one no prompt token predicts.
TEST(BatchingCollate, ScoredResponseTokensAreTheMasksScoredPositions) {
  TokenizedSft a{{kBos, 1}, {2, 3, kEos}}, b{{}, {4, 5, kEos}}, c{{}, {}}, d{{kBos}, {}};
  const auto s = collate_sft({&a, &b, &c, &d}, kPad, torch::kCPU);
  const auto T = s.input_ids.size(1);
  const auto scored = response_logps(torch::zeros({4, T, kPad + 1}), s.input_ids, s.response_mask, 0).count;
  std::vector<int64_t> counted;
  for (const auto* r : {&a, &b, &c, &d}) counted.push_back(scored_response_tokens(r->prompt, r->completion));
  EXPECT_EQ(counted, (std::vector<int64_t>{3, 2, 0, 0}));
  for (int64_t i = 0; i < 4; ++i) EXPECT_EQ(scored[i].item<float>(), static_cast<float>(counted[static_cast<size_t>(i)])) << i;
}

TEST(BatchingCollate, EmptyBatchIsAnError) {
  EXPECT_ANY_THROW(collate_pairs({}, kPad, torch::kCPU));
  EXPECT_ANY_THROW(collate_sft({}, kPad, torch::kCPU));
}

// ---- epoch order ---------------------------------------------------------------------------

TEST(BatchingEpochOrder, IsADeterministicPermutation) {
  for (int64_t n : {0, 1, 2, 7, 100}) {
    auto o = epoch_order(n, 42, 0);
    ASSERT_EQ(static_cast<int64_t>(o.size()), n);
    auto sorted = o;
    std::sort(sorted.begin(), sorted.end());
    std::vector<int64_t> iota(static_cast<size_t>(n));
    std::iota(iota.begin(), iota.end(), 0);
    EXPECT_EQ(sorted, iota) << n;
    EXPECT_EQ(o, epoch_order(n, 42, 0)) << n;
  }
  auto base = epoch_order(100, 42, 0);
  EXPECT_NE(base, epoch_order(100, 42, 1));  // a new shuffle each epoch
  EXPECT_NE(base, epoch_order(100, 43, 0));  // and per seed
  std::vector<int64_t> iota(100);
  std::iota(iota.begin(), iota.end(), 0);
  EXPECT_NE(base, iota);  // actually shuffled
}

// ---- group by length -----------------------------------------------------------------------

std::vector<int64_t> random_lengths(int64_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int64_t> lengths;
  for (int64_t i = 0; i < n; ++i) lengths.push_back(16 + static_cast<int64_t>(rng() % 500));
  return lengths;
}

// Rows a batch pads to: every row as long as the batch's longest.
int64_t padded_tokens(const std::vector<int64_t>& order, const std::vector<int64_t>& lengths, int64_t batch) {
  int64_t total = 0;
  for (size_t start = 0; start < order.size(); start += static_cast<size_t>(batch)) {
    const size_t end = std::min(order.size(), start + static_cast<size_t>(batch));
    int64_t longest = 0;
    for (size_t i = start; i < end; ++i) longest = std::max(longest, lengths[static_cast<size_t>(order[i])]);
    total += longest * static_cast<int64_t>(end - start);
  }
  return total;
}

TEST(BatchingLengthGrouped, SortsEachMegaBatchOfTheShuffleLongestFirst) {
  // 1000 rows, 4 rows a step: mega-batches of min(1000 / 16, 50) x 4 = 200 rows.
  const auto lengths = random_lengths(1000, 7);
  const auto shuffled = epoch_order(1000, 42, 3);
  auto grouped = length_grouped_order(lengths, 4, 42, 3);
  ASSERT_EQ(grouped.size(), shuffled.size());
  // The epoch's longest row first.
  const int64_t longest = *std::max_element(lengths.begin(), lengths.end());
  EXPECT_EQ(lengths[static_cast<size_t>(grouped[0])], longest);
  for (size_t start = 0; start < 1000; start += 200) {
    std::vector<int64_t> mine(grouped.begin() + static_cast<long>(start), grouped.begin() + static_cast<long>(start + 200));
    std::vector<int64_t> theirs(shuffled.begin() + static_cast<long>(start), shuffled.begin() + static_cast<long>(start + 200));
    // The same rows as the shuffle's block, but for the one swapped with the first place.
    std::sort(mine.begin(), mine.end());
    std::sort(theirs.begin(), theirs.end());
    std::vector<int64_t> differ;
    std::set_symmetric_difference(mine.begin(), mine.end(), theirs.begin(), theirs.end(), std::back_inserter(differ));
    EXPECT_LE(differ.size(), 2u) << "block at " << start;
    // Longest first within the block (from its second row: the first may be the swapped one).
    for (size_t i = start + 2; i < start + 200; ++i)
      EXPECT_GE(lengths[static_cast<size_t>(grouped[i - 1])], lengths[static_cast<size_t>(grouped[i])]) << i;
  }
  EXPECT_EQ(grouped, length_grouped_order(lengths, 4, 42, 3)) << "the same order for the same seed and epoch";
  EXPECT_NE(grouped, length_grouped_order(lengths, 4, 42, 4)) << "a new one each epoch";
  // Batches of 4 pad far less than the shuffle's (padding: padded less real tokens).
  const int64_t real = std::accumulate(lengths.begin(), lengths.end(), int64_t{0});
  const int64_t grouped_padding = padded_tokens(grouped, lengths, 4) - real;
  const int64_t shuffled_padding = padded_tokens(shuffled, lengths, 4) - real;
  EXPECT_LT(grouped_padding, shuffled_padding / 10) << grouped_padding << " against " << shuffled_padding;
}

TEST(BatchingLengthGrouped, TiesKeepTheShuffledOrderAndSmallSetsAreOneBlock) {
  // 6 rows, 4 a step: 6 / 16 = 0 mega-batches of steps, so one block of 4 rows, then 2.
  const std::vector<int64_t> lengths{5, 9, 5, 9, 5, 7};
  const auto shuffled = epoch_order(6, 1, 0);
  const auto grouped = length_grouped_order(lengths, 4, 1, 0);
  std::vector<int64_t> first(shuffled.begin(), shuffled.begin() + 4), expected = first;
  std::stable_sort(expected.begin(), expected.end(), [&](int64_t a, int64_t b) { return lengths[a] > lengths[b]; });
  std::vector<int64_t> second(shuffled.begin() + 4, shuffled.end());
  std::stable_sort(second.begin(), second.end(), [&](int64_t a, int64_t b) { return lengths[a] > lengths[b]; });
  // The first block's first row stays first unless the second block's first is longer (then the
  // two swap).
  if (lengths[second[0]] > lengths[expected[0]]) std::swap(expected[0], second[0]);
  expected.insert(expected.end(), second.begin(), second.end());
  EXPECT_EQ(grouped, expected);
  EXPECT_TRUE(length_grouped_order({}, 4, 1, 0).empty());
  EXPECT_EQ(length_grouped_order({3}, 4, 1, 0), std::vector<int64_t>{0});
}

// transformers' get_length_grouped_indices, step by step as it is written there, over our shuffle.
std::vector<int64_t> transformers_grouping(const std::vector<int64_t>& lengths, int64_t batch,
                                           const std::vector<int64_t>& indices) {
  const int64_t n = static_cast<int64_t>(lengths.size());
  int64_t mult = std::min<int64_t>(n / (batch * 4), 50);
  if (mult == 0) mult = 1;
  const int64_t size = mult * batch;
  std::vector<std::vector<int64_t>> megabatches;
  for (int64_t i = 0; i < n; i += size)
    megabatches.emplace_back(indices.begin() + i, indices.begin() + std::min(n, i + size));
  for (auto& m : megabatches)
    std::stable_sort(m.begin(), m.end(), [&](int64_t a, int64_t b) { return lengths[a] > lengths[b]; });
  size_t max_idx = 0;  // argmax: the first of equal maxima
  for (size_t k = 1; k < megabatches.size(); ++k)
    if (lengths[megabatches[k][0]] > lengths[megabatches[max_idx][0]]) max_idx = k;
  std::swap(megabatches[0][0], megabatches[max_idx][0]);
  std::vector<int64_t> out;
  for (const auto& m : megabatches) out.insert(out.end(), m.begin(), m.end());
  return out;
}

TEST(BatchingLengthGrouped, EqualsTransformersGroupingOfTheSameShuffle) {
  // Few distinct lengths, so blocks tie on their maxima and rows tie within blocks.
  for (const int64_t n : {1, 5, 17, 64, 333, 1000}) {
    std::mt19937_64 rng(static_cast<uint64_t>(n));
    std::vector<int64_t> lengths;
    for (int64_t i = 0; i < n; ++i) lengths.push_back(static_cast<int64_t>(rng() % 6));
    for (const int64_t batch : {1, 3, 8}) {
      for (const int64_t epoch : {0, 1}) {
        EXPECT_EQ(length_grouped_order(lengths, batch, 9, epoch),
                  transformers_grouping(lengths, batch, epoch_order(n, 9, epoch)))
            << n << " rows, " << batch << " a step, epoch " << epoch;
      }
    }
  }
}

TEST(BatchingLengthGrouped, RowLengthIsThePromptAndTheLongerResponse) {
  EXPECT_EQ(row_length(TokenizedPair{{1, 2, 3}, {4, 5}, {6, 7, 8, 9}}), 7);
  EXPECT_EQ(row_length(TokenizedPair{{1}, {4, 5, 6}, {7}}), 4);
  EXPECT_EQ(row_length(TokenizedSft{{1, 2}, {3, 4, 5}}), 5);
}

// A batch's padded extent is what both layouts pad to: the shared one's prompts and responses
// (collate_shared_prompts' P and R), the plain one's rows (collate_pairs' T) and the positions
// its output head runs on (T - first_response).
TEST(BatchingLengthGrouped, APaddedExtentIsWhatTheCollatedBatchesPadTo) {
  const TokenizedPair long_prompt{{1, 2, 3, 4, 5}, {6}, {7}}, long_response{{1}, {2, 3, 4, 5}, {6}};
  PaddedExtent e = padded_extent(long_prompt);
  EXPECT_EQ(e.prompt, 5);
  EXPECT_EQ(e.response, 1);
  EXPECT_EQ(e.row, 6);
  EXPECT_EQ(e.head(), 1);
  e.include(padded_extent(long_response));
  const auto shared = collate_shared_prompts({&long_prompt, &long_response}, 0, torch::kCPU);
  const auto plain = collate_pairs({&long_prompt, &long_response}, 0, torch::kCPU);
  EXPECT_EQ(e.prompt, shared.prompt_ids.size(1));
  EXPECT_EQ(e.response, shared.response_ids.size(1));
  EXPECT_EQ(e.row, plain.sequences.input_ids.size(1));
  EXPECT_EQ(e.row, shared.standard_length);
  EXPECT_EQ(e.head(), plain.sequences.input_ids.size(1) - plain.sequences.first_response);
  EXPECT_EQ(e.head(), 5);
  // Neither row alone reaches the pair's extent, which holds each.
  EXPECT_FALSE(e.within(padded_extent(long_prompt)));
  EXPECT_FALSE(e.within(padded_extent(long_response)));
  EXPECT_TRUE(padded_extent(long_response).within(e));
  EXPECT_TRUE(PaddedExtent{}.within(padded_extent(long_prompt)));
  // The same row length with a shorter prompt runs the head longer.
  EXPECT_FALSE(padded_extent(TokenizedPair{{1}, {2, 3, 4, 5, 6}, {7}}).within(padded_extent(long_prompt)));

  const TokenizedSft short_prompt{{1}, {2, 3, 4, 5}}, long_completion{{1, 2}, {3, 4, 5, 6, 7}};
  PaddedExtent s = padded_extent(short_prompt);
  s.include(padded_extent(long_completion));
  const auto sft = collate_sft({&short_prompt, &long_completion}, 0, torch::kCPU);
  EXPECT_EQ(s.row, sft.input_ids.size(1));
  EXPECT_EQ(s.head(), sft.input_ids.size(1) - sft.first_response);
  EXPECT_EQ(s.response, 5);
}

}  // namespace
}  // namespace ganpo
