// The torch-free training memory estimate, checked against a hand computation for the tiny
// preset, and its critic parameter count against the real LatentCritic.
#include "core/memory_estimate.h"

#include <limits>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "core/config.h"
#include "core/critic.h"

namespace ganpo {
namespace {

// The demo preset's shape of run: tiny model, GANPO with 64-wide one-layer critics.
RunConfig tiny_demo_config() {
  RunConfig c;
  c.stage = "preference";
  c.model.preset = "tiny";
  c.data.max_length = 200;
  c.train.per_device_train_batch_size = 16;
  c.train.precision = "fp32";
  c.ganpo.enabled = true;
  c.ganpo.critic_hidden = 64;
  c.ganpo.critic_layers = 1;
  c.ganpo.critic_heads = 4;
  c.ganpo.critic_ffn_mult = 4;
  c.ganpo.critic_max_len = 2048;
  return c;
}

TEST(MemoryEstimate, TinyPresetMatchesHandComputation) {
  const MemoryEstimate e = estimate_training_memory(tiny_demo_config());

  // Tiny llama: d 128, 4 layers, 4 heads (no GQA), d_ff round_up(128*8/3, 64) = 384, vocab 259,
  // tied embeddings. Per layer: q,k,v,o 4*128*128 = 65536; SwiGLU 3*128*384 = 147456; two
  // RMSNorms 256 -> 213248. Total 4*213248 + embeddings 259*128 + final norm 128 = 886272.
  const int64_t P = 886272;
  EXPECT_EQ(e.parameters, P);
  EXPECT_EQ(e.weights_bytes, P * 4);
  EXPECT_EQ(e.gradients_bytes, P * 4);
  EXPECT_EQ(e.optimizer_bytes, P * 8);
  EXPECT_EQ(e.reference_bytes, P * 4);

  // Policy activations: 16 pairs x 2 rows x 200 tokens, each 17*128*4 layer values + 2*259
  // logit values, 4 bytes: 6400 * 9222 * 4.
  EXPECT_EQ(e.activation_bytes, int64_t{6400} * 9222 * 4);
  EXPECT_EQ(e.activation_bytes, 236083200);

  // One critic: input_proj 128*64+64 = 8256; positions 2048*64 = 131072; one layer: norms 256,
  // qkv 64*192+192 = 12480, out 4160, ff1 64*256+256 = 16640, ff2 256*64+64 = 16448 (49984);
  // head 4160 + 65. Total 193537; two critics x 16 bytes.
  EXPECT_EQ(critic_parameter_count(tiny_demo_config().ganpo, 128), 193537);
  // Critic activations: 2 critics x 3 x 16 rows x 200 positions x (17*64 + 2*4*200) x 4 bytes.
  const int64_t critic_activations = int64_t{96} * 200 * (1088 + 1600) * 4;
  EXPECT_EQ(e.critic_bytes, 2 * 193537 * 16 + critic_activations);

  EXPECT_EQ(e.total_bytes, P * 4 * 3 + P * 8 + 236083200 + 2 * 193537 * 16 + critic_activations);
}

// LoRA: gradients and AdamW moments for the adapters only, no reference copy (the reference is
// the policy with its adapters off), the adapters' own weights on top of the model's.
TEST(MemoryEstimate, LoraTrainsOnlyTheAdaptersAndHoldsNoReferenceCopy) {
  RunConfig c = tiny_demo_config();
  c.model.lora.r = 8;
  c.model.lora.target_modules = "q_proj,v_proj";
  const MemoryEstimate full = estimate_training_memory(tiny_demo_config());
  const MemoryEstimate e = estimate_training_memory(c);
  // Tiny llama, 4 layers: q_proj and v_proj are 128 -> 128 each, so r x (128 + 128) x 2 x 4.
  const int64_t A = 8 * 256 * 2 * 4;
  EXPECT_EQ(e.lora_parameters, A);
  EXPECT_EQ(e.weights_bytes, (e.parameters + A) * 4);
  EXPECT_EQ(e.gradients_bytes, A * 4);
  EXPECT_EQ(e.optimizer_bytes, A * 8);
  EXPECT_EQ(e.reference_bytes, 0);
  EXPECT_EQ(e.activation_bytes, full.activation_bytes);
  c.model.reference = "another-model";  // a reference of its own is a copy again
  EXPECT_EQ(estimate_training_memory(c).reference_bytes, full.reference_bytes);
}

// Gradient checkpointing keeps d_model values per token and layer (each block's input) plus one
// block's 17 d, instead of 17 d per layer; the logits are kept either way.
TEST(MemoryEstimate, GradientCheckpointingKeepsTheBlockInputsAndOneBlock) {
  RunConfig c = tiny_demo_config();
  c.train.gradient_checkpointing = true;
  // 6400 rows x tokens, each 128 x 4 layers + 17 x 128 values of 4 bytes, and the logits and
  // their gradient (259 x 8 bytes).
  EXPECT_EQ(estimate_training_memory(c).activation_bytes, int64_t{6400} * ((512 + 2176) * 4 + 259 * 8));
}

// bf16 is autocast: float32 master weights, gradients and reference; bf16 activations.
TEST(MemoryEstimate, Bf16AutocastHalvesTheLayersActivationsOnly) {
  RunConfig c = tiny_demo_config();
  const MemoryEstimate fp32 = estimate_training_memory(c);
  c.train.precision = "bf16";
  const MemoryEstimate bf16 = estimate_training_memory(c);
  EXPECT_EQ(bf16.weights_bytes, fp32.weights_bytes);
  EXPECT_EQ(bf16.gradients_bytes, fp32.gradients_bytes);
  EXPECT_EQ(bf16.reference_bytes, fp32.reference_bytes);
  // The layers' values at half the width; the logits as bf16 and a float32 copy (12 bytes per
  // vocabulary entry instead of 8).
  const int64_t tokens = 32 * 200, logits_fp32 = tokens * 259 * 8, logits_bf16 = tokens * 259 * 12;
  EXPECT_EQ((bf16.activation_bytes - logits_bf16) * 2, fp32.activation_bytes - logits_fp32);
  EXPECT_EQ(bf16.optimizer_bytes, fp32.optimizer_bytes);
  EXPECT_EQ(bf16.critic_bytes, fp32.critic_bytes);
}

// train.chunked_logps: a position keeps its hidden state's copy and two floats instead of its
// logits and their gradient, and one chunk of logits (10 bytes per entry; 32 MiB of float32
// logits on the CPU, 128 MiB on a GPU) lives at a time, plus
// the head's weight in bf16 under autocast. "auto" chunks above 100k vocabulary entries only.
TEST(MemoryEstimate, TheChunkedHeadKeepsOneChunkOfLogits) {
  RunConfig c = tiny_demo_config();
  const int64_t tokens = 32 * 200, layers = int64_t{17} * 128 * 4 * 4;
  const MemoryEstimate full = estimate_training_memory(c);
  EXPECT_EQ(full.activation_bytes, tokens * (layers + 259 * 8));  // "auto" with 259 entries: off
  c.train.chunked_logps = "on";
  c.device = "cpu";  // the CPU's chunks of 32 MiB
  const int64_t rows = chunked_logps_rows(259, false);
  EXPECT_EQ(estimate_training_memory(c).activation_bytes, tokens * (layers + 128 * 4 + 8) + rows * 259 * 10);

  // Llama 3's vocabulary on the tiny preset (d 128) at 8 pairs of 1024 tokens in bf16: the full
  // head's 12 bytes per entry would be 25 GB; chunked, one chunk of 261 x 128256 entries, the
  // head's weight in bf16, and for its gradient 4 chunks' bf16 rows and one [V, d] product.
  c.data.max_length = 1024;
  c.train.per_device_train_batch_size = 8;
  c.train.precision = "bf16";
  c.device = "cuda";  // a GPU's chunks of 128 MiB
  const ModelShape shape = resolve_model_shape(c.model, 128256);
  c.train.chunked_logps = "off";
  const MemoryEstimate off = estimate_training_memory(c, shape);
  c.train.chunked_logps = "auto";
  const MemoryEstimate on = estimate_training_memory(c, shape);
  const double per_token_saved = 128256.0 * 12 - (128 * 4 + 8);
  EXPECT_EQ(chunked_logps_rows(128256, true), 261);
  EXPECT_EQ(chunked_logps_rows(128256, false), 65);
  EXPECT_NEAR(static_cast<double>(off.activation_bytes - on.activation_bytes),
              16 * 1024 * per_token_saved -
                  (261 * 128256.0 * 10 + 128256.0 * 128 * 2 + 128256.0 * (128 * 2 + 261 * 4 * 2)),
              1.0);
}

TEST(MemoryEstimate, SftHasNoReferenceOrCriticsAndGanpoOffHasNoCritics) {
  RunConfig c = tiny_demo_config();
  c.ganpo.enabled = false;
  const MemoryEstimate off = estimate_training_memory(c);
  EXPECT_EQ(off.critic_bytes, 0);
  EXPECT_GT(off.reference_bytes, 0);
  c.stage = "sft";
  const MemoryEstimate sft = estimate_training_memory(c);
  EXPECT_EQ(sft.reference_bytes, 0);
  EXPECT_EQ(sft.critic_bytes, 0);
  EXPECT_EQ(sft.activation_bytes * 2, off.activation_bytes);  // one row per example, not two
}

TEST(MemoryEstimate, GrowsLinearlyWithBatchInActivations) {
  RunConfig c = tiny_demo_config();
  const MemoryEstimate one = estimate_training_memory(c);
  c.train.per_device_train_batch_size *= 2;
  const MemoryEstimate two = estimate_training_memory(c);
  EXPECT_EQ(two.activation_bytes, 2 * one.activation_bytes);
  EXPECT_EQ(two.weights_bytes, one.weights_bytes);
}

TEST(MemoryEstimate, AbsurdValuesSaturateInsteadOfOverflowing) {
  RunConfig c = tiny_demo_config();
  c.train.per_device_train_batch_size = int64_t{1} << 60;
  const MemoryEstimate e = estimate_training_memory(c);
  EXPECT_EQ(e.activation_bytes, std::numeric_limits<int64_t>::max());
  EXPECT_EQ(e.total_bytes, std::numeric_limits<int64_t>::max());
  EXPECT_EQ(e.weights_bytes, int64_t{886272} * 4);
}

TEST(MemoryEstimate, CriticParameterCountMatchesTheModule) {
  GanpoConfig g;
  g.critic_hidden = 32, g.critic_layers = 2, g.critic_heads = 4, g.critic_ffn_mult = 3, g.critic_max_len = 64;
  LatentCritic critic(critic_shape(g, 48));
  int64_t numel = 0;
  for (const auto& p : critic->parameters()) numel += p.numel();
  EXPECT_EQ(critic_parameter_count(g, 48), numel);
}

// The warning a run logs before it allocates: silent when the estimate fits (or the memory is
// unknown), otherwise the sizes, the parts and what to change; N processes of one host need N
// times the estimate.
TEST(MemoryEstimate, ShortfallWarningNamesTheSizesAndTheWayOut) {
  MemoryEstimate e;
  e.weights_bytes = e.gradients_bytes = 1LL << 30;
  e.optimizer_bytes = 2LL << 30;
  e.reference_bytes = 1LL << 30;
  e.activation_bytes = 3LL << 30;
  e.total_bytes = 8LL << 30;
  EXPECT_EQ(memory_shortfall_warning(e, 1, 9LL << 30, "RAM"), "");
  EXPECT_EQ(memory_shortfall_warning(e, 1, -1, "RAM"), "") << "unknown memory: nothing to say";
  const std::string one = memory_shortfall_warning(e, 1, 6LL << 30, "this machine's free RAM (MemAvailable)");
  EXPECT_NE(one.find("estimated training memory 8.0 GiB (weights, gradients and AdamW 4.0 GiB, reference 1.0 GiB, "
                     "activations 3.0 GiB, critics 0.0 GiB) is more than the 6.0 GiB of this machine's free RAM"),
            std::string::npos) << one;
  EXPECT_NE(one.find("train.gradient_checkpointing = true"), std::string::npos) << one;
  EXPECT_EQ(memory_shortfall_warning(e, 2, 17LL << 30, "RAM"), "");
  const std::string two = memory_shortfall_warning(e, 2, 9LL << 30, "RAM");
  EXPECT_NE(two.find("8.0 GiB per process, 16.0 GiB for the 2 processes"), std::string::npos) << two;
}

TEST(MemoryEstimate, SystemMemoryIsReadFromProcMeminfo) {
  const int64_t total = system_memory_bytes("MemTotal"), available = system_memory_bytes("MemAvailable");
  EXPECT_GT(total, 0);
  EXPECT_GT(available, 0);
  EXPECT_LE(available, total);
  EXPECT_EQ(system_memory_bytes("NoSuchField"), -1);
}

}  // namespace
}  // namespace ganpo
