// Which modules PEFT's LoraConfig settings adapt, with which ranks, read against a model
// (core/model/lora_targets.h): layers_to_transform and layers_pattern, whole module names,
// target_modules as a regular expression, exclude_modules, rank_pattern and alpha_pattern in
// their order, GPT-2's one A for c_attn in the layers it is adapted in, modules_to_save, and
// what PEFT's adapter config gets back for them. Without LibTorch.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "core/error.h"
#include "core/model/lora_targets.h"
#include "core/model/model_shape.h"
#include "core/model/modules_to_save.h"
#include "tests/core/model/lora_test_shapes.h"

namespace ganpo {
namespace {

LoraSpec spec_with(std::vector<std::string> targets, int64_t r = 4, double alpha = 8) {
  LoraSpec spec;
  spec.r = r;
  spec.alpha = alpha;
  spec.targets = std::move(targets);
  return spec;
}

// "0.q_proj r4 a8, 1.v_proj r16 a8": each adapted module with its rank and alpha.
std::string modules_text(const LoraTargets& t) {
  std::string out;
  for (const LoraModule& m : t.modules) {
    char alpha[32];
    std::snprintf(alpha, sizeof alpha, "%g", m.alpha);
    out += (out.empty() ? "" : ", ") + std::to_string(m.layer) + "." + m.projection + " r" + std::to_string(m.r) + " a" + alpha;
  }
  return out;
}

std::string refusal(const ModelShape& shape, const LoraSpec& spec) {
  try {
    resolve_lora_targets(shape, spec);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "accepted: " + modules_text(resolve_lora_targets(shape, spec));
}

TEST(LoraTargets, LayersToTransformKeepsTheModulesANamePicksByItsEnd) {
  const ModelShape llama = lora_test_shape("llama");
  LoraSpec spec = spec_with({"q_proj", "self_attn.v_proj"});
  spec.layers = {1};
  EXPECT_EQ(modules_text(resolve_lora_targets(llama, spec)), "1.q_proj r4 a8, 1.v_proj r4 a8");
  // A whole module name is taken as it is (PEFT's exact match applies no layers).
  spec.targets = {"model.layers.0.self_attn.q_proj", "v_proj"};
  EXPECT_EQ(modules_text(resolve_lora_targets(llama, spec)), "0.q_proj r4 a8, 1.v_proj r4 a8");
  // layers_pattern names the module list the index follows: Llama's "layers", GPT-2's "h".
  spec.targets = {"q_proj"};
  spec.layers = {0};
  spec.layers_pattern = {"layers"};
  EXPECT_EQ(modules_text(resolve_lora_targets(llama, spec)), "0.q_proj r4 a8");
  spec.layers_pattern = {"h"};
  EXPECT_NE(refusal(llama, spec).find("leave no module of the model adapted"), std::string::npos) << refusal(llama, spec);
  LoraSpec gpt2_spec = spec_with({"c_attn"});
  gpt2_spec.layers = {1};
  gpt2_spec.layers_pattern = {"h"};
  const LoraTargets gpt2 = resolve_lora_targets(lora_test_shape("gpt2"), gpt2_spec);
  EXPECT_EQ(modules_text(gpt2), "1.q_proj r4 a8, 1.k_proj r4 a8, 1.v_proj r4 a8");
  EXPECT_TRUE(gpt2.shared_qkv) << "one A for c_attn in the layer it is adapted in";
  EXPECT_EQ(lora_targets_text(lora_test_shape("gpt2"), gpt2),
            "q_proj, k_proj, v_proj (one A: PEFT's adapter on attn.c_attn) in layer 1");
  // A layer a whole name gives alone, mixed with our q_proj everywhere: q, k and v are not one
  // module in layer 1, so each has its own adapter.
  EXPECT_FALSE(resolve_lora_targets(lora_test_shape("gpt2"), {"transformer.h.0.attn.c_attn", "q_proj"}).shared_qkv);
}

// An adapter_config.json names modules as PEFT matches them: on GPT-2 our q_proj is no module
// (PEFT ignores it; excluding it leaves c_attn whole), and a layer beyond the model is skipped.
TEST(LoraTargets, AnAdapterFilesNamesArePeftsOnly) {
  const ModelShape gpt2 = lora_test_shape("gpt2");
  LoraSpec spec = spec_with({"c_attn"});
  spec.exclude = {"q_proj"};
  spec.from_adapter_file = true;
  LoraTargets t = resolve_lora_targets(gpt2, spec);
  EXPECT_EQ(t.modules.size(), 6u) << modules_text(t);
  EXPECT_TRUE(t.shared_qkv);
  spec.from_adapter_file = false;  // in a run's config our names exclude our projection
  t = resolve_lora_targets(gpt2, spec);
  EXPECT_EQ(modules_text(t), "0.k_proj r4 a8, 0.v_proj r4 a8, 1.k_proj r4 a8, 1.v_proj r4 a8");
  EXPECT_TRUE(peft_picked_names(gpt2, {"q_proj", "c_attn"}) == std::vector<std::string>{"c_attn"});
  LoraSpec beyond = spec_with({"q_proj"});
  beyond.layers = {1, 5};
  beyond.key_prefix = "model.lora.";
  EXPECT_NE(refusal(lora_test_shape("llama"), beyond).find("model.lora.layers_to_transform names layer 5, but this model has 2 layers (0 to 1)"),
            std::string::npos);
  beyond.from_adapter_file = true;
  EXPECT_EQ(modules_text(resolve_lora_targets(lora_test_shape("llama"), beyond)), "1.q_proj r4 a8");
}

// The token embedding is adapted where a name or the pattern picks it as PEFT matches names:
// ours ("embed_tokens", also on GPT-2 in a run's config), the family's end or whole name, a
// pattern; not by "all-linear", not under modules_to_save or exclude_modules, not by a name's
// end under an adapter file's layers_to_transform; and ensure_weight_tying in an adapter file
// ties only as PEFT reads it.
TEST(LoraTargets, TheTokenEmbeddingIsAdaptedWherePeftWouldAdaptIt) {
  const ModelShape llama = lora_test_shape("llama"), gpt2 = lora_test_shape("gpt2");
  const auto adapts = [](const ModelShape& shape, LoraSpec spec) { return resolve_lora_targets(shape, spec).adapts_embedding(); };
  EXPECT_TRUE(adapts(llama, spec_with({"q_proj", "embed_tokens"})));
  EXPECT_TRUE(adapts(llama, spec_with({"model.embed_tokens"})));
  EXPECT_TRUE(adapts(gpt2, spec_with({"wte"})));
  EXPECT_TRUE(adapts(gpt2, spec_with({"transformer.wte"})));
  EXPECT_TRUE(adapts(gpt2, spec_with({"embed_tokens"})));  // ours, in a run's config
  EXPECT_FALSE(adapts(llama, spec_with({"all-linear"})));
  EXPECT_TRUE(is_known_lora_target("wte") && is_known_lora_target("model.embed_tokens") && is_known_lora_target("embed_tokens"));
  EXPECT_TRUE(peft_picked_names(gpt2, {"embed_tokens", "wte"}) == std::vector<std::string>{"wte"});
  LoraSpec file = spec_with({"q_proj", "embed_tokens"});
  file.from_adapter_file = true;
  file.layers = {0};  // PEFT: "embed_tokens" matched by its end is in no layer
  const LoraTargets layered = resolve_lora_targets(llama, file);
  EXPECT_FALSE(layered.adapts_embedding());
  EXPECT_EQ(modules_text(layered), "0.q_proj r4 a8");
  file.targets = {"q_proj", "model.embed_tokens"};  // a whole name is taken as it is
  EXPECT_TRUE(adapts(llama, file));
  LoraSpec pattern = spec_with({});
  pattern.target_regex = R"(.*(embed_tokens|q_proj))";
  const LoraTargets by_pattern = resolve_lora_targets(llama, pattern);
  EXPECT_TRUE(by_pattern.adapts_embedding());
  EXPECT_EQ(by_pattern.modules.size(), 2u);
  pattern.target_regex = "model.embed_tokens";  // the embedding alone
  EXPECT_TRUE(adapts(llama, pattern));
  pattern.exclude_regex = ".*embed_tokens";
  EXPECT_NE(refusal(llama, pattern).find("leave no module of the model adapted"), std::string::npos) << refusal(llama, pattern);
  LoraSpec saved = spec_with({"q_proj", "embed_tokens"});
  saved.modules_to_save = {"embed_tokens"};
  const LoraTargets whole = resolve_lora_targets(llama, saved);
  EXPECT_FALSE(whole.adapts_embedding()) << "trained whole instead, as PEFT";
  LoraSpec excluded = spec_with({"q_proj", "wte"});
  excluded.exclude = {"embed_tokens"};
  EXPECT_FALSE(adapts(gpt2, excluded));
  // The tied head keeps the original (untied); ensure_weight_tying in an adapter file asks for
  // PEFT's tied adapter only where a name ends in embed_tokens or lm_head ("wte" does not).
  EXPECT_TRUE(resolve_lora_targets(gpt2, spec_with({"wte"})).untie_head);
  LoraSpec tying = spec_with({"wte"});
  tying.from_adapter_file = true;
  tying.ensure_weight_tying = true;
  EXPECT_TRUE(resolve_lora_targets(gpt2, tying).untie_head);
  tying.targets = {"q_proj", "embed_tokens"};
  EXPECT_NE(refusal(llama, tying).find("ensure_weight_tying would keep the output head and the token embedding tied"),
            std::string::npos)
      << refusal(llama, tying);
  EXPECT_EQ(lora_targets_text(gpt2, resolve_lora_targets(gpt2, spec_with({"c_fc", "wte"}, 4, 8))),
            "up_proj, the token embedding (the head keeps the original: untied)");
  LoraSpec own_rank = spec_with({"q_proj", "embed_tokens"});
  own_rank.rank_pattern = {{"embed_tokens", 16}};
  EXPECT_EQ(lora_targets_text(llama, resolve_lora_targets(llama, own_rank)),
            "q_proj, the token embedding (r 16, the head keeps the original: untied)");
}

// The output head is adapted where "lm_head" or a pattern names it, whatever the layers (PEFT
// matches the name whole); not by "all-linear", not under modules_to_save or exclude_modules;
// a tied embedding keeps the original weight (untied) unless ensure_weight_tying asks for PEFT's
// tied adapters; DoRA and token rows of the adapted head are refused.
TEST(LoraTargets, TheOutputHeadIsAdaptedWherePeftWouldAdaptIt) {
  const ModelShape llama = lora_test_shape("llama"), gpt2 = lora_test_shape("gpt2");
  const auto adapts = [](const ModelShape& shape, LoraSpec spec) { return resolve_lora_targets(shape, spec).adapts_head(); };
  EXPECT_TRUE(adapts(llama, spec_with({"q_proj", "lm_head"})));
  EXPECT_TRUE(adapts(llama, spec_with({"lm_head"})));
  EXPECT_TRUE(adapts(gpt2, spec_with({"c_attn", "lm_head"})));
  EXPECT_FALSE(adapts(llama, spec_with({"all-linear"})));
  EXPECT_TRUE(is_known_lora_target("lm_head"));
  EXPECT_TRUE(peft_picked_names(llama, {"lm_head", "c_attn"}) == std::vector<std::string>{"lm_head"});
  LoraSpec layered = spec_with({"q_proj", "lm_head"});
  layered.layers = {1};  // "lm_head" is a whole name: the layers do not apply to it
  const LoraTargets with_layers = resolve_lora_targets(llama, layered);
  EXPECT_TRUE(with_layers.adapts_head());
  EXPECT_EQ(modules_text(with_layers), "1.q_proj r4 a8");
  EXPECT_EQ(peft_target_config(llama, with_layers)["target_modules"], (nlohmann::json{"q_proj", "lm_head"}));
  LoraSpec pattern = spec_with({});
  pattern.target_regex = R"(.*(q_proj|lm_head))";
  EXPECT_TRUE(adapts(llama, pattern));
  pattern.target_regex = "lm_head";  // the head alone
  const LoraTargets head_alone = resolve_lora_targets(llama, pattern);
  EXPECT_TRUE(head_alone.adapts_head() && head_alone.modules.empty());
  LoraSpec saved = spec_with({"q_proj", "lm_head"});
  saved.modules_to_save = {"lm_head"};
  EXPECT_FALSE(adapts(llama, saved)) << "trained whole instead, as PEFT";
  LoraSpec excluded = spec_with({"q_proj", "lm_head"});
  excluded.exclude = {"lm_head"};
  EXPECT_FALSE(adapts(llama, excluded));
  // Tied (both test shapes are): the embedding keeps the original.
  const LoraTargets untied = resolve_lora_targets(llama, spec_with({"q_proj", "lm_head"}));
  EXPECT_TRUE(untied.untie_head);
  EXPECT_EQ(lora_targets_text(llama, untied), "q_proj, the output head (the embedding keeps the original: untied)");
  LoraSpec own_rank = spec_with({"q_proj", "lm_head"});
  own_rank.rank_pattern = {{"lm_head", 2}};
  own_rank.alpha_pattern = {{"lm_head", 4}};
  const LoraTargets ranked = resolve_lora_targets(llama, own_rank);
  EXPECT_EQ(ranked.head.r, 2);
  EXPECT_DOUBLE_EQ(ranked.head.scale, 2.0);
  EXPECT_EQ(peft_target_config(llama, ranked)["rank_pattern"], (nlohmann::json{{"lm_head", 2}}));
  EXPECT_EQ(peft_target_config(llama, ranked)["alpha_pattern"], (nlohmann::json{{"lm_head", 4.0}}));
  EXPECT_EQ(lora_targets_text(llama, resolve_lora_targets(llama, spec_with({"embed_tokens", "lm_head"}))),
            "the token embedding, the output head (untied from the embedding)");
  LoraSpec tying = spec_with({"q_proj", "lm_head"});
  tying.ensure_weight_tying = true;
  EXPECT_NE(refusal(llama, tying).find("PEFT's tied adapters on embed_tokens and lm_head), which is not built here; set "
                                       "ensure_weight_tying false (the table not adapted keeps the original weights, as "
                                       "PEFT's default) or take lm_head out of target_modules"),
            std::string::npos)
      << refusal(llama, tying);
  LoraSpec dora = spec_with({"q_proj", "lm_head"});
  dora.dora = true;
  EXPECT_NE(refusal(llama, dora).find("DoRA on the head is not built here"), std::string::npos) << refusal(llama, dora);
  LoraSpec rows = spec_with({"q_proj", "lm_head"});
  rows.trainable_tokens = {{"", {3}}};  // the embedding's rows, which the tied head follows
  EXPECT_NE(refusal(llama, rows).find("trainable_token_indices gives rows of the output head (the embedding's, which the "
                                      "tied head follows)"),
            std::string::npos)
      << refusal(llama, rows);
  rows.trainable_tokens = {{"lm_head", {3}}};
  rows.from_adapter_file = true;
  EXPECT_NE(refusal(llama, rows).find("trainable_token_indices gives rows of the output head, which target_modules adapts"),
            std::string::npos)
      << refusal(llama, rows);
}

// PEFT's bias option: "all" trains every bias of the model (PEFT's every parameter named
// bias), "lora_only" the adapted modules'; a module trained whole keeps its own copy's.
TEST(LoraTargets, TrainedBiasesAreThoseOfPeftsBiasOption) {
  const ModelShape gpt2 = lora_test_shape("gpt2"), llama = lora_test_shape("llama");
  LoraSpec all = spec_with({"c_attn"});
  all.bias = "all";
  all.modules_to_save = {"ln_f"};
  const LoraTargets every = resolve_lora_targets(gpt2, all);
  std::vector<std::string> expected;
  for (int layer = 0; layer < 2; ++layer)
    for (const char* m : {"input_layernorm", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                          "post_attention_layernorm", "mlp.up_proj", "mlp.down_proj"})
      expected.push_back("layers." + std::to_string(layer) + "." + m);
  EXPECT_EQ(every.biases, expected) << "every bias but the final norm's, which trains with its copy";
  EXPECT_EQ(every.trained, (std::vector<std::string>{"norm"}));
  EXPECT_EQ(lora_targets_text(gpt2, every),
            "q_proj, k_proj, v_proj (one A: PEFT's adapter on attn.c_attn); trained whole: norm; trained biases: "
            "input_layernorm, self_attn.q_proj, self_attn.k_proj, self_attn.v_proj, self_attn.o_proj, "
            "post_attention_layernorm, mlp.up_proj, mlp.down_proj");
  EXPECT_EQ(every.first_trained_layer(gpt2.n_layers), 0);
  LoraSpec adapted = spec_with({"c_fc"});
  adapted.bias = "lora_only";
  adapted.layers = {1};
  const LoraTargets only = resolve_lora_targets(gpt2, adapted);
  EXPECT_EQ(only.biases, (std::vector<std::string>{"layers.1.mlp.up_proj"}));
  EXPECT_EQ(lora_targets_text(gpt2, only), "up_proj in layer 1; trained biases: mlp.up_proj in layer 1");
  // Qwen2's q, k and v have biases, its other modules none; Llama has none at all.
  ModelShape qwen = llama;
  qwen.qkv_bias = true;
  LoraSpec qv = spec_with({"q_proj", "v_proj", "o_proj"});
  qv.bias = "lora_only";
  EXPECT_EQ(resolve_lora_targets(qwen, qv).biases,
            (std::vector<std::string>{"layers.0.self_attn.q_proj", "layers.0.self_attn.v_proj", "layers.1.self_attn.q_proj",
                                      "layers.1.self_attn.v_proj"}));
  all.modules_to_save.clear();
  all.targets = {"q_proj"};
  EXPECT_TRUE(resolve_lora_targets(llama, all).biases.empty());
  EXPECT_EQ(module_bias_size(gpt2, "layers.0.self_attn.k_proj"), 32);
  EXPECT_EQ(module_bias_size(gpt2, "norm"), 32);
  EXPECT_EQ(module_bias_size(llama, "norm"), 0);
  all.bias = "some";
  EXPECT_NE(refusal(llama, all).find("bias is \"some\"; it must be \"none\", \"all\" or \"lora_only\""), std::string::npos)
      << refusal(llama, all);
}

// PiSSA and OLoRA start from each adapted weight's factors: the projections' plain LoRA only.
TEST(LoraTargets, PissaAndOloraAreForTheProjectionsPlainLora) {
  const ModelShape llama = lora_test_shape("llama");
  LoraSpec pissa = spec_with({"q_proj", "v_proj"});
  pissa.init = "pissa";
  pissa.key_prefix = "model.lora.";
  EXPECT_EQ(resolve_lora_targets(llama, pissa).modules.size(), 4u);
  LoraSpec dora = pissa;
  dora.dora = true;
  EXPECT_NE(refusal(llama, dora).find("model.lora.init_lora_weights = \"pissa\" starts the adapters from each weight's singular "
                                      "vectors, which is built here for the projections' plain LoRA only: turn use_dora off"),
            std::string::npos)
      << refusal(llama, dora);
  LoraSpec head = pissa;
  head.init = "olora";
  head.targets = {"q_proj", "lm_head"};
  EXPECT_NE(refusal(llama, head).find("QR factors, which is built here for the projections' plain LoRA only: take the token "
                                      "embedding and lm_head out of target_modules"),
            std::string::npos)
      << refusal(llama, head);
}

TEST(LoraTargets, ARegularExpressionIsMatchedAgainstWholeModuleNames) {
  const ModelShape llama = lora_test_shape("llama");
  LoraSpec spec = spec_with({});
  spec.target_regex = R"(.*\.layers\.1\.self_attn\.(q|v)_proj)";
  EXPECT_EQ(modules_text(resolve_lora_targets(llama, spec)), "1.q_proj r4 a8, 1.v_proj r4 a8");
  // re.fullmatch: a module's own name alone matches nothing.
  spec.target_regex = "q_proj";
  EXPECT_NE(refusal(llama, spec).find("matches no projection (nor the token embedding or lm_head) of this llama model, whose modules are named like "
                                      "model.layers.0.self_attn.q_proj"),
            std::string::npos)
      << refusal(llama, spec);
  spec.target_regex = "(q_proj";
  EXPECT_NE(refusal(llama, spec).find("target_modules: the regular expression (q_proj does not compile"), std::string::npos)
      << refusal(llama, spec);
  spec.target_regex = "(a+)+$";  // backtracks 2^n ways on no module name of this length: refused only where it does
  EXPECT_NE(refusal(llama, spec).find("matches no projection"), std::string::npos) << refusal(llama, spec);
  // GPT-2's c_attn picked by a pattern: one A for q, k and v.
  spec.target_regex = R"(transformer\.h\.\d+\.attn\.c_attn)";
  EXPECT_TRUE(resolve_lora_targets(lora_test_shape("gpt2"), spec).shared_qkv);
}

TEST(LoraTargets, ExcludedModulesAreNotAdapted) {
  const ModelShape llama = lora_test_shape("llama");
  LoraSpec spec = spec_with({"all-linear"});
  spec.exclude = {"model.layers.0.self_attn.q_proj", "mlp.gate_proj", "up_proj"};
  spec.exclude_regex = R"(.*\.layers\.1\.mlp\.down_proj)";
  EXPECT_EQ(modules_text(resolve_lora_targets(llama, spec)),
            "0.k_proj r4 a8, 0.v_proj r4 a8, 0.o_proj r4 a8, 0.down_proj r4 a8, "
            "1.q_proj r4 a8, 1.k_proj r4 a8, 1.v_proj r4 a8, 1.o_proj r4 a8");
  spec.targets = {"q_proj"};
  spec.exclude = {"q_proj"};
  EXPECT_NE(refusal(llama, spec).find("leave no module"), std::string::npos) << refusal(llama, spec);
}

TEST(LoraTargets, RankAndAlphaPatternsTakeTheFirstThatMatchesTheEndOfAModulesName) {
  const ModelShape llama = lora_test_shape("llama");
  LoraSpec spec = spec_with({"q_proj", "v_proj"});
  spec.rank_pattern = {{"q_proj", 16}, {"layers.0.self_attn.q_proj", 2}};
  spec.alpha_pattern = {{"model.layers.1.self_attn.v_proj", 32}};
  LoraTargets t = resolve_lora_targets(llama, spec);
  EXPECT_EQ(modules_text(t), "0.q_proj r16 a8, 0.v_proj r4 a8, 1.q_proj r16 a8, 1.v_proj r4 a32");
  EXPECT_DOUBLE_EQ(t.find(1, "v_proj")->scale, 32.0 / 4);
  EXPECT_DOUBLE_EQ(t.find(0, "q_proj")->scale, 8.0 / 16);
  spec.rank_pattern = {{"layers.0.self_attn.q_proj", 2}, {"q_proj", 16}};  // the other order
  spec.rslora = true;
  t = resolve_lora_targets(llama, spec);
  EXPECT_EQ(modules_text(t), "0.q_proj r2 a8, 0.v_proj r4 a8, 1.q_proj r16 a8, 1.v_proj r4 a32");
  EXPECT_DOUBLE_EQ(t.find(1, "q_proj")->scale, 8.0 / 4) << "rsLoRA: alpha / sqrt(r) with the module's r";
  EXPECT_EQ(lora_targets_text(llama, t), "q_proj (r 2 to 16 by layer), v_proj (alpha 8 to 32 by layer)");
  // The pattern must match at a name's dot: "proj" is no module's end.
  spec.rank_pattern = {{"proj", 16}};
  EXPECT_EQ(modules_text(resolve_lora_targets(llama, spec)), "0.q_proj r4 a8, 0.v_proj r4 a8, 1.q_proj r4 a8, 1.v_proj r4 a32")
      << "(alpha_pattern as before)";
  spec.rank_pattern = {{"q_proj[", 16}};
  EXPECT_NE(refusal(llama, spec).find("rank_pattern \"q_proj[\""), std::string::npos) << refusal(llama, spec);
  spec.rank_pattern = {{"q_proj", 0}};
  spec.key_prefix = "model.lora.";
  EXPECT_NE(refusal(llama, spec).find("model.lora.rank_pattern / model.lora.alpha_pattern give model.layers.0.self_attn.q_proj rank 0"),
            std::string::npos)
      << refusal(llama, spec);
}

TEST(LoraTargets, PeftsAdapterConfigSaysTheSameModulesAndRanks) {
  const ModelShape llama = lora_test_shape("llama");
  // The same layers for every module: short names and layers_to_transform; a path's own rank.
  LoraSpec spec = spec_with({"q_proj", "v_proj", "down_proj"});
  spec.layers = {1};
  spec.rank_pattern = {{"down_proj", 2}};
  spec.alpha_pattern = {{"model.layers.1.self_attn.v_proj", 4}};
  nlohmann::json config = peft_target_config(llama, resolve_lora_targets(llama, spec));
  EXPECT_EQ(config["r"], 4);
  EXPECT_EQ(config["lora_alpha"], 8.0);
  EXPECT_EQ(config["target_modules"], (nlohmann::json{"q_proj", "v_proj", "down_proj"}));
  EXPECT_EQ(config["layers_to_transform"], (nlohmann::json{1}));
  EXPECT_EQ(config["rank_pattern"], (nlohmann::json{{"mlp.down_proj", 2}}));
  EXPECT_EQ(config["alpha_pattern"], (nlohmann::json{{"self_attn.v_proj", 4.0}}));
  // Read back as PEFT reads it: the same modules.
  LoraSpec back = spec_with(config["target_modules"].get<std::vector<std::string>>());
  back.layers = config["layers_to_transform"].get<std::vector<int64_t>>();
  back.rank_pattern = {{"mlp.down_proj", 2}};
  back.alpha_pattern = {{"self_attn.v_proj", 4.0}};
  EXPECT_EQ(modules_text(resolve_lora_targets(llama, back)), modules_text(resolve_lora_targets(llama, spec)));

  // Layers that differ between modules: whole names; ranks that differ by layer: whole names.
  spec = spec_with({"model.layers.0.self_attn.q_proj", "v_proj"});
  spec.rank_pattern = {{"layers.1.self_attn.v_proj", 8}};
  config = peft_target_config(llama, resolve_lora_targets(llama, spec));
  EXPECT_EQ(config["target_modules"], (nlohmann::json{"model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj",
                                                      "model.layers.1.self_attn.v_proj"}));
  EXPECT_TRUE(config["layers_to_transform"].is_null());
  EXPECT_EQ(config["rank_pattern"], (nlohmann::json{{"model.layers.1.self_attn.v_proj", 8}}));
  EXPECT_EQ(config["alpha_pattern"], nlohmann::json::object());
  // GPT-2's c_attn once, in its layers.
  LoraSpec gpt2 = spec_with({"c_attn", "attn.c_proj"});
  gpt2.layers = {0};
  config = peft_target_config(lora_test_shape("gpt2"), resolve_lora_targets(lora_test_shape("gpt2"), gpt2));
  EXPECT_EQ(config["target_modules"], (nlohmann::json{"c_attn", "attn.c_proj"}));
  EXPECT_EQ(config["layers_to_transform"], (nlohmann::json{0}));
}

// A run's config takes target_modules and exclude_modules as PEFT's LoraConfig does: one string
// with a pattern's characters is a regular expression over whole module names.
TEST(LoraTargets, ARunsConfigTakesPeftsRegularExpressions) {
  EXPECT_FALSE(is_module_pattern("q_proj, self_attn.v_proj"));
  EXPECT_TRUE(is_module_pattern(R"(.*\.(q|v)_proj)"));
  LoraConfig c;
  c.r = 4;
  c.target_modules = R"( .*\.layers\.1\.self_attn\.(q|v)_proj )";
  c.exclude_modules = R"(.*v_proj)";
  const LoraSpec spec = lora_spec(c);
  EXPECT_TRUE(spec.targets.empty());
  EXPECT_EQ(spec.target_regex, R"(.*\.layers\.1\.self_attn\.(q|v)_proj)");
  EXPECT_EQ(spec.exclude_regex, ".*v_proj");
  EXPECT_EQ(modules_text(resolve_lora_targets(lora_test_shape("llama"), spec)), "1.q_proj r4 a16");
  try {
    lora_target_modules("(q_proj");
    ADD_FAILURE() << "a pattern that does not compile was taken";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("model.lora.target_modules \"(q_proj\" reads as a regular expression"), std::string::npos)
        << e.what();
  }
  // PEFT matches the pattern against every module: one that is not a projection stops it.
  for (const auto& [pattern, matched] : std::vector<std::pair<std::string, std::string>>{
           {".*", "matches model"},
           {R"(.*\.layers\.0\..*)", "matches model.layers.0.input_layernorm, which is not a linear projection"},
           {".*(q_proj|norm)", "matches model.layers.0.input_layernorm, which is not a linear projection"}}) {
    c.target_modules = pattern;
    c.exclude_modules = "";
    EXPECT_NE(refusal(lora_test_shape("llama"), lora_spec(c)).find("model.lora.target_modules, the regular expression \"" +
                                                                   pattern + "\", " + matched),
              std::string::npos)
        << refusal(lora_test_shape("llama"), lora_spec(c));
  }
  c.target_modules = ".*(c_attn|wpe)";
  EXPECT_NE(refusal(lora_test_shape("gpt2"), lora_spec(c)).find("matches transformer.wpe, the position embedding: LoRA on it is not built here"),
            std::string::npos)
      << refusal(lora_test_shape("gpt2"), lora_spec(c));
  // ... unless exclude_modules or modules_to_save leave it out.
  c.target_modules = ".*(q_proj|norm)";
  c.exclude_modules = ".*norm";
  EXPECT_EQ(modules_text(resolve_lora_targets(lora_test_shape("llama"), lora_spec(c))), "0.q_proj r4 a16, 1.q_proj r4 a16");
  c.exclude_modules = "";
  c.modules_to_save = "norm, input_layernorm, post_attention_layernorm";
  EXPECT_EQ(modules_text(resolve_lora_targets(lora_test_shape("llama"), lora_spec(c))), "0.q_proj r4 a16, 1.q_proj r4 a16");
  c.modules_to_save = "";
  c.target_modules = R"( .*\.layers\.1\.self_attn\.(q|v)_proj )";
  c.layers_to_transform = "1";
  EXPECT_NE(refusal(lora_test_shape("llama"), lora_spec(c)).find("model.lora.layers_to_transform cannot be used when "
                                                                 "model.lora.target_modules is a regular expression"),
            std::string::npos);
}

// modules_to_save as PEFT matches it: the end of every module's name (no dot needed), a module
// that holds others standing for those with weights, GPT-2's c_attn for q, k and v together.
TEST(ModulesToSave, ANamePicksEveryModuleWhoseNameEndsWithIt) {
  const ModelShape llama = lora_test_shape("llama");
  auto trained = [&](std::vector<std::string> names, bool ours_too = true) {
    LoraSpec spec = spec_with({"q_proj"});
    spec.modules_to_save = std::move(names);
    spec.from_adapter_file = !ours_too;
    std::string out;
    for (const std::string& m : resolve_lora_targets(llama, spec).trained) out += (out.empty() ? "" : ", ") + m;
    return out;
  };
  ASSERT_TRUE(llama.tie_embeddings);  // (the small Llama ties its head, as Llama 3.2 1B does)
  EXPECT_EQ(trained({"lm_head"}), "lm_head");
  EXPECT_EQ(trained({"norm"}), "layers.0.input_layernorm, layers.0.post_attention_layernorm, layers.1.input_layernorm, "
                               "layers.1.post_attention_layernorm, norm");
  EXPECT_EQ(trained({"model.norm", "model.layers.1.mlp"}), "layers.1.mlp.gate_proj, layers.1.mlp.up_proj, layers.1.mlp.down_proj, norm");
  EXPECT_EQ(trained({"layers.0.input_layernorm", "embed_tokens"}), "embed_tokens, layers.0.input_layernorm");
  EXPECT_EQ(trained({"not_a_module", "lm_head"}, false), "lm_head") << "PEFT passes over a name no module has";
  EXPECT_EQ(refusal(llama, [] {
              LoraSpec spec = spec_with({"q_proj"});
              spec.key_prefix = "model.lora.";
              spec.modules_to_save = {"not_a_module"};
              return spec;
            }()).find("model.lora.modules_to_save names \"not_a_module\", and no module of this llama model has a name that ends with it"),
            0u);
  // PEFT adapts no module under one of modules_to_save (as whole parts of its name): layer 1's
  // q_proj is trained whole instead, in a run's config and in an adapter file alike.
  for (const bool from_file : {false, true}) {
    LoraSpec both = spec_with({"q_proj"});
    both.modules_to_save = {"model.layers.1.self_attn"};
    both.from_adapter_file = from_file;
    const LoraTargets t = resolve_lora_targets(llama, both);
    EXPECT_EQ(modules_text(t), "0.q_proj r4 a8");
    EXPECT_EQ(t.trained, (std::vector<std::string>{"layers.1.self_attn.q_proj", "layers.1.self_attn.k_proj",
                                                   "layers.1.self_attn.v_proj", "layers.1.self_attn.o_proj"}));
  }
  LoraSpec mlp = spec_with({"all-linear"});
  mlp.modules_to_save = {"layers.1.mlp"};
  EXPECT_EQ(modules_text(resolve_lora_targets(llama, mlp)),
            "0.q_proj r4 a8, 0.k_proj r4 a8, 0.v_proj r4 a8, 0.o_proj r4 a8, 0.gate_proj r4 a8, 0.up_proj r4 a8, "
            "0.down_proj r4 a8, 1.q_proj r4 a8, 1.k_proj r4 a8, 1.v_proj r4 a8, 1.o_proj r4 a8");
  // A name that ends a module's name without a dot before it leaves the adapter in place; PEFT
  // would then train a copy with the adapter inside, which is refused.
  LoraSpec both = spec_with({"q_proj"});
  both.modules_to_save = {"proj"};
  EXPECT_NE(refusal(llama, both).find("picks model.layers.0.self_attn.q_proj by a name that ends its name"), std::string::npos)
      << refusal(llama, both);
  // With nothing left to adapt, the reason names modules_to_save too.
  both.modules_to_save = {"self_attn"};
  EXPECT_NE(refusal(llama, both).find("modules_to_save (whose modules PEFT does not adapt) leave no module"), std::string::npos)
      << refusal(llama, both);

  // GPT-2: c_attn is q, k and v; its head is tied to wte.
  const ModelShape gpt2 = lora_test_shape("gpt2");
  ASSERT_TRUE(gpt2.tie_embeddings);
  LoraSpec spec = spec_with({"c_fc"});
  spec.from_adapter_file = true;
  spec.modules_to_save = {"h.1.attn.c_attn", "ln_f", "wpe"};
  LoraTargets t = resolve_lora_targets(gpt2, spec);
  EXPECT_EQ(t.trained, (std::vector<std::string>{"embed_positions", "layers.1.self_attn.q_proj", "layers.1.self_attn.k_proj",
                                                 "layers.1.self_attn.v_proj", "norm"}));
  EXPECT_FALSE(t.untie_head);
  EXPECT_EQ(peft_modules_to_save(gpt2, {t.trained, t.untie_head, {}, {}}),
            (std::vector<std::string>{"transformer.wpe", "transformer.h.1.attn.c_attn", "transformer.ln_f"}));
  EXPECT_EQ(t.first_trained_layer(gpt2.n_layers), 0) << "the positions train, so every block is in the backward pass";
  // The tied head: PEFT's default unties it, so the head trains a copy of its own...
  spec.modules_to_save = {"lm_head"};
  t = resolve_lora_targets(gpt2, spec);
  EXPECT_EQ(t.trained, std::vector<std::string>{"lm_head"});
  EXPECT_TRUE(t.untie_head);
  EXPECT_EQ(t.first_trained_layer(gpt2.n_layers), 0) << "c_fc in layer 0";
  // ... and a trained embedding leaves the head the original.
  spec.modules_to_save = {"wte"};
  t = resolve_lora_targets(gpt2, spec);
  EXPECT_EQ(t.trained, std::vector<std::string>{"embed_tokens"});
  EXPECT_TRUE(t.untie_head);
  // With ensure_weight_tying one copy of the embedding is trained and the head follows it, or not:
  // in a run's config either name ties them (PEFT's config then lists lm_head, so that PEFT ties
  // its copy to the embedding's when it loads); an adapter file is read as PEFT reads it: a name
  // whose last part is embed_tokens or lm_head ties, another ("wte", "transformer.wte") only
  // where the file holds the head's tensor (PEFT's save of a tied "lm_head" on GPT-2:
  // "transformer.wte" and lm_head.weight beside it).
  spec.ensure_weight_tying = true;
  struct Case {
    bool from_file;
    const char* name;
    bool head_saved, tied;
  };
  for (const Case& c : {Case{false, "wte", false, true}, Case{false, "lm_head", false, true}, Case{true, "wte", false, false},
                        Case{true, "transformer.wte", false, false}, Case{true, "transformer.wte", true, true},
                        Case{true, "lm_head", false, true}}) {
    spec.from_adapter_file = c.from_file;
    spec.head_saved = c.head_saved;
    spec.modules_to_save = {c.name};
    t = resolve_lora_targets(gpt2, spec);
    EXPECT_EQ(t.trained, std::vector<std::string>{"embed_tokens"}) << c.name;
    EXPECT_EQ(t.untie_head, !c.tied) << c.name << (c.from_file ? " in a file" : " in a run's config");
    if (!c.from_file) {
      EXPECT_EQ(peft_modules_to_save(gpt2, {t.trained, t.untie_head, {}, {}}),
                (std::vector<std::string>{"lm_head", "transformer.wte"}));
    }
  }
  spec.head_saved = false;
  // A tied head kept on the embedding's trained copy cannot also train rows of its own.
  spec.trainable_tokens = {{"lm_head", {5, 6}}};
  spec.modules_to_save = {"embed_tokens"};
  EXPECT_NE(refusal(gpt2, spec).find("ensure_weight_tying keeps the output head tied to the trained copy of the embedding "
                                     "(modules_to_save), but trainable_token_indices gives the head rows of its own"),
            std::string::npos)
      << refusal(gpt2, spec);
  spec.trainable_tokens.clear();
  // A token listed twice: a typo in a run's config, taken as PEFT takes it in an adapter file.
  LoraSpec twice = spec_with({"c_fc"});
  twice.trainable_tokens = {{"", {3, 7, 3}}};
  EXPECT_NE(refusal(gpt2, twice).find("trainable_token_indices lists token 3 twice"), std::string::npos) << refusal(gpt2, twice);
  twice.from_adapter_file = true;
  EXPECT_EQ(resolve_lora_targets(gpt2, twice).embedding_rows, (std::vector<int64_t>{3, 7, 3}));
  // Our q_proj of GPT-2 is a part of c_attn, which trains whole with k and v.
  LoraSpec ours = spec_with({"c_fc"});
  ours.modules_to_save = {"layers.0.self_attn.q_proj"};
  EXPECT_EQ(resolve_lora_targets(gpt2, ours).trained,
            (std::vector<std::string>{"layers.0.self_attn.q_proj", "layers.0.self_attn.k_proj", "layers.0.self_attn.v_proj"}));
  // ... and leaves c_attn unadapted.
  ours.targets = {"c_attn"};
  EXPECT_EQ(modules_text(resolve_lora_targets(gpt2, ours)),
            "1.q_proj r4 a8, 1.k_proj r4 a8, 1.v_proj r4 a8");
  // A run's config asks for tying only where the model ties.
  ModelShape untied_llama = llama;
  untied_llama.tie_embeddings = false;
  LoraSpec untied = spec_with({"q_proj"});
  untied.key_prefix = "model.lora.";
  untied.modules_to_save = {"lm_head"};
  untied.ensure_weight_tying = true;
  EXPECT_NE(refusal(untied_llama, untied).find("model.lora.ensure_weight_tying is true, but this model's output head is not tied"),
            std::string::npos);

  // What the trained copies add up to, and the log's words for them.
  EXPECT_EQ(trained_copy_parameter_count(llama, {"norm", "layers.0.mlp.up_proj", "lm_head"}),
            32 + 32 * llama.d_ff + llama.vocab_size * 32);
  spec.modules_to_save = {"ln_1", "lm_head"};
  spec.ensure_weight_tying = false;
  EXPECT_EQ(lora_targets_text(gpt2, resolve_lora_targets(gpt2, spec)),
            "up_proj; trained whole: input_layernorm, lm_head (untied from the embedding)");
}

}  // namespace
}  // namespace ganpo
