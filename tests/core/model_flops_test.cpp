// Model FLOPs: the forward count per token against hand-computed figures for the GPT-2 124M
// shape and a grouped-query Llama shape, how a micro-batch adds up its parts, and the GPU peak
// table's lookups.
#include "core/model_flops.h"

#include <gtest/gtest.h>

namespace ganpo {
namespace {

ModelShape gpt2_124m() {
  ModelConfig c;
  c.preset = "base";  // GPT-2: d 768, 12 layers, 12 heads, d_ff 3072
  return resolve_model_shape(c, 50257);
}

TEST(ModelFlops, Gpt2ForwardPerTokenIsTwiceItsMatricesPlusAttention) {
  const ModelShape s = gpt2_124m();
  // Matrices: 12 x (4 x 768^2 + 2 x 768 x 3072) + 50257 x 768 (head) = 123,532,032.
  const double matrices = 12.0 * (4 * 768.0 * 768 + 2 * 768.0 * 3072) + 50257.0 * 768;
  EXPECT_DOUBLE_EQ(matrices, 123532032.0);
  // Attention at T = 1024: 4 x 12 x 768 x 1024 (scores and weighted values).
  EXPECT_DOUBLE_EQ(forward_flops_per_token(s, 1024), 2 * matrices + 4.0 * 12 * 768 * 1024);
  EXPECT_DOUBLE_EQ(forward_flops_per_token(s, 1024, /*head=*/false), 2 * (matrices - 50257.0 * 768) + 4.0 * 12 * 768 * 1024);
}

TEST(ModelFlops, GroupedQueryKeysAndValuesCountTheirOwnWidth) {
  ModelConfig c;
  c.arch = "llama";
  c.d_model = 512, c.n_layers = 2, c.n_heads = 8, c.n_kv_heads = 2, c.d_ff = 1024;
  const ModelShape s = resolve_model_shape(c, 1000);
  // q and o: 512 x 512 each; k and v: 512 x 128 each (2 heads of 64); gated MLP: 3 x 512 x 1024.
  const double matrices = 2.0 * (2 * 512.0 * 512 + 2 * 512.0 * 128 + 3 * 512.0 * 1024) + 1000.0 * 512;
  EXPECT_DOUBLE_EQ(forward_flops_per_token(s, 100), 2 * matrices + 4.0 * 2 * 512 * 100);
}

TEST(ModelFlops, MicroBatchAddsPolicyReferenceAndCritics) {
  RunConfig c;
  c.ganpo.critic_hidden = 64, c.ganpo.critic_layers = 2, c.ganpo.critic_ffn_mult = 4, c.ganpo.critic_max_len = 48;
  const ModelShape s = gpt2_124m();
  const double fwd = forward_flops_per_token(s, 64), headless = forward_flops_per_token(s, 64, false);
  MicroBatchWork sft;
  sft.tokens = 500, sft.length = 64;
  EXPECT_DOUBLE_EQ(micro_batch_flops(c, s, sft), 3 * fwd * 500);
  sft.lora = true;
  EXPECT_DOUBLE_EQ(micro_batch_flops(c, s, sft), 2 * fwd * 500) << "frozen weights get no gradient";

  MicroBatchWork pref;
  pref.tokens = 500, pref.length = 64, pref.pairs = 4;
  EXPECT_DOUBLE_EQ(micro_batch_flops(c, s, pref), 4 * fwd * 500);
  pref.reference = false;
  EXPECT_DOUBLE_EQ(micro_batch_flops(c, s, pref), 3 * fwd * 500) << "precomputed reference log-probs, GANPO off";
  pref.reference = true, pref.reference_head = false, pref.critics = true;
  // Each critic: 3 x 3B rows (phase, forward + backward) + 2 x B rows (policy phase) of 48 positions.
  const double critic_position = 2.0 * (768 * 64 + 2 * (4 * 64 * 64 + 2 * 64 * 256)) + 4.0 * 2 * 64 * 48;
  EXPECT_DOUBLE_EQ(critic_forward_flops_per_position(c.ganpo, 768, 48), critic_position);
  EXPECT_DOUBLE_EQ(micro_batch_flops(c, s, pref), (3 * fwd + headless) * 500 + 2 * (9 + 2) * 4 * 48 * critic_position);
}

TEST(ModelFlops, PeakTableFindsGpusByNameAndNotCpus) {
  EXPECT_DOUBLE_EQ(peak_flops_per_second("NVIDIA H200", true), 989.4e12);
  EXPECT_DOUBLE_EQ(peak_flops_per_second("NVIDIA H200", false), 66.9e12);
  EXPECT_DOUBLE_EQ(peak_flops_per_second("NVIDIA A100-SXM4-80GB", true), 312e12);
  EXPECT_DOUBLE_EQ(peak_flops_per_second("NVIDIA H100 PCIe", true), 756e12) << "before the SXM H100";
  EXPECT_DOUBLE_EQ(peak_flops_per_second("NVIDIA H100 NVL", true), 835e12) << "before the SXM H100";
  EXPECT_DOUBLE_EQ(peak_flops_per_second("NVIDIA H100 80GB HBM3", true), 989.4e12);
  EXPECT_DOUBLE_EQ(peak_flops_per_second("NVIDIA GH200 480GB", true), 989.4e12);
  EXPECT_DOUBLE_EQ(peak_flops_per_second("NVIDIA L40S", true), 362e12) << "not the L4";
  EXPECT_EQ(peak_flops_per_second("Intel(R) Xeon(R) CPU", true), 0.0);
  EXPECT_EQ(peak_flops_per_second("", true), 0.0);
}

}  // namespace
}  // namespace ganpo
