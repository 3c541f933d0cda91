// The New Run dialog's memory estimate (core/memory_estimate.h) against what a run's tensors
// take at their peak on the CPU, counted by core/cpu_tensor_memory.h: the figure `ganpo bench`
// prints beside the estimate (on a GPU, beside the CUDA allocator's peak). Each layout the
// estimate counts is trained for three steps on full-length rows (prompts of 32 tokens,
// responses of 96), and the estimate is within 15 % of the measured peak.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>

#include <gtest/gtest.h>
#include <unistd.h>

#include "core/checkpoint.h"
#include "core/cpu_tensor_memory.h"
#include "core/memory_estimate.h"
#include "core/model/architectures.h"
#include "core/train/trainer.h"

namespace ganpo {
namespace {

namespace fs = std::filesystem;

constexpr int64_t kPrompt = 32, kResponse = 96;

// The largest tensor peak between log lines, in bytes, as ganpo bench reads it.
class PeakReader final : public RunObserver {
public:
  void on_metrics(int64_t, const std::map<std::string, double>& m) override {
    auto it = m.find("memory/cpu_tensor_peak_mb");
    if (it != m.end()) peak_bytes = std::max(peak_bytes, it->second * 1024.0 * 1024.0);
  }
  double peak_bytes = 0;
};

class EstimateAgainstPeak : public ::testing::Test {
protected:
  void SetUp() override {
    count_cpu_tensor_memory();
    root_ = fs::temp_directory_path() /
            ("ganpo_estimate_test_" + std::to_string(::getpid()) + "_" +
             std::to_string(std::chrono::steady_clock::now().time_since_epoch().count()));
    fs::create_directories(root_);
    // TRL pairs the byte tokenizer reads as exactly kPrompt prompt and kResponse response tokens
    // (BOS + prompt + "\n", response + EOS).
    std::mt19937 rng(0);
    const auto text = [&](int64_t n) {
      std::string s;
      for (int64_t i = 0; i < n; ++i) s += static_cast<char>('a' + rng() % 26);
      return s;
    };
    std::ofstream out(root_ / "pairs.jsonl"), sft(root_ / "sft.jsonl");
    for (int i = 0; i < 40; ++i) {
      const std::string prompt = text(kPrompt - 2), chosen = text(kResponse - 1);
      out << nlohmann::json{{"prompt", prompt}, {"chosen", chosen}, {"rejected", text(kResponse - 1)}}.dump() << "\n";
      sft << nlohmann::json{{"prompt", prompt}, {"completion", chosen}}.dump() << "\n";
    }
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(root_, ec);
  }

  RunConfig config() const {
    RunConfig c;
    c.stage = "preference";
    c.device = "cpu";
    c.output_dir = (root_ / "run").string();
    c.model.preset = "";
    c.model.arch = "llama";
    c.model.d_model = 128;
    c.model.n_layers = 2;
    c.model.n_heads = 4;
    c.model.max_seq_len = 256;
    c.data.train = (root_ / "pairs.jsonl").string();
    c.data.eval_fraction = 0.1;
    c.data.max_length = kPrompt + kResponse;
    c.data.max_prompt_length = kPrompt;
    c.train.per_device_train_batch_size = 4;
    c.train.max_steps = 3;
    c.train.logging_steps = 1;
    c.train.num_threads = 1;
    c.sampling.num_prompts = 0;
    c.ganpo.enabled = false;
    c.ganpo.critic_hidden = 32;
    c.ganpo.critic_layers = 1;
    c.ganpo.critic_heads = 2;
    c.ganpo.critic_max_len = 256;
    return c;
  }

  // A model folder of config.json alone, trained from random weights (model.random_weights).
  RunConfig folder_config(const std::string& name, const nlohmann::json& hf_config) const {
    const fs::path dir = root_ / name;
    fs::create_directories(dir);
    write_json_file((dir / "config.json").string(), hf_config);
    RunConfig c = config();
    c.model.checkpoint = dir.string();
    c.model.random_weights = true;
    return c;
  }

  // The estimate and the measured peak of the tensors the run added, in MiB.
  void expect_close(const RunConfig& c) {
    ModelShape shape = resolve_model_shape(c.model, kByteTokenizerVocab);
    if (!c.model.checkpoint.empty())
      shape = read_hf_config(read_json_file(c.model.checkpoint + "/config.json"), c.model.checkpoint);
    const double estimate = static_cast<double>(estimate_training_memory(c, shape).step_total_bytes);
    PeakReader peak;
    TrainerOptions options;
    options.benchmark = true;
    const int64_t before = cpu_tensor_memory().allocated_bytes;
    auto result = Trainer(c, peak, options).run();
    ASSERT_EQ(result.status, "completed") << result.message;
    const double measured = peak.peak_bytes - static_cast<double>(before);
    constexpr double mib = 1024.0 * 1024.0;
    std::printf("  estimate %.1f MiB, measured peak %.1f MiB (%+.1f %%)\n", estimate / mib, measured / mib,
                100.0 * (estimate / measured - 1.0));
    EXPECT_LT(std::abs(estimate / measured - 1.0), 0.15)
        << "estimate " << estimate / mib << " MiB, measured peak " << measured / mib << " MiB";
  }

  // A held-out evaluation's estimate against the peak of the tensors while the stage's last
  // evaluation runs, after one step (so the gradients and AdamW's moments exist), at
  // train.per_device_eval_batch_size `eval_batch` (half the pairs are held out: full batches).
  void expect_evaluation_close(RunConfig c, int64_t eval_batch) {
    c.train.max_steps = 1;
    c.train.per_device_eval_batch_size = eval_batch;
    c.data.eval_fraction = 0.5;
    ModelShape shape = resolve_model_shape(c.model, kByteTokenizerVocab);
    if (!c.model.checkpoint.empty())
      shape = read_hf_config(read_json_file(c.model.checkpoint + "/config.json"), c.model.checkpoint);
    const MemoryEstimate e = estimate_training_memory(c, shape);
    const double estimate = static_cast<double>(e.evaluation_total_bytes);
    // The evaluation ends where the checkpoint after it starts.
    double peak = -1;
    bool evaluating = false;
    TrainerOptions options;
    options.on_activity_for_tests = [&](const std::string& what, int64_t) {
      if (what == "running a held-out evaluation") {
        reset_cpu_tensor_peak();
        evaluating = true;
      } else if (evaluating) {
        peak = static_cast<double>(cpu_tensor_memory().peak_bytes);
        evaluating = false;
      }
    };
    PeakReader observer;
    const int64_t before = cpu_tensor_memory().allocated_bytes;
    auto result = Trainer(c, observer, options).run();
    ASSERT_EQ(result.status, "completed") << result.message;
    ASSERT_GT(peak, 0) << "no evaluation measured";
    const double measured = peak - static_cast<double>(before);
    constexpr double mib = 1024.0 * 1024.0;
    std::printf("  evaluation: estimate %.1f MiB (its passes %.1f), measured peak %.1f MiB (%+.1f %%)\n",
                estimate / mib, static_cast<double>(e.evaluation_bytes) / mib, measured / mib,
                100.0 * (estimate / measured - 1.0));
    EXPECT_LT(std::abs(estimate / measured - 1.0), 0.15)
        << "estimate " << estimate / mib << " MiB, measured peak " << measured / mib << " MiB";
  }

  // LoRA r 8 on every projection with the adapters' dropout, then DoRA the same: in an SFT stage,
  // as a preference stage runs its policy without dropout.
  void expect_close_with_lora_and_dora(RunConfig c) {
    c.stage = "sft";
    c.data.train = (root_ / "sft.jsonl").string();
    c.model.lora.r = 8;
    c.model.lora.target_modules = "all-linear";
    c.model.lora.dropout = 0.1;
    expect_close(c);
    c.model.lora.use_dora = true;
    expect_close(c);
  }

  RunConfig lora_on_q_and_v(nlohmann::json shape, bool tied) const;

  fs::path root_;
};

nlohmann::json llama3_like(int64_t vocab) {
  return {{"architectures", {"LlamaForCausalLM"}}, {"model_type", "llama"}, {"vocab_size", vocab},
          {"hidden_size", 64}, {"intermediate_size", 176}, {"num_hidden_layers", 2},
          {"num_attention_heads", 4}, {"num_key_value_heads", 2}, {"head_dim", 16},
          {"max_position_embeddings", 256}, {"rms_norm_eps", 1e-5}, {"tie_word_embeddings", true}};
}

// A Llama-like model folder with LoRA r 8 on q_proj and v_proj.
RunConfig EstimateAgainstPeak::lora_on_q_and_v(nlohmann::json shape, bool tied) const {
  shape["tie_word_embeddings"] = tied;
  RunConfig c = folder_config("llama", shape);
  c.model.lora.r = 8;
  c.model.lora.target_modules = "q_proj,v_proj";
  return c;
}

TEST_F(EstimateAgainstPeak, DpoWithSharedPrompts) { expect_close(config()); }

TEST_F(EstimateAgainstPeak, DpoAndGanposCritics) {
  RunConfig c = config();
  c.ganpo.enabled = true;
  expect_close(c);
}

TEST_F(EstimateAgainstPeak, GradientCheckpointingWithoutSharedPrompts) {
  RunConfig c = config();
  c.train.prefix_sharing = false;
  c.train.gradient_checkpointing = true;
  c.ganpo.enabled = true;
  expect_close(c);
}

// The policy keeps its plain pass under gradient checkpointing; the reference still shares.
TEST_F(EstimateAgainstPeak, GradientCheckpointingWithSharedPromptsForTheReference) {
  RunConfig c = config();
  c.train.gradient_checkpointing = true;
  c.ganpo.enabled = true;
  expect_close(c);
}

// A vocabulary of 8192 entries on a 64-wide model: the output head's logits and its weight's
// gradient are most of the step, in full and through the chunked head.
TEST_F(EstimateAgainstPeak, ALargeVocabularyInFullAndChunked) {
  RunConfig c = folder_config("llama", llama3_like(8192));
  c.train.chunked_logps = "off";
  expect_close(c);
  c.train.chunked_logps = "on";
  expect_close(c);
}

TEST_F(EstimateAgainstPeak, LoraOnAllLinearLayers) {
  RunConfig c = folder_config("llama", llama3_like(4096));
  c.model.lora.r = 8;
  c.model.lora.target_modules = "all-linear";
  c.ganpo.enabled = true;
  expect_close(c);
}

// DoRA keeps each adapted product's output for its magnitude's gradient; with the adapters'
// dropout each adapter keeps its dropped input, and DoRA a second product of W on it.
TEST_F(EstimateAgainstPeak, DoraOnAllLinearLayers) {
  RunConfig c = folder_config("llama", llama3_like(4096));
  c.model.lora.r = 8;
  c.model.lora.target_modules = "all-linear";
  c.model.lora.use_dora = true;
  expect_close(c);
}

TEST_F(EstimateAgainstPeak, LoraAndDoraWithAdapterDropout) {
  expect_close_with_lora_and_dora(folder_config("llama", llama3_like(4096)));
}

// Gemma 2: four norms a layer, soft-capped attention (explicit, keeping its probabilities and
// their tanh) and logits.
TEST_F(EstimateAgainstPeak, Gemma2sSandwichNormsAndSoftCaps) {
  expect_close(folder_config(
      "gemma2", {{"architectures", {"Gemma2ForCausalLM"}}, {"model_type", "gemma2"}, {"vocab_size", 4096},
                 {"hidden_size", 64}, {"intermediate_size", 128}, {"num_hidden_layers", 2},
                 {"num_attention_heads", 4}, {"num_key_value_heads", 2}, {"head_dim", 16},
                 {"max_position_embeddings", 256}, {"rms_norm_eps", 1e-6}, {"query_pre_attn_scalar", 16},
                 {"attn_logit_softcapping", 50.0}, {"final_logit_softcapping", 30.0}, {"sliding_window", 64},
                 {"hidden_activation", "gelu_pytorch_tanh"}, {"tie_word_embeddings", true}}));
}

// Adapters on one layer, each projection with its own rank (PEFT's layers_to_transform and
// rank_pattern): the estimate counts each block's adapters.
TEST_F(EstimateAgainstPeak, LoraOnOneLayerWithItsOwnRanks) {
  RunConfig c = folder_config("llama", llama3_like(4096));
  c.model.lora.r = 8;
  c.model.lora.target_modules = "all-linear";
  c.model.lora.layers_to_transform = "1";
  c.model.lora.rank_pattern = "mlp.down_proj=32, self_attn.q_proj=2";
  c.model.lora.use_dora = true;
  expect_close(c);
}

// The same under gradient checkpointing: the block below the adapted one runs plainly and keeps
// not even its input.
TEST_F(EstimateAgainstPeak, LoraOnOneLayerWithGradientCheckpointing) {
  RunConfig c = folder_config("llama", llama3_like(4096));
  c.model.lora.r = 8;
  c.model.lora.target_modules = "all-linear";
  c.model.lora.layers_to_transform = "1";
  c.train.gradient_checkpointing = true;
  expect_close(c);
}

// PEFT's modules_to_save: the head (untied from the embedding, a frozen weight of its own), the
// final norm and one layer's MLP trained whole, their copies with gradients and moments, and
// adapters on the upper layer only.
TEST_F(EstimateAgainstPeak, LoraWithModulesTrainedWhole) {
  RunConfig c = lora_on_q_and_v(llama3_like(4096), true);
  c.model.lora.layers_to_transform = "1";
  c.model.lora.modules_to_save = "lm_head, model.norm, model.layers.1.mlp";
  expect_close(c);
}

// PEFT's trainable_token_indices on a larger vocabulary: the embedding with its trained rows put
// in is a new [V, d] matrix each pass, which the tied head's product keeps, and the backward
// pass's dense gradients for it. Untied, the embedding's backward pass ends in a dense float32
// [V, d] gradient of the weight with the rows put in, of which the rows' part is taken.
TEST_F(EstimateAgainstPeak, LoraWithTrainedTokenRows) {
  for (const bool tied : {true, false}) {
    RunConfig c = lora_on_q_and_v(llama3_like(32768), tied);
    c.model.lora.trainable_token_indices = "100-131";
    expect_close(c);
  }
}

// PEFT's LoRA on the token embedding of a larger vocabulary: its A [r, V] and B [d, r] with
// their gradients and moments, the dense [V, r] gradient of A at the end of the backward pass;
// the tied head keeps the frozen original (no gradient of the head's weight).
TEST_F(EstimateAgainstPeak, LoraOnTheTokenEmbedding) {
  for (const bool tied : {true, false}) {
    RunConfig c = lora_on_q_and_v(llama3_like(32768), tied);
    c.model.lora.target_modules = "q_proj,v_proj,embed_tokens";
    expect_close(c);
  }
}

// The output head adapted (PEFT's LoRA Linear on lm_head): A [r, d] and B [V, r] with their
// optimizer state; a tied embedding keeps the original, sharing the head's frozen storage.
TEST_F(EstimateAgainstPeak, LoraOnTheOutputHead) {
  for (const bool tied : {true, false}) {
    RunConfig c = lora_on_q_and_v(llama3_like(32768), tied);
    c.model.lora.target_modules = "q_proj,v_proj,lm_head";
    expect_close(c);
  }
}

nlohmann::json gpt2_like() {
  return {{"architectures", {"GPT2LMHeadModel"}}, {"model_type", "gpt2"}, {"vocab_size", 4096}, {"n_embd", 64},
          {"n_layer", 2}, {"n_head", 4}, {"n_positions", 256}, {"layer_norm_epsilon", 1e-5}};
}

// GPT-2: layer norms, learned positions, a GELU MLP; each row in full (no shared prompts).
TEST_F(EstimateAgainstPeak, Gpt2WithoutSharedPrompts) {
  RunConfig c = folder_config("gpt2", gpt2_like());
  c.train.prefix_sharing = false;
  expect_close(c);
}

// GPT-2's c_attn adapted as PEFT does: q, k and v on one A, so one dropped input and one x' A^T
// for the three; with DoRA each of the three products' outputs.
TEST_F(EstimateAgainstPeak, Gpt2sOneCAttnAdapterWithDropoutAndDora) {
  expect_close_with_lora_and_dora(folder_config("gpt2", gpt2_like()));
}

// Held-out evaluations run without gradients between two steps, at their own batch: the shared
// prompts' keys and values and the head's logits (in full, or a chunk of them) on top of the
// weights, gradients, moments, reference and critics. With a large vocabulary and a batch four
// times the training's, the evaluation is the run's peak.
TEST_F(EstimateAgainstPeak, HeldOutEvaluationsAtTheirOwnBatch) {
  RunConfig c = config();
  c.ganpo.enabled = true;
  expect_evaluation_close(c, 8);
  c.train.prefix_sharing = false;
  expect_evaluation_close(c, 8);
  RunConfig large = folder_config("llama", llama3_like(8192));
  large.train.chunked_logps = "off";
  expect_evaluation_close(large, 16);
  RunConfig at_16 = large;
  at_16.train.per_device_eval_batch_size = 16;
  const MemoryEstimate e = estimate_training_memory(
      at_16, read_hf_config(read_json_file(large.model.checkpoint + "/config.json"), large.model.checkpoint));
  EXPECT_GT(e.evaluation_total_bytes, e.step_total_bytes) << "the evaluation is the run's peak here";
  EXPECT_EQ(e.total_bytes, e.evaluation_total_bytes);
  large.train.chunked_logps = "on";
  expect_evaluation_close(large, 16);
  // SFT: one model, rows of the same lengths.
  std::mt19937 rng(1);
  std::ofstream rows(root_ / "sft.jsonl");
  for (int i = 0; i < 40; ++i) {
    std::string prompt(kPrompt - 2, 'a'), completion(kResponse - 1, 'b');
    for (char& ch : prompt) ch = static_cast<char>('a' + rng() % 26);
    for (char& ch : completion) ch = static_cast<char>('a' + rng() % 26);
    rows << nlohmann::json{{"prompt", prompt}, {"completion", completion}}.dump() << "\n";
  }
  rows.close();
  RunConfig sft = config();
  sft.stage = "sft";
  sft.data.train = (root_ / "sft.jsonl").string();
  expect_evaluation_close(sft, 8);
}

}  // namespace
}  // namespace ganpo
