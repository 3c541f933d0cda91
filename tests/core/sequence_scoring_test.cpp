#include "core/sequence_scoring.h"

#include <vector>

#include <gtest/gtest.h>
#include <torch/torch.h>

namespace ganpo {
namespace {

constexpr int64_t kScoringVocab = 300, kScoringPad = 0;

CausalLM tiny_model() {
  ModelConfig c;
  c.preset = "";
  c.arch = "llama";
  c.d_model = 32;
  c.n_layers = 2;
  c.n_heads = 4;
  c.max_seq_len = 64;
  torch::manual_seed(3);
  return CausalLM(resolve_model_shape(c, kScoringVocab));
}

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

}  // namespace
}  // namespace ganpo
