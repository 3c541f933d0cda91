#include "core/sequence_scoring.h"

#include <functional>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <torch/torch.h>

namespace ganpo {
namespace {

constexpr int64_t kScoringVocab = 300, kScoringPad = 0;

// A 2-layer, 32-wide model of `arch`; `edit` changes its shape (a window, a cap) before it is built.
CausalLM tiny_model(const std::string& arch = "llama", int64_t kv_heads = 0,
                    const std::function<void(ModelShape&)>& edit = {}) {
  ModelConfig c;
  c.preset = "";
  c.arch = arch;
  c.d_model = 32;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = kv_heads;
  c.max_seq_len = 64;
  ModelShape shape = resolve_model_shape(c, kScoringVocab);
  if (edit) edit(shape);
  torch::manual_seed(3);
  return CausalLM(shape);
}

// An architecture to score on: its family, its key/value heads (0 = one per head) and what
// the test changes in its shape.
struct Case {
  const char* arch;
  int64_t kv_heads;
  std::function<void(ModelShape&)> edit;
};

std::vector<int64_t> ids(int64_t start, int64_t n) {
  std::vector<int64_t> v;
  for (int64_t i = 0; i < n; ++i) v.push_back(1 + (start + 7 * i) % (kScoringVocab - 1));
  return v;
}

// Scoring from the first response position gives the same log-probs and the same gradients as
// scoring the full logits: the positions it skips are never scored.
TEST(SequenceScoring, HeadFromTheFirstResponseEqualsTheFullForward) {
  auto model = tiny_model();
  TokenizedPair a{ids(1, 9), ids(50, 4), ids(60, 6)};
  TokenizedPair b{ids(2, 5), ids(70, 7), ids(80, 2)};
  auto batch = collate_pairs({&a, &b}, kScoringPad, torch::kCPU).sequences;
  ASSERT_EQ(batch.first_response, 5);

  auto scored = score_sequences(model, batch);
  EXPECT_EQ(scored.out.logits_from, 4);
  EXPECT_EQ(scored.out.logits.size(1), batch.input_ids.size(1) - 4);
  EXPECT_EQ(scored.out.hidden.size(1), batch.input_ids.size(1));
  scored.logps.sum.sum().backward();
  std::vector<torch::Tensor> grads;
  for (auto& p : model->parameters()) grads.push_back(p.grad().clone()), p.mutable_grad().zero_();

  auto full = response_logps(model->forward(batch.input_ids).logits, batch.input_ids, batch.response_mask);
  full.sum.sum().backward();
  EXPECT_TRUE(torch::allclose(scored.logps.sum, full.sum, 1e-5, 1e-5));
  EXPECT_TRUE(torch::equal(scored.logps.count, full.count));
  auto params = model->parameters();
  for (size_t i = 0; i < params.size(); ++i)
    EXPECT_TRUE(torch::allclose(grads[i], params[i].grad(), 1e-5, 1e-6)) << "parameter " << i;
}

// Prefix sharing (train.prefix_sharing): each prompt runs once and both responses attend to its
// keys. Same log-probs, same hidden states on every real position and the same gradients as the
// plain [chosen; rejected] pass, for prompts and responses of different lengths, on a RoPE model
// with grouped keys (Llama), one with learned positions and biases (GPT-2) and one with a sliding
// window shorter than the rows (Mistral).
TEST(SequenceScoring, SharingEachPromptGivesThePlainPassesNumbersAndGradients) {
  const auto window_of_6 = [](ModelShape& shape) {
    shape.sliding_window = 6;
    shape.sliding_layers.assign(static_cast<size_t>(shape.n_layers), true);
  };
  for (const Case& c : {Case{"llama", 2, {}}, Case{"gpt2", 0, {}}, Case{"mistral", 0, window_of_6}}) {
    SCOPED_TRACE(c.arch);
    auto model = tiny_model(c.arch, c.kv_heads, c.edit);
    TokenizedPair a{ids(1, 9), ids(50, 4), ids(60, 6)};
    TokenizedPair b{ids(2, 5), ids(70, 7), ids(80, 2)};
    TokenizedPair d{ids(3, 1), ids(90, 3), ids(95, 8)};
    const std::vector<const TokenizedPair*> rows{&a, &b, &d};
    auto plain_batch = collate_pairs(rows, kScoringPad, torch::kCPU).sequences;
    auto shared_batch = collate_shared_prompts(rows, kScoringPad, torch::kCPU);
    ASSERT_TRUE(shared_batch.every_prompt_has_a_token);
    EXPECT_EQ(shared_batch.prompt_ids.sizes(), (std::vector<int64_t>{3, 9}));
    EXPECT_EQ(shared_batch.response_ids.sizes(), (std::vector<int64_t>{6, 8}));

    // A weighted sum of the hidden states on real tokens stands in for the critics' use of them.
    auto weights = torch::randn({6, plain_batch.input_ids.size(1), 32}) * plain_batch.attention_mask.unsqueeze(-1);
    auto grads_of = [&](const ScoredSequences& s) {
      (s.logps.sum.sum() + (s.out.hidden * weights).sum()).backward();
      std::vector<torch::Tensor> g;
      for (auto& p : model->parameters()) g.push_back(p.grad().clone()), p.mutable_grad().zero_();
      return g;
    };
    auto plain = score_sequences(model, plain_batch);
    const auto plain_grads = grads_of(plain);
    auto shared = score_pairs_sharing_prompts(model, shared_batch, true, true);
    const auto shared_grads = grads_of(shared);

    EXPECT_TRUE(torch::allclose(shared.logps.sum, plain.logps.sum, 1e-4, 1e-5))
        << shared.logps.sum << plain.logps.sum;
    EXPECT_TRUE(torch::equal(shared.logps.count, plain.logps.count));
    const auto real = plain_batch.attention_mask.unsqueeze(-1);
    EXPECT_TRUE(torch::allclose(shared.out.hidden * real, plain.out.hidden * real, 1e-4, 1e-5));
    auto params = model->parameters();
    // Within float32 rounding of the gradient's own scale: an embedding table's gradient sums
    // many positions, in another order in each pass (LibTorch 2.x's fused attention differs more
    // there than the explicit products do).
    for (size_t i = 0; i < params.size(); ++i) {
      const double scale = plain_grads[i].abs().max().item<double>();
      EXPECT_LE((shared_grads[i] - plain_grads[i]).abs().max().item<double>(), 1e-5 * scale + 1e-5)
          << "parameter " << i << " (largest gradient " << scale << ")";
    }

    // Hidden states only (a precomputed reference): no log-probs, the same states.
    torch::NoGradGuard guard;
    auto latents_only = score_pairs_sharing_prompts(model, shared_batch, false, true);
    EXPECT_FALSE(latents_only.logps.sum.defined());
    EXPECT_TRUE(torch::allclose(latents_only.out.hidden * real, plain.out.hidden * real, 1e-4, 1e-5));
  }
}

// Prompts of one length skip the key mask (plain causal attention in the prompts' pass).
TEST(SequenceScoring, SharingPromptsOfOneLengthGivesThePlainPassesNumbers) {
  auto model = tiny_model("llama", 2);
  TokenizedPair a{ids(1, 7), ids(50, 4), ids(60, 6)};
  TokenizedPair b{ids(2, 7), ids(70, 9), ids(80, 2)};
  auto shared_batch = collate_shared_prompts({&a, &b}, kScoringPad, torch::kCPU);
  EXPECT_FALSE(shared_batch.prompts_padded);
  ASSERT_TRUE(can_share_prompts(shared_batch, model));
  torch::NoGradGuard guard;
  auto plain = score_sequences(model, collate_pairs({&a, &b}, kScoringPad, torch::kCPU).sequences);
  auto shared = score_pairs_sharing_prompts(model, shared_batch, true, false);
  EXPECT_TRUE(torch::allclose(shared.logps.sum, plain.logps.sum, 1e-4, 1e-5)) << shared.logps.sum << plain.logps.sum;
}

// Long prompts with short answers beside short prompts with long answers: the padded shared
// layout (B P + 2B R) would be larger than the plain one (2B T), so the batch is not shared.
TEST(SequenceScoring, ABatchThatWouldBeLargerSharedIsNotShared) {
  auto model = tiny_model();
  TokenizedPair a{ids(1, 20), ids(50, 2), ids(60, 2)};
  TokenizedPair b{ids(2, 1), ids(70, 20), ids(80, 20)};
  auto batch = collate_shared_prompts({&a, &b}, kScoringPad, torch::kCPU);
  EXPECT_TRUE(batch.prompts_padded);
  EXPECT_FALSE(can_share_prompts(batch, model));
}

// Evaluations' scoring (score_pair_logps): the shared pass where a batch allows it, the plain one
// where it does not or sharing is off; the same log-probs up to rounding either way.
TEST(SequenceScoring, PairLogpsShareWhereTheBatchAllowsIt) {
  auto model = tiny_model("llama", 2);
  torch::NoGradGuard guard;
  TokenizedPair a{ids(1, 9), ids(50, 4), ids(60, 6)};
  TokenizedPair b{ids(2, 5), ids(70, 7), ids(80, 2)};
  const std::vector<const TokenizedPair*> rows{&a, &b};
  auto shared_batch = collate_shared_prompts(rows, kScoringPad, torch::kCPU);
  ASSERT_TRUE(can_share_prompts(shared_batch, model));
  const auto plain_batch = collate_pairs(rows, kScoringPad, torch::kCPU).sequences;
  auto plain = score_sequences(model, plain_batch).logps;
  auto shared = score_pairs_sharing_prompts(model, shared_batch, true, false).logps;
  auto on = score_pair_logps(model, plain_batch, &shared_batch);
  auto off = score_pair_logps(model, plain_batch, nullptr);
  EXPECT_TRUE(torch::equal(on.sum, shared.sum));
  EXPECT_TRUE(torch::equal(off.sum, plain.sum));
  EXPECT_TRUE(torch::equal(on.count, plain.count));
  EXPECT_TRUE(torch::allclose(on.sum, off.sum, 1e-4, 1e-5)) << on.sum << off.sum;
  // A batch the shared layout would not pay for takes the plain pass with sharing on.
  TokenizedPair c{ids(1, 20), ids(50, 2), ids(60, 2)};
  TokenizedPair d{ids(2, 1), ids(70, 20), ids(80, 20)};
  const std::vector<const TokenizedPair*> unfit{&c, &d};
  const auto unfit_plain = collate_pairs(unfit, kScoringPad, torch::kCPU).sequences;
  const auto unfit_shared = collate_shared_prompts(unfit, kScoringPad, torch::kCPU);
  EXPECT_TRUE(torch::equal(score_pair_logps(model, unfit_plain, &unfit_shared).sum,
                           score_sequences(model, unfit_plain).logps.sum));
}

TEST(SequenceScoring, SharedPromptLayoutMarksAnEmptyPrompt) {
  TokenizedPair a{{}, ids(50, 4), ids(60, 6)};
  EXPECT_FALSE(collate_shared_prompts({&a}, kScoringPad, torch::kCPU).every_prompt_has_a_token);
}

TEST(SequenceScoring, EmptyPromptScoresFromTheStart) {
  auto model = tiny_model();
  TokenizedSft row{{}, ids(5, 6)};
  auto batch = collate_sft({&row}, kScoringPad, torch::kCPU);
  ASSERT_EQ(batch.first_response, 0);
  auto scored = score_sequences(model, batch);
  EXPECT_EQ(scored.out.logits_from, 0);
  auto full = response_logps(model->forward(batch.input_ids).logits, batch.input_ids, batch.response_mask);
  EXPECT_TRUE(torch::allclose(scored.logps.sum, full.sum, 1e-5, 1e-5));
  EXPECT_EQ(scored.logps.count.item<float>(), 5.f);  // position 0 has no prediction
}

// train.chunked_logps: the response log-probs through the chunked head, from the hidden states,
// equal the plain head's (values and every parameter's gradient), in the plain pass and the
// shared-prompt one, on an untied head with grouped keys (Llama), a head tied to the embedding
// (GPT-2) and a soft-capped head (Gemma 2, cap 5 so it bites); the hidden states are the same.
TEST(SequenceScoring, TheChunkedHeadGivesThePlainHeadsNumbersAndGradients) {
  const auto cap_of_5 = [](ModelShape& shape) { shape.final_softcap = 5.0; };
  for (const Case& c : {Case{"llama", 2, {}}, Case{"gpt2", 0, {}}, Case{"gemma2", 2, cap_of_5}}) {
    SCOPED_TRACE(c.arch);
    auto model = tiny_model(c.arch, c.kv_heads, c.edit);
    TokenizedPair a{ids(1, 9), ids(50, 4), ids(60, 6)};
    TokenizedPair b{ids(2, 5), ids(70, 7), ids(80, 2)};
    const std::vector<const TokenizedPair*> rows{&a, &b};
    const auto plain_batch = collate_pairs(rows, kScoringPad, torch::kCPU).sequences;
    const auto shared_batch = collate_shared_prompts(rows, kScoringPad, torch::kCPU);
    auto weights = torch::randn({4, plain_batch.input_ids.size(1), 32}) * plain_batch.attention_mask.unsqueeze(-1);
    auto grads_of = [&](const ScoredSequences& s) {
      (s.logps.sum.sum() + (s.out.hidden * weights).sum()).backward();
      std::vector<torch::Tensor> g;
      for (auto& p : model->parameters()) g.push_back(p.grad().clone()), p.mutable_grad().zero_();
      return g;
    };
    for (bool shared : {false, true}) {
      SCOPED_TRACE(shared ? "shared prompts" : "plain pass");
      auto score = [&] {
        return shared ? score_pairs_sharing_prompts(model, shared_batch, true, true) : score_sequences(model, plain_batch);
      };
      model->set_chunked_logps(false);
      const auto full = score();
      const auto full_grads = grads_of(full);
      model->set_chunked_logps(true);
      const auto chunked = score();
      const auto chunked_grads = grads_of(chunked);
      EXPECT_TRUE(torch::allclose(chunked.logps.sum, full.logps.sum, 1e-5, 1e-5)) << chunked.logps.sum << full.logps.sum;
      EXPECT_TRUE(torch::equal(chunked.logps.count, full.logps.count));
      EXPECT_TRUE(torch::allclose(chunked.out.hidden, full.out.hidden, 1e-6, 1e-6));
      auto params = model->parameters();
      for (size_t i = 0; i < params.size(); ++i) {
        const double scale = full_grads[i].abs().max().item<double>();
        EXPECT_LE((chunked_grads[i] - full_grads[i]).abs().max().item<double>(), 1e-5 * scale + 1e-6)
            << "parameter " << i << " (largest gradient " << scale << ")";
      }
    }
  }
  // Responses with no token (all cut by max_length): nothing scored, in either pass.
  {
    auto m = tiny_model();
    m->set_chunked_logps(true);
    TokenizedPair a{ids(1, 5), {}, {}};
    TokenizedPair b{ids(2, 3), {}, {}};
    torch::NoGradGuard guard;
    const auto shared_batch = collate_shared_prompts({&a, &b}, kScoringPad, torch::kCPU);
    const auto shared = score_pairs_sharing_prompts(m, shared_batch, true, false).logps;
    const auto plain = score_sequences(m, collate_pairs({&a, &b}, kScoringPad, torch::kCPU).sequences).logps;
    EXPECT_EQ(shared.count.sum().item<float>(), 0.f);
    EXPECT_EQ(shared.sum.abs().sum().item<float>(), 0.f);
    EXPECT_EQ(plain.count.sum().item<float>(), 0.f);
  }
  // An empty prompt scores from position 0 on, as the plain head does.
  auto model = tiny_model();
  TokenizedSft row{{}, ids(5, 6)};
  auto batch = collate_sft({&row}, kScoringPad, torch::kCPU);
  torch::NoGradGuard guard;
  const auto full = score_sequences(model, batch).logps;
  model->set_chunked_logps(true);
  const auto chunked = score_sequences(model, batch).logps;
  EXPECT_TRUE(torch::allclose(chunked.sum, full.sum, 1e-5, 1e-5));
  EXPECT_EQ(chunked.count.item<float>(), 5.f);
}

}  // namespace
}  // namespace ganpo
