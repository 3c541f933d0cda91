// `ganpo inspect`, `ganpo logits` and `ganpo tokenize` through the real binary, on a model folder
// written by save_model_files: what they print must agree with the engine in this process.
#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "tests/support/cli_runner.h"

#include "core/checkpoint.h"
#include "core/model/causal_lm.h"
#include "core/model/lora_adapter.h"
#include "core/tokenizer.h"

namespace fs = std::filesystem;

namespace {

using ganpo::test::run_cli;

// A two-layer model of the family, 32 wide, for the byte tokenizer's 259 ids.
ganpo::CausalLM tiny_model(const std::string& arch) {
  ganpo::ModelConfig mc;
  mc.preset = "";
  mc.arch = arch;
  mc.d_model = 32;
  mc.n_layers = 2;
  mc.n_heads = 4;
  mc.max_seq_len = 32;
  return ganpo::CausalLM(ganpo::resolve_model_shape(mc, 259));
}

struct ModelCommands : ::testing::Test {
  static void SetUpTestSuite() {
    dir_ = fs::temp_directory_path() / ("ganpo-model-commands-" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    torch::manual_seed(11);
    model_ = tiny_model("gpt2");
    model_->eval();
    ganpo::save_model_files(dir_.string(), model_, ganpo::ByteTokenizer());
  }
  static void TearDownTestSuite() { fs::remove_all(dir_); }
  static fs::path dir_;
  static ganpo::CausalLM model_;
};
fs::path ModelCommands::dir_;
ganpo::CausalLM ModelCommands::model_{nullptr};

TEST_F(ModelCommands, InspectDescribesTheFolder) {
  auto r = run_cli("inspect --model " + dir_.string() + " --json");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto j = nlohmann::json::parse(r.output);
  EXPECT_EQ(j["architecture"], "GPT2LMHeadModel");
  EXPECT_EQ(j["parameters"], ganpo::parameter_count(model_->shape()));
  EXPECT_EQ(j["parameters"], static_cast<int64_t>([] {
              int64_t n = 0;
              for (const auto& p : model_->parameters()) n += p.numel();
              return n;
            }()));
  EXPECT_EQ(j["tokenizer"]["kind"], "byte");
  EXPECT_EQ(j["positions"], "learned");
  EXPECT_GT(j["training_memory"]["total_bytes"].get<double>(), 0);

  auto text = run_cli("inspect --model " + dir_.string());
  EXPECT_NE(text.output.find("GPT2LMHeadModel"), std::string::npos) << text.output;

  auto missing = run_cli("inspect --model " + (dir_ / "nope").string());
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_NE(missing.output.find("does not exist"), std::string::npos) << missing.output;
}

TEST_F(ModelCommands, LogitsEqualTheEngineInThisProcess) {
  auto r = run_cli("logits --model " + dir_.string() + " --ids 72,105,33 --json");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto j = nlohmann::json::parse(r.output);
  torch::NoGradGuard guard;
  auto want = model_->forward(torch::tensor({72, 105, 33}, torch::kLong).unsqueeze(0)).logits[0];
  ASSERT_EQ(j["logits"].size(), 3u);
  for (int64_t t = 0; t < 3; ++t) {
    auto got = torch::tensor(j["logits"][t].get<std::vector<float>>());
    EXPECT_LT((got - want[t]).abs().max().item<double>(), 1e-5) << "position " << t;
  }
  auto bad = run_cli("logits --model " + dir_.string() + " --ids 1,999");
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_NE(bad.output.find("outside the vocabulary"), std::string::npos) << bad.output;
  // An empty list is no id (it read as id 0); an empty item is none either (CLI11's split had
  // dropped it, so "1,,2" ran on 1,2 without a word).
  for (const char* ids : {"\"\"", "-1", "abc", "1,,2", "1,", ",1"}) {
    auto refused = run_cli("logits --model " + dir_.string() + " --ids " + ids);
    EXPECT_EQ(refused.exit_code, 2) << ids << ": " << refused.output;
    EXPECT_EQ(refused.output.find("position 0"), std::string::npos) << ids << ": " << refused.output;
  }
  EXPECT_NE(run_cli("logits --model " + dir_.string() + " --ids 1,,2").output.find("has an empty item in \"1,,2\""),
            std::string::npos);
  // Ids as separate words still read as one list.
  auto words = run_cli("logits --model " + dir_.string() + " --ids 72,105 33 --json");
  ASSERT_EQ(words.exit_code, 0) << words.output;
  EXPECT_EQ(nlohmann::json::parse(words.output)["logits"].size(), 3u);
}

// A PEFT adapter folder is its base model with the adapters on, for `logits` as for `generate`;
// `inspect` describes the base and the adapters.
TEST_F(ModelCommands, LogitsAndInspectTakeAPeftAdapterFolder) {
  torch::manual_seed(21);
  ganpo::CausalLM model = tiny_model("llama");
  const fs::path base_dir = dir_ / "llama-base", adapter_dir = dir_ / "llama-adapter";
  ganpo::save_model_files(base_dir.string(), model, ganpo::ByteTokenizer());
  ganpo::LoraSpec spec;
  spec.r = 4;
  spec.alpha = 8.0;
  spec.targets = {"q_proj", "v_proj"};
  model->add_lora(spec);
  {
    torch::NoGradGuard guard;
    for (auto& [name, t] : model->adapter_parameters()) t.normal_(0.0, 0.3);  // B starts at zero: move it
  }
  fs::create_directories(adapter_dir);
  ganpo::save_peft_adapter(adapter_dir.string(), model, base_dir.string());
  model->eval();

  const auto ids = torch::tensor({72, 105, 33, 7}, torch::kLong).unsqueeze(0);
  torch::NoGradGuard guard;
  const auto want = model->forward(ids).logits[0];
  const auto base = ganpo::load_model(base_dir.string())->forward(ids).logits[0];
  ASSERT_GT((want - base).abs().max().item<double>(), 1e-2) << "the adapters change the logits";
  auto r = run_cli("logits --model " + adapter_dir.string() + " --ids 72,105,33,7 --json");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto j = nlohmann::json::parse(r.output);
  ASSERT_EQ(j["logits"].size(), 4u);
  for (int64_t t = 0; t < 4; ++t) {
    auto got = torch::tensor(j["logits"][t].get<std::vector<float>>());
    EXPECT_LT((got - want[t]).abs().max().item<double>(), 1e-5) << "position " << t;
  }

  // A base folder without tokenizer files (a Hugging Face folder of weights alone) works too.
  for (const char* file : {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "ganpo_tokenizer.json"})
    fs::remove(base_dir / file);
  auto bare = run_cli("logits --model " + adapter_dir.string() + " --ids 72,105,33,7 --json");
  ASSERT_EQ(bare.exit_code, 0) << bare.output;
  EXPECT_EQ(nlohmann::json::parse(bare.output)["logits"], j["logits"]);

  auto info = run_cli("inspect --model " + adapter_dir.string() + " --json");
  ASSERT_EQ(info.exit_code, 0) << info.output;
  const auto d = nlohmann::json::parse(info.output);
  EXPECT_EQ(d["folder"], adapter_dir.string());
  EXPECT_EQ(d["architecture"], "LlamaForCausalLM");
  EXPECT_EQ(d["adapter"]["r"], 4);
  EXPECT_EQ(d["adapter"]["target_modules"], (nlohmann::json{"q_proj", "v_proj"}));
  EXPECT_EQ(d["adapter"]["adapted"], "q_proj, v_proj");
  EXPECT_EQ(d["adapter"]["base_model"], base_dir.string());
  auto text = run_cli("inspect --model " + adapter_dir.string());
  EXPECT_NE(text.output.find("PEFT LoRA r 4, alpha 8 on q_proj, v_proj"), std::string::npos) << text.output;
}

TEST_F(ModelCommands, TokenizeRoundTrips) {
  const std::string in = (dir_ / "in.jsonl").string();
  {
    std::ofstream(in) << R"({"text": "h\u00e9!"})" << "\n";
  }
  auto r = run_cli("tokenize --tokenizer " + dir_.string() + " < " + in);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(nlohmann::json::parse(r.output)["ids"], (std::vector<int64_t>{104, 195, 169, 33}));
  const std::string ids = (dir_ / "ids.jsonl").string();
  {
    std::ofstream(ids) << R"({"ids": [104, 195, 169, 33]})" << "\n";
  }
  auto d = run_cli("tokenize --tokenizer " + dir_.string() + " --decode < " + ids);
  ASSERT_EQ(d.exit_code, 0) << d.output;
  EXPECT_EQ(nlohmann::json::parse(d.output)["text"], "h\u00e9!");
  // An id outside the vocabulary is an error, not an empty text.
  {
    std::ofstream(ids) << R"({"ids": [104, -1]})" << "\n" << R"({"ids": [99999999999]})" << "\n";
  }
  // The byte tokenizer has no special tokens to add or keep: --no-special gives the same ids and
  // says so, rather than seeming to have been ignored.
  auto plain = run_cli("tokenize --tokenizer " + dir_.string() + " --no-special < " + in);
  ASSERT_EQ(plain.exit_code, 0) << plain.output;
  EXPECT_NE(plain.output.find("--no-special changes nothing here"), std::string::npos) << plain.output;
  EXPECT_NE(plain.output.find(R"({"ids":[104,195,169,33]})"), std::string::npos) << plain.output;
  auto outside = run_cli("tokenize --tokenizer " + dir_.string() + " --decode < " + ids);
  EXPECT_EQ(outside.exit_code, 1) << outside.output;
  EXPECT_NE(outside.output.find("line 1: id -1 is outside the vocabulary"), std::string::npos) << outside.output;
}

}  // namespace
