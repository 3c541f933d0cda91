// LoRA adapters on the causal LM: they start at the base model, switch off exactly (the view a
// LoRA run uses as its reference), merge into W + (alpha / r) B A, train alone, and round-trip
// through PEFT's adapter folder format.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>

#include <nlohmann/json.hpp>

#include "core/checkpoint.h"
#include "core/error.h"
#include "core/train/fused_adamw.h"
#include "core/memory_estimate.h"
#include "core/model/hf_weights.h"
#include "core/model/lora_adapter.h"
#include "core/model/lora_targets.h"
#include "core/model/model_shape.h"
#include "core/model/modules_to_save.h"
#include "core/model/safetensors.h"
#include "core/chunked_logps.h"
#include "core/cpu_runtime.h"
#include "core/parallel_lanes.h"
#include "core/sequence_scoring.h"
#include "core/tokenizer.h"
#include "tests/core/model/lora_test_shapes.h"
#include "tests/core/temp_dir_support.h"

namespace ganpo {
namespace {

namespace fs = std::filesystem;

LoraConfig lora_config_of(const std::string& targets, int64_t r = 4, double alpha = 8.0, bool dora = false) {
  LoraConfig c;
  c.r = r;
  c.alpha = alpha;
  c.use_dora = dora;
  c.target_modules = targets;
  return c;
}

LoraSpec spec_of(const std::string& targets, int64_t r = 4, double alpha = 8.0) {
  return lora_spec(lora_config_of(targets, r, alpha));
}

// Gives every B a random value, as training would, so the adapters change the output; DoRA's
// magnitudes move up to about 20 % away from ||W||.
void train_adapters_randomly(CausalLM& m, uint64_t seed) {
  torch::NoGradGuard guard;
  torch::manual_seed(seed);
  for (auto& [name, t] : m->adapter_parameters()) {
    if (name.size() > 6 && name.substr(name.size() - 6) == "lora_B") t.normal_(0.0, 0.05);
    if (name.find("lora_magnitude_vector") != std::string::npos) t.mul_(1.0 + 0.2 * torch::randn_like(t));
  }
}

// A fresh test model (Llama unless arch says) saved as a model folder, and that folder loaded back.
LoadedModel base_folder_loaded(const std::string& base_dir, uint64_t seed, const std::string& arch = "llama") {
  torch::manual_seed(seed);
  {
    CausalLM base(lora_test_shape(arch));
    ByteTokenizer tok;
    save_model_files(base_dir, base, tok);
  }
  return load_model_folder(base_dir, torch::kCPU);
}

torch::Tensor sample_ids() { return torch::randint(0, 256, {2, 12}, torch::kLong); }

TEST(Lora, AdaptersStartAtTheBaseModelAndSwitchOffExactly) {
  torch::manual_seed(3);
  CausalLM model(lora_test_shape("llama"));
  model->eval();
  const auto ids = sample_ids();
  const auto base = model->forward(ids).logits.detach().clone();

  torch::manual_seed(4);
  model->add_lora(spec_of("all-linear"));
  EXPECT_TRUE(torch::equal(model->forward(ids).logits, base)) << "B = 0: the adapted model starts as the base";

  train_adapters_randomly(model, 5);
  const auto adapted = model->forward(ids).logits;
  EXPECT_GT((adapted - base).abs().max().item<double>(), 1e-3) << "trained adapters change the output";
  CausalLM reference = without_adapters(model);
  EXPECT_TRUE(torch::equal(reference->forward(ids).logits, base)) << "adapters off: bit for bit the base model";
  EXPECT_FALSE(torch::equal(reference->forward(ids).hidden, model->forward(ids).hidden));
  // The view holds no weights of its own.
  EXPECT_EQ(reference->parameters().size(), model->parameters().size());
  for (size_t i = 0; i < model->parameters().size(); ++i)
    EXPECT_TRUE(reference->parameters()[i].is_same(model->parameters()[i]));
  // And the policy still has its adapters after the view ran.
  EXPECT_TRUE(torch::equal(model->forward(ids).logits, adapted));
  // The view reports no adapters, merges none, and never switches the modules it shares: it is
  // in evaluation mode whatever the policy's mode was when it was made.
  EXPECT_EQ(reference->lora().r, 0);
  EXPECT_TRUE(reference->adapter_parameters().empty());
  model->train();
  CausalLM view = without_adapters(model);
  EXPECT_FALSE(view->is_training());
  EXPECT_TRUE(model->is_training()) << "making the view leaves the policy as it was";
  view->eval();
  view->train();
  view->eval();
  for (const auto& m : model->modules()) EXPECT_TRUE(m->is_training());
  const auto q = "layers.0.self_attn.q_proj.weight";
  EXPECT_TRUE(torch::equal(view->merged_weight(q), model->named_parameters()[q]));
  EXPECT_FALSE(torch::equal(model->merged_weight(q), model->named_parameters()[q]));
}

// The reference (adapters off) and the policy (adapters on) run at once on two lanes over the
// same modules, as a LoRA preference step does; each gets what it would get alone.
TEST(Lora, PolicyAndItsReferenceRunAtOnceOnTwoLanes) {
  torch::manual_seed(6);
  CausalLM model(lora_test_shape("llama"));
  model->add_lora(spec_of("q_proj,v_proj"));
  train_adapters_randomly(model, 7);
  model->eval();
  CausalLM reference = without_adapters(model);
  const auto ids = sample_ids();
  const auto policy_alone = model->forward(ids).logits.detach();
  const auto reference_alone = reference->forward(ids).logits.detach();
  ParallelLanes lanes;
  lanes.set_plan(plan_cpu_threads(2, 2, 1));
  for (int round = 0; round < 20; ++round) {
    torch::Tensor p, r;
    lanes.run([&] { p = model->forward(ids).logits.detach(); }, [&] { r = reference->forward(ids).logits.detach(); });
    ASSERT_TRUE(torch::equal(p, policy_alone)) << "round " << round;
    ASSERT_TRUE(torch::equal(r, reference_alone)) << "round " << round;
  }
}

TEST(Lora, OnlyTheAdaptersTrain) {
  torch::manual_seed(8);
  CausalLM model(lora_test_shape("llama"));
  model->add_lora(spec_of("q_proj,k_proj,v_proj,o_proj,up_proj,down_proj,gate_proj", 2, 4.0));
  int64_t trainable = 0;
  for (const auto& p : model->named_parameters()) {
    EXPECT_EQ(p.value().requires_grad(), is_adapter_parameter(p.key())) << p.key();
    if (p.value().requires_grad()) trainable += p.value().numel();
  }
  LoraConfig lora;
  lora.r = 2;
  lora.target_modules = "all-linear";
  EXPECT_EQ(lora_parameter_count(model->shape(), lora), trainable) << "the memory estimate counts the same adapters";
  std::map<std::string, torch::Tensor> before;
  for (const auto& p : model->named_parameters()) before[p.key()] = p.value().detach().clone();
  std::vector<torch::Tensor> params;
  for (const auto& p : model->parameters())
    if (p.requires_grad()) params.push_back(p);
  torch::optim::AdamW opt(params, torch::optim::AdamWOptions(1e-2));
  model->train();
  for (int i = 0; i < 3; ++i) {
    opt.zero_grad();
    model->forward(sample_ids()).logits.logsumexp(-1).mean().backward();
    opt.step();
  }
  for (const auto& p : model->named_parameters()) {
    const bool moved = !torch::equal(p.value(), before.at(p.key()));
    if (!is_adapter_parameter(p.key())) {
      EXPECT_FALSE(moved) << p.key() << " is frozen";
    }
  }
  EXPECT_FALSE(torch::equal(model->named_parameters()["layers.0.mlp.down_proj.lora_B"], before.at("layers.0.mlp.down_proj.lora_B")));
}

// A merged checkpoint holds W + (alpha / r) B A, and loads back as an ordinary model that
// computes what the adapted one did.
TEST(Lora, MergedWeightsAreBasePlusScaledBA) {
  test::TestTempDir dir;
  torch::manual_seed(9);
  CausalLM model(lora_test_shape("llama"));
  model->add_lora(spec_of("q_proj,down_proj", 4, 16.0));
  train_adapters_randomly(model, 10);
  model->eval();
  auto params = model->named_parameters();
  const auto w = params["layers.1.self_attn.q_proj.weight"];
  const auto a = params["layers.1.self_attn.q_proj.lora_A"];
  const auto b = params["layers.1.self_attn.q_proj.lora_B"];
  const auto expected = w + torch::mm(b, a) * (16.0 / 4.0);
  std::map<std::string, torch::Tensor> state;
  for (auto& [name, t] : model_state(model)) state[name] = t;
  ASSERT_TRUE(state.count("model.layers.1.self_attn.q_proj.weight"));
  EXPECT_TRUE(torch::allclose(state.at("model.layers.1.self_attn.q_proj.weight"), expected, 1e-6, 1e-7));
  EXPECT_TRUE(torch::equal(state.at("model.layers.1.self_attn.k_proj.weight"), params["layers.1.self_attn.k_proj.weight"]))
      << "a projection without an adapter is written as it is";
  for (const auto& [name, t] : state) EXPECT_EQ(name.find("lora"), std::string::npos) << name;

  ByteTokenizer tok;
  save_model_files((dir.path() / "merged").string(), model, tok);
  LoadedModel merged = load_model_folder((dir.path() / "merged").string(), torch::kCPU);
  EXPECT_EQ(merged.model->lora().r, 0);
  const auto ids = sample_ids();
  EXPECT_TRUE(torch::allclose(merged.model->forward(ids).logits, model->forward(ids).logits, 1e-4, 1e-5));
}

// PEFT's adapter folder: its names, shapes and config, and loading it over its base folder gives
// the adapted model back.
TEST(Lora, PeftAdapterFolderRoundTrips) {
  test::TestTempDir dir;
  const std::string base_dir = (dir.path() / "base").string(), adapter_dir = (dir.path() / "adapter").string();
  LoadedModel trained = base_folder_loaded(base_dir, 11);
  torch::manual_seed(12);
  trained.model->add_lora(spec_of("q_proj,v_proj,gate_proj", 4, 8.0));
  train_adapters_randomly(trained.model, 13);
  EXPECT_EQ(peft_adapter_unsupported(trained.model), "");
  fs::create_directories(adapter_dir);
  save_peft_adapter(adapter_dir, trained.model, base_dir);

  const auto config = nlohmann::json::parse(std::ifstream(adapter_dir + "/adapter_config.json"));
  EXPECT_EQ(config["peft_type"], "LORA");
  EXPECT_EQ(config["task_type"], "CAUSAL_LM");
  EXPECT_EQ(config["r"], 4);
  EXPECT_EQ(config["lora_alpha"], 8.0);
  EXPECT_EQ(config["base_model_name_or_path"], base_dir);
  EXPECT_EQ(config["target_modules"], (nlohmann::json{"q_proj", "v_proj", "gate_proj"}));
  const auto tensors = load_safetensors(adapter_dir + "/adapter_model.safetensors").tensors;
  EXPECT_EQ(tensors.size(), 2u * 3u * 2u) << "A and B for 3 projections in 2 layers";
  ASSERT_TRUE(tensors.count("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"));
  EXPECT_EQ(tensors.at("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight").sizes(), (std::vector<int64_t>{4, 32}));
  EXPECT_EQ(tensors.at("base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight").sizes(), (std::vector<int64_t>{16, 4}))
      << "v_proj: 2 kv heads x head size 8";
  EXPECT_TRUE(tensors.count("base_model.model.model.layers.1.mlp.gate_proj.lora_B.weight"));

  ASSERT_TRUE(is_peft_adapter_folder(adapter_dir));
  LoadedModel loaded = load_model_folder(adapter_dir, torch::kCPU);
  EXPECT_EQ(loaded.model->lora().r, 4);
  trained.model->eval();
  const auto ids = sample_ids();
  EXPECT_TRUE(torch::equal(loaded.model->forward(ids).logits, trained.model->forward(ids).logits));

  // The base's config.json copied beside the adapter (as some training tools save one) leaves it
  // an adapter folder; a whole model beside an adapter_config.json is the model.
  fs::copy_file(base_dir + "/config.json", adapter_dir + "/config.json");
  ASSERT_TRUE(is_peft_adapter_folder(adapter_dir));
  EXPECT_TRUE(torch::equal(load_model_folder(adapter_dir, torch::kCPU).model->forward(ids).logits,
                           trained.model->forward(ids).logits));
  fs::copy_file(adapter_dir + "/adapter_config.json", base_dir + "/adapter_config.json");
  EXPECT_FALSE(is_peft_adapter_folder(base_dir));
  fs::remove(base_dir + "/adapter_config.json");

  // A relative base path is taken from the adapter folder, as PEFT users write it by hand.
  auto relative = config;
  relative["base_model_name_or_path"] = "../base";
  std::ofstream(adapter_dir + "/adapter_config.json") << relative.dump();
  EXPECT_EQ(read_peft_adapter_config(adapter_dir).base_model, fs::path(base_dir).lexically_normal().string());
}

// rsLoRA (PEFT's use_rslora): the update is scaled by alpha / sqrt(r), in the adapted forward,
// the merged weights and the PEFT adapter folder, which says so and loads back the same.
TEST(Lora, RsLoraScalesBySqrtRankInTheForwardTheMergeAndTheAdapterFolder) {
  test::TestTempDir dir;
  const std::string base_dir = (dir.path() / "base").string(), adapter_dir = (dir.path() / "adapter").string();
  LoadedModel trained = base_folder_loaded(base_dir, 21);
  LoraConfig c;
  c.r = 4;
  c.alpha = 16.0;
  c.use_rslora = true;
  c.target_modules = "q_proj,up_proj";
  const LoraSpec spec = lora_spec(c);
  EXPECT_DOUBLE_EQ(spec.scale(), 8.0) << "16 / sqrt(4)";
  EXPECT_DOUBLE_EQ(spec_of("q_proj", 4, 16.0).scale(), 4.0) << "16 / 4 without rsLoRA";
  trained.model->add_lora(spec);
  train_adapters_randomly(trained.model, 22);
  trained.model->eval();

  auto params = trained.model->named_parameters();
  const auto w = params["layers.0.mlp.up_proj.weight"];
  const auto expected = w + torch::mm(params["layers.0.mlp.up_proj.lora_B"], params["layers.0.mlp.up_proj.lora_A"]) * 8.0;
  EXPECT_TRUE(torch::allclose(trained.model->merged_weight("layers.0.mlp.up_proj.weight"), expected, 1e-6, 1e-7));
  // The adapted forward uses the same scale as the merge: the merged folder computes it.
  ByteTokenizer tok;
  save_model_files((dir.path() / "merged").string(), trained.model, tok);
  LoadedModel merged = load_model_folder((dir.path() / "merged").string(), torch::kCPU);
  const auto ids = sample_ids();
  const auto logits = trained.model->forward(ids).logits;
  EXPECT_TRUE(torch::allclose(merged.model->forward(ids).logits, logits, 1e-4, 1e-5));

  fs::create_directories(adapter_dir);
  save_peft_adapter(adapter_dir, trained.model, base_dir);
  auto config = nlohmann::json::parse(std::ifstream(adapter_dir + "/adapter_config.json"));
  EXPECT_EQ(config["use_rslora"], true);
  LoadedModel loaded = load_model_folder(adapter_dir, torch::kCPU);
  EXPECT_TRUE(loaded.model->lora().rslora);
  EXPECT_TRUE(torch::equal(loaded.model->forward(ids).logits, logits));
  // Read as plain LoRA (alpha / r) the same adapter computes another model: the flag is applied.
  config["use_rslora"] = false;
  std::ofstream(adapter_dir + "/adapter_config.json") << config.dump();
  LoadedModel plain = load_model_folder(adapter_dir, torch::kCPU);
  EXPECT_GT((plain.model->forward(ids).logits - logits).abs().max().item<double>(), 1e-3);
}

// DoRA (PEFT's use_dora): it starts at the base model (m = ||W|| per row, B = 0); trained, the
// merged weight is (m / ||W + s B A||) (W + s B A) row by row and the merged folder computes
// what the adapted model does; the PEFT folder has the magnitudes under PEFT's names and loads
// back the same; only the adapters and magnitudes train.
TEST(Lora, DoraStartsAtTheBaseMergesRowByRowAndRoundTripsAsAPeftFolder) {
  test::TestTempDir dir;
  const std::string base_dir = (dir.path() / "base").string(), adapter_dir = (dir.path() / "adapter").string();
  LoadedModel trained = base_folder_loaded(base_dir, 31);
  const auto ids = sample_ids();
  const auto base_logits = trained.model->forward(ids).logits;
  const LoraConfig c = lora_config_of("q_proj,down_proj", 4, 8.0, /*dora=*/true);
  trained.model->add_lora(lora_spec(c));
  trained.model->eval();
  EXPECT_TRUE(torch::allclose(trained.model->forward(ids).logits, base_logits, 1e-5, 1e-6)) << "m = ||W||, B = 0";

  train_adapters_randomly(trained.model, 32);
  auto params = trained.model->named_parameters();
  ASSERT_TRUE(params.contains("layers.1.mlp.down_proj.lora_magnitude_vector"));
  EXPECT_EQ(params["layers.1.mlp.down_proj.lora_magnitude_vector"].sizes(), (std::vector<int64_t>{32}));
  const auto w = params["layers.1.mlp.down_proj.weight"];
  const auto adapted = w + torch::mm(params["layers.1.mlp.down_proj.lora_B"], params["layers.1.mlp.down_proj.lora_A"]) * 2.0;
  const auto expected = adapted * (params["layers.1.mlp.down_proj.lora_magnitude_vector"] / adapted.norm(2, {1})).unsqueeze(1);
  EXPECT_TRUE(torch::allclose(trained.model->merged_weight("layers.1.mlp.down_proj.weight"), expected, 1e-6, 1e-7));

  const auto logits = trained.model->forward(ids).logits;
  EXPECT_GT((logits - base_logits).abs().max().item<double>(), 1e-3) << "the trained adapters change the model";
  ByteTokenizer tok;
  save_model_files((dir.path() / "merged").string(), trained.model, tok);
  LoadedModel merged = load_model_folder((dir.path() / "merged").string(), torch::kCPU);
  EXPECT_TRUE(torch::allclose(merged.model->forward(ids).logits, logits, 1e-4, 1e-5));

  fs::create_directories(adapter_dir);
  save_peft_adapter(adapter_dir, trained.model, base_dir);
  const auto config = nlohmann::json::parse(std::ifstream(adapter_dir + "/adapter_config.json"));
  EXPECT_EQ(config["use_dora"], true);
  const auto tensors = load_safetensors(adapter_dir + "/adapter_model.safetensors").tensors;
  EXPECT_EQ(tensors.size(), 2u * 2u * 3u) << "A, B and the magnitude for 2 projections in 2 layers";
  EXPECT_TRUE(tensors.count("base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector"));
  LoadedModel loaded = load_model_folder(adapter_dir, torch::kCPU);
  EXPECT_TRUE(loaded.model->lora().dora);
  EXPECT_TRUE(torch::equal(loaded.model->forward(ids).logits, logits));

  // Trainable: A, B and the magnitudes, nothing of the base model.
  int64_t trainable = 0;
  for (const auto& p : trained.model->parameters())
    if (p.requires_grad()) trainable += p.numel();
  EXPECT_EQ(trainable, lora_parameter_count(trained.model->shape(), c));

  // Without gradients the factor m / ||W + s B A|| is kept between calls, and computed again
  // once a tensor it reads changes: in place, and by the trainer's optimizer step (which writes
  // through raw pointers on the CPU).
  {
    torch::NoGradGuard no_grad;
    EXPECT_TRUE(torch::allclose(trained.model->forward(ids).logits, logits, 1e-5, 1e-6));
    EXPECT_TRUE(torch::allclose(trained.model->forward(ids).logits, logits, 1e-5, 1e-6));
    for (auto& [name, t] : trained.model->adapter_parameters())
      if (name.find("lora_magnitude_vector") != std::string::npos) t.mul_(2.0);
    EXPECT_GT((trained.model->forward(ids).logits - logits).abs().max().item<double>(), 1e-2);
  }
  std::vector<torch::Tensor> trained_params;
  for (auto& [name, t] : trained.model->adapter_parameters()) {
    t.mutable_grad() = torch::ones_like(t);
    trained_params.push_back(t);
  }
  FusedAdamW(trained_params, torch::optim::AdamWOptions(1e-2)).step();
  const auto after_step = trained.model->forward(ids).logits.detach();  // with gradients: no kept factor
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(torch::equal(trained.model->forward(ids).logits, after_step));
}

// DoRA's backward holds the norm ||W + s B A|| constant, as PEFT does: with k = m / ||W + s B A||
// a constant, y = k (x W^T + s x A^T B^T) is plain LoRA over the base k W with B' = k B, so
// DoRA's gradient of B is k times that LoRA model's gradient of B'. (Through the norm it would
// have another term.)
TEST(Lora, DoraGradientsHoldTheNormConstantAsPeftDoes) {
  test::TestTempDir dir;
  const std::string base_dir = (dir.path() / "base").string();
  LoadedModel dora = base_folder_loaded(base_dir, 41);
  LoadedModel lora = load_model_folder(base_dir, torch::kCPU);
  LoraConfig c;
  c.r = 4;
  c.alpha = 8.0;
  c.target_modules = "down_proj";
  lora.model->add_lora(lora_spec(c));
  c.use_dora = true;
  dora.model->add_lora(lora_spec(c));
  train_adapters_randomly(dora.model, 42);
  auto dp = dora.model->named_parameters();
  auto lp = lora.model->named_parameters();
  const int64_t layers = dora.model->shape().n_layers;
  std::vector<torch::Tensor> k(static_cast<size_t>(layers));
  {
    torch::NoGradGuard guard;
    for (int64_t i = 0; i < layers; ++i) {
      const std::string m = "layers." + std::to_string(i) + ".mlp.down_proj.";
      const auto adapted = dp[m + "weight"] + torch::mm(dp[m + "lora_B"], dp[m + "lora_A"]) * 2.0;
      k[static_cast<size_t>(i)] = (dp[m + "lora_magnitude_vector"] / adapted.norm(2, {1})).unsqueeze(1);  // [out, 1]
      lp[m + "weight"].copy_(dp[m + "weight"] * k[static_cast<size_t>(i)]);
      lp[m + "lora_A"].copy_(dp[m + "lora_A"]);
      lp[m + "lora_B"].copy_(dp[m + "lora_B"] * k[static_cast<size_t>(i)]);
    }
  }
  dora.model->train();
  lora.model->train();
  const auto ids = sample_ids();
  const auto dora_logits = dora.model->forward(ids).logits;
  const auto lora_logits = lora.model->forward(ids).logits;
  ASSERT_TRUE(torch::allclose(dora_logits, lora_logits, 1e-4, 1e-5)) << "the same function";
  dora_logits.pow(2).mean().backward();
  lora_logits.pow(2).mean().backward();
  for (int64_t i = 0; i < layers; ++i) {
    const std::string m = "layers." + std::to_string(i) + ".mlp.down_proj.";
    const auto expected = lp[m + "lora_B"].grad() * k[static_cast<size_t>(i)];
    ASSERT_TRUE(dp[m + "lora_B"].grad().defined());
    EXPECT_GT(expected.abs().max().item<double>(), 1e-6) << m;
    EXPECT_TRUE(torch::allclose(dp[m + "lora_B"].grad(), expected, 1e-3, 1e-7)) << m;
    EXPECT_GT(dp[m + "lora_magnitude_vector"].grad().abs().max().item<double>(), 0.0) << m << ": the magnitude trains";
  }
}

// GPT-2 as PEFT adapts it: c_attn (q, k and v in one Conv1D module) gets one adapter, so k and v
// use q's A, and the trainable count is PEFT's; the merged folder (GPT-2's fused, transposed
// files) computes the adapted model; the PEFT folder has c_attn's A and q's, k's and v's B and
// magnitudes stacked by rows, with PEFT's target names, and loads back the same. With DoRA too.
TEST(Lora, Gpt2CAttnHasOneAdapterAsInPeftAndRoundTripsAsAPeftFolder) {
  for (const bool dora : {false, true}) {
    SCOPED_TRACE(dora ? "DoRA" : "LoRA");
    test::TestTempDir dir;
    const std::string base_dir = (dir.path() / "base").string(), adapter_dir = (dir.path() / "adapter").string();
    LoadedModel trained = base_folder_loaded(base_dir, 41, "gpt2");
    const LoraConfig c = lora_config_of("c_attn,c_proj,c_fc", 4, 8.0, dora);
    trained.model->add_lora(lora_spec(c));
    auto params = trained.model->named_parameters();
    EXPECT_TRUE(params.contains("layers.0.self_attn.q_proj.lora_A"));
    EXPECT_FALSE(params.contains("layers.0.self_attn.k_proj.lora_A")) << "k uses q's A";
    EXPECT_FALSE(params.contains("layers.0.self_attn.v_proj.lora_A")) << "v uses q's A";
    EXPECT_TRUE(params.contains("layers.0.self_attn.v_proj.lora_B"));
    EXPECT_TRUE(params.contains("layers.1.mlp.down_proj.lora_A"));
    // PEFT's count: c_attn r (d + 3 d), attn.c_proj r (d + d), c_fc r (d + ff), mlp.c_proj
    // r (ff + d) per layer, and with DoRA each module's output rows.
    const int64_t d = 32, ff = trained.model->shape().d_ff, r = 4;
    const int64_t per_layer = r * (4 * d + 2 * d + 2 * (d + ff)) + (dora ? 3 * d + d + ff + d : 0);
    int64_t trainable = 0;
    for (const auto& p : trained.model->parameters())
      if (p.requires_grad()) trainable += p.numel();
    EXPECT_EQ(trainable, 2 * per_layer);
    EXPECT_EQ(lora_parameter_count(trained.model->shape(), c), 2 * per_layer);

    train_adapters_randomly(trained.model, 42);
    trained.model->eval();
    params = trained.model->named_parameters();
    const auto a = params["layers.1.self_attn.q_proj.lora_A"];
    auto k_adapted = params["layers.1.self_attn.k_proj.weight"] + torch::mm(params["layers.1.self_attn.k_proj.lora_B"], a) * 2.0;
    if (dora)
      k_adapted = k_adapted * (params["layers.1.self_attn.k_proj.lora_magnitude_vector"] / k_adapted.norm(2, {1})).unsqueeze(1);
    EXPECT_TRUE(torch::allclose(trained.model->merged_weight("layers.1.self_attn.k_proj.weight"), k_adapted, 1e-6, 1e-7));
    const auto ids = sample_ids();
    const auto logits = trained.model->forward(ids).logits;
    ByteTokenizer tok;
    save_model_files((dir.path() / "merged").string(), trained.model, tok);
    LoadedModel merged = load_model_folder((dir.path() / "merged").string(), torch::kCPU);
    EXPECT_TRUE(torch::allclose(merged.model->forward(ids).logits, logits, 1e-4, 1e-5));

    ASSERT_EQ(peft_adapter_unsupported(trained.model), "");
    fs::create_directories(adapter_dir);
    save_peft_adapter(adapter_dir, trained.model, base_dir);
    const auto config = nlohmann::json::parse(std::ifstream(adapter_dir + "/adapter_config.json"));
    EXPECT_EQ(config["target_modules"], nlohmann::json({"c_attn", "c_proj", "c_fc"}));
    EXPECT_EQ(config["fan_in_fan_out"], true);
    EXPECT_EQ(config["r"], 4);
    const auto tensors = load_safetensors(adapter_dir + "/adapter_model.safetensors").tensors;
    EXPECT_EQ(tensors.size(), 2u * 4u * (dora ? 3u : 2u)) << "A, B (and magnitudes) of 4 modules in 2 layers";
    const std::string c_attn = "base_model.model.transformer.h.1.attn.c_attn.";
    EXPECT_TRUE(torch::equal(tensors.at(c_attn + "lora_A.weight"), a));
    EXPECT_TRUE(torch::equal(tensors.at(c_attn + "lora_B.weight"),
                             torch::cat({params["layers.1.self_attn.q_proj.lora_B"], params["layers.1.self_attn.k_proj.lora_B"],
                                         params["layers.1.self_attn.v_proj.lora_B"]})));
    EXPECT_EQ(tensors.count(c_attn + "lora_magnitude_vector"), dora ? 1u : 0u);
    if (dora) {
      EXPECT_EQ(tensors.at(c_attn + "lora_magnitude_vector").sizes(), (std::vector<int64_t>{3 * d}));
    }
    EXPECT_TRUE(tensors.count("base_model.model.transformer.h.0.mlp.c_proj.lora_B.weight"));
    LoadedModel loaded = load_model_folder(adapter_dir, torch::kCPU);
    EXPECT_TRUE(torch::equal(loaded.model->forward(ids).logits, logits));
  }
  // attn.c_proj alone: PEFT's "c_proj" would adapt mlp.c_proj too, so the folder names the path.
  test::TestTempDir dir;
  const std::string base_dir = (dir.path() / "base").string(), adapter_dir = (dir.path() / "adapter").string();
  LoadedModel trained = base_folder_loaded(base_dir, 43, "gpt2");
  trained.model->add_lora(spec_of("attn.c_proj"));
  train_adapters_randomly(trained.model, 44);
  trained.model->eval();
  EXPECT_EQ(trained.model->adapter_parameters().size(), 2u * 2u) << "A and B of o_proj in 2 layers";
  fs::create_directories(adapter_dir);
  save_peft_adapter(adapter_dir, trained.model, base_dir);
  const auto config = nlohmann::json::parse(std::ifstream(adapter_dir + "/adapter_config.json"));
  EXPECT_EQ(config["target_modules"], nlohmann::json({"attn.c_proj"}));
  const auto ids = sample_ids();
  EXPECT_TRUE(torch::equal(load_model_folder(adapter_dir, torch::kCPU).model->forward(ids).logits,
                           trained.model->forward(ids).logits));
}

// PEFT's per-layer settings on the model: adapters only where they pick, each with its own rank
// and scale (in the forward pass and the merge), written to an adapter folder whose config PEFT
// reads the same way (layers_to_transform and a path's rank where the layers agree, whole names
// where they differ) and loaded back bitwise; and a config as PEFT users write it, with a
// regular expression, exclusions and rank patterns whose order decides.
TEST(Lora, AdaptersOnSomeLayersWithTheirOwnRanksRoundTripAsAPeftFolder) {
  test::TestTempDir dir;
  const std::string base_dir = (dir.path() / "base").string();
  LoadedModel trained = base_folder_loaded(base_dir, 21);
  const int64_t d = 32, ff = trained.model->shape().d_ff;
  LoraSpec spec = spec_of("q_proj,v_proj,down_proj", 4, 8.0);
  spec.layers = {1};
  spec.rank_pattern = {{"down_proj", 2}};
  spec.alpha_pattern = {{"model.layers.1.self_attn.v_proj", 4}};
  torch::manual_seed(22);
  trained.model->add_lora(spec);
  train_adapters_randomly(trained.model, 23);
  trained.model->eval();
  std::map<std::string, std::vector<int64_t>> shapes;
  for (const auto& [name, t] : trained.model->adapter_parameters()) shapes[name] = t.sizes().vec();
  EXPECT_EQ(shapes.size(), 6u) << "A and B of q, v and down in layer 1 only";
  EXPECT_EQ(shapes["layers.1.mlp.down_proj.lora_A"], (std::vector<int64_t>{2, ff}));
  EXPECT_EQ(shapes["layers.1.self_attn.q_proj.lora_A"], (std::vector<int64_t>{4, d}));
  // Each module merges with its own scale: v alpha 4 / r 4, down 8 / 2.
  const auto params = trained.model->named_parameters();
  auto merged_as = [&](const std::string& module, double scale) {
    return params[module + ".weight"] + torch::mm(params[module + ".lora_B"], params[module + ".lora_A"]) * scale;
  };
  EXPECT_TRUE(torch::allclose(trained.model->merged_weight("layers.1.self_attn.v_proj.weight"), merged_as("layers.1.self_attn.v_proj", 1.0)));
  EXPECT_TRUE(torch::allclose(trained.model->merged_weight("layers.1.mlp.down_proj.weight"), merged_as("layers.1.mlp.down_proj", 4.0)));
  EXPECT_TRUE(torch::equal(trained.model->merged_weight("layers.0.self_attn.q_proj.weight"), params["layers.0.self_attn.q_proj.weight"]));

  const auto ids = sample_ids();
  const auto expected = trained.model->forward(ids).logits;
  const std::string adapter_dir = (dir.path() / "adapter").string();
  fs::create_directories(adapter_dir);
  save_peft_adapter(adapter_dir, trained.model, base_dir);
  auto config = nlohmann::json::parse(std::ifstream(adapter_dir + "/adapter_config.json"));
  EXPECT_EQ(config["target_modules"], (nlohmann::json{"q_proj", "v_proj", "down_proj"}));
  EXPECT_EQ(config["layers_to_transform"], (nlohmann::json{1}));
  EXPECT_EQ(config["rank_pattern"], (nlohmann::json{{"mlp.down_proj", 2}}));
  EXPECT_EQ(config["alpha_pattern"], (nlohmann::json{{"self_attn.v_proj", 4.0}}));
  EXPECT_TRUE(torch::equal(load_model_folder(adapter_dir, torch::kCPU).model->forward(ids).logits, expected));

  // A config as PEFT users write it over the same tensors: q, v and down by a pattern, layer 0
  // excluded by another, and rank patterns of which the first in the file's order decides (in
  // the keys' sorted order "down_proj" would come first and give rank 6).
  nlohmann::ordered_json by_hand = {{"peft_type", "LORA"}, {"r", 4}, {"lora_alpha", 8},
                                    {"target_modules", R"(.*\.(self_attn\.(q|v)_proj|mlp\.down_proj))"},
                                    {"exclude_modules", R"(model\.layers\.0\..*)"},
                                    {"rank_pattern", {{"layers.1.mlp.down_proj", 2}, {"down_proj", 6}}},
                                    {"alpha_pattern", {{"v_proj", 4}}},
                                    {"base_model_name_or_path", "../base"}};
  std::ofstream(adapter_dir + "/adapter_config.json") << by_hand.dump();
  EXPECT_TRUE(torch::equal(load_model_folder(adapter_dir, torch::kCPU).model->forward(ids).logits, expected));
  by_hand["target_modules"] = "q_proj";  // a regular expression must match whole names
  std::ofstream(adapter_dir + "/adapter_config.json") << by_hand.dump();
  try {
    load_model_folder(adapter_dir, torch::kCPU);
    ADD_FAILURE() << "a pattern that matches no module was applied";
  } catch (const ModelFileError& e) {
    EXPECT_NE(std::string(e.what()).find("adapter_config.json: target_modules, the regular expression \"q_proj\", matches no projection"),
              std::string::npos) << e.what();
  }

  // Layers that differ between modules: whole module names, which PEFT matches exactly.
  LoadedModel uneven = base_folder_loaded(base_dir, 21);
  torch::manual_seed(24);
  uneven.model->add_lora(spec_of("model.layers.0.self_attn.q_proj,v_proj", 4, 8.0));
  train_adapters_randomly(uneven.model, 25);
  uneven.model->eval();
  save_peft_adapter(adapter_dir, uneven.model, base_dir);
  config = nlohmann::json::parse(std::ifstream(adapter_dir + "/adapter_config.json"));
  EXPECT_EQ(config["target_modules"], (nlohmann::json{"model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj",
                                                      "model.layers.1.self_attn.v_proj"}));
  EXPECT_TRUE(config["layers_to_transform"].is_null());
  EXPECT_TRUE(torch::equal(load_model_folder(adapter_dir, torch::kCPU).model->forward(ids).logits,
                           uneven.model->forward(ids).logits));
}

// Moves every trained copy of a whole module (modules_to_save), as training would.
void train_copies_randomly(CausalLM& m, uint64_t seed) {
  torch::NoGradGuard guard;
  torch::manual_seed(seed);
  for (auto& [name, t] : m->adapter_parameters())
    if (is_trained_copy(name)) t.add_(0.05 * torch::randn_like(t));
}

// modules_to_save: the copies are what trains (the originals stay frozen and serve the
// adapters-off reference exactly), our model_modules() are the model's modules with weights in
// every family, and a run round-trips as a PEFT folder and as a merged checkpoint.
TEST(Lora, ModulesToSaveTrainCopiesWhileTheReferenceKeepsTheOriginals) {
  for (const char* arch : {"llama", "gpt2"}) {
    ModelShape shape = lora_test_shape(arch);
    std::vector<std::string> with_weights;
    for (const auto& p : CausalLM(shape)->named_parameters())
      if (p.key().size() > 7 && p.key().substr(p.key().size() - 7) == ".weight") with_weights.push_back(p.key().substr(0, p.key().size() - 7));
    EXPECT_EQ(model_modules(shape), with_weights) << arch;
  }
  test::TestTempDir dir;
  const std::string base_dir = (dir.path() / "base").string();
  LoadedModel trained = base_folder_loaded(base_dir, 31);
  const auto ids = sample_ids();
  const auto base_logits = trained.model->forward(ids).logits;
  LoraSpec spec = spec_of("q_proj");
  spec.modules_to_save = {"lm_head", "model.norm", "layers.1.input_layernorm", "model.layers.0.mlp"};
  torch::manual_seed(32);
  trained.model->add_lora(spec);
  EXPECT_FALSE(trained.model->shape().tie_embeddings) << "PEFT's default unties a head it trains";
  EXPECT_EQ(trained.model->named_parameters()["lm_head.weight"].data_ptr(),
            trained.model->named_parameters()["embed_tokens.weight"].data_ptr())
      << "the untied head's frozen weight is the embedding's, not a second [V, d]";
  std::vector<std::string> copies;
  int64_t trainable = 0;
  for (const auto& p : trained.model->named_parameters()) {
    EXPECT_EQ(p.value().requires_grad(), is_adapter_parameter(p.key())) << p.key();
    if (is_trained_copy(p.key())) copies.push_back(p.key());
    if (p.value().requires_grad()) trainable += p.value().numel();
  }
  EXPECT_EQ(copies, (std::vector<std::string>{"layers.0.mlp.gate_proj.trained_weight", "layers.0.mlp.up_proj.trained_weight",
                                              "layers.0.mlp.down_proj.trained_weight", "layers.1.input_layernorm.trained_weight",
                                              "norm.trained_weight", "lm_head.trained_weight"}));
  LoraConfig config = lora_config_of("q_proj");
  config.modules_to_save = "lm_head, model.norm, layers.1.input_layernorm, model.layers.0.mlp";
  EXPECT_EQ(lora_parameter_count(lora_test_shape("llama"), config), trainable) << "the memory estimate counts the copies";
  EXPECT_TRUE(torch::equal(trained.model->forward(ids).logits, base_logits)) << "copies start as the originals";

  // A step moves the copies and the adapters only.
  std::map<std::string, torch::Tensor> before;
  for (const auto& p : trained.model->named_parameters()) before[p.key()] = p.value().detach().clone();
  trained.model->train();
  trained.model->forward(ids).logits.logsumexp(-1).mean().backward();
  for (const auto& p : trained.model->named_parameters())
    EXPECT_EQ(p.value().grad().defined(), is_adapter_parameter(p.key())) << p.key();
  EXPECT_GT(trained.model->named_parameters()["layers.0.mlp.up_proj.trained_weight"].grad().abs().sum().item<double>(), 0);
  trained.model->eval();
  train_adapters_randomly(trained.model, 33);
  train_copies_randomly(trained.model, 34);
  const auto expected = trained.model->forward(ids).logits;
  EXPECT_FALSE(torch::allclose(expected, base_logits));
  EXPECT_TRUE(torch::equal(without_adapters(trained.model)->forward(ids).logits, base_logits)) << "the reference is the base model";

  // As a PEFT folder: each copy under its module's whole name, and the same model back.
  const std::string adapter_dir = (dir.path() / "adapter").string();
  fs::create_directories(adapter_dir);
  save_peft_adapter(adapter_dir, trained.model, base_dir);
  const auto adapter_config = nlohmann::json::parse(std::ifstream(adapter_dir + "/adapter_config.json"));
  EXPECT_EQ(adapter_config["modules_to_save"],
            (nlohmann::json{"model.layers.0.mlp.gate_proj", "model.layers.0.mlp.up_proj", "model.layers.0.mlp.down_proj",
                            "model.layers.1.input_layernorm", "model.norm", "lm_head"}));
  EXPECT_EQ(adapter_config["ensure_weight_tying"], false);
  const auto file = load_safetensors(adapter_dir + "/adapter_model.safetensors");
  EXPECT_TRUE(file.tensors.count("base_model.model.lm_head.weight"));
  EXPECT_TRUE(file.tensors.count("base_model.model.model.layers.1.input_layernorm.weight"));
  LoadedModel reloaded = load_model_folder(adapter_dir, torch::kCPU);
  EXPECT_TRUE(torch::equal(reloaded.model->forward(ids).logits, expected));
  EXPECT_TRUE(torch::equal(without_adapters(reloaded.model)->forward(ids).logits, base_logits));
  // As a merged checkpoint: an untied model with the copies' weights.
  const std::string merged_dir = (dir.path() / "merged").string();
  save_model_files(merged_dir, trained.model, ByteTokenizer());
  EXPECT_EQ(nlohmann::json::parse(std::ifstream(merged_dir + "/config.json"))["tie_word_embeddings"], false);
  EXPECT_TRUE(torch::allclose(load_model_folder(merged_dir, torch::kCPU).model->forward(ids).logits, expected, 1e-5, 1e-6));

  // GPT-2 with ensure_weight_tying: one trained copy of wte, which stays its head; PEFT's
  // folder holds it under both names, and a head that differs from it is refused.
  const std::string gpt2_dir = (dir.path() / "gpt2").string();
  LoadedModel tied = base_folder_loaded(gpt2_dir, 35, "gpt2");
  const auto gpt2_base = tied.model->forward(ids).logits;
  LoraSpec tying = spec_of("c_fc");
  tying.modules_to_save = {"lm_head", "c_attn"};
  tying.ensure_weight_tying = true;
  tied.model->add_lora(tying);
  EXPECT_TRUE(tied.model->shape().tie_embeddings);
  train_copies_randomly(tied.model, 36);
  EXPECT_TRUE(torch::equal(tied.model->head_weight(), tied.model->named_parameters()["embed_tokens.trained_weight"]));
  const auto tied_expected = tied.model->forward(ids).logits;
  save_peft_adapter(adapter_dir, tied.model, gpt2_dir);
  EXPECT_EQ(nlohmann::json::parse(std::ifstream(adapter_dir + "/adapter_config.json"))["modules_to_save"],
            (nlohmann::json{"lm_head", "transformer.wte", "transformer.h.0.attn.c_attn", "transformer.h.1.attn.c_attn"}));
  EXPECT_TRUE(torch::equal(load_model_folder(adapter_dir, torch::kCPU).model->forward(ids).logits, tied_expected));
  EXPECT_TRUE(torch::equal(without_adapters(tied.model)->forward(ids).logits, gpt2_base));
  auto tensors = load_safetensors(adapter_dir + "/adapter_model.safetensors").tensors;
  EXPECT_EQ(tensors.at("base_model.model.transformer.h.0.attn.c_attn.weight").sizes(), (c10::IntArrayRef{32, 96})) << "Conv1D's layout";
  // PEFT's own save of it lists the embedding alone, by a name PEFT does not tie by; the head's
  // tensor beside it says they were tied. Without that tensor the head is the original.
  auto peft_config = nlohmann::json::parse(std::ifstream(adapter_dir + "/adapter_config.json"));
  peft_config["modules_to_save"] = {"transformer.wte", "c_attn"};
  std::ofstream(adapter_dir + "/adapter_config.json") << peft_config.dump();
  EXPECT_TRUE(torch::equal(load_model_folder(adapter_dir, torch::kCPU).model->forward(ids).logits, tied_expected));
  auto without_head = tensors;
  without_head.erase("base_model.model.lm_head.weight");
  save_safetensors(adapter_dir + "/adapter_model.safetensors", {without_head.begin(), without_head.end()});
  LoadedModel untied = load_model_folder(adapter_dir, torch::kCPU);
  EXPECT_FALSE(untied.model->shape().tie_embeddings);
  EXPECT_TRUE(torch::equal(untied.model->head_weight(), tied.model->named_parameters()["embed_tokens.weight"]));
  tensors.at("base_model.model.lm_head.weight").add_(1.0);
  save_safetensors(adapter_dir + "/adapter_model.safetensors", {tensors.begin(), tensors.end()});
  try {
    load_model_folder(adapter_dir, torch::kCPU);
    ADD_FAILURE() << "a tied head that differs from its embedding was loaded";
  } catch (const ModelFileError& e) {
    EXPECT_NE(std::string(e.what()).find("differs from the trained embedding it is tied to"), std::string::npos) << e.what();
  }
  const std::string tied_merged = (dir.path() / "tied_merged").string();
  save_model_files(tied_merged, tied.model, ByteTokenizer());
  EXPECT_TRUE(torch::allclose(load_model_folder(tied_merged, torch::kCPU).model->forward(ids).logits, tied_expected, 1e-5, 1e-6));
}

// trainable_token_indices: new values for some rows of the embedding (a tied head follows them,
// or has rows of its own and is untied), the rest frozen, the reference the base model, and the
// same model back from a PEFT folder and from a merged checkpoint.
TEST(Lora, TrainableTokenRowsTrainOnlyThoseRows) {
  test::TestTempDir dir;
  const std::string base_dir = (dir.path() / "base").string();
  LoadedModel trained = base_folder_loaded(base_dir, 41);
  ASSERT_TRUE(trained.model->shape().tie_embeddings);
  const auto ids = torch::tensor({{3, 7, 250, 9, 3, 100}, {7, 7, 1, 2, 250, 4}}, torch::kLong);
  const auto base_logits = trained.model->forward(ids).logits;
  LoraSpec spec = spec_of("q_proj");
  spec.trainable_tokens = {{"", {3, 7, 250}}};
  trained.model->add_lora(spec);
  EXPECT_TRUE(trained.model->shape().tie_embeddings) << "the head follows the embedding's rows";
  auto params = trained.model->named_parameters();
  ASSERT_TRUE(params.contains("embed_tokens.trainable_tokens_delta"));
  EXPECT_EQ(params["embed_tokens.trainable_tokens_delta"].sizes(), (c10::IntArrayRef{3, 32}));
  EXPECT_TRUE(torch::equal(trained.model->forward(ids).logits, base_logits)) << "the rows start at their values";
  trained.model->train();
  trained.model->forward(ids).logits.logsumexp(-1).mean().backward();
  EXPECT_FALSE(params["embed_tokens.weight"].grad().defined());
  EXPECT_GT(params["embed_tokens.trainable_tokens_delta"].grad().abs().sum().item<double>(), 0);
  trained.model->eval();
  {
    torch::NoGradGuard guard;
    params["embed_tokens.trainable_tokens_delta"].add_(0.5);
  }
  const auto expected = trained.model->forward(ids).logits;
  EXPECT_FALSE(torch::allclose(expected, base_logits));
  EXPECT_TRUE(torch::equal(without_adapters(trained.model)->forward(ids).logits, base_logits));
  const auto head = trained.model->head_weight();
  EXPECT_TRUE(torch::equal(head[7], params["embed_tokens.trainable_tokens_delta"][1])) << "the tied head's row 7 follows";
  EXPECT_TRUE(torch::equal(head[8], params["embed_tokens.weight"][8]));
  EXPECT_EQ(lora_targets_text(trained.model->shape(), trained.model->lora_targets()),
            "q_proj; trained rows: 3 tokens of the embedding (and the head, tied)");

  const std::string adapter_dir = (dir.path() / "adapter").string();
  fs::create_directories(adapter_dir);
  save_peft_adapter(adapter_dir, trained.model, base_dir);
  EXPECT_EQ(nlohmann::json::parse(std::ifstream(adapter_dir + "/adapter_config.json"))["trainable_token_indices"],
            (nlohmann::json{3, 7, 250}));
  EXPECT_TRUE(load_safetensors(adapter_dir + "/adapter_model.safetensors")
                  .tensors.count("base_model.model.model.embed_tokens.token_adapter.trainable_tokens_delta"));
  EXPECT_TRUE(torch::equal(load_model_folder(adapter_dir, torch::kCPU).model->forward(ids).logits, expected));
  const std::string merged_dir = (dir.path() / "merged").string();
  save_model_files(merged_dir, trained.model, ByteTokenizer());
  EXPECT_TRUE(torch::allclose(load_model_folder(merged_dir, torch::kCPU).model->forward(ids).logits, expected, 1e-5, 1e-6));

  // Other rows for the head: it is untied and has its own.
  LoadedModel apart = base_folder_loaded(base_dir, 41);
  LoraSpec own = spec_of("q_proj");
  own.from_adapter_file = true;
  own.trainable_tokens = {{"embed_tokens", {3}}, {"lm_head", {5, 6}}};
  apart.model->add_lora(own);
  EXPECT_FALSE(apart.model->shape().tie_embeddings);
  {
    torch::NoGradGuard guard;
    for (auto& [name, t] : apart.model->adapter_parameters())
      if (name.find("trainable_tokens_delta") != std::string::npos) t.add_(0.5);
  }
  const auto apart_expected = apart.model->forward(ids).logits;
  save_peft_adapter(adapter_dir, apart.model, base_dir);
  EXPECT_EQ(nlohmann::json::parse(std::ifstream(adapter_dir + "/adapter_config.json"))["trainable_token_indices"],
            (nlohmann::json{{"model.embed_tokens", {3}}, {"lm_head", {5, 6}}}));
  EXPECT_TRUE(torch::equal(load_model_folder(adapter_dir, torch::kCPU).model->forward(ids).logits, apart_expected));
  save_model_files(merged_dir, apart.model, ByteTokenizer());
  EXPECT_TRUE(torch::allclose(load_model_folder(merged_dir, torch::kCPU).model->forward(ids).logits, apart_expected, 1e-5, 1e-6));

  // The pad token's row of an untied embedding gets no gradient from the lookup (PEFT looks the
  // rows up with the embedding's padding_idx, config.json's pad_token_id).
  LoadedModel padded = base_folder_loaded(base_dir, 43);
  const int64_t pad = padded.model->shape().padding_idx;
  ASSERT_GE(pad, 0) << "the folder's config.json has a pad_token_id";
  LoraSpec pad_rows = spec_of("q_proj");
  pad_rows.from_adapter_file = true;
  pad_rows.trainable_tokens = {{"embed_tokens", {3, pad}}, {"lm_head", {5}}};
  padded.model->add_lora(pad_rows);
  auto with_pad = ids.clone();
  with_pad[1][3] = pad;
  padded.model->train();
  padded.model->forward(with_pad).logits.logsumexp(-1).mean().backward();
  const auto rows_grad = padded.model->named_parameters()["embed_tokens.trainable_tokens_delta"].grad();
  EXPECT_GT(rows_grad[0].abs().sum().item<double>(), 0);
  EXPECT_EQ(rows_grad[1].abs().sum().item<double>(), 0.0) << "the pad token's row";

  // A token listed twice in an adapter file, as PEFT takes it: both rows get the same gradient
  // (so they stay equal), and the folder written back lists it twice again and reloads.
  LoadedModel twice = base_folder_loaded(base_dir, 44);
  LoraSpec twice_rows = spec_of("q_proj");
  twice_rows.from_adapter_file = true;
  twice_rows.trainable_tokens = {{"", {3, 7, 3}}};
  twice.model->add_lora(twice_rows);
  twice.model->train();
  twice.model->forward(ids).logits.logsumexp(-1).mean().backward();
  auto twice_delta = twice.model->named_parameters()["embed_tokens.trainable_tokens_delta"];
  EXPECT_TRUE(torch::equal(twice_delta.grad()[0], twice_delta.grad()[2]));
  EXPECT_GT(twice_delta.grad()[0].abs().sum().item<double>(), 0);
  twice.model->eval();
  {
    torch::NoGradGuard guard;
    twice_delta.add_(0.5);
  }
  const auto twice_expected = twice.model->forward(ids).logits;
  save_peft_adapter(adapter_dir, twice.model, base_dir);
  EXPECT_EQ(nlohmann::json::parse(std::ifstream(adapter_dir + "/adapter_config.json"))["trainable_token_indices"],
            (nlohmann::json{3, 7, 3}));
  EXPECT_TRUE(torch::equal(load_model_folder(adapter_dir, torch::kCPU).model->forward(ids).logits, twice_expected));

  // What cannot be: a token beyond the vocabulary, rows of a module trained whole.
  LoraSpec beyond = spec_of("q_proj");
  beyond.trainable_tokens = {{"", {259}}};
  EXPECT_THROW(CausalLM(lora_test_shape("llama"))->add_lora(beyond), ConfigError);
  LoraSpec both = spec_of("q_proj");
  both.trainable_tokens = {{"", {3}}};
  both.modules_to_save = {"embed_tokens"};
  try {
    CausalLM(lora_test_shape("llama"))->add_lora(both);
    ADD_FAILURE() << "rows of an embedding trained whole";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("trainable_token_indices and model.lora.modules_to_save both train model.embed_tokens"),
              std::string::npos) << e.what();
  }
}

// The merged folder (dir/merged) and the PEFT adapter folder (dir/adapter, whose target_modules
// are `targets`) written for `model` both give `expected`; returns the adapter's tensors.
std::map<std::string, torch::Tensor> expect_written_folders_reload(const fs::path& dir, CausalLM& model,
                                                                   const std::string& base_dir, const torch::Tensor& ids,
                                                                   const torch::Tensor& expected,
                                                                   const nlohmann::json& targets) {
  const std::string merged_dir = (dir / "merged").string();
  save_model_files(merged_dir, model, ByteTokenizer());
  EXPECT_TRUE(torch::allclose(load_model_folder(merged_dir, torch::kCPU).model->forward(ids).logits, expected, 1e-5, 1e-6));
  const std::string adapter_dir = (dir / "adapter").string();
  fs::create_directories(adapter_dir);
  save_peft_adapter(adapter_dir, model, base_dir);
  EXPECT_EQ(nlohmann::json::parse(std::ifstream(adapter_dir + "/adapter_config.json"))["target_modules"], targets);
  EXPECT_TRUE(torch::equal(load_model_folder(adapter_dir, torch::kCPU).model->forward(ids).logits, expected));
  return load_safetensors(adapter_dir + "/adapter_model.safetensors").tensors;
}

// An adapted table's base weight as PEFT saves it beside the adapter (`key`, save_embedding_layers
// "auto"): the folder with it gives the same logits; one of another vocabulary is refused, naming
// the table.
void expect_peft_base_weight_read(const std::string& adapter_dir, const std::map<std::string, torch::Tensor>& tensors,
                                  const std::string& key, const torch::Tensor& base, const torch::Tensor& ids,
                                  const torch::Tensor& expected, const std::string& table) {
  std::vector<std::pair<std::string, torch::Tensor>> with_base(tensors.begin(), tensors.end());
  with_base.emplace_back(key, base.detach().clone());
  save_safetensors(adapter_dir + "/adapter_model.safetensors", with_base, {{"format", "pt"}});
  EXPECT_TRUE(torch::equal(load_model_folder(adapter_dir, torch::kCPU).model->forward(ids).logits, expected));
  with_base.back().second = torch::zeros({base.size(0) + 1, base.size(1)});
  save_safetensors(adapter_dir + "/adapter_model.safetensors", with_base, {{"format", "pt"}});
  try {
    load_model_folder(adapter_dir, torch::kCPU);
    ADD_FAILURE() << "a base " << table << " of another vocabulary";
  } catch (const ModelFileError& e) {
    EXPECT_NE(std::string(e.what()).find("the base model's " + table + " is"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("a model with another vocabulary"), std::string::npos) << e.what();
  }
}

// The token embedding adapted as PEFT's LoRA Embedding: lora_embedding_A [r, V] (zero) and
// lora_embedding_B [d, r] (normal), each token's row plus scale * B A[:, id]; the tied head
// keeps the original weight (PEFT's default), the merge is W + scale (B A)^T, and the adapter
// folder holds PEFT's keys, read back with the base weight PEFT saves beside them.
TEST(Lora, TokenEmbeddingAdapterIsPeftsLoraEmbedding) {
  test::TestTempDir dir;
  const std::string base_dir = (dir.path() / "base").string();
  LoadedModel trained = base_folder_loaded(base_dir, 51);
  ASSERT_TRUE(trained.model->shape().tie_embeddings);
  const int64_t V = trained.model->shape().vocab_size;
  const auto ids = torch::tensor({{3, 7, 250, 9, 3, 100}, {7, 7, 1, 2, 250, 4}}, torch::kLong);
  const auto base_logits = trained.model->forward(ids).logits;
  torch::manual_seed(52);
  trained.model->add_lora(spec_of("q_proj,embed_tokens", 4, 8.0));
  EXPECT_FALSE(trained.model->shape().tie_embeddings) << "the head keeps the original weight";
  auto params = trained.model->named_parameters();
  ASSERT_TRUE(params.contains("embed_tokens.lora_embedding_A"));
  EXPECT_EQ(params["embed_tokens.lora_embedding_A"].sizes(), (c10::IntArrayRef{4, V}));
  EXPECT_EQ(params["embed_tokens.lora_embedding_B"].sizes(), (c10::IntArrayRef{32, 4}));
  EXPECT_EQ(params["lm_head.weight"].data_ptr(), params["embed_tokens.weight"].data_ptr()) << "no second [V, d]";
  EXPECT_TRUE(torch::equal(trained.model->forward(ids).logits, base_logits)) << "A starts at zero";
  EXPECT_EQ(lora_parameter_count(lora_test_shape("llama"), lora_config_of("q_proj,embed_tokens")),
            2 * 4 * (32 + 32) + 4 * (V + 32));
  // The pad token's column of A gets no gradient (PEFT looks A up with the embedding's
  // padding_idx, config.json's pad_token_id).
  const int64_t pad = trained.model->shape().padding_idx;
  ASSERT_GE(pad, 0) << "the folder's config.json has a pad_token_id";
  auto with_pad = ids.clone();
  with_pad[0][2] = pad;
  trained.model->train();
  trained.model->forward(with_pad).logits.logsumexp(-1).mean().backward();
  EXPECT_FALSE(params["embed_tokens.weight"].grad().defined());
  const auto a_grad = params["embed_tokens.lora_embedding_A"].grad();
  EXPECT_GT(a_grad.select(1, 3).abs().sum().item<double>(), 0);
  EXPECT_EQ(a_grad.select(1, pad).abs().sum().item<double>(), 0.0);
  trained.model->eval();
  {
    torch::NoGradGuard guard;
    params["embed_tokens.lora_embedding_A"].normal_(0.0, 0.05);
  }
  const auto expected = trained.model->forward(ids).logits;
  EXPECT_FALSE(torch::allclose(expected, base_logits, 1e-4, 1e-5));
  EXPECT_TRUE(torch::equal(without_adapters(trained.model)->forward(ids).logits, base_logits));
  EXPECT_TRUE(torch::equal(trained.model->head_weight(), params["embed_tokens.weight"])) << "the head is not adapted";
  EXPECT_EQ(lora_targets_text(trained.model->shape(), trained.model->lora_targets()),
            "q_proj, the token embedding (the head keeps the original: untied)");

  // Merged: W + scale (B A)^T in the embedding, the original in the untied head.
  const auto merged_embedding = params["embed_tokens.weight"] +
                                torch::mm(params["embed_tokens.lora_embedding_B"], params["embed_tokens.lora_embedding_A"]).t() * 2.0;
  std::map<std::string, torch::Tensor> state;
  for (auto& [name, t] : model_state(trained.model)) state[name] = t;
  EXPECT_TRUE(torch::allclose(state.at("model.embed_tokens.weight"), merged_embedding, 1e-6, 1e-7));
  EXPECT_TRUE(torch::equal(state.at("lm_head.weight"), params["embed_tokens.weight"]));
  // PEFT's folder: the embedding by its name's end, its tensors without ".weight".
  const std::string adapter_dir = (dir.path() / "adapter").string();
  const auto tensors = expect_written_folders_reload(dir.path(), trained.model, base_dir, ids, expected, {"q_proj", "embed_tokens"});
  ASSERT_TRUE(tensors.count("base_model.model.model.embed_tokens.lora_embedding_A"));
  EXPECT_TRUE(tensors.count("base_model.model.model.embed_tokens.lora_embedding_B"));
  // PEFT saves the embedding's base weight beside its adapter and loads it into the model.
  expect_peft_base_weight_read(adapter_dir, tensors, "base_model.model.model.embed_tokens.base_layer.weight",
                               params["embed_tokens.weight"], ids, expected, "token embedding");

  // GPT-2's embedding is wte; the embedding alone is enough; its own rank by rank_pattern.
  CausalLM gpt2(lora_test_shape("gpt2"));
  LoraSpec wte = spec_of("wte", 4, 8.0);
  wte.rank_pattern = {{"wte", 2}};
  gpt2->add_lora(wte);
  EXPECT_TRUE(gpt2->lora_targets().modules.empty());
  EXPECT_EQ(gpt2->lora_targets().embedding.r, 2);
  const auto gpt2_config = peft_target_config(gpt2->shape(), gpt2->lora_targets());
  EXPECT_EQ(gpt2_config["target_modules"], (nlohmann::json{"wte"}));
  EXPECT_EQ(gpt2_config["rank_pattern"], (nlohmann::json{{"transformer.wte", 2}}));
  // An adapter file's ensure_weight_tying that PEFT did not apply (a pattern that does not match
  // the word "embed_tokens"): the folder written back says false, or PEFT would tie on reload.
  LoadedModel from_file = base_folder_loaded(base_dir, 51);
  LoraSpec untied_in_file = spec_of("q_proj");
  untied_in_file.targets.clear();
  untied_in_file.target_regex = R"(model\.embed_tokens)";
  untied_in_file.from_adapter_file = true;
  untied_in_file.ensure_weight_tying = true;
  from_file.model->add_lora(untied_in_file);
  EXPECT_FALSE(from_file.model->shape().tie_embeddings);
  save_peft_adapter(adapter_dir, from_file.model, base_dir);
  EXPECT_EQ(nlohmann::json::parse(std::ifstream(adapter_dir + "/adapter_config.json"))["ensure_weight_tying"], false);
  // With layers_to_transform the embedding (in no layer) is named whole, as PEFT applies layers
  // to names matched by their end.
  LoraSpec layered = spec_of("q_proj,model.embed_tokens");
  layered.layers = {1};
  CausalLM some_layers(lora_test_shape("llama"));
  some_layers->add_lora(layered);
  EXPECT_TRUE(some_layers->lora_targets().adapts_embedding());
  EXPECT_EQ(peft_target_config(some_layers->shape(), some_layers->lora_targets())["target_modules"],
            (nlohmann::json{"q_proj", "model.embed_tokens"}));

  // What is refused, with the way out.
  const auto refused = [](LoraSpec spec, const std::string& words) {
    try {
      CausalLM(lora_test_shape("llama"))->add_lora(spec);
      ADD_FAILURE() << "accepted: " << words;
    } catch (const ConfigError& e) {
      EXPECT_NE(std::string(e.what()).find(words), std::string::npos) << e.what();
    }
  };
  LoraSpec by_end = spec_of("q_proj,embed_tokens");
  by_end.layers = {1};
  refused(by_end, "name it whole, \"model.embed_tokens\"");
  LoraSpec dora = lora_spec(lora_config_of("q_proj,embed_tokens", 4, 8.0, true));
  refused(dora, "DoRA on an embedding is not built here");
  LoraSpec rows = spec_of("embed_tokens");
  rows.trainable_tokens = {{"", {3}}};
  refused(rows, "its adapter changes every row already");
  LoraSpec tied = spec_of("embed_tokens");
  tied.ensure_weight_tying = true;
  refused(tied, "set ensure_weight_tying false");
}

// The output head adapted as PEFT's LoRA Linear on lm_head: lora_A [r, d] (Kaiming), lora_B
// [V, r] (zero); the logits gain scale * h A^T B^T in the plain head and in the chunked one, with
// the same gradients; a tied embedding keeps the original weight (the head becomes a module of
// its own on the same storage); the merge is W + scale B A in the untied head; the adapter folder
// holds PEFT's keys and is read back, with the head's base weight PEFT saves beside them.
TEST(Lora, OutputHeadAdapterIsPeftsLoraLinear) {
  test::TestTempDir dir;
  const std::string base_dir = (dir.path() / "base").string();
  LoadedModel trained = base_folder_loaded(base_dir, 61);
  ASSERT_TRUE(trained.model->shape().tie_embeddings);
  const int64_t V = trained.model->shape().vocab_size;
  const auto ids = torch::tensor({{3, 7, 250, 9, 3, 100}, {7, 7, 1, 2, 250, 4}}, torch::kLong);
  const auto base_logits = trained.model->forward(ids).logits;
  trained.model->add_lora(spec_of("q_proj,lm_head", 4, 8.0));
  EXPECT_FALSE(trained.model->shape().tie_embeddings) << "the embedding keeps the original weight";
  auto params = trained.model->named_parameters();
  ASSERT_TRUE(params.contains("lm_head.lora_A"));
  EXPECT_EQ(params["lm_head.lora_A"].sizes(), (c10::IntArrayRef{4, 32}));
  EXPECT_EQ(params["lm_head.lora_B"].sizes(), (c10::IntArrayRef{V, 4}));
  EXPECT_EQ(params["lm_head.weight"].data_ptr(), params["embed_tokens.weight"].data_ptr()) << "no second [V, d]";
  EXPECT_TRUE(torch::equal(trained.model->forward(ids).logits, base_logits)) << "B starts at zero";
  EXPECT_EQ(lora_parameter_count(lora_test_shape("llama"), lora_config_of("q_proj,lm_head")), 2 * 4 * (32 + 32) + 4 * (32 + V));
  EXPECT_EQ(lora_targets_text(trained.model->shape(), trained.model->lora_targets()),
            "q_proj, the output head (the embedding keeps the original: untied)");
  {
    torch::NoGradGuard guard;
    params["lm_head.lora_B"].normal_(0.0, 0.05);
  }
  // logits = h W^T + scale h A^T B^T (scale 8 / 4), h the final hidden states.
  trained.model->eval();
  const auto out = trained.model->forward(ids);
  const auto W = params["embed_tokens.weight"];
  const auto by_hand = torch::matmul(out.hidden, W.t()) +
                       torch::matmul(torch::matmul(out.hidden, params["lm_head.lora_A"].t()), params["lm_head.lora_B"].t()) * 2.0;
  EXPECT_TRUE(torch::allclose(out.logits, by_hand, 1e-5, 1e-6));
  const auto expected = out.logits.detach();
  EXPECT_FALSE(torch::allclose(expected, base_logits, 1e-4, 1e-5));
  EXPECT_TRUE(torch::equal(without_adapters(trained.model)->forward(ids).logits, base_logits));

  // The chunked head gives the same log-probs and the same adapter gradients; only the adapters
  // get gradients.
  SequenceBatch batch;
  batch.input_ids = ids;
  batch.response_mask = torch::ones_like(ids, torch::kFloat32);
  batch.first_response = 1;
  std::map<std::string, torch::Tensor> grads[2];
  torch::Tensor sums[2];
  for (const bool chunked : {false, true}) {
    trained.model->set_chunked_logps(chunked);
    trained.model->zero_grad();
    auto scored = score_sequences(trained.model, batch);
    scored.logps.sum.sum().backward();
    sums[chunked] = scored.logps.sum.detach();
    for (auto& p : trained.model->named_parameters())
      if (p.value().grad().defined()) grads[chunked][p.key()] = p.value().grad().clone();
  }
  trained.model->set_chunked_logps(false);
  EXPECT_TRUE(torch::allclose(sums[0], sums[1], 1e-5, 1e-5)) << sums[0] << sums[1];
  ASSERT_EQ(grads[0].size(), grads[1].size());
  for (const auto& [name, g] : grads[0]) {
    SCOPED_TRACE(name);
    EXPECT_TRUE(is_adapter_parameter(name));
    ASSERT_TRUE(grads[1].count(name));
    EXPECT_TRUE(torch::allclose(g, grads[1][name], 1e-4, 1e-6)) << (g - grads[1][name]).abs().max();
  }
  EXPECT_GT(grads[0].at("lm_head.lora_A").abs().sum().item<double>(), 0);
  EXPECT_GT(grads[0].at("lm_head.lora_B").abs().sum().item<double>(), 0);

  // Merged: W + scale B A in the head, the original in the embedding.
  std::map<std::string, torch::Tensor> state;
  for (auto& [name, t] : model_state(trained.model)) state[name] = t;
  EXPECT_TRUE(torch::allclose(state.at("lm_head.weight"), W + torch::mm(params["lm_head.lora_B"], params["lm_head.lora_A"]) * 2.0,
                              1e-6, 1e-7));
  EXPECT_TRUE(torch::equal(state.at("model.embed_tokens.weight"), W));
  // PEFT's folder: "lm_head" in target_modules, its tensors as a Linear's.
  const std::string adapter_dir = (dir.path() / "adapter").string();
  const auto tensors = expect_written_folders_reload(dir.path(), trained.model, base_dir, ids, expected, {"q_proj", "lm_head"});
  ASSERT_TRUE(tensors.count("base_model.model.lm_head.lora_A.weight"));
  EXPECT_TRUE(tensors.count("base_model.model.lm_head.lora_B.weight"));
  // PEFT saves the head's base weight beside its adapter (save_embedding_layers "auto").
  expect_peft_base_weight_read(adapter_dir, tensors, "base_model.model.lm_head.base_layer.weight", W, ids, expected,
                               "output head");

  // Dropout on the head's adapter input while training (PEFT's lora_dropout on every target).
  LoadedModel dropped = base_folder_loaded(base_dir, 62);
  dropped.model->add_lora(lora_spec([] {
    LoraConfig c = lora_config_of("lm_head", 4, 8.0);
    c.dropout = 0.5;
    return c;
  }()));
  {
    torch::NoGradGuard guard;
    dropped.model->named_parameters()["lm_head.lora_B"].normal_(0.0, 0.05);
  }
  dropped.model->eval();
  const auto eval_logits = dropped.model->forward(ids).logits;
  EXPECT_TRUE(torch::equal(dropped.model->forward(ids).logits, eval_logits));
  dropped.model->train();
  EXPECT_FALSE(torch::allclose(dropped.model->forward(ids).logits, eval_logits, 1e-4, 1e-5)) << "dropout while training";
}

// PEFT's bias option: the biases it names train as copies (the adapters-off reference keeps the
// originals: the model before training, which PEFT's disabled adapters would not give), the
// adapter folder holds them under PEFT's keys (an adapted module's as its base layer's), the
// merged folder has them in place, with plain LoRA and with DoRA.
TEST(Lora, TrainedBiasesAreCopiesTheReferenceDoesNotUse) {
  test::TestTempDir dir;
  const std::string base_dir = (dir.path() / "base").string();
  LoadedModel trained = base_folder_loaded(base_dir, 71, "gpt2");
  const auto ids = sample_ids();
  const auto base_logits = trained.model->forward(ids).logits;
  LoraConfig config = lora_config_of("c_attn");
  config.bias = "all";
  config.modules_to_save = "ln_f";
  torch::manual_seed(72);
  trained.model->add_lora(lora_spec(config));
  int64_t trainable = 0;
  std::vector<std::string> layer0_biases;
  for (const auto& p : trained.model->named_parameters()) {
    EXPECT_EQ(p.value().requires_grad(), is_adapter_parameter(p.key())) << p.key();
    if (p.value().requires_grad()) trainable += p.value().numel();
    if (p.key().rfind("layers.0.", 0) == 0 && p.key().find("trained_bias") != std::string::npos) layer0_biases.push_back(p.key());
  }
  EXPECT_EQ(layer0_biases, (std::vector<std::string>{"layers.0.input_layernorm.trained_bias", "layers.0.self_attn.q_proj.trained_bias",
                                                     "layers.0.self_attn.k_proj.trained_bias", "layers.0.self_attn.v_proj.trained_bias",
                                                     "layers.0.self_attn.o_proj.trained_bias",
                                                     "layers.0.post_attention_layernorm.trained_bias",
                                                     "layers.0.mlp.up_proj.trained_bias", "layers.0.mlp.down_proj.trained_bias"}));
  EXPECT_EQ(lora_parameter_count(trained.model->shape(), config), trainable) << "the memory estimate counts the biases";
  EXPECT_TRUE(torch::equal(trained.model->forward(ids).logits, base_logits)) << "the biases start as the originals";
  trained.model->train();
  trained.model->forward(ids).logits.logsumexp(-1).mean().backward();
  auto params = trained.model->named_parameters();
  EXPECT_FALSE(params["layers.0.self_attn.q_proj.bias"].grad().defined());
  for (const char* name : {"layers.0.self_attn.q_proj.trained_bias", "layers.1.mlp.down_proj.trained_bias",
                           "layers.0.input_layernorm.trained_bias", "norm.trained_bias"})
    EXPECT_GT(params[name].grad().abs().sum().item<double>(), 0) << name;
  trained.model->eval();
  train_adapters_randomly(trained.model, 73);
  train_copies_randomly(trained.model, 74);  // (the biases are trained copies)
  const auto expected = trained.model->forward(ids).logits;
  EXPECT_FALSE(torch::allclose(expected, base_logits));
  EXPECT_TRUE(torch::equal(without_adapters(trained.model)->forward(ids).logits, base_logits)) << "the reference keeps the originals";

  const auto tensors = expect_written_folders_reload(dir.path(), trained.model, base_dir, ids, expected, {"c_attn"});
  const std::string adapter_dir = (dir.path() / "adapter").string();
  EXPECT_EQ(nlohmann::json::parse(std::ifstream(adapter_dir + "/adapter_config.json"))["bias"], "all");
  EXPECT_EQ(tensors.at("base_model.model.transformer.h.0.attn.c_attn.base_layer.bias").sizes(), (c10::IntArrayRef{96}))
      << "q's, k's and v's under the adapted c_attn's base layer";
  EXPECT_TRUE(torch::equal(tensors.at("base_model.model.transformer.h.1.mlp.c_proj.bias"), params["layers.1.mlp.down_proj.trained_bias"]));
  for (const char* key : {"base_model.model.transformer.h.0.ln_1.bias", "base_model.model.transformer.ln_f.weight",
                          "base_model.model.transformer.ln_f.bias"})
    EXPECT_TRUE(tensors.count(key)) << key;
  EXPECT_FALSE(tensors.count("base_model.model.transformer.h.0.attn.c_attn.bias"));
  LoadedModel reloaded = load_model_folder(adapter_dir, torch::kCPU);
  EXPECT_TRUE(torch::equal(without_adapters(reloaded.model)->forward(ids).logits, base_logits));
  // PEFT's own save with modules_to_save also holds the trained module's original bias and its
  // copy's once more (every tensor named bias): taken.
  auto with_peft_extras = tensors;
  with_peft_extras["base_model.model.transformer.ln_f.original_module.bias"] = torch::zeros({32});
  with_peft_extras["base_model.model.transformer.ln_f.modules_to_save.bias"] = tensors.at("base_model.model.transformer.ln_f.bias");
  save_safetensors(adapter_dir + "/adapter_model.safetensors", {with_peft_extras.begin(), with_peft_extras.end()});
  EXPECT_TRUE(torch::equal(load_model_folder(adapter_dir, torch::kCPU).model->forward(ids).logits, expected));
  // Such keys for a module whose bias alone trains (ln_1), or under another bias setting, are none
  // PEFT writes: refused, not ignored.
  const auto refused_with = [&](const std::map<std::string, torch::Tensor>& t, const std::string& bias, const std::string& key) {
    save_safetensors(adapter_dir + "/adapter_model.safetensors", {t.begin(), t.end()});
    auto config = nlohmann::json::parse(std::ifstream(adapter_dir + "/adapter_config.json"));
    config["bias"] = bias;
    std::ofstream(adapter_dir + "/adapter_config.json") << config.dump();
    try {
      load_model_folder(adapter_dir, torch::kCPU);
      ADD_FAILURE() << key << " was taken under bias " << bias;
    } catch (const ModelFileError& e) {
      EXPECT_NE(std::string(e.what()).find("tensor(s) no adapted projection or module to save uses (e.g. \"base_model.model.transformer." + key),
                std::string::npos)
          << e.what();
    }
  };
  auto bias_only_extra = tensors;
  bias_only_extra["base_model.model.transformer.h.0.ln_1.original_module.bias"] = torch::zeros({32});
  refused_with(bias_only_extra, "all", "h.0.ln_1.original_module.bias");
  auto lora_only = with_peft_extras;  // the adapted modules' biases and ln_f trained whole, as "lora_only" saves them
  for (auto it = lora_only.begin(); it != lora_only.end();)
    it = it->first.find(".bias") != std::string::npos && it->first.find("c_attn") == std::string::npos &&
                 it->first.find("ln_f") == std::string::npos
             ? lora_only.erase(it)
             : std::next(it);
  refused_with(lora_only, "lora_only", "ln_f.original_module.bias");
  auto config_all = nlohmann::json::parse(std::ifstream(adapter_dir + "/adapter_config.json"));
  config_all["bias"] = "all";
  std::ofstream(adapter_dir + "/adapter_config.json") << config_all.dump();
  auto without_one = tensors;
  without_one.erase("base_model.model.transformer.h.1.ln_2.bias");
  save_safetensors(adapter_dir + "/adapter_model.safetensors", {without_one.begin(), without_one.end()});
  try {
    load_model_folder(adapter_dir, torch::kCPU);
    ADD_FAILURE() << "an adapter without one of its trained biases was loaded";
  } catch (const ModelFileError& e) {
    EXPECT_NE(std::string(e.what()).find("has no tensor \"base_model.model.transformer.h.1.ln_2.bias\""), std::string::npos) << e.what();
  }
  auto adapter_config = nlohmann::json::parse(std::ifstream(adapter_dir + "/adapter_config.json"));
  adapter_config["bias"] = "some";
  std::ofstream(adapter_dir + "/adapter_config.json") << adapter_config.dump();
  try {
    read_peft_adapter_config(adapter_dir);
    ADD_FAILURE() << "bias \"some\" was read";
  } catch (const ModelFileError& e) {
    EXPECT_NE(std::string(e.what()).find("\"bias\" is \"some\"; PEFT's LoRA takes \"none\", \"all\" or \"lora_only\""),
              std::string::npos)
        << e.what();
  }

  // DoRA with the adapted modules' biases: k (W + scale B A) x + the trained bias.
  const fs::path dora_dir = dir.path() / "dora";
  LoadedModel dora = base_folder_loaded((dora_dir / "base").string(), 75, "gpt2");
  const auto dora_base = dora.model->forward(ids).logits;
  LoraConfig dora_config = lora_config_of("c_attn,c_fc", 4, 8.0, true);
  dora_config.bias = "lora_only";
  dora.model->add_lora(lora_spec(dora_config));
  EXPECT_EQ(dora.model->lora_targets().biases.size(), 8u) << "q, k, v and up in both layers";
  train_adapters_randomly(dora.model, 76);
  train_copies_randomly(dora.model, 77);
  const auto dora_expected = dora.model->forward(ids).logits;
  EXPECT_TRUE(torch::equal(without_adapters(dora.model)->forward(ids).logits, dora_base));
  const auto dora_tensors = expect_written_folders_reload(dora_dir, dora.model, (dora_dir / "base").string(), ids, dora_expected,
                                                          {"c_attn", "c_fc"});
  EXPECT_TRUE(dora_tensors.count("base_model.model.transformer.h.1.mlp.c_fc.base_layer.bias"));
  EXPECT_FALSE(dora_tensors.count("base_model.model.transformer.h.1.mlp.c_proj.bias")) << "not adapted: lora_only leaves it";
}

// PEFT's PiSSA and OLoRA start from the base minus the adapters' first values and compute that
// residual again when they load a folder: a folder whose adapters still hold their first values
// (drawn here as PEFT's pissa_init and olora_init draw them) gives the base model, the adapters
// off give the residual, and what cannot be computed again is refused with the way out.
TEST(Lora, PissaAndOloraFoldersLoadOntoTheResidualBaseAsPeftDoes) {
  test::TestTempDir dir;
  const std::string base_dir = (dir.path() / "base").string();
  LoadedModel loaded = base_folder_loaded(base_dir, 81);
  const auto ids = sample_ids();
  const auto base_logits = loaded.model->forward(ids).logits;
  auto base_params = loaded.model->named_parameters();
  const std::map<std::string, torch::Tensor> base_weights = {
      {"model.layers.0.self_attn.q_proj", base_params["layers.0.self_attn.q_proj.weight"].detach().clone()},
      {"model.layers.1.self_attn.q_proj", base_params["layers.1.self_attn.q_proj.weight"].detach().clone()},
      {"model.layers.0.mlp.down_proj", base_params["layers.0.mlp.down_proj.weight"].detach().clone()},
      {"model.layers.1.mlp.down_proj", base_params["layers.1.mlp.down_proj.weight"].detach().clone()}};
  loaded.model->add_lora(spec_of("q_proj,down_proj", 4, 8.0));  // scale 2
  const std::string adapter_dir = (dir.path() / "adapter").string();
  fs::create_directories(adapter_dir);
  save_peft_adapter(adapter_dir, loaded.model, base_dir);
  auto config = nlohmann::json::parse(std::ifstream(adapter_dir + "/adapter_config.json"));
  const double scale = 2.0;
  for (const char* init : {"pissa", "olora"}) {
    std::vector<std::pair<std::string, torch::Tensor>> tensors;
    for (const auto& [module, w] : base_weights) {
      torch::Tensor a, b;
      if (std::string(init) == "pissa") {  // A = sqrt(S_r / s) Vh_r, B = U_r sqrt(S_r / s)
        const auto [u, s, vh] = torch::linalg_svd(w, false);
        const auto root = (s.slice(0, 0, 4) / scale).sqrt();
        a = root.unsqueeze(1) * vh.slice(0, 0, 4);
        b = u.slice(1, 0, 4) * root;
      } else {  // A = R_r, B = Q_r
        const auto [q, r] = torch::linalg_qr(w);
        a = r.slice(0, 0, 4).contiguous();
        b = q.slice(1, 0, 4).contiguous();
      }
      tensors.emplace_back("base_model.model." + module + ".lora_A.weight", a.contiguous());
      tensors.emplace_back("base_model.model." + module + ".lora_B.weight", b.contiguous());
    }
    save_safetensors(adapter_dir + "/adapter_model.safetensors", tensors, {{"format", "pt"}});
    config["init_lora_weights"] = init;
    std::ofstream(adapter_dir + "/adapter_config.json") << config.dump();
    LoadedModel adapted = load_model_folder(adapter_dir, torch::kCPU);
    EXPECT_TRUE(torch::allclose(adapted.model->forward(ids).logits, base_logits, 1e-4, 1e-5)) << init << ": the first values give the base";
    const auto residual = without_adapters(adapted.model)->forward(ids).logits;
    EXPECT_GT((residual - base_logits).abs().max().item<double>(), 1e-2) << init << ": the adapters off are the residual";
    EXPECT_NE(peft_adapter_unsupported(adapted.model).find("residual of a " + std::string(init) + " adapter"), std::string::npos);
  }
  const auto refusal = [&](const nlohmann::json& c) {
    std::ofstream(adapter_dir + "/adapter_config.json") << c.dump();
    try {
      load_model_folder(adapter_dir, torch::kCPU);
    } catch (const ModelFileError& e) {
      return std::string(e.what());
    }
    return std::string("loaded");
  };
  for (const auto& [init, what] : std::vector<std::pair<std::string, std::string>>{
           {"pissa_niter_4", "PiSSA by a randomised SVD"}, {"corda", "CorDA, from the training data's activations"},
           {"loftq", "LoftQ, a quantised base"}}) {
    auto c = config;
    c["init_lora_weights"] = init;
    EXPECT_NE(refusal(c).find(what + ") changed the base model's weights in a way that cannot be computed again here; "
                              "convert the adapter to plain LoRA with PEFT"),
              std::string::npos)
        << refusal(c);
  }
  auto unknown = config;
  unknown["init_lora_weights"] = "svd";
  EXPECT_NE(refusal(unknown).find("init_lora_weights \"svd\" is not one of PEFT's LoRA initialisations"), std::string::npos);
  auto plain = config;
  plain["init_lora_weights"] = "gaussian";  // drawn differently, the base untouched: the trained values are all there is
  EXPECT_EQ(refusal(plain), "loaded");
  auto head = config;
  head["init_lora_weights"] = "pissa";
  head["target_modules"] = {"lm_head"};
  save_safetensors(adapter_dir + "/adapter_model.safetensors",
                   {{"base_model.model.lm_head.lora_A.weight", torch::zeros({4, 32})},
                    {"base_model.model.lm_head.lora_B.weight", torch::zeros({loaded.model->shape().vocab_size, 4})}},
                   {{"format", "pt"}});
  EXPECT_NE(refusal(head).find("with an adapter on the output head, which is the token embedding"), std::string::npos)
      << refusal(head);
}

// init_lora_weights in a run: PiSSA and OLoRA start the adapters at each weight's factors (A0,
// B0 as PEFT draws them, GPT-2's c_attn as one matrix) and subtract them, so the run starts at
// the base model and the adapters off stay the base model exactly (the reference); the merged
// folder is W + s (B A - B0 A0) and the adapter folder PEFT's conversion to plain LoRA of rank
// 2r over the untouched base. "gaussian" draws A with std 1 / r, B zero.
TEST(Lora, PissaAndOloraRunsStartAtTheBaseWhichStaysTheirReference) {
  test::TestTempDir dir;
  for (const std::string arch : {"llama", "gpt2"})
    for (const std::string init : {"pissa", "olora"}) {
      const fs::path here = dir.path() / (arch + "-" + init);
      const std::string base_dir = (here / "base").string();
      LoadedModel model = base_folder_loaded(base_dir, 91, arch);
      const auto ids = sample_ids();
      const auto base_logits = model.model->forward(ids).logits;
      LoraConfig config = lora_config_of(arch == "gpt2" ? "c_attn,c_fc" : "q_proj,v_proj,down_proj", 4, 8.0);
      config.init_lora_weights = init;
      if (arch == "llama") config.rank_pattern = "down_proj=2";
      model.model->add_lora(lora_spec(config));
      auto params = model.model->named_parameters();
      const std::string b = arch == "gpt2" ? "layers.0.self_attn.k_proj.lora_B" : "layers.0.mlp.down_proj.lora_B";
      EXPECT_GT(params[b].abs().max().item<double>(), 1e-2) << arch << " " << init << ": B starts away from zero";
      EXPECT_TRUE(torch::allclose(model.model->forward(ids).logits, base_logits, 1e-4, 1e-5)) << arch << " " << init;
      EXPECT_TRUE(torch::equal(without_adapters(model.model)->forward(ids).logits, base_logits)) << arch << " " << init;
      train_adapters_randomly(model.model, 92);
      const auto expected = model.model->forward(ids).logits;
      EXPECT_FALSE(torch::allclose(expected, base_logits, 1e-3, 1e-3));
      EXPECT_TRUE(torch::equal(without_adapters(model.model)->forward(ids).logits, base_logits)) << "the reference stays the base";
      const std::string merged_dir = (here / "merged").string();
      save_model_files(merged_dir, model.model, ByteTokenizer());
      EXPECT_TRUE(torch::allclose(load_model_folder(merged_dir, torch::kCPU).model->forward(ids).logits, expected, 1e-4, 1e-5));
      const std::string adapter_dir = (here / "adapter").string();
      fs::create_directories(adapter_dir);
      save_peft_adapter(adapter_dir, model.model, base_dir);
      const auto written = nlohmann::json::parse(std::ifstream(adapter_dir + "/adapter_config.json"));
      EXPECT_EQ(written["r"], 8);
      EXPECT_EQ(written["lora_alpha"], 16.0);
      EXPECT_EQ(written["init_lora_weights"], true);
      if (arch == "llama") {
        EXPECT_EQ(written["rank_pattern"], (nlohmann::json{{"mlp.down_proj", 4}})) << "2 doubled";
      }
      const auto tensors = load_safetensors(adapter_dir + "/adapter_model.safetensors").tensors;
      const std::string module = arch == "gpt2" ? "transformer.h.0.attn.c_attn" : "model.layers.0.self_attn.q_proj";
      EXPECT_EQ(tensors.at("base_model.model." + module + ".lora_A.weight").size(0), 8);
      EXPECT_EQ(tensors.at("base_model.model." + module + ".lora_B.weight").size(1), 8);
      LoadedModel reloaded = load_model_folder(adapter_dir, torch::kCPU);
      EXPECT_TRUE(torch::allclose(reloaded.model->forward(ids).logits, expected, 1e-4, 1e-5)) << arch << " " << init;
      EXPECT_TRUE(torch::equal(without_adapters(reloaded.model)->forward(ids).logits, base_logits));
    }
  LoadedModel gaussian = base_folder_loaded((dir.path() / "gaussian").string(), 93);
  const auto ids = sample_ids();
  const auto base_logits = gaussian.model->forward(ids).logits;
  LoraConfig config = lora_config_of("q_proj", 4, 8.0);
  config.init_lora_weights = "gaussian";
  torch::manual_seed(94);
  gaussian.model->add_lora(lora_spec(config));
  std::vector<torch::Tensor> a;
  for (const auto& [name, t] : gaussian.model->adapter_parameters())
    if (name.find("lora_A") != std::string::npos) a.push_back(t.flatten());
  const double std = torch::cat(a).std().item<double>();
  EXPECT_GT(std, 0.2);
  EXPECT_LT(std, 0.3) << "1 / r = 0.25";
  EXPECT_TRUE(torch::equal(gaussian.model->forward(ids).logits, base_logits)) << "B starts at zero";
}

// Under bf16 a LoRA run keeps its frozen base's projections in bf16 where bf16 holds their values
// (a folder stored in bf16, loaded so, or random weights drawn as bf16 values and stored so after
// the adapters are added): nothing changes, for every kind of adapter. The folder loaded in
// float32 and loaded keeping bf16 give bitwise the same logits (training mode with adapter
// dropout, evaluation, adapters off, the plain and the chunked head), the same gradients and
// the same merged weights; adapters, trained copies, a head sharing the embedding's storage and
// a head with trained token rows are float32. A base whose values bf16 cannot hold keeps float32.
TEST(Lora, AFrozenBaseOfBf16ValuesStoredInBf16ChangesNoNumber) {
  test::TestTempDir dir;
  struct Case {
    std::string name, arch;
    bool tied;
    LoraConfig config;
    std::vector<std::pair<std::string, std::vector<int64_t>>> tokens;
    bool at_load = true;  // kept in bf16 as the folder is loaded, else once the adapters are on
  };
  std::vector<Case> cases;
  LoraConfig plain = lora_config_of("q_proj,v_proj,down_proj,lm_head", 4, 8.0);
  plain.rank_pattern = "down_proj=2";
  plain.dropout = 0.1;
  plain.modules_to_save = "o_proj";
  cases.push_back({"plain, untied head adapted, o_proj whole", "llama", false, plain, {}});
  cases.push_back({"the same kept in bf16 after loading", "llama", false, plain, {}, false});
  cases.push_back({"DoRA with dropout", "llama", true, lora_config_of("q_proj,o_proj,up_proj", 4, 8.0, true), {}});
  cases.back().config.dropout = 0.1;
  cases.push_back({"PiSSA", "llama", true, lora_config_of("q_proj,up_proj", 4, 8.0), {}});
  cases.back().config.init_lora_weights = "pissa";
  cases.push_back({"GPT-2 c_attn, biases all, ln_f whole", "gpt2", true, lora_config_of("c_attn,c_fc"), {}});
  cases.back().config.bias = "all";
  cases.back().config.modules_to_save = "ln_f";
  cases.push_back({"tied head adapted", "llama", true, lora_config_of("q_proj,lm_head"), {}});
  cases.push_back({"untied head with token rows", "llama", false, lora_config_of("k_proj"), {{"lm_head", {3, 7}}}});
  const auto ids = sample_ids();
  int folder = 0;
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    ModelShape shape = lora_test_shape(c.arch);
    shape.tie_embeddings = c.tied;
    const std::string base_dir = (dir.path() / std::to_string(folder++)).string();
    {
      torch::manual_seed(101);
      CausalLM base(shape);
      save_model_files(base_dir, base, ByteTokenizer(), {"bfloat16"});
    }
    auto make = [&](bool bf16_at_load) {
      CausalLM m = load_model_folder(base_dir, torch::kCPU, {},
                                     bf16_at_load ? FrozenProjections::bf16_where_exact : FrozenProjections::float32)
                       .model;
      LoraSpec spec = lora_spec(c.config);
      spec.trainable_tokens = c.tokens;
      torch::manual_seed(102);
      m->add_lora(spec);
      train_adapters_randomly(m, 103);
      return m;
    };
    CausalLM float32 = make(false), stored = make(c.at_load);
    EXPECT_EQ(stored->named_parameters()["layers.1.self_attn.k_proj.weight"].scalar_type(),
              c.at_load ? torch::kBFloat16 : torch::kFloat32);
    const int64_t n = stored->store_projections_in_bf16(true);
    EXPECT_GT(n, 0);
    int64_t bf16_values = 0;
    for (const auto& p : stored->named_parameters()) {
      const bool bf16 = p.value().scalar_type() == torch::kBFloat16;
      if (bf16) bf16_values += p.value().numel();
      if (p.value().requires_grad() || p.key().rfind("embed_tokens.", 0) == 0 || p.key().find("norm.") != std::string::npos) {
        EXPECT_FALSE(bf16) << p.key();
      }
    }
    EXPECT_EQ(bf16_values, n);
    const auto head = stored->named_parameters().find("lm_head.weight");
    if (head != nullptr) {
      EXPECT_EQ(head->scalar_type() == torch::kBFloat16, !c.tied && c.tokens.empty()) << "a head of its own, without trained rows";
    }
    if (c.name == "PiSSA") {
      EXPECT_EQ(n, parameter_parts(shape).projections);
    }
    for (const auto& p : float32->parameters()) EXPECT_EQ(p.scalar_type(), torch::kFloat32);

    // The plain head's logits and the chunked head's log-probs (its adapter's low-rank part included).
    const auto scored = [&](CausalLM& m) {
      torch::manual_seed(104);
      const LMOutput out = m->forward(ids);
      const auto rows = out.hidden.reshape({-1, out.hidden.size(-1)});
      return std::pair{out.logits, chunked_token_logps(rows, m->head_weight(), ids.reshape({-1}), 0.0, 0, m->head_low_rank(rows))};
    };
    for (bool training : {true, false}) {
      float32->train(training);
      stored->train(training);
      const auto [a, a_chunked] = scored(float32);
      const auto [b, b_chunked] = scored(stored);
      EXPECT_TRUE(torch::equal(a, b)) << (training ? "training" : "evaluation");
      EXPECT_TRUE(torch::equal(a_chunked, b_chunked)) << (training ? "training" : "evaluation");
      if (!training) continue;
      (a.logsumexp(-1).mean() + a_chunked.mean()).backward();
      (b.logsumexp(-1).mean() + b_chunked.mean()).backward();
      auto grads = float32->named_parameters();
      for (const auto& p : stored->named_parameters())
        if (p.value().requires_grad()) {
          EXPECT_TRUE(torch::equal(p.value().grad(), grads[p.key()].grad())) << p.key();
        }
    }
    EXPECT_TRUE(torch::equal(without_adapters(float32)->forward(ids).logits, without_adapters(stored)->forward(ids).logits));
    std::map<std::string, torch::Tensor> merged;
    for (auto& [name, t] : model_state(float32)) merged[name] = t;
    for (auto& [name, t] : model_state(stored))
      EXPECT_TRUE(torch::equal(t.to(torch::kFloat32), merged.at(name))) << "merged " << name;
  }
  torch::manual_seed(105);
  CausalLM fresh(lora_test_shape("llama"));
  fresh->add_lora(spec_of("q_proj"));
  EXPECT_EQ(fresh->store_projections_in_bf16(true), 0) << "float32 values stay float32";
}

TEST(Lora, WhatCannotBeAppliedIsRefusedWithTheReason) {
  // GPT-2 keeps q, k and v in one module, c_attn, which PEFT adapts with one A: separate q and
  // v adapters have no PEFT folder, and the reason says what to do.
  torch::manual_seed(14);
  CausalLM gpt2(lora_test_shape("gpt2"));
  gpt2->add_lora(spec_of("q_proj,v_proj"));
  const std::string why = peft_adapter_unsupported(gpt2);
  EXPECT_NE(why.find("one module (attn.c_attn)"), std::string::npos) << why;
  EXPECT_NE(why.find("merged"), std::string::npos) << why;
  // A GELU MLP has no gate projection; a Llama model no c_attn.
  for (const auto& [arch, target] : {std::pair{"gpt2", "gate_proj"}, std::pair{"llama", "q_proj,c_attn"}}) {
    CausalLM model(lora_test_shape(arch));
    try {
      model->add_lora(spec_of(target));
      ADD_FAILURE() << arch << " adapted " << target;
    } catch (const ConfigError& e) {
      EXPECT_NE(std::string(e.what()).find("which this " + std::string(arch) + " model does not have"), std::string::npos)
          << e.what();
      // GPT-2's own names are given beside ours; Llama's are ours.
      EXPECT_EQ(std::string(e.what()).find("Hugging Face's modules: attn.c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj") !=
                    std::string::npos,
                std::string(arch) == "gpt2")
          << e.what();
    }
  }
  EXPECT_THROW(lora_target_modules("q_proj,qkv_proj"), ConfigError);
  EXPECT_THROW(lora_target_modules(" , "), ConfigError);
  EXPECT_EQ(lora_target_modules(" v_proj , q_proj,v_proj"), (std::vector<std::string>{"v_proj", "q_proj"}));
  // "all-linear": every projection of the model; on GPT-2, q, k and v share one A.
  const LoraTargets llama_all = resolve_lora_targets(lora_test_shape("llama"), lora_target_modules("all-linear"));
  EXPECT_EQ(llama_all.projections.size(), 7u);
  EXPECT_FALSE(llama_all.shared_qkv);
  // GPT-2's q, k and v share one A when picked by c_attn's name (or all-linear), as PEFT's one
  // adapter on it; named by our names each has its own.
  EXPECT_TRUE(resolve_lora_targets(lora_test_shape("gpt2"), {"c_attn"}).shared_qkv);
  EXPECT_FALSE(resolve_lora_targets(lora_test_shape("gpt2"), {"q_proj", "k_proj", "v_proj", "attn.c_proj"}).shared_qkv);
  const LoraTargets gpt2_all = resolve_lora_targets(lora_test_shape("gpt2"), lora_target_modules("all-linear"));
  EXPECT_EQ(gpt2_all.projections,
            (std::vector<std::string>{"q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj"}));
  EXPECT_TRUE(gpt2_all.shared_qkv);
  // PEFT's suffix names: "c_proj" is both of GPT-2's, "mlp.c_proj" one, "self_attn.q_proj" Llama's q.
  EXPECT_EQ(resolve_lora_targets(lora_test_shape("gpt2"), {"c_proj"}).projections,
            (std::vector<std::string>{"o_proj", "down_proj"}));
  EXPECT_EQ(resolve_lora_targets(lora_test_shape("gpt2"), {"mlp.c_proj"}).projections, (std::vector<std::string>{"down_proj"}));
  EXPECT_EQ(resolve_lora_targets(lora_test_shape("llama"), {"self_attn.q_proj"}).projections,
            (std::vector<std::string>{"q_proj"}));
  // Whole module names, one per layer, as PEFT saves "all-linear"; some layers only adapt those
  // (lora_targets_test.cpp has the rest of PEFT's per-layer settings).
  EXPECT_TRUE(is_known_lora_target("transformer.h.0.attn.c_proj"));
  EXPECT_FALSE(is_known_lora_target("transformer.h.0.attn.c_q"));
  const LoraTargets gpt2_whole =
      resolve_lora_targets(lora_test_shape("gpt2"), lora_target_modules("transformer.h.1.attn.c_attn, transformer.h.0.attn.c_attn, "
                                                                         "transformer.h.0.mlp.c_proj, transformer.h.1.mlp.c_proj"));
  EXPECT_EQ(gpt2_whole.projections, (std::vector<std::string>{"q_proj", "k_proj", "v_proj", "down_proj"}));
  EXPECT_EQ(gpt2_whole.modules.size(), 8u);
  EXPECT_TRUE(gpt2_whole.shared_qkv);
  const LoraTargets one_layer = resolve_lora_targets(lora_test_shape("llama"), {"model.layers.1.self_attn.q_proj", "v_proj"});
  EXPECT_EQ(one_layer.find(0, "q_proj"), nullptr);
  EXPECT_NE(one_layer.find(1, "q_proj"), nullptr);
  EXPECT_EQ(one_layer.modules.size(), 3u);
  EXPECT_THROW(resolve_lora_targets(lora_test_shape("llama"), {"model.layers.2.self_attn.q_proj"}), ConfigError)
      << "the model has layers 0 and 1";

  // Adapter configs the workbench cannot apply (over a Llama base folder).
  test::TestTempDir dir;
  const std::string base_dir = (dir.path() / "base").string();
  base_folder_loaded(base_dir, 15);
  auto refused = [&](const nlohmann::json& config, const std::string& expected) {
    std::ofstream(dir.path() / "adapter_config.json") << config.dump();
    try {
      read_peft_adapter_config(dir.path().string());
      ADD_FAILURE() << "accepted " << config.dump();
    } catch (const ModelFileError& e) {
      EXPECT_NE(std::string(e.what()).find(expected), std::string::npos) << e.what();
    }
  };
  const nlohmann::json ok = {{"peft_type", "LORA"}, {"r", 4}, {"lora_alpha", 8}, {"target_modules", {"q_proj"}},
                             {"base_model_name_or_path", base_dir}};
  auto with = [&](const std::string& key, const nlohmann::json& v) {
    auto c = ok;
    c[key] = v;
    return c;
  };
  refused(with("peft_type", "IA3"), "peft_type");
  refused(with("bias", "lora"), "\"bias\" is \"lora\"; PEFT's LoRA takes \"none\", \"all\" or \"lora_only\"");
  refused(with("r", 0), "\"r\"");
  refused(with("base_model_name_or_path", "meta-llama/Llama-3.2-1B"), "Hub id");
  refused(with("target_modules", {"qkv_proj", "all-linear"}), "names no projection of the base model");
  // As PEFT: names no module has are ignored while another matches; "all-linear" is that only
  // as the whole string (in any case), in a list a name no module has.
  auto read_targets = [&](const nlohmann::json& config) {
    std::ofstream(dir.path() / "adapter_config.json") << config.dump();
    return read_peft_adapter_config(dir.path().string()).spec.targets;
  };
  EXPECT_EQ(read_targets(with("target_modules", {"q_proj", "c_attn", "all-linear"})), (std::vector<std::string>{"q_proj"}));
  EXPECT_EQ(read_targets(with("target_modules", "ALL-LINEAR")), (std::vector<std::string>{"all-linear"}));
  // PEFT's per-layer settings are read (applied in AdaptersOnSomeLayersWithTheirOwnRanks...).
  refused(with("target_modules", {"q_proj", 3}), "must list module names");
  refused(with("rank_pattern", {{"q_proj", 0}}), "rank_pattern gives \"q_proj\" 0; it must be a positive integer");
  refused(with("alpha_pattern", {{"q_proj", "big"}}), "it must be a positive finite number");
  refused(with("r", 70000), "\"r\" must be a positive integer up to 65536");
  refused(with("lora_alpha", 1e300), "\"lora_alpha\" must be a positive, finite number");
  refused(with("layers_to_transform", {0, -1}), "layers_to_transform");
  refused(with("layers_pattern", "layers"), "layers_pattern is set without layers_to_transform");
  auto regex_with_layers = with("target_modules", ".*\\.(q|v)_proj");
  regex_with_layers["layers_to_transform"] = 1;
  refused(regex_with_layers, "cannot be used when target_modules is one string");
  regex_with_layers["target_modules"] = "all-linear";
  refused(regex_with_layers, "cannot be used when target_modules is one string");
  // As PEFT: an empty layers_pattern is any, an empty layers_to_transform every layer.
  auto empty_layers = with("layers_to_transform", nlohmann::json::array());
  empty_layers["layers_pattern"] = "layers";
  std::ofstream(dir.path() / "adapter_config.json") << empty_layers.dump();
  EXPECT_TRUE(read_peft_adapter_config(dir.path().string()).spec.layers.empty());
  empty_layers["layers_to_transform"] = {1, 1, 0};
  empty_layers["layers_pattern"] = "";
  std::ofstream(dir.path() / "adapter_config.json") << empty_layers.dump();
  const LoraSpec read_back = read_peft_adapter_config(dir.path().string()).spec;
  EXPECT_EQ(read_back.layers, (std::vector<int64_t>{1, 0}));
  EXPECT_TRUE(read_back.layers_pattern.empty());
  EXPECT_TRUE(read_back.from_adapter_file);
  refused(with("lora_dropout", "0.1"), "\"lora_dropout\" must be a number");
  refused(with("modules_to_save", "lm_head"), "\"modules_to_save\" must list module names");
  refused(with("modules_to_save", {"lm_head", 1}), "\"modules_to_save\" must list module names");
  refused(with("base_model_name_or_path", 7), "base_model_name_or_path is empty");
  nlohmann::json deep = 1;
  for (int i = 0; i < 100; ++i) deep = nlohmann::json::array({deep});
  refused(with("layers_to_transform", deep), "nests deeper");
  refused(with("trainable_token_indices", {1, "2"}), "\"trainable_token_indices\" must list token ids");
  refused(with("trainable_token_indices", {{"embed_tokens", 3}}), "\"trainable_token_indices\" must list token ids");
  refused(with("layer_replication", {{0, 2}, {1, 2}}), "layer_replication");
  refused(with("lora_bias", true), "lora_bias");
  refused(with("alora_invocation_tokens", {5, 6}), "alora_invocation_tokens");
  refused(with("arrow_config", {{"top_k", 2}}), "arrow_config");
  refused(with("kasa_config", nlohmann::json::object()), "kasa_config");  // PEFT builds KasaConfig() from {}
  refused(with("use_qalora", 1), "use_qalora");
  // Every key PEFT 0.20 writes, each off, as in its save_pretrained output: accepted.
  auto peft_written = ok;
  for (const char* key : {"alora_invocation_tokens", "arrow_config", "exclude_modules", "layer_replication", "layers_pattern",
                          "layers_to_transform", "modules_to_save", "target_parameters", "trainable_token_indices",
                          "use_bdlora", "monteclora_config", "kasa_config", "velora_config", "eva_config"})
    peft_written[key] = nullptr;
  for (const char* key : {"lora_bias", "use_qalora", "use_dora", "use_rslora"}) peft_written[key] = false;
  peft_written["alpha_pattern"] = nlohmann::json::object();
  peft_written["rank_pattern"] = nlohmann::json::object();
  peft_written["loftq_config"] = nlohmann::json::object();
  peft_written["arrow_config"] = nlohmann::json::object();   // a plain dict in PEFT: off
  peft_written["alora_invocation_tokens"] = nlohmann::json::array();
  peft_written["fan_in_fan_out"] = true;  // PEFT sets it from the layer's kind (False for nn.Linear)
  std::ofstream(dir.path() / "adapter_config.json") << peft_written.dump();
  EXPECT_EQ(read_peft_adapter_config(dir.path().string()).spec.r, 4);
  fs::create_directories(dir.path() / "other");
  std::ofstream(dir.path() / "other" / "adapter_config.json") << ok.dump();
  refused(with("base_model_name_or_path", (dir.path() / "other").string()), "is itself an adapter folder");
}

}  // namespace
}  // namespace ganpo
