// The torch-free training memory estimate, checked against a hand computation for the tiny
// preset, and its critic parameter count against the real LatentCritic. Against measured peaks:
// memory_estimate_measured_test.cpp.
#include "core/memory_estimate.h"

#include <limits>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "core/config.h"
#include "core/train/critic.h"
#include "core/sdpa.h"

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
  RunConfig c = tiny_demo_config();
  const MemoryEstimate e = estimate_training_memory(c);

  // Tiny llama: d 128, 4 layers, 4 heads (no GQA), d_ff round_up(128*8/3, 64) = 384, vocab 259,
  // tied embeddings. Per layer: q,k,v,o 4*128*128 = 65536; SwiGLU 3*128*384 = 147456; two
  // RMSNorms 256 -> 213248. Total 4*213248 + embeddings 259*128 + final norm 128 = 886272.
  const int64_t P = 886272;
  EXPECT_EQ(e.parameters, P);
  EXPECT_EQ(e.weights_bytes, P * 4);
  EXPECT_EQ(e.gradients_bytes, P * 4);
  EXPECT_EQ(e.optimizer_bytes, P * 8);
  EXPECT_EQ(e.reference_bytes, P * 4);

  // Policy activations, each row in full (train.prefix_sharing off: 32 rows x 200 tokens, 6400),
  // per token and layer in bytes: the block's input and its norm's scale 516, the norm's output
  // 512, q k v 3 x 512, the heads' output 512, the residual and its scale 516, the MLP norm's
  // output 512, the MLP's gate, act(gate), up and product 4 x 384 x 4 = 6144: 10248, plus the
  // attention: with scaled_dot_product_attention its log-sum-exp, 16 (its output is the buffer
  // o_proj reads); without, the probabilities of 4 heads over 200 x (3 + 1) / 6 keys in 3 blocks
  // of queries, 4 bytes each.
  c.train.prefix_sharing = false;
  c.ganpo.enabled = false;
  const MemoryEstimate plain = estimate_training_memory(c);
  const double attention = torch_has_sdpa() ? 16 : 4 * (200.0 * 4 / 6) * 4;
  const double kept = 6400 * (4 * (10248 + attention) + 512 + 4 + 512);  // 4 layers; after them, the
                                                                          // last output and the norm's
  // The head over 32 x 101 scored positions keeps its logits (4 bytes an entry). Of the
  // transients the reference's forward pass is the larger here: one layer's temporaries (8 d +
  // 3 x 4 d_ff bytes a token) and its head's (8 bytes an entry), against the head's backward pass
  // (16 bytes an entry and the tied weight's gradient, 259 x 128 x 4).
  const double head_kept = 3232.0 * 259 * 4, reference = 6400.0 * (1024 + 4608) + 3232.0 * 259 * 8;
  EXPECT_NEAR(static_cast<double>(plain.activation_bytes), kept + head_kept + reference, 2.0);

  // One critic: input_proj 128*64+64 = 8256; positions 2048*64 = 131072; one layer: norms 256,
  // qkv 64*192+192 = 12480, out 4160, ff1 64*256+256 = 16640, ff2 256*64+64 = 16448 (49984);
  // head 4160 + 65. Total 193537; two critics x 16 bytes.
  EXPECT_EQ(critic_parameter_count(tiny_demo_config().ganpo, 128), 193537);
  EXPECT_GT(e.critic_bytes, 2 * 193537 * 16) << "the critics' weights, gradients and moments, and activations";
  EXPECT_EQ(e.step_total_bytes, e.weights_bytes + e.gradients_bytes + e.optimizer_bytes + e.reference_bytes +
                                    e.critic_bytes + e.activation_bytes);
  EXPECT_EQ(e.evaluation_total_bytes, e.weights_bytes + e.gradients_bytes + e.optimizer_bytes + e.reference_bytes +
                                          2 * 193537 * 16 + e.evaluation_bytes);
  EXPECT_EQ(e.total_bytes, std::max(e.step_total_bytes, e.evaluation_total_bytes));
}

// The estimate counts the attention of the LibTorch this build links (set by CMake from its
// version): the same decision core/sdpa.h takes from LibTorch's headers.
TEST(MemoryEstimate, CountsTheAttentionThisLibTorchRuns) { EXPECT_EQ(torch_has_sdpa(), GANPO_HAVE_SDPA == 1); }

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
  EXPECT_LT(e.activation_bytes, full.activation_bytes) << "frozen products keep no input for a weight's gradient";
  // DoRA: a magnitude per output row of each adapted projection, and each adapted product's
  // output kept for its gradient.
  RunConfig dora = c;
  dora.model.lora.use_dora = true;
  const MemoryEstimate d = estimate_training_memory(dora);
  EXPECT_EQ(d.lora_parameters, A + (128 + 128) * 4);
  EXPECT_GT(d.activation_bytes, e.activation_bytes);
  // PiSSA / OLoRA keep the adapters' first values beside them.
  RunConfig pissa = c;
  pissa.model.lora.init_lora_weights = "pissa";
  EXPECT_EQ(estimate_training_memory(pissa).weights_bytes, (e.parameters + 2 * A) * 4);
  // Under bf16 the frozen base's projections take 2 bytes each where bf16 holds their values
  // (CausalLMImpl::store_projections_in_bf16): a folder stored in bf16, or random weights (a
  // preset, model.random_weights), not a float32 folder.
  RunConfig bf16 = c;
  bf16.train.precision = "bf16";
  const int64_t projections = 851968;  // TinyPresetMatchesHandComputation's 4 x (65536 + 147456)
  EXPECT_EQ(estimate_training_memory(bf16).weights_bytes, e.weights_bytes - projections * 2) << "a preset";
  bf16.model.checkpoint = "a-folder";
  ModelShape shape = resolve_model_shape(c.model, 259);
  EXPECT_EQ(estimate_training_memory(bf16, shape).weights_bytes, e.weights_bytes) << "a float32 folder";
  bf16.model.random_weights = true;
  EXPECT_EQ(estimate_training_memory(bf16, shape).weights_bytes, e.weights_bytes - projections * 2) << "random weights";
  bf16.model.random_weights = false;
  shape.dtype = "bfloat16";
  EXPECT_EQ(estimate_training_memory(bf16, shape).weights_bytes, e.weights_bytes - projections * 2) << "a bf16 folder";
  shape.tie_embeddings = false;  // an output head of its own is a projection too
  RunConfig fp32 = bf16;
  fp32.train.precision = "fp32";
  EXPECT_EQ(estimate_training_memory(fp32, shape).weights_bytes - estimate_training_memory(bf16, shape).weights_bytes,
            (projections + 259 * 128) * 2);
  c.model.reference = "another-model";  // a reference of its own is a copy again
  EXPECT_EQ(estimate_training_memory(c).reference_bytes, full.reference_bytes);
}

// Gradient checkpointing keeps each block's input (d_model float32 values per token and layer),
// and one block's full set while it runs again: a layer more costs only its input (without
// shared prompts, whose reference pass holds every layer's keys and values).
TEST(MemoryEstimate, GradientCheckpointingKeepsTheBlockInputsAndOneBlock) {
  RunConfig c = tiny_demo_config();
  c.ganpo.enabled = false;
  c.train.prefix_sharing = false;
  c.train.gradient_checkpointing = true;
  const MemoryEstimate four = estimate_training_memory(c);
  c.model.n_layers = 8;
  const MemoryEstimate eight = estimate_training_memory(c);
  EXPECT_EQ(eight.activation_bytes - four.activation_bytes, int64_t{6400} * 4 * 128 * 4);  // 32 rows x 200
  c.train.gradient_checkpointing = false;
  EXPECT_GT(estimate_training_memory(c).activation_bytes, 3 * eight.activation_bytes);
}

// bf16 is autocast: float32 master weights, gradients and moments; the products' outputs in
// bf16 (the residual stream, the norms and the softmax stay float32); the frozen reference's
// projections stored in bf16 (its embeddings and norms float32).
TEST(MemoryEstimate, Bf16AutocastNarrowsTheActivationsAndTheReferencesProjections) {
  RunConfig c = tiny_demo_config();
  const MemoryEstimate fp32 = estimate_training_memory(c);
  c.train.precision = "bf16";
  const MemoryEstimate bf16 = estimate_training_memory(c);
  EXPECT_EQ(bf16.weights_bytes, fp32.weights_bytes);
  EXPECT_EQ(bf16.gradients_bytes, fp32.gradients_bytes);
  // The tiny preset (TinyPresetMatchesHandComputation): projections 4 x (65536 + 147456), the
  // embedding 259 x 128 (tied: also the head), norms 4 x 256 + 128.
  const int64_t projections = 851968, embeddings = 33152, norms = 1152;
  EXPECT_EQ(fp32.reference_bytes, (projections + embeddings + norms) * 4);
  EXPECT_EQ(bf16.reference_bytes, projections * 2 + (embeddings + norms) * 4);
  EXPECT_EQ(bf16.optimizer_bytes, fp32.optimizer_bytes);
  EXPECT_LT(bf16.activation_bytes, fp32.activation_bytes);
  EXPECT_GT(bf16.activation_bytes, fp32.activation_bytes / 2) << "the float32 residual stream and norms";
}

// train.chunked_logps: a scored position keeps its hidden state's copy and two floats instead of
// its logits, and one chunk of logits (32 MiB of float32 logits on the CPU, 128 MiB on a GPU, at
// most the scored positions) lives at a time. "auto" chunks above 100k vocabulary entries only.
TEST(MemoryEstimate, TheChunkedHeadKeepsOneChunkOfLogits) {
  RunConfig c = tiny_demo_config();
  c.ganpo.enabled = false;
  c.device = "cpu";
  const MemoryEstimate full = estimate_training_memory(c);
  c.train.chunked_logps = "off";
  EXPECT_EQ(estimate_training_memory(c).activation_bytes, full.activation_bytes) << "auto: off with 259 entries";

  // Llama 3's vocabulary on the tiny preset at 8 pairs of 1024 tokens in bf16 on a GPU: in full
  // the head's logits alone are 16 x 925 scored positions x 128256 x 6 bytes kept, and 16 bytes
  // an entry in the backward pass; chunked, 261-row chunks.
  c.data.max_length = 1024;
  c.train.per_device_train_batch_size = 8;
  c.train.precision = "bf16";
  c.device = "cuda";
  const ModelShape shape = resolve_model_shape(c.model, 128256);
  const MemoryEstimate off = estimate_training_memory(c, shape);
  c.train.chunked_logps = "auto";
  const MemoryEstimate on = estimate_training_memory(c, shape);
  EXPECT_EQ(chunked_logps_rows(128256, true), 261);
  EXPECT_EQ(chunked_logps_rows(128256, false), 65);
  const double scored = 16.0 * 925 + 8;  // responses of 1024 - 100 tokens and the one before, shared prompts
  EXPECT_GT(static_cast<double>(off.activation_bytes), scored * 128256 * 6);
  EXPECT_LT(static_cast<double>(on.activation_bytes), static_cast<double>(off.activation_bytes) / 10);
  EXPECT_GT(static_cast<double>(on.activation_bytes), 261.0 * 128256 * 10) << "one chunk";
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
  EXPECT_LT(sft.activation_bytes, off.activation_bytes) << "one row per example, not two";
}

TEST(MemoryEstimate, GrowsLinearlyWithBatchInActivations) {
  RunConfig c = tiny_demo_config();
  const MemoryEstimate one = estimate_training_memory(c);
  c.train.per_device_train_batch_size *= 2;
  const MemoryEstimate two = estimate_training_memory(c);
  // Nearly: the head's weight gradient and the weights' bf16 copies do not grow with the batch.
  EXPECT_LE(two.activation_bytes, 2 * one.activation_bytes);
  EXPECT_GT(two.activation_bytes, 1.9 * static_cast<double>(one.activation_bytes));
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
  const RunConfig c;
  const auto warning = [&](int processes, int64_t available, const std::string& where) {
    return memory_shortfall_warning(e, processes, available, where, c, kByteTokenizerVocab);
  };
  EXPECT_EQ(warning(1, 9LL << 30, "RAM"), "");
  EXPECT_EQ(warning(1, -1, "RAM"), "") << "unknown memory: nothing to say";
  const std::string one = warning(1, 6LL << 30, "this machine's free RAM (MemAvailable)");
  EXPECT_NE(one.find("estimated training memory 8.0 GiB (weights, gradients and AdamW 4.0 GiB, reference 1.0 GiB, "
                     "activations 3.0 GiB, critics 0.0 GiB) is more than the 6.0 GiB of this machine's free RAM"),
            std::string::npos) << one;
  EXPECT_NE(one.find("To need less memory, " + ways_to_use_less_memory(c, kByteTokenizerVocab, MemoryUse::training)),
            std::string::npos) << one;
  EXPECT_EQ(warning(2, 17LL << 30, "RAM"), "");
  const std::string two = warning(2, 9LL << 30, "RAM");
  EXPECT_NE(two.find("8.0 GiB per process, 16.0 GiB for the 2 processes"), std::string::npos) << two;
}

// The way out names only what would change something for this run, with today's values.
TEST(MemoryEstimate, WaysToUseLessMemoryFitTheRun) {
  RunConfig c;
  c.device = "cuda";
  c.train.per_device_train_batch_size = 4;
  c.train.gradient_accumulation_steps = 8;
  c.data.max_length = 1024;
  const int64_t llama3 = 128256, gpt2 = 50257, bytes = kByteTokenizerVocab;
  EXPECT_EQ(ways_to_use_less_memory(c, gpt2, MemoryUse::models),
            "train LoRA adapters ([model.lora] r > 0), set train.precision = \"bf16\", or train a smaller model");
  EXPECT_EQ(ways_to_use_less_memory(c, gpt2, MemoryUse::training),
            "set train.gradient_checkpointing = true, lower train.per_device_train_batch_size (now 4) and raise "
            "train.gradient_accumulation_steps to keep 32 rows per optimizer step (train.auto_find_batch_size = true "
            "does that where memory runs out), lower data.max_length (now 1024), set train.chunked_logps = \"on\", set train.precision = \"bf16\", or train LoRA adapters ([model.lora] r > 0)");
  // What is on already is not said again; a small vocabulary gains nothing from the chunked head,
  // and "auto" takes it for Llama 3's; the CPU has no bf16 here.
  c.train.gradient_checkpointing = true;
  c.train.per_device_train_batch_size = 1;
  c.train.precision = "bf16";
  c.model.lora.r = 16;
  EXPECT_EQ(ways_to_use_less_memory(c, llama3, MemoryUse::training), "lower data.max_length (now 1024)");
  EXPECT_EQ(ways_to_use_less_memory(c, llama3, MemoryUse::models), "train a smaller model");
  c.train.chunked_logps = "off";
  EXPECT_EQ(ways_to_use_less_memory(c, llama3, MemoryUse::training),
            "lower data.max_length (now 1024), or set train.chunked_logps = \"on\"");
  c.device = "cpu";
  c.train.precision = "fp32";
  EXPECT_EQ(ways_to_use_less_memory(c, bytes, MemoryUse::training), "lower data.max_length (now 1024)");
  // Passes without gradients have their own batch; sampling its own lengths.
  EXPECT_EQ(ways_to_use_less_memory(c, bytes, MemoryUse::evaluation),
            "lower train.per_device_eval_batch_size (now 8; train.auto_find_batch_size = true does that where memory "
            "runs out), or lower data.max_length (now 1024)");
  // A run that finds its batches itself is not told of the setting; one of several processes is
  // (its launcher starts them all again with the smaller batch).
  c.train.auto_find_batch_size = true;
  EXPECT_EQ(ways_to_use_less_memory(c, bytes, MemoryUse::evaluation),
            "lower train.per_device_eval_batch_size (now 8), or lower data.max_length (now 1024)");
  c.train.auto_find_batch_size = false;
  // Processes on the CPU share its RAM, each with its own models; sampling and judging run on one.
  c.train.num_processes = 2;
  EXPECT_EQ(ways_to_use_less_memory(c, bytes, MemoryUse::evaluation),
            "lower train.per_device_eval_batch_size (now 8; train.auto_find_batch_size = true does that where memory "
            "runs out), lower data.max_length (now 1024), or run fewer processes (train.num_processes, now 2: each "
            "holds its own copy of the models in this machine's RAM)");
  EXPECT_EQ(ways_to_use_less_memory(c, bytes, MemoryUse::models),
            "train a smaller model, or run fewer processes "
            "(train.num_processes, now 2: each holds its own copy of the models in this machine's RAM)");
  EXPECT_EQ(ways_to_use_less_memory(c, bytes, MemoryUse::sampling),
            "lower sampling.num_prompts (now 8) or sampling.max_new_tokens (now 64)");
  RunConfig batched = c;
  batched.train.per_device_train_batch_size = 4;
  batched.train.gradient_accumulation_steps = 2;
  EXPECT_NE(ways_to_use_less_memory(batched, bytes, MemoryUse::training)
                .find("raise train.gradient_accumulation_steps to keep 8 rows per optimizer step in each process"),
            std::string::npos);
  c.device = "cuda";  // (one GPU each)
  EXPECT_EQ(ways_to_use_less_memory(c, bytes, MemoryUse::evaluation),
            "lower train.per_device_eval_batch_size (now 8; train.auto_find_batch_size = true does that where memory "
            "runs out), lower data.max_length (now 1024), or set train.precision = \"bf16\"");
  c.device = "cpu";
  c.train.num_processes = 1;
  c.train.per_device_eval_batch_size = 1;
  EXPECT_EQ(ways_to_use_less_memory(c, bytes, MemoryUse::evaluation), "lower data.max_length (now 1024)");
  // Sampling asks for fewer or shorter samples: the live ones, or the judge's at the end (whose
  // tokens are the samples' unless eval.max_new_tokens says otherwise).
  EXPECT_EQ(ways_to_use_less_memory(c, bytes, MemoryUse::sampling),
            "lower sampling.num_prompts (now 8) or sampling.max_new_tokens (now 64)");
  EXPECT_EQ(ways_to_use_less_memory(c, bytes, MemoryUse::judging), "lower eval.num_prompts (now 60) or eval.max_new_tokens (now 64)");
  c.eval.max_new_tokens = 32;
  c.device = "cuda";
  EXPECT_EQ(ways_to_use_less_memory(c, llama3, MemoryUse::judging),
            "lower eval.num_prompts (now 60) or eval.max_new_tokens (now 32), or set train.precision = \"bf16\"");
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
