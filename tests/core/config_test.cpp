#include "core/config.h"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <string>
#include <random>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace ganpo {
namespace {

namespace fs = std::filesystem;

// ---------------------------------------------------------------------------------------------
// Helpers.

std::string presets_dir() {
#ifdef GANPO_SOURCE_DIR
  return std::string(GANPO_SOURCE_DIR) + "/resources/presets";
#else
  return "resources/presets";
#endif
}

// A fresh folder per test so parallel ctest runs never share files.
fs::path temp_dir() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  fs::path dir = fs::temp_directory_path() /
                 ("ganpo_config_test_" + std::to_string(std::random_device{}()) + "_" + info->test_suite_name() + "_" + info->name());
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

void write_text(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

// The message of the ConfigError that fn throws; fails the test if it throws nothing.
std::string config_error(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const ConfigError& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected a ConfigError";
  return "";
}

std::string joined(const std::vector<std::string>& lines) {
  std::string out;
  for (const auto& l : lines) out += l + "\n";
  return out;
}

// Field by field on purpose: no operator== exists, and a new field should be added here too.
void expect_same(const RunConfig& a, const RunConfig& b) {
  EXPECT_EQ(a.name, b.name);
  EXPECT_EQ(a.stage, b.stage);
  EXPECT_EQ(a.seed, b.seed);
  EXPECT_EQ(a.device, b.device);
  EXPECT_EQ(a.output_dir, b.output_dir);

  EXPECT_EQ(a.model.preset, b.model.preset);
  EXPECT_EQ(a.model.arch, b.model.arch);
  EXPECT_EQ(a.model.d_model, b.model.d_model);
  EXPECT_EQ(a.model.n_layers, b.model.n_layers);
  EXPECT_EQ(a.model.n_heads, b.model.n_heads);
  EXPECT_EQ(a.model.n_kv_heads, b.model.n_kv_heads);
  EXPECT_EQ(a.model.d_ff, b.model.d_ff);
  EXPECT_EQ(a.model.max_seq_len, b.model.max_seq_len);
  EXPECT_EQ(a.model.rope_theta, b.model.rope_theta);
  EXPECT_EQ(a.model.checkpoint, b.model.checkpoint);
  EXPECT_EQ(a.model.reference, b.model.reference);
  EXPECT_EQ(a.model.save_dtype, b.model.save_dtype);
  EXPECT_EQ(a.model.max_shard_mb, b.model.max_shard_mb);
  EXPECT_EQ(a.model.lora.r, b.model.lora.r);
  EXPECT_EQ(a.model.lora.alpha, b.model.lora.alpha);
  EXPECT_EQ(a.model.lora.use_rslora, b.model.lora.use_rslora);
  EXPECT_EQ(a.model.lora.use_dora, b.model.lora.use_dora);
  EXPECT_EQ(a.model.lora.dropout, b.model.lora.dropout);
  EXPECT_EQ(a.model.lora.target_modules, b.model.lora.target_modules);
  EXPECT_EQ(a.model.lora.layers_to_transform, b.model.lora.layers_to_transform);
  EXPECT_EQ(a.model.lora.exclude_modules, b.model.lora.exclude_modules);
  EXPECT_EQ(a.model.lora.rank_pattern, b.model.lora.rank_pattern);
  EXPECT_EQ(a.model.lora.alpha_pattern, b.model.lora.alpha_pattern);
  EXPECT_EQ(a.model.lora.modules_to_save, b.model.lora.modules_to_save);
  EXPECT_EQ(a.model.lora.trainable_token_indices, b.model.lora.trainable_token_indices);
  EXPECT_EQ(a.model.lora.ensure_weight_tying, b.model.lora.ensure_weight_tying);
  EXPECT_EQ(a.model.lora.bias, b.model.lora.bias);
  EXPECT_EQ(a.model.lora.init_lora_weights, b.model.lora.init_lora_weights);

  EXPECT_EQ(a.data.builtin, b.data.builtin);
  EXPECT_EQ(a.data.train, b.data.train);
  EXPECT_EQ(a.data.eval, b.data.eval);
  EXPECT_EQ(a.data.chat_template, b.data.chat_template);
  EXPECT_EQ(a.data.eval_fraction, b.data.eval_fraction);
  EXPECT_EQ(a.data.max_length, b.data.max_length);
  EXPECT_EQ(a.data.max_prompt_length, b.data.max_prompt_length);
  EXPECT_EQ(a.data.label_noise, b.data.label_noise);
  EXPECT_EQ(a.data.on_bad_line, b.data.on_bad_line);
  EXPECT_EQ(a.data.builtin_train_size, b.data.builtin_train_size);
  EXPECT_EQ(a.data.builtin_eval_size, b.data.builtin_eval_size);

  EXPECT_EQ(a.objective.loss_type, b.objective.loss_type);
  EXPECT_EQ(a.objective.beta, b.objective.beta);
  EXPECT_EQ(a.objective.simpo_gamma, b.objective.simpo_gamma);
  EXPECT_EQ(a.objective.rpo_alpha, b.objective.rpo_alpha);

  EXPECT_EQ(a.ganpo.enabled, b.ganpo.enabled);
  EXPECT_EQ(a.ganpo.adv_weight, b.ganpo.adv_weight);
  EXPECT_EQ(a.ganpo.critic_hidden, b.ganpo.critic_hidden);
  EXPECT_EQ(a.ganpo.critic_layers, b.ganpo.critic_layers);
  EXPECT_EQ(a.ganpo.critic_heads, b.ganpo.critic_heads);
  EXPECT_EQ(a.ganpo.critic_ffn_mult, b.ganpo.critic_ffn_mult);
  EXPECT_EQ(a.ganpo.critic_max_len, b.ganpo.critic_max_len);
  EXPECT_EQ(a.ganpo.critic_dropout, b.ganpo.critic_dropout);
  EXPECT_EQ(a.ganpo.critic_lr_ratio, b.ganpo.critic_lr_ratio);
  EXPECT_EQ(a.ganpo.ema_momentum, b.ganpo.ema_momentum);
  EXPECT_EQ(a.ganpo.critic_mask, b.ganpo.critic_mask);
  EXPECT_EQ(a.ganpo.critic_update_every, b.ganpo.critic_update_every);

  EXPECT_EQ(a.train.learning_rate, b.train.learning_rate);
  EXPECT_EQ(a.train.lr_scheduler_type, b.train.lr_scheduler_type);
  EXPECT_EQ(a.train.warmup_ratio, b.train.warmup_ratio);
  EXPECT_EQ(a.train.per_device_train_batch_size, b.train.per_device_train_batch_size);
  EXPECT_EQ(a.train.gradient_accumulation_steps, b.train.gradient_accumulation_steps);
  EXPECT_EQ(a.train.max_steps, b.train.max_steps);
  EXPECT_EQ(a.train.num_train_epochs, b.train.num_train_epochs);
  EXPECT_EQ(a.train.max_grad_norm, b.train.max_grad_norm);
  EXPECT_EQ(a.train.weight_decay, b.train.weight_decay);
  EXPECT_EQ(a.train.adam_beta1, b.train.adam_beta1);
  EXPECT_EQ(a.train.adam_beta2, b.train.adam_beta2);
  EXPECT_EQ(a.train.adam_epsilon, b.train.adam_epsilon);
  EXPECT_EQ(a.train.precision, b.train.precision);
  EXPECT_EQ(a.train.gradient_checkpointing, b.train.gradient_checkpointing);
  EXPECT_EQ(a.train.auto_find_batch_size, b.train.auto_find_batch_size);
  EXPECT_EQ(a.train.deterministic, b.train.deterministic);
  EXPECT_EQ(a.train.precompute_ref_log_probs, b.train.precompute_ref_log_probs);
  EXPECT_EQ(a.train.prefix_sharing, b.train.prefix_sharing);
  EXPECT_EQ(a.train.group_by_length, b.train.group_by_length);
  EXPECT_EQ(a.train.chunked_logps, b.train.chunked_logps);
  EXPECT_EQ(a.train.num_processes, b.train.num_processes);
  EXPECT_EQ(a.train.dist_timeout_s, b.train.dist_timeout_s);
  EXPECT_EQ(a.train.logging_steps, b.train.logging_steps);
  EXPECT_EQ(a.train.eval_steps, b.train.eval_steps);
  EXPECT_EQ(a.train.save_steps, b.train.save_steps);
  EXPECT_EQ(a.train.num_threads, b.train.num_threads);

  EXPECT_EQ(a.sampling.every_steps, b.sampling.every_steps);
  EXPECT_EQ(a.sampling.num_prompts, b.sampling.num_prompts);
  EXPECT_EQ(a.sampling.temperature, b.sampling.temperature);
  EXPECT_EQ(a.sampling.top_p, b.sampling.top_p);
  EXPECT_EQ(a.sampling.top_k, b.sampling.top_k);
  EXPECT_EQ(a.sampling.max_new_tokens, b.sampling.max_new_tokens);
}

// Every field differs from its default, with values that are hard to print exactly
// (1e-6, 5e-7, 1/3) and strings that need escaping.
RunConfig non_default_config() {
  RunConfig c;
  c.name = "round \"trip\" \\ test\twith tab and ünïcode";
  c.stage = "sft";
  c.seed = std::numeric_limits<int64_t>::max();
  c.device = "cuda:1";
  c.output_dir = "C:\\runs\\x y";

  c.model.preset = "";
  c.model.arch = "gpt2";
  c.model.d_model = 96;
  c.model.n_layers = 3;
  c.model.n_heads = 6;
  c.model.n_kv_heads = 2;
  c.model.d_ff = 384;
  c.model.max_seq_len = 512;
  c.model.rope_theta = 500000.0;
  c.model.checkpoint = "ckpt/step-100";
  c.model.random_weights = true;
  c.model.reference = "ref\nnewline";
  c.model.save_dtype = "bfloat16";
  c.model.max_shard_mb = 2000;
  c.model.lora.r = 8;
  c.model.lora.alpha = 32;
  c.model.lora.use_rslora = true;
  c.model.lora.use_dora = true;
  c.model.lora.dropout = 0.05;
  c.model.lora.target_modules = "q_proj,v_proj";
  c.model.lora.layers_to_transform = "0, 2-3";
  c.model.lora.exclude_modules = "model.layers.0.self_attn.v_proj";
  c.model.lora.rank_pattern = "self_attn.q_proj=16";
  c.model.lora.alpha_pattern = "layers\\.[0-9]\\.self_attn\\.q_proj=64";
  c.model.lora.modules_to_save = "lm_head, model.norm";
  c.model.lora.trainable_token_indices = "3, 250-255";
  c.model.lora.ensure_weight_tying = true;
  c.model.lora.bias = "lora_only";
  c.model.lora.init_lora_weights = "pissa";

  c.data.builtin = "";
  c.data.train = "train.jsonl";
  c.data.eval = "eval.jsonl";
  c.data.chat_template = "chatml";
  c.data.eval_fraction = 1.0 / 3.0;
  c.data.max_length = 1024;
  c.data.max_prompt_length = 512;
  c.data.label_noise = 0.25;
  c.data.on_bad_line = "skip";
  c.data.builtin_train_size = 12345;
  c.data.builtin_eval_size = 77;

  c.objective.loss_type = "simpo";
  c.objective.beta = 2.5;
  c.objective.simpo_gamma = 0.3;
  c.objective.rpo_alpha = 0.25;

  c.ganpo.enabled = false;
  c.ganpo.adv_weight = 0.05;
  c.ganpo.critic_hidden = 128;
  c.ganpo.critic_layers = 3;
  c.ganpo.critic_heads = 4;
  c.ganpo.critic_ffn_mult = 2;
  c.ganpo.critic_max_len = 1024;
  c.ganpo.critic_dropout = 0.0;
  c.ganpo.critic_lr_ratio = 2.0;
  c.ganpo.ema_momentum = 0.99;
  c.ganpo.critic_mask = "response";
  c.ganpo.critic_update_every = 4;

  c.train.learning_rate = 5e-7;
  c.train.lr_scheduler_type = "cosine";
  c.train.warmup_ratio = 0.1;
  c.train.per_device_train_batch_size = 4;
  c.train.per_device_eval_batch_size = 2;
  c.train.gradient_accumulation_steps = 32;
  c.train.auto_find_batch_size = true;
  c.train.max_steps = 1000;
  c.train.num_train_epochs = 2.5;
  c.train.max_grad_norm = 0.0;
  c.train.weight_decay = 0.01;
  c.train.adam_beta1 = 0.8;
  c.train.adam_beta2 = 0.95;
  c.train.adam_epsilon = 1e-6;
  c.train.precision = "bf16";
  c.train.gradient_checkpointing = true;
  c.train.deterministic = true;
  c.train.precompute_ref_log_probs = true;
  c.train.prefix_sharing = false;
  c.train.group_by_length = true;
  c.train.chunked_logps = "on";
  c.train.num_processes = 4;
  c.train.dist_timeout_s = 120;
  c.train.logging_steps = 1;
  c.train.eval_steps = 50;
  c.train.save_steps = 250;
  c.train.num_threads = 2;

  c.sampling.every_steps = 25;
  c.sampling.num_prompts = 3;
  c.sampling.temperature = 1e-300;
  c.sampling.top_p = 0.9;
  c.sampling.top_k = 40;
  c.sampling.max_new_tokens = 1;

  c.eval.judge_at_end = false;
  c.eval.temperatures = "0.25, 2";
  c.eval.num_prompts = 9;
  c.eval.max_new_tokens = 17;
  c.eval.seed = 77;
  c.eval.judge_command = "python3 judge.py --strict";
  c.eval.judge_timeout_s = 12.5;
  return c;
}

// ---------------------------------------------------------------------------------------------
// Defaults and round trips.

TEST(Config, DefaultsValidateClean) {
  EXPECT_EQ(joined(validate_config(RunConfig{})), "");
  EXPECT_NO_THROW(validate_or_throw(RunConfig{}));
}

TEST(Config, NonDefaultConfigDiffersFromDefaultsEverywhere) {
  // Guards the round-trip tests: a field left at its default would round-trip trivially.
  const nlohmann::json a = config_to_json(RunConfig{});
  const nlohmann::json b = config_to_json(non_default_config());
  std::function<void(const nlohmann::json&, const nlohmann::json&, const std::string&)> differ =
      [&](const nlohmann::json& x, const nlohmann::json& y, const std::string& path) {
        for (auto it = x.begin(); it != x.end(); ++it) {
          if (it->is_object())
            differ(*it, y[it.key()], path + it.key() + ".");  // a section, or one inside a section
          else
            EXPECT_NE(*it, y[it.key()]) << path << it.key();
        }
      };
  differ(a, b, "");
}

TEST(Config, TomlRoundTripKeepsEveryField) {
  const RunConfig c = non_default_config();
  expect_same(config_from_toml(config_to_toml(c)), c);
  expect_same(config_from_toml(config_to_toml(RunConfig{})), RunConfig{});
}

TEST(Config, JsonRoundTripKeepsEveryField) {
  const RunConfig c = non_default_config();
  expect_same(config_from_json(config_to_json(c)), c);
  expect_same(config_from_json(nlohmann::json::parse(config_to_json(c).dump())), c);
  expect_same(config_from_json(config_to_json(RunConfig{})), RunConfig{});
}

// [[pipeline]] stages: kept in order through TOML (also nested under a prefix, as a study's base)
// and JSON, and every stage's run validated with the stage named.
TEST(Config, PipelineStagesRoundTripAndAreValidated) {
  RunConfig c;
  c.pipeline = {{"sft", {"stage=sft", "train.max_steps=520", "train.learning_rate=0.003"}},
                {"warm \"up\"", {"data.chat_template=a } # b"}}};
  for (const RunConfig& back : {config_from_toml(config_to_toml(c)), config_from_json(config_to_json(c)),
                                config_from_json(nlohmann::json::parse(config_to_json(c).dump()))}) {
    ASSERT_EQ(back.pipeline.size(), 2u);
    EXPECT_EQ(back.pipeline[0].name, "sft");
    EXPECT_EQ(back.pipeline[0].assignments, c.pipeline[0].assignments);
    EXPECT_EQ(back.pipeline[1].name, "warm \"up\"");
    EXPECT_EQ(back.pipeline[1].assignments, c.pipeline[1].assignments);
  }
  const std::string nested = config_to_toml(c, "base");
  EXPECT_NE(nested.find("[[base.pipeline]]\nname = \"sft\"\nset = { \"stage\" = \"sft\", \"train.max_steps\" = 520, "
                        "\"train.learning_rate\" = 0.003 }"),
            std::string::npos)
      << nested;
  EXPECT_FALSE(config_to_json(RunConfig{}).contains("pipeline")) << "single-stage configs are stored as before";

  // Problems inside a stage name it.
  RunConfig bad;
  bad.pipeline = {{"sft", {"train.max_steps=-3"}}, {"sft", {"seed=4"}}};
  const std::string problems = joined(validate_config(bad));
  EXPECT_NE(problems.find("pipeline stage \"sft\": train.max_steps must be"), std::string::npos) << problems;
  EXPECT_NE(problems.find("another stage has this name"), std::string::npos) << problems;
  EXPECT_NE(problems.find("seed is set per run"), std::string::npos) << problems;
  EXPECT_NE(config_error([] { config_from_toml("[[pipeline]]\nname = \"sft\"\nset = { \"train.max_step\" = 1 }\n"); })
                .find("pipeline \"sft\" set \"train.max_step\""),
            std::string::npos);
  EXPECT_NE(config_error([] { config_from_toml("pipeline = 3\n"); }).find("[[pipeline]]"), std::string::npos);
}

// Found by fuzzing (tests/fuzz/corpus/run_config/regression-invalid-utf8-override.txt): an override
// with bytes that are not UTF-8 made a config that could not be saved and read back.
TEST(Config, OverridesMustBeUtf8Text) {
  RunConfig c;
  EXPECT_NE(config_error([&] { apply_override(c, "name=demo \xec\xecrun"); }).find("name must be UTF-8 text"),
            std::string::npos);
  EXPECT_EQ(c.name, "run") << "nothing set";
  apply_override(c, "name=démo ✓");
  expect_same(config_from_toml(config_to_toml(c)), c);
}

TEST(Config, TomlWritesEveryKeyAndReadableNumbers) {
  const std::string text = config_to_toml(non_default_config());
  EXPECT_NE(text.find("learning_rate = 5e-7\n"), std::string::npos) << text;
  EXPECT_NE(text.find("adam_epsilon = 1e-6\n"), std::string::npos) << text;
  EXPECT_NE(text.find("rope_theta = 500000.0\n"), std::string::npos) << text;
  EXPECT_NE(text.find("[sampling]\n"), std::string::npos) << text;
  EXPECT_NE(text.find("[model.lora]\nr = 8\nalpha = 32.0\nuse_rslora = true\nuse_dora = true\ndropout = 0.05\ntarget_modules = \"q_proj,v_proj\"\n"),
            std::string::npos) << text;
  // One line per field: 5 top-level + 14 + 15 (model.lora) + 11 + 4 + 12 + 25 + 6 + 7.
  size_t assignments = 0;
  for (size_t pos = 0; (pos = text.find(" = ", pos)) != std::string::npos; ++pos) ++assignments;
  EXPECT_EQ(assignments, 101u);
}

TEST(Config, JsonHasTheTomlNesting) {
  const nlohmann::json j = config_to_json(RunConfig{});
  EXPECT_EQ(j.at("seed"), 42);
  EXPECT_EQ(j.at("train").at("learning_rate"), 1e-6);
  EXPECT_EQ(j.at("ganpo").at("enabled"), true);
  EXPECT_EQ(j.at("model").at("preset"), "tiny");
}

// [model.lora] is a table inside [model]: TOML, JSON, overrides and their errors know it.
TEST(Config, LoraIsATableInsideModel) {
  const RunConfig t = config_from_toml("[model]\ncheckpoint = \"base\"\n[model.lora]\nr = 16\ntarget_modules = \"all-linear\"\n");
  EXPECT_EQ(t.model.checkpoint, "base");
  EXPECT_EQ(t.model.lora.r, 16);
  EXPECT_EQ(t.model.lora.target_modules, "all-linear");
  EXPECT_EQ(config_from_toml("model.lora.alpha = 4.0\n").model.lora.alpha, 4.0);  // dotted keys are the same table
  const RunConfig j = config_from_json(nlohmann::json::parse(R"({"model": {"lora": {"r": 2, "dropout": 0.1}}})"));
  EXPECT_EQ(j.model.lora.r, 2);
  EXPECT_EQ(j.model.lora.dropout, 0.1);
  EXPECT_EQ(config_to_json(j).at("model").at("lora").at("r"), 2);

  RunConfig o;
  apply_override(o, "model.lora.r=4");
  apply_override(o, "model.lora.target_modules=q_proj,v_proj");
  EXPECT_EQ(o.model.lora.r, 4);
  EXPECT_EQ(o.model.lora.target_modules, "q_proj,v_proj");
  EXPECT_EQ(config_value_text(o, "model.lora.r"), "4");
  const auto keys = config_keys();
  EXPECT_NE(std::find(keys.begin(), keys.end(), "model.lora.alpha"), keys.end());

  auto message = [](const std::function<void()>& f) {
    try {
      f();
    } catch (const ConfigError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  const std::string table = message([] {
    RunConfig c;
    apply_override(c, "model.lora=8");
  });
  EXPECT_NE(table.find("\"model.lora\" is a table; override one of its keys, e.g. model.lora.r=..."), std::string::npos) << table;
  const std::string unknown = message([] { config_from_toml("[model.lora]\nrank = 8\n"); });
  EXPECT_NE(unknown.find("model.lora.rank"), std::string::npos) << unknown;
  EXPECT_NE(unknown.find("[model.lora]"), std::string::npos) << unknown;
  const std::string not_a_table = message([] { config_from_toml("[model]\nlora = 8\n"); });
  EXPECT_NE(not_a_table.find("must be a table ([model.lora])"), std::string::npos) << not_a_table;

  RunConfig v;
  v.model.lora.r = 8;
  EXPECT_NE(joined(validate_config(v)).find("adapts a pretrained model, but model.checkpoint is empty"), std::string::npos);
  v.model.checkpoint = "base";
  EXPECT_EQ(joined(validate_config(v)), "");
  v.model.lora.target_modules = "q_proj,query";
  v.model.lora.dropout = 1.0;
  v.model.lora.bias = "lora";
  v.model.lora.init_lora_weights = "loftq";
  const std::string problems = joined(validate_config(v));
  EXPECT_NE(problems.find("\"query\", which is not a projection"), std::string::npos) << problems;
  EXPECT_NE(problems.find("model.lora.dropout"), std::string::npos) << problems;
  EXPECT_NE(problems.find("model.lora.bias must be one of none, all, lora_only; got \"lora\""), std::string::npos) << problems;
  EXPECT_NE(problems.find("model.lora.init_lora_weights must be one of default, gaussian, pissa, olora; got \"loftq\""),
            std::string::npos)
      << problems;
}

// PEFT's lists in [model.lora]: layers (with ranges), excluded modules, rank and alpha patterns
// (pattern=value, the value after the last '='), as text or TOML arrays, each item checked.
TEST(Config, LoraPeftListsAreReadAndChecked) {
  EXPECT_EQ(lora_layers(" 0, 2, 4-6,2"), (std::vector<int64_t>{0, 2, 4, 5, 6}));
  EXPECT_EQ(lora_layers(""), std::vector<int64_t>{});
  EXPECT_EQ(lora_exclude_modules("down_proj, model.layers.0.self_attn.q_proj"),
            (std::vector<std::string>{"down_proj", "model.layers.0.self_attn.q_proj"}));
  EXPECT_EQ(lora_rank_pattern("self_attn.q_proj=16, (?=x)q_proj = 4"),
            (std::vector<std::pair<std::string, int64_t>>{{"self_attn.q_proj", 16}, {"(?=x)q_proj", 4}}));
  EXPECT_EQ(lora_alpha_pattern("down_proj=0.5"), (std::vector<std::pair<std::string, double>>{{"down_proj", 0.5}}));
  const RunConfig t = config_from_toml("[model.lora]\nlayers_to_transform = [0, 1]\nrank_pattern = [\"q_proj=16\", \"v_proj=2\"]\n");
  EXPECT_EQ(t.model.lora.layers_to_transform, "0, 1");
  EXPECT_EQ(lora_rank_pattern(t.model.lora.rank_pattern), (std::vector<std::pair<std::string, int64_t>>{{"q_proj", 16}, {"v_proj", 2}}));
  // One layer as PEFT users write it, in TOML and JSON; "all-linear" in any case.
  EXPECT_EQ(config_from_toml("[model.lora]\nlayers_to_transform = 3\n").model.lora.layers_to_transform, "3");
  EXPECT_EQ(config_from_json(nlohmann::json::parse(R"({"model": {"lora": {"layers_to_transform": 3}}})")).model.lora.layers_to_transform, "3");
  EXPECT_EQ(lora_target_modules("ALL-Linear"), std::vector<std::string>{"all-linear"});
  EXPECT_EQ(lora_modules_to_save("lm_head, norm,lm_head"), (std::vector<std::string>{"lm_head", "norm"}));
  EXPECT_EQ(lora_token_indices("7, 3-5, 4"), (std::vector<int64_t>{7, 3, 4, 5}));
  EXPECT_EQ(config_from_toml("[model.lora]\ntrainable_token_indices = [256, 257]\n").model.lora.trainable_token_indices, "256, 257");
  EXPECT_EQ(config_from_toml("[model.lora]\nmodules_to_save = [\"lm_head\", \"embed_tokens\"]\n").model.lora.modules_to_save,
            "lm_head, embed_tokens");

  RunConfig v;
  v.model.lora.r = 8;
  v.model.checkpoint = "base";
  v.model.lora.layers_to_transform = "0, 3-1";
  v.model.lora.exclude_modules = "qkv";
  v.model.lora.rank_pattern = "q_proj";
  v.model.lora.alpha_pattern = "q_proj[=4";
  v.model.lora.modules_to_save = "lm_head, model norm";
  v.model.lora.trainable_token_indices = "5, 9-2";
  const std::string problems = joined(validate_config(v));
  EXPECT_NE(problems.find("model.lora.layers_to_transform lists \"3-1\""), std::string::npos) << problems;
  EXPECT_NE(problems.find("model.lora.exclude_modules names \"qkv\""), std::string::npos) << problems;
  EXPECT_NE(problems.find("model.lora.rank_pattern lists \"q_proj\"; write pattern=rank items"), std::string::npos) << problems;
  EXPECT_NE(problems.find("model.lora.alpha_pattern lists \"q_proj[=4\": the regular expression"), std::string::npos) << problems;
  EXPECT_NE(problems.find("model.lora.modules_to_save names \"model norm\""), std::string::npos) << problems;
  EXPECT_NE(problems.find("model.lora.trainable_token_indices lists \"9-2\""), std::string::npos) << problems;
  v.model.lora.trainable_token_indices = "5, 999999-1000000";
  EXPECT_NE(joined(validate_config(v)).find("model.lora.trainable_token_indices lists \"999999-1000000\", beyond 999999, "
                                            "more than any model has"),
            std::string::npos);
  v.model.lora.rank_pattern = "q_proj=0";
  EXPECT_NE(joined(validate_config(v)).find("model.lora.rank_pattern lists \"q_proj=0\""), std::string::npos);
  v.model.lora.rank_pattern = "q_proj=100000";
  EXPECT_NE(joined(validate_config(v)).find("a positive rank up to 65536"), std::string::npos);
  v.model.lora.alpha_pattern = "q_proj=inf";
  EXPECT_NE(joined(validate_config(v)).find("model.lora.alpha_pattern lists \"q_proj=inf\""), std::string::npos);
  v.model.lora.r = 100000;
  EXPECT_NE(joined(validate_config(v)).find("model.lora.r must be <= 65536, got 100000"), std::string::npos);
}

TEST(Config, SaveAndLoadFilesInBothFormats) {
  const fs::path dir = temp_dir();
  const RunConfig c = non_default_config();
  for (const char* name : {"run.toml", "sub/dir/run.json", "UPPER.TOML"}) {
    const std::string path = (dir / name).string();
    save_config_file(c, path);
    expect_same(load_config_file(path), c);
    EXPECT_FALSE(fs::exists(path + ".tmp"));
  }
  fs::remove_all(dir);
}

TEST(Config, MissingKeysKeepDefaults) {
  const RunConfig c = config_from_toml("seed = 7\n[train]\nmax_steps = 5\n");
  RunConfig expected;
  expected.seed = 7;
  expected.train.max_steps = 5;
  expect_same(c, expected);
  expect_same(config_from_toml(""), RunConfig{});
  expect_same(config_from_json(nlohmann::json::object()), RunConfig{});
}

TEST(Config, IntegersAreAcceptedForNumbers) {
  const RunConfig c = config_from_toml("[train]\nlearning_rate = 1\nnum_train_epochs = 3\n");
  EXPECT_EQ(c.train.learning_rate, 1.0);
  EXPECT_EQ(c.train.num_train_epochs, 3.0);
  const RunConfig j = config_from_json(nlohmann::json::parse(R"({"objective": {"beta": 2}})"));
  EXPECT_EQ(j.objective.beta, 2.0);
}

TEST(Config, WholeFloatsAreAcceptedForIntegers) {
  EXPECT_EQ(config_from_toml("[train]\nmax_steps = 300.0\n").train.max_steps, 300);
  EXPECT_EQ(config_from_json(nlohmann::json::parse(R"({"train": {"max_steps": 3e2}})")).train.max_steps, 300);
}

// ---------------------------------------------------------------------------------------------
// Parse errors.

TEST(Config, UnknownKeySuggestsTheClosestName) {
  const std::string msg = config_error([] { config_from_toml("[train]\nlearning_rat = 1e-4\n"); });
  EXPECT_NE(msg.find("unknown key \"train.learning_rat\" (did you mean \"learning_rate\"?)"), std::string::npos) << msg;
  EXPECT_NE(msg.find("line 2"), std::string::npos) << msg;

  const std::string top = config_error([] { config_from_toml("nmae = \"x\"\n"); });
  EXPECT_NE(top.find("unknown key \"nmae\" (did you mean \"name\"?)"), std::string::npos) << top;

  const std::string json =
      config_error([] { config_from_json(nlohmann::json::parse(R"({"ganpo": {"adv_wieght": 1}})")); });
  EXPECT_NE(json.find("unknown key \"ganpo.adv_wieght\" (did you mean \"adv_weight\"?)"), std::string::npos) << json;
}

TEST(Config, UnknownKeyFarFromAnyNameListsTheAllowedKeys) {
  const std::string msg = config_error([] { config_from_toml("[sampling]\nzzzzzzzzzz = 1\n"); });
  EXPECT_NE(msg.find("unknown key \"sampling.zzzzzzzzzz\""), std::string::npos) << msg;
  EXPECT_NE(msg.find("top_p"), std::string::npos) << msg;
  EXPECT_NE(msg.find("max_new_tokens"), std::string::npos) << msg;
  EXPECT_EQ(msg.find("did you mean"), std::string::npos) << msg;
}

TEST(Config, UnknownTableSuggestsTheClosestTable) {
  const std::string msg = config_error([] { config_from_toml("[trian]\nmax_steps = 1\n"); });
  EXPECT_NE(msg.find("unknown table \"trian\" (did you mean \"train\"?)"), std::string::npos) << msg;
}

// PEFT's LoraConfig and TRL's scripts write lists as lists: target_modules = ["q_proj", "v_proj"].
// The two list keys take an array in TOML, JSON and overrides, kept as their comma-separated
// text (so saving, the dialog and the database see one form).
TEST(Config, ListKeysTakeArraysInFilesAndOverrides) {
  const RunConfig t = config_from_toml(
      "[model]\ncheckpoint = \"base\"\n[model.lora]\nr = 8\ntarget_modules = [\"q_proj\", \" v_proj \"]\n"
      "[eval]\ntemperatures = [0.5, 1, 1.25]\n");
  EXPECT_EQ(t.model.lora.target_modules, "q_proj, v_proj");
  EXPECT_EQ(lora_target_modules(t.model.lora.target_modules), (std::vector<std::string>{"q_proj", "v_proj"}));
  EXPECT_EQ(t.eval.temperatures, "0.5, 1, 1.25");
  EXPECT_EQ(parse_temperatures(t.eval.temperatures), (std::vector<double>{0.5, 1.0, 1.25}));
  EXPECT_EQ(joined(validate_config(t)), "");
  const RunConfig back = config_from_toml(config_to_toml(t));
  EXPECT_EQ(back.model.lora.target_modules, t.model.lora.target_modules);
  EXPECT_EQ(back.eval.temperatures, t.eval.temperatures);

  const RunConfig j = config_from_json(nlohmann::json::parse(
      R"({"model": {"lora": {"target_modules": ["o_proj", "down_proj"]}}, "eval": {"temperatures": [0.7, 2]}})"));
  EXPECT_EQ(j.model.lora.target_modules, "o_proj, down_proj");
  EXPECT_EQ(j.eval.temperatures, "0.7, 2");

  RunConfig o;
  apply_override(o, "model.lora.target_modules=[\"gate_proj\", 'up_proj']");
  apply_override(o, "eval.temperatures=[0.2, 1.5]");
  EXPECT_EQ(o.model.lora.target_modules, "gate_proj, up_proj");
  EXPECT_EQ(o.eval.temperatures, "0.2, 1.5");

  // What is not a list of names and numbers says what to write.
  std::string msg = config_error([] { config_from_toml("[model.lora]\ntarget_modules = [\"q_proj\", {a = 1}]\n"); });
  EXPECT_NE(msg.find("line 2: model.lora.target_modules lists names and numbers; the array holds a table"), std::string::npos)
      << msg;
  msg = config_error([] { config_from_toml("[model.lora]\ntarget_modules = true\n"); });
  EXPECT_NE(msg.find("model.lora.target_modules must be a comma-separated string or an array"), std::string::npos) << msg;
  msg = config_error([] { config_from_json(nlohmann::json::parse(R"({"eval": {"temperatures": [0.5, null]}})")); });
  EXPECT_NE(msg.find("eval.temperatures lists names and numbers; the array holds null"), std::string::npos) << msg;
  msg = config_error([] {
    RunConfig c;
    apply_override(c, "model.lora.target_modules=[q_proj]");
  });
  EXPECT_NE(msg.find("is not a TOML array"), std::string::npos) << msg;
  EXPECT_NE(msg.find("write [\"q_proj\", \"v_proj\"]"), std::string::npos) << msg;
  // Other string keys stay strings.
  msg = config_error([] { config_from_toml("[data]\ntrain = [\"a.jsonl\"]\n"); });
  EXPECT_NE(msg.find("data.train must be a string, got an array"), std::string::npos) << msg;
  RunConfig n;
  apply_override(n, "name=[draft]");
  EXPECT_EQ(n.name, "[draft]");
}

TEST(Config, WrongTypeNamesKeyAndValue) {
  const auto err = [](const std::string& toml) { return config_error([&] { config_from_toml(toml); }); };
  std::string msg = err("[train]\nmax_steps = \"abc\"\n");
  EXPECT_NE(msg.find("train.max_steps must be an integer, got \"abc\""), std::string::npos) << msg;
  EXPECT_NE(msg.find("line 2"), std::string::npos) << msg;
  msg = err("[train]\nmax_steps = 3.5\n");
  EXPECT_NE(msg.find("train.max_steps must be an integer, got 3.5"), std::string::npos) << msg;
  msg = err("[train]\nlearning_rate = \"fast\"\n");
  EXPECT_NE(msg.find("train.learning_rate must be a number, got \"fast\""), std::string::npos) << msg;
  msg = err("[ganpo]\nenabled = 1\n");
  EXPECT_NE(msg.find("ganpo.enabled must be true or false, got 1"), std::string::npos) << msg;
  msg = err("name = 5\n");
  EXPECT_NE(msg.find("name must be a string, got 5"), std::string::npos) << msg;
  msg = err("train = 5\n");
  EXPECT_NE(msg.find("\"train\" must be a table"), std::string::npos) << msg;
  msg = err("[model]\npreset = [\"tiny\"]\n");
  EXPECT_NE(msg.find("model.preset must be a string, got an array"), std::string::npos) << msg;

  msg = config_error([] { config_from_json(nlohmann::json::parse(R"({"train": {"max_steps": "abc"}})")); });
  EXPECT_NE(msg.find("train.max_steps must be an integer, got \"abc\""), std::string::npos) << msg;
  msg = config_error([] { config_from_json(nlohmann::json::parse(R"({"seed": null})")); });
  EXPECT_NE(msg.find("seed must be an integer, got null"), std::string::npos) << msg;
  msg = config_error([] { config_from_json(nlohmann::json::parse(R"([1, 2])")); });
  EXPECT_NE(msg.find("must be an object"), std::string::npos) << msg;
}

// ---------------------------------------------------------------------------------------------
// Overrides.

TEST(Config, OverridesOfEachType) {
  RunConfig c;
  apply_override(c, "train.learning_rate=3e-4");
  EXPECT_EQ(c.train.learning_rate, 3e-4);
  apply_override(c, "train.num_train_epochs=2");
  EXPECT_EQ(c.train.num_train_epochs, 2.0);
  apply_override(c, "seed=7");
  EXPECT_EQ(c.seed, 7);
  apply_override(c, "train.max_steps=-1");
  EXPECT_EQ(c.train.max_steps, -1);
  apply_override(c, "ganpo.enabled=false");
  EXPECT_FALSE(c.ganpo.enabled);
  apply_override(c, "ganpo.enabled=TRUE");
  EXPECT_TRUE(c.ganpo.enabled);
  apply_override(c, "model.preset=small");
  EXPECT_EQ(c.model.preset, "small");
  apply_override(c, "model.preset=\"base\"");
  EXPECT_EQ(c.model.preset, "base");
  apply_override(c, "name='my run'");
  EXPECT_EQ(c.name, "my run");
  apply_override(c, " data.train = \" spaced.jsonl \" ");
  EXPECT_EQ(c.data.train, " spaced.jsonl ");
  apply_override(c, "model.preset=");
  EXPECT_EQ(c.model.preset, "");
  apply_override(c, "model.checkpoint=a=b");  // only the first '=' separates key and value
  EXPECT_EQ(c.model.checkpoint, "a=b");
}

TEST(Config, OverrideErrorsNameTheKeyAndWhatIsAllowed) {
  RunConfig c;
  std::string msg = config_error([&] { apply_override(c, "train.learning_rat=1"); });
  EXPECT_NE(msg.find("unknown key \"train.learning_rat\" (did you mean \"train.learning_rate\"?)"), std::string::npos)
      << msg;
  msg = config_error([&] { apply_override(c, "trian.max_steps=1"); });
  EXPECT_NE(msg.find("(did you mean \"train.max_steps\"?)"), std::string::npos) << msg;
  msg = config_error([&] { apply_override(c, "train.qqqqqqqqqq=1"); });
  EXPECT_NE(msg.find("unknown key \"train.qqqqqqqqqq\""), std::string::npos) << msg;
  EXPECT_NE(msg.find("learning_rate"), std::string::npos) << msg;
  msg = config_error([&] { apply_override(c, "beta=0.2"); });
  EXPECT_NE(msg.find("unknown key \"beta\" (did you mean \"objective.beta\"?)"), std::string::npos) << msg;
  msg = config_error([&] { apply_override(c, "zzzzzz.lr=1"); });
  EXPECT_NE(msg.find("there is no table \"zzzzzz\""), std::string::npos) << msg;
  EXPECT_NE(msg.find("sampling"), std::string::npos) << msg;
  msg = config_error([&] { apply_override(c, "train.max_steps=abc"); });
  EXPECT_NE(msg.find("train.max_steps must be an integer, got \"abc\""), std::string::npos) << msg;
  msg = config_error([&] { apply_override(c, "train.max_steps=1.5"); });
  EXPECT_NE(msg.find("train.max_steps must be an integer, got \"1.5\""), std::string::npos) << msg;
  msg = config_error([&] { apply_override(c, "train.learning_rate=fast"); });
  EXPECT_NE(msg.find("train.learning_rate must be a number, got \"fast\""), std::string::npos) << msg;
  msg = config_error([&] { apply_override(c, "ganpo.enabled=maybe"); });
  EXPECT_NE(msg.find("ganpo.enabled must be true or false, got \"maybe\""), std::string::npos) << msg;
  msg = config_error([&] { apply_override(c, "seed"); });
  EXPECT_NE(msg.find("section.key=value"), std::string::npos) << msg;
  msg = config_error([&] { apply_override(c, "train=1"); });
  EXPECT_NE(msg.find("\"train\" is a table"), std::string::npos) << msg;
  // A failed override leaves the config untouched.
  expect_same(c, RunConfig{});
}

// ---------------------------------------------------------------------------------------------
// Validation: one failing case per rule; each message must name the key and the bad value.

struct Rule {
  const char* what;
  std::function<void(RunConfig&)> breaks;
  std::vector<std::string> expected;  // substrings of one message
};

std::vector<Rule> rules() {
  constexpr double nan = std::numeric_limits<double>::quiet_NaN();
  constexpr double inf = std::numeric_limits<double>::infinity();
  return {
      {"name", [](RunConfig& c) { c.name = ""; }, {"name must not be empty", "got \"\""}},
      {"stage", [](RunConfig& c) { c.stage = "rlhf"; }, {"stage must be one of sft, preference", "\"rlhf\""}},
      {"device", [](RunConfig& c) { c.device = "gpu"; }, {"device must be auto, cpu, cuda or cuda:N", "\"gpu\""}},
      {"device index", [](RunConfig& c) { c.device = "cuda:x"; }, {"device", "\"cuda:x\""}},
      {"device no index", [](RunConfig& c) { c.device = "cuda:"; }, {"device", "\"cuda:\""}},
      {"output_dir", [](RunConfig& c) { c.output_dir = ""; }, {"output_dir must not be empty", "got \"\""}},
      {"seed", [](RunConfig& c) { c.seed = -1; }, {"seed must be >= 0", "got -1"}},
      {"eval.seed", [](RunConfig& c) { c.eval.seed = -5; }, {"eval.seed must be >= 0", "got -5"}},

      {"model.preset", [](RunConfig& c) { c.model.preset = "huge"; },
       {"model.preset must be one of tiny, small, base, \"\"", "\"huge\""}},
      {"explicit d_model", [](RunConfig& c) { c.model.preset = ""; c.model.n_layers = 2; c.model.n_heads = 2; },
       {"model.d_model must be > 0 when model.preset is \"\"", "got 0"}},
      {"explicit n_layers", [](RunConfig& c) { c.model.preset = ""; c.model.d_model = 64; c.model.n_heads = 2; },
       {"model.n_layers must be > 0", "got 0"}},
      {"explicit n_heads",
       [](RunConfig& c) { c.model.preset = ""; c.model.d_model = 64; c.model.n_layers = 2; c.model.n_heads = -2; },
       {"model.n_heads must be > 0", "got -2"}},
      {"negative override", [](RunConfig& c) { c.model.d_model = -8; }, {"model.d_model must be >= 0", "got -8"}},
      {"d_model % n_heads", [](RunConfig& c) { c.model.d_model = 100; c.model.n_heads = 3; },
       {"model.d_model must be divisible by model.n_heads", "100", "3"}},
      {"n_heads % n_kv_heads", [](RunConfig& c) { c.model.d_model = 96; c.model.n_heads = 6; c.model.n_kv_heads = 4; },
       {"model.n_heads must be divisible by model.n_kv_heads", "6", "4"}},
      {"n_kv_heads", [](RunConfig& c) { c.model.n_kv_heads = -1; }, {"model.n_kv_heads must be >= 0", "got -1"}},
      {"d_ff", [](RunConfig& c) { c.model.d_ff = -1; }, {"model.d_ff must be >= 0", "got -1"}},
      {"max_seq_len", [](RunConfig& c) { c.model.max_seq_len = -1; }, {"model.max_seq_len must be >= 0", "got -1"}},
      {"arch", [](RunConfig& c) { c.model.arch = "gemma"; }, {"model.arch must be one of", "llama, gpt2", "\"gemma\""}},
      {"rope_theta", [](RunConfig& c) { c.model.rope_theta = 0; }, {"model.rope_theta must be > 0", "got 0"}},
      {"save_dtype", [](RunConfig& c) { c.model.save_dtype = "int8"; }, {"model.save_dtype must be one of", "bfloat16", "\"int8\""}},
      {"max_shard_mb", [](RunConfig& c) { c.model.max_shard_mb = 0; }, {"model.max_shard_mb must be > 0", "got 0"}},
      {"bf16_cpu", [](RunConfig& c) { c.device = "cpu"; c.train.precision = "bf16"; },
       {"train.precision = \"bf16\" needs a CUDA device", "set train.precision = \"fp32\""}},

      {"data.builtin", [](RunConfig& c) { c.data.builtin = "words"; },
       {"data.builtin must be one of auto, lists, arithmetic, mixed, \"\"", "\"words\""}},
      {"data.train", [](RunConfig& c) { c.data.builtin = ""; }, {"data.train must name a JSONL/JSON file", "got \"\""}},
      {"eval.temperatures", [](RunConfig& c) { c.eval.temperatures = "0.7, hot"; },
       {"eval.temperatures must be numbers >= 0 separated by commas", "\"hot\""}},
      {"no temperatures", [](RunConfig& c) { c.eval.temperatures = " "; },
       {"eval.temperatures is empty while eval.judge_at_end is true"}},
      {"judge timeout", [](RunConfig& c) { c.eval.judge_timeout_s = 0; }, {"eval.judge_timeout_s must be > 0", "got 0"}},
      {"builtin and train", [](RunConfig& c) { c.data.builtin = "lists"; c.data.train = "pairs.jsonl"; },
       {"data.builtin = \"lists\" and data.train = \"pairs.jsonl\" are both set", "remove data.builtin"}},
      {"builtin and eval", [](RunConfig& c) { c.data.builtin = "lists"; c.data.eval = "held.jsonl"; },
       {"data.builtin = \"lists\" and data.eval = \"held.jsonl\" are both set"}},
      {"eval without train", [](RunConfig& c) { c.data.eval = "held.jsonl"; },
       {"data.eval = \"held.jsonl\" is set but data.train is not"}},
      {"eval_fraction", [](RunConfig& c) { c.data.eval_fraction = 1.0; },
       {"data.eval_fraction must be in [0, 1)", "got 1"}},
      {"eval_fraction negative", [](RunConfig& c) { c.data.eval_fraction = -0.1; },
       {"data.eval_fraction must be in [0, 1)", "got -0.1"}},
      {"max_length", [](RunConfig& c) { c.data.max_length = 0; }, {"data.max_length must be > 0", "got 0"}},
      {"max_prompt_length", [](RunConfig& c) { c.data.max_prompt_length = 0; },
       {"data.max_prompt_length must be > 0", "got 0"}},
      {"max_prompt_length < max_length", [](RunConfig& c) { c.data.max_length = 160; c.data.max_prompt_length = 160; },
       {"data.max_prompt_length must be < data.max_length (160)", "got 160"}},
      {"label_noise", [](RunConfig& c) { c.data.label_noise = 1.5; }, {"data.label_noise must be in [0, 1]", "got 1.5"}},
      {"on_bad_line", [](RunConfig& c) { c.data.on_bad_line = "warn"; },
       {"data.on_bad_line must be one of error, skip", "\"warn\""}},
      {"builtin_train_size", [](RunConfig& c) { c.data.builtin_train_size = 0; },
       {"data.builtin_train_size must be > 0", "got 0"}},
      {"builtin_eval_size", [](RunConfig& c) { c.data.builtin_eval_size = -5; },
       {"data.builtin_eval_size must be > 0", "got -5"}},

      {"loss_type", [](RunConfig& c) { c.objective.loss_type = "dpo"; },
       {"objective.loss_type must be one of sigmoid, simpo, ipo, hinge; got \"dpo\""}},
      {"beta", [](RunConfig& c) { c.objective.beta = -1; }, {"objective.beta must be > 0, got -1"}},
      {"beta inf", [](RunConfig& c) { c.objective.beta = inf; }, {"objective.beta must be a finite number, got inf"}},
      {"simpo_gamma", [](RunConfig& c) { c.objective.simpo_gamma = -0.5; },
       {"objective.simpo_gamma must be >= 0", "got -0.5"}},
      {"rpo_alpha", [](RunConfig& c) { c.objective.rpo_alpha = -1; }, {"objective.rpo_alpha must be >= 0"}},

      {"adv_weight", [](RunConfig& c) { c.ganpo.adv_weight = -1; }, {"ganpo.adv_weight must be >= 0", "got -1"}},
      {"critic_hidden", [](RunConfig& c) { c.ganpo.critic_hidden = 0; }, {"ganpo.critic_hidden must be > 0", "got 0"}},
      {"critic_hidden % heads", [](RunConfig& c) { c.ganpo.critic_hidden = 100; },
       {"ganpo.critic_hidden must be divisible by ganpo.critic_heads", "100", "8"}},
      {"critic_heads", [](RunConfig& c) { c.ganpo.critic_heads = 0; }, {"ganpo.critic_heads must be > 0", "got 0"}},
      {"critic_layers", [](RunConfig& c) { c.ganpo.critic_layers = 0; }, {"ganpo.critic_layers must be >= 1", "got 0"}},
      {"critic_ffn_mult", [](RunConfig& c) { c.ganpo.critic_ffn_mult = 0; },
       {"ganpo.critic_ffn_mult must be >= 1", "got 0"}},
      {"critic_max_len", [](RunConfig& c) { c.ganpo.critic_max_len = 0; },
       {"ganpo.critic_max_len must be > 0", "got 0"}},
      {"critic_dropout", [](RunConfig& c) { c.ganpo.critic_dropout = 1; },
       {"ganpo.critic_dropout must be in [0, 1)", "got 1"}},
      {"critic_lr_ratio", [](RunConfig& c) { c.ganpo.critic_lr_ratio = 0; },
       {"ganpo.critic_lr_ratio must be > 0", "got 0"}},
      {"ema_momentum", [](RunConfig& c) { c.ganpo.ema_momentum = 1; }, {"ganpo.ema_momentum must be in [0, 1)", "got 1"}},
      {"critic_mask", [](RunConfig& c) { c.ganpo.critic_mask = "padding"; },
       {"ganpo.critic_mask must be one of none, attention, response", "\"padding\""}},
      {"critic_update_every", [](RunConfig& c) { c.ganpo.critic_update_every = 0; },
       {"ganpo.critic_update_every must be >= 1", "got 0"}},

      {"learning_rate", [](RunConfig& c) { c.train.learning_rate = 0; }, {"train.learning_rate must be > 0", "got 0"}},
      {"learning_rate nan", [](RunConfig& c) { c.train.learning_rate = nan; },
       {"train.learning_rate must be a finite number, got nan"}},
      {"lr_scheduler_type", [](RunConfig& c) { c.train.lr_scheduler_type = "step"; },
       {"train.lr_scheduler_type must be one of constant, linear, cosine", "\"step\""}},
      {"warmup_ratio", [](RunConfig& c) { c.train.warmup_ratio = 1.5; }, {"train.warmup_ratio must be in [0, 1]", "1.5"}},
      {"batch", [](RunConfig& c) { c.train.per_device_train_batch_size = 0; },
       {"train.per_device_train_batch_size must be >= 1", "got 0"}},
      {"eval batch", [](RunConfig& c) { c.train.per_device_eval_batch_size = -1; },
       {"train.per_device_eval_batch_size must be >= 0", "got -1"}},
      {"accumulation", [](RunConfig& c) { c.train.gradient_accumulation_steps = 0; },
       {"train.gradient_accumulation_steps must be >= 1", "got 0"}},
      {"max_steps", [](RunConfig& c) { c.train.max_steps = 0; }, {"train.max_steps must be -1", "or > 0", "got 0"}},
      {"max_steps -2", [](RunConfig& c) { c.train.max_steps = -2; }, {"train.max_steps", "got -2"}},
      {"num_train_epochs", [](RunConfig& c) { c.train.num_train_epochs = 0; },
       {"train.num_train_epochs must be > 0 when train.max_steps is -1", "got 0"}},
      {"max_grad_norm", [](RunConfig& c) { c.train.max_grad_norm = -1; }, {"train.max_grad_norm must be >= 0", "got -1"}},
      // Beyond float's range: the run failed at its first step, in LibTorch's words, naming no key.
      {"max_grad_norm above float", [](RunConfig& c) { c.train.max_grad_norm = 1e308; },
       {"train.max_grad_norm must be in [0, 1e38] (0 = no clipping)", "got 1e308"}},
      {"weight_decay", [](RunConfig& c) { c.train.weight_decay = -0.1; }, {"train.weight_decay must be >= 0", "-0.1"}},
      {"adam_beta1", [](RunConfig& c) { c.train.adam_beta1 = 1; }, {"train.adam_beta1 must be in [0, 1)", "got 1"}},
      {"adam_beta2", [](RunConfig& c) { c.train.adam_beta2 = -1; }, {"train.adam_beta2 must be in [0, 1)", "got -1"}},
      {"adam_epsilon", [](RunConfig& c) { c.train.adam_epsilon = 0; }, {"train.adam_epsilon must be > 0", "got 0"}},
      {"precision", [](RunConfig& c) { c.train.precision = "fp16"; },
       {"train.precision must be one of fp32, bf16", "\"fp16\""}},
      {"chunked_logps", [](RunConfig& c) { c.train.chunked_logps = "yes"; },
       {"train.chunked_logps must be one of auto, on, off", "\"yes\""}},
      {"logging_steps", [](RunConfig& c) { c.train.logging_steps = 0; }, {"train.logging_steps must be >= 1", "got 0"}},
      {"eval_steps", [](RunConfig& c) { c.train.eval_steps = -1; }, {"train.eval_steps must be >= 0", "got -1"}},
      {"save_steps", [](RunConfig& c) { c.train.save_steps = -1; }, {"train.save_steps must be >= 0", "got -1"}},
      {"num_threads", [](RunConfig& c) { c.train.num_threads = -1; }, {"train.num_threads must be >= 0", "got -1"}},

      {"every_steps", [](RunConfig& c) { c.sampling.every_steps = -1; }, {"sampling.every_steps must be >= 0", "got -1"}},
      {"num_prompts", [](RunConfig& c) { c.sampling.num_prompts = -1; }, {"sampling.num_prompts must be >= 0", "got -1"}},
      {"temperature", [](RunConfig& c) { c.sampling.temperature = -0.5; },
       {"sampling.temperature must be >= 0", "got -0.5"}},
      {"top_p zero", [](RunConfig& c) { c.sampling.top_p = 0; }, {"sampling.top_p must be in (0, 1]", "got 0"}},
      {"top_p above one", [](RunConfig& c) { c.sampling.top_p = 1.5; }, {"sampling.top_p must be in (0, 1]", "got 1.5"}},
      {"top_p nan", [](RunConfig& c) { c.sampling.top_p = nan; }, {"sampling.top_p must be a finite number, got nan"}},
      {"top_k", [](RunConfig& c) { c.sampling.top_k = -1; }, {"sampling.top_k must be >= 0", "got -1"}},
      {"max_new_tokens", [](RunConfig& c) { c.sampling.max_new_tokens = 0; },
       {"sampling.max_new_tokens must be >= 1", "got 0"}},
  };
}

TEST(ConfigValidation, EachRuleReportsKeyAndValue) {
  for (const Rule& rule : rules()) {
    SCOPED_TRACE(rule.what);
    RunConfig c;
    rule.breaks(c);
    const auto problems = validate_config(c);
    ASSERT_FALSE(problems.empty()) << "no problem reported";
    bool found = false;
    for (const auto& p : problems) {
      bool all = true;
      for (const auto& s : rule.expected) all = all && p.find(s) != std::string::npos;
      found = found || all;
    }
    EXPECT_TRUE(found) << "no single message contains all of the expected text; got:\n" << joined(problems);
  }
}

TEST(ConfigValidation, ValidBoundaryValuesPass) {
  RunConfig c;
  c.device = "cuda:12";
  c.objective.beta = 0;  // the loss's default
  c.train.max_grad_norm = 0;
  c.train.warmup_ratio = 1;
  c.data.label_noise = 1;
  c.data.eval_fraction = 0;
  c.sampling.top_p = 1;
  c.sampling.temperature = 0;  // greedy
  c.train.max_steps = 10;
  c.train.num_train_epochs = 0;  // ignored when max_steps is set
  c.model.preset = "";
  c.model.d_model = 64;
  c.model.n_layers = 2;
  c.model.n_heads = 4;
  c.model.n_kv_heads = 2;
  c.data.builtin = "";
  c.data.train = "pairs.jsonl";
  EXPECT_EQ(joined(validate_config(c)), "");
}

TEST(ConfigValidation, NanIsReportedOnce) {
  RunConfig c;
  c.ganpo.ema_momentum = std::numeric_limits<double>::quiet_NaN();
  const auto problems = validate_config(c);
  ASSERT_EQ(problems.size(), 1u) << joined(problems);
  EXPECT_EQ(problems[0], "ganpo.ema_momentum must be a finite number, got nan");
}

// A NUL read from a file ("\u0000" in TOML or JSON) cut a path or name short where it was used:
// output_dir = "runs/a\u0000b" trained into runs/a without a word.
TEST(ConfigValidation, NulCharactersInTextValuesAreRefusedByKey) {
  RunConfig c = config_from_toml("output_dir = \"runs/a\\u0000b\"\n[data]\ntrain = \"x\\u0000.jsonl\"\n");
  ASSERT_EQ(c.output_dir, std::string("runs/a\0b", 8)) << "TOML reads the escape as a NUL";
  const std::string problems = joined(validate_config(c));
  EXPECT_NE(problems.find("output_dir must not contain a NUL character (\\u0000), found at position 6"),
            std::string::npos)
      << problems;
  EXPECT_NE(problems.find("data.train must not contain a NUL character"), std::string::npos) << problems;
  // The same read from JSON.
  c = config_from_json(nlohmann::json::parse(R"({"name": "a\u0000b"})"));
  EXPECT_NE(joined(validate_config(c)).find("name must not contain a NUL character"), std::string::npos);
}

TEST(ConfigValidation, ValidateOrThrowListsEveryProblemOnItsOwnLine) {
  RunConfig c;
  c.objective.beta = -1;
  c.train.precision = "fp8";
  const auto problems = validate_config(c);
  ASSERT_EQ(problems.size(), 2u) << joined(problems);
  const std::string msg = config_error([&] { validate_or_throw(c); });
  for (const auto& p : problems) EXPECT_NE(msg.find("\n  " + p), std::string::npos) << msg;
}

TEST(Config, EffectiveBeta) {
  ObjectiveConfig o;
  EXPECT_EQ(effective_beta(o), 0.1);
  o.loss_type = "simpo";
  EXPECT_EQ(effective_beta(o), 2.5);
  o.loss_type = "ipo";
  EXPECT_EQ(effective_beta(o), 0.1);
  o.beta = 0.3;
  EXPECT_EQ(effective_beta(o), 0.3);
}

// ---------------------------------------------------------------------------------------------
// Presets.

TEST(ConfigPresets, AllPresetsLoadAndValidate) {
  for (const char* name : {"demo.toml", "paper-gemma2-2b-ganpo.toml", "paper-llama3-8b-ganpo.toml"}) {
    SCOPED_TRACE(name);
    const std::string path = presets_dir() + "/" + name;
    RunConfig c;
    ASSERT_NO_THROW(c = load_config_file(path));
    EXPECT_EQ(joined(validate_config(c)), "");
  }
}

// The demo preset is a pipeline: SFT of a fresh tiny model on the lists task, then DPO + GANPO
// from it with small critics, judged at the end.
TEST(ConfigPresets, DemoIsASmallPipeline) {
  const RunConfig c = load_config_file(presets_dir() + "/demo.toml");
  EXPECT_EQ(c.name, "demo");
  EXPECT_EQ(c.stage, "preference");
  EXPECT_EQ(c.data.builtin, "lists");
  EXPECT_EQ(c.model.preset, "tiny");
  EXPECT_EQ(c.objective.loss_type, "sigmoid");
  EXPECT_TRUE(c.ganpo.enabled);
  EXPECT_EQ(c.ganpo.critic_hidden, 64);
  EXPECT_EQ(c.ganpo.critic_layers, 1);
  EXPECT_EQ(c.ganpo.critic_heads, 4);
  EXPECT_EQ(c.train.max_steps, 160);
  EXPECT_EQ(c.train.per_device_train_batch_size, 16);
  EXPECT_TRUE(c.eval.judge_at_end);
  ASSERT_EQ(c.pipeline.size(), 1u);
  EXPECT_EQ(c.pipeline[0].name, "sft");
  RunConfig sft = c;
  for (const auto& a : c.pipeline[0].assignments) apply_override(sft, a);
  EXPECT_EQ(sft.stage, "sft");
  EXPECT_FALSE(sft.ganpo.enabled);
  EXPECT_EQ(sft.train.max_steps, 520);
  EXPECT_GT(sft.sampling.every_steps, 0) << "the SFT run shows its samples becoming readable";
}

TEST(ConfigPresets, PaperPresetsFollowThePaper) {
  struct Expect {
    const char* file;
    double lr;
    int64_t d_model, n_layers, n_heads, n_kv_heads;
  };
  for (const Expect& e : {Expect{"paper-gemma2-2b-ganpo.toml", 5e-7, 2304, 26, 8, 4},
                          Expect{"paper-llama3-8b-ganpo.toml", 1e-6, 4096, 32, 32, 8}}) {
    SCOPED_TRACE(e.file);
    const RunConfig c = load_config_file(presets_dir() + "/" + e.file);
    EXPECT_EQ(c.train.per_device_train_batch_size * c.train.gradient_accumulation_steps, 128);
    EXPECT_EQ(c.train.num_train_epochs, 1.0);
    EXPECT_EQ(c.train.max_steps, -1);
    EXPECT_EQ(c.train.learning_rate, e.lr);
    EXPECT_EQ(c.train.precision, "bf16");
    EXPECT_EQ(c.train.lr_scheduler_type, "cosine");
    EXPECT_EQ(c.train.warmup_ratio, 0.1);
    EXPECT_EQ(c.device, "cuda");
    EXPECT_EQ(c.objective.loss_type, "sigmoid");
    EXPECT_EQ(effective_beta(c.objective), 0.1);
    EXPECT_EQ(c.ganpo.critic_hidden, 512);
    EXPECT_EQ(c.ganpo.critic_layers, 2);
    EXPECT_EQ(c.ganpo.critic_heads, 8);
    EXPECT_EQ(c.data.builtin, "");
    EXPECT_EQ(c.data.train, "ultrafeedback_binarized.jsonl");
    EXPECT_EQ(c.data.max_length, 1024);
    EXPECT_EQ(c.data.max_prompt_length, 512);
    EXPECT_EQ(c.model.preset, "");
    EXPECT_EQ(c.model.d_model, e.d_model);
    EXPECT_EQ(c.model.n_layers, e.n_layers);
    EXPECT_EQ(c.model.n_heads, e.n_heads);
    EXPECT_EQ(c.model.n_kv_heads, e.n_kv_heads);
    EXPECT_FALSE(c.model.checkpoint.empty());
  }
}

// ---------------------------------------------------------------------------------------------
// File errors.

TEST(ConfigFiles, MissingFileSaysWhichAndWhy) {
  const fs::path dir = temp_dir();
  const std::string path = (dir / "nope.toml").string();
  const std::string msg = config_error([&] { load_config_file(path); });
  EXPECT_NE(msg.find("cannot read config file " + path + ": No such file or directory"), std::string::npos) << msg;
  fs::remove_all(dir);
}

TEST(ConfigFiles, DirectoryIsNotAConfigFile) {
  const fs::path dir = temp_dir() / "looks_like.toml";
  fs::create_directories(dir);
  const std::string msg = config_error([&] { load_config_file(dir.string()); });
  EXPECT_NE(msg.find("cannot read config file " + dir.string()), std::string::npos) << msg;
  fs::remove_all(dir.parent_path());
}

TEST(ConfigFiles, UnknownExtensionIsRejected) {
  const std::string msg = config_error([] { load_config_file("run.yaml"); });
  EXPECT_NE(msg.find(".toml or .json"), std::string::npos) << msg;
  EXPECT_NE(msg.find("run.yaml"), std::string::npos) << msg;
}

TEST(ConfigFiles, TomlSyntaxErrorGivesFileLineAndColumn) {
  const fs::path dir = temp_dir();
  const std::string path = (dir / "broken.toml").string();
  write_text(path, "name = \"x\"\n[train]\nlearning_rate = = 3\n");
  const std::string msg = config_error([&] { load_config_file(path); });
  EXPECT_NE(msg.find("invalid TOML in " + path + " at line 3, column "), std::string::npos) << msg;
  fs::remove_all(dir);
}

TEST(ConfigFiles, TomlTextSyntaxErrorGivesLine) {
  const std::string msg = config_error([] { config_from_toml("seed = 1\nseed = 2\n"); });
  EXPECT_NE(msg.find("line 2"), std::string::npos) << msg;
}

TEST(ConfigFiles, ContentErrorsNameTheFile) {
  const fs::path dir = temp_dir();
  const std::string path = (dir / "typo.toml").string();
  write_text(path, "[train]\nlearning_rat = 1e-4\n");
  const std::string msg = config_error([&] { load_config_file(path); });
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
  EXPECT_NE(msg.find("did you mean \"learning_rate\""), std::string::npos) << msg;
  fs::remove_all(dir);
}

TEST(ConfigFiles, JsonSyntaxErrorNamesTheFile) {
  const fs::path dir = temp_dir();
  const std::string path = (dir / "broken.json").string();
  write_text(path, "{\"seed\": 1,,}");
  const std::string msg = config_error([&] { load_config_file(path); });
  EXPECT_NE(msg.find("invalid JSON in " + path), std::string::npos) << msg;
  fs::remove_all(dir);
}

TEST(ConfigFiles, SaveToUnwritablePlaceFails) {
  const fs::path dir = temp_dir();
  write_text(dir / "file", "x");
  // A path under a regular file can never be created.
  const std::string path = (dir / "file" / "run.toml").string();
  const std::string msg = config_error([&] { save_config_file(RunConfig{}, path); });
  EXPECT_NE(msg.find("cannot write config file " + path), std::string::npos) << msg;
  fs::remove_all(dir);
}

}  // namespace
}  // namespace ganpo

namespace ganpo {
namespace {

// A named file wins over the built-in task unless the built-in task is asked for explicitly
// (then validation names both keys, above).
TEST(ConfigDataSource, TheFileNamedInDataTrainIsTheDataUsed) {
  RunConfig c;
  EXPECT_EQ(c.data.builtin, "auto");
  EXPECT_TRUE(uses_builtin_task(c.data));
  c.data.train = "pairs.jsonl";
  EXPECT_FALSE(uses_builtin_task(c.data));
  EXPECT_TRUE(validate_config(c).empty());
  auto stored = c;
  resolve_data_source(stored.data);
  EXPECT_EQ(stored.data.builtin, "");
  EXPECT_FALSE(uses_builtin_task(stored.data));

  RunConfig builtin;
  resolve_data_source(builtin.data);
  EXPECT_EQ(builtin.data.builtin, "lists");
  auto from_toml = config_from_toml("[data]\ntrain = \"pairs.jsonl\"\n");
  EXPECT_FALSE(uses_builtin_task(from_toml.data));
  EXPECT_TRUE(uses_builtin_task(config_from_toml("[data]\nbuiltin = \"lists\"\n").data));
}

}  // namespace
}  // namespace ganpo
