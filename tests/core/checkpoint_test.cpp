#include "core/checkpoint.h"

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <unistd.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "core/error.h"
#include "core/model/architectures.h"
#include "core/text/hf_tokenizer.h"
#include "core/text/utf8.h"
#include "core/model/causal_lm.h"
#include "core/tokenizer.h"

namespace ganpo {
namespace {

namespace fs = std::filesystem;

// ---- tokenizer -----------------------------------------------------------------------------

// A saved byte tokenizer is also a Hugging Face tokenizer.json (byte-level BPE without merges),
// so AutoTokenizer opens our checkpoints; read through our tokenizer.json implementation (whose
// ids equal HF's on real files) it gives the byte tokenizer's ids and text.
TEST(CheckpointTokenizer, SavedByteTokenizerIsAHuggingFaceTokenizerToo) {
  const auto dir = std::filesystem::temp_directory_path() / ("ganpo-byte-hf-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  ByteTokenizer byte;
  byte.save(dir.string());
  EXPECT_EQ(load_tokenizer(dir.string())->kind(), "byte");
  auto hf = HfTokenizer::from_folder(dir.string());
  EXPECT_EQ(hf->bos_id(), byte.bos_id());
  EXPECT_EQ(hf->eos_id(), byte.eos_id());
  EXPECT_EQ(hf->pad_id(), byte.pad_id());
  EXPECT_EQ(hf->vocab_size(), byte.vocab_size());
  for (const std::string& text : {std::string("Hello, world!"), std::string("  two spaces\n\ttab "),
                                 std::string("h\xC3\xA9 \xE6\x97\xA5\xE6\x9C\xAC \xF0\x9F\x91\x8D\xF0\x9F\x8F\xBD"),
                                 std::string(""), std::string("1234567890 ~`!@#$%^&*()")}) {
    EXPECT_EQ(hf->encode(text, true), byte.encode(text)) << text;
    EXPECT_EQ(hf->decode(byte.encode(text)), text) << text;
  }
  EXPECT_EQ(hf->decode({256, 'h', 'i', 257, 258}), "hi");
  std::filesystem::remove_all(dir);
}

TEST(CheckpointTokenizer, ByteTokenizerRoundTripsUtf8) {
  ByteTokenizer tok;
  const std::string text = "h\xC3\xA9llo w\xC3\xB6rld \xE2\x80\x94 \xE6\x97\xA5\xE6\x9C\xAC \xF0\x9F\x8E\x89\n\t\"x\"";
  auto ids = tok.encode(text);
  EXPECT_EQ(ids.size(), text.size());  // one token per byte
  for (int64_t id : ids) {
    EXPECT_GE(id, 0);
    EXPECT_LT(id, 256);
  }
  EXPECT_EQ(ids[1], 0xC3);
  EXPECT_EQ(tok.decode(ids), text);
  EXPECT_TRUE(tok.encode("").empty());
  // Every byte value round-trips, including NUL and 0xFF.
  std::string all;
  for (int b = 0; b < 256; ++b) all.push_back(static_cast<char>(b));
  EXPECT_EQ(tok.decode(tok.encode(all)), all);
}

TEST(CheckpointTokenizer, ByteTextStreamNeverSplitsACharacter) {
  ByteTokenizer tok;
  const std::string text = "h\xC3\xA9llo \xF0\x9F\x91\x8D\xF0\x9F\x8F\xBD \xE4\xB8\xAD";  // héllo 👍🏽 中
  std::vector<int64_t> ids = tok.encode(text);
  ids.insert(ids.begin() + 3, tok.eos_id());  // special tokens give no text
  auto stream = tok.text_stream();
  std::string streamed;
  for (int64_t id : ids) {
    const std::string piece = stream->push(id);
    EXPECT_TRUE(text::is_valid_utf8(piece)) << "after id " << id;
    streamed += piece;
  }
  streamed += stream->finish();
  EXPECT_EQ(streamed, text);
  // A stray continuation byte and a character cut short become U+FFFD, once each.
  auto again = tok.text_stream();
  std::string out;
  for (int64_t id : {0x61, 0x80, 0x62, 0xE4, 0xB8}) out += again->push(id);
  EXPECT_EQ(out, "a\xEF\xBF\xBD" "b");
  EXPECT_EQ(again->finish(), "\xEF\xBF\xBD");
}

TEST(CheckpointTokenizer, SpecialAndInvalidIdsAreDroppedWhenDecoding) {
  ByteTokenizer tok;
  EXPECT_EQ(tok.vocab_size(), 259);
  EXPECT_EQ(tok.bos_id(), 256);
  EXPECT_EQ(tok.eos_id(), 257);
  EXPECT_EQ(tok.pad_id(), 258);
  EXPECT_EQ(tok.decode({256, 'a', 257, 'b', 258, -1, 999, 'c'}), "abc");
}

TEST(CheckpointTokenizer, PromptAndResponseFraming) {
  ByteTokenizer tok;
  EXPECT_EQ(encode_prompt(tok, "Hi"), (std::vector<int64_t>{256, 'H', 'i', '\n'}));
  EXPECT_EQ(encode_prompt(tok, ""), (std::vector<int64_t>{256, '\n'}));
  EXPECT_EQ(encode_response(tok, "Hi", "ok"), (std::vector<int64_t>{'o', 'k', 257}));
  EXPECT_EQ(encode_response(tok, "Hi", ""), (std::vector<int64_t>{257}));
}

// ---- model folders -------------------------------------------------------------------------

class CheckpointFolder : public ::testing::Test {
protected:
  void SetUp() override {
    static std::atomic<int> counter{0};
    dir_ = fs::temp_directory_path() /
           ("ganpo_checkpoint_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++) + "_" +
            std::to_string(std::chrono::steady_clock::now().time_since_epoch().count()));
    fs::create_directories(dir_);
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  static ModelShape shape(const std::string& arch = "llama") {
    ModelShape s;
    s.arch = arch;
    s.d_model = 32;
    s.n_layers = 2;
    s.n_heads = 4;
    s.n_kv_heads = arch == "llama" ? 2 : 4;
    s.d_ff = 64;
    s.max_seq_len = 64;
    architecture(arch).set_layout(s);
    return s;
  }

  // Saves a fresh model into dir_/name and returns the folder.
  std::string save(const std::string& name, CausalLM* out = nullptr, const std::string& arch = "llama") {
    torch::manual_seed(21);
    CausalLM m(shape(arch));
    m->eval();
    const auto folder = (dir_ / name).string();
    save_model_files(folder, m, ByteTokenizer());
    if (out) *out = m;
    return folder;
  }

  static void expect_model_file_error(const std::string& folder, const std::string& part = "") {
    try {
      load_model_folder(folder, torch::kCPU);
      ADD_FAILURE() << "no ModelFileError for " << folder;
    } catch (const ModelFileError& e) {
      EXPECT_FALSE(std::string(e.what()).empty());
      if (!part.empty()) {
        EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
      }
    } catch (const std::exception& e) {
      ADD_FAILURE() << "wrong exception type: " << e.what();
    }
  }

  fs::path dir_;
};

TEST_F(CheckpointFolder, SaveThenLoadGivesIdenticalLogits) {
  for (const std::string arch : {"llama", "gpt2"}) {
    CausalLM original{nullptr};
    const auto folder = save("model_" + arch, &original, arch);
    EXPECT_TRUE(fs::exists(fs::path(folder) / "model.safetensors"));
    EXPECT_TRUE(fs::exists(fs::path(folder) / "config.json"));
    EXPECT_TRUE(fs::exists(fs::path(folder) / "tokenizer_config.json"));

    auto loaded = load_model_folder(folder, torch::kCPU);
    ASSERT_TRUE(loaded.model);
    ASSERT_TRUE(loaded.tokenizer);
    EXPECT_EQ(loaded.tokenizer->kind(), "byte");
    EXPECT_EQ(loaded.shape.arch, arch);
    EXPECT_EQ(loaded.shape.n_kv_heads, original->shape().n_kv_heads);
    EXPECT_EQ(loaded.shape.d_ff, 64);
    EXPECT_FALSE(loaded.model->is_training());

    torch::NoGradGuard guard;
    auto ids = torch::randint(0, 256, {2, 11}, torch::kLong);
    auto a = original->forward(ids), b = loaded.model->forward(ids);
    EXPECT_TRUE(torch::equal(a.logits, b.logits)) << arch;
    EXPECT_TRUE(torch::equal(a.hidden, b.hidden)) << arch;
  }
}

// load_model_for_inference on the CPU: "auto" and "fp32" give the float32 model, frozen, whatever
// the folder's dtype (its logits those of load_model_folder); "bf16" asks for a CUDA device and
// another name lists the three. (On CUDA: tests/core/gpu/cuda_test.cpp.)
TEST_F(CheckpointFolder, InferenceOnTheCpuIsFloat32AndBf16AsksForAGpu) {
  torch::manual_seed(22);
  CausalLM m(shape("llama"));
  const auto folder = (dir_ / "bf16").string();
  save_model_files(folder, m, ByteTokenizer(), {"bfloat16"});
  auto plain = load_model_folder(folder, torch::kCPU);
  ASSERT_EQ(plain.shape.dtype, "bfloat16");
  const auto ids = torch::randint(0, 256, {2, 9}, torch::kLong);
  torch::NoGradGuard guard;
  for (const std::string precision : {"auto", "fp32"}) {
    SCOPED_TRACE(precision);
    auto loaded = load_model_for_inference(folder, torch::kCPU, precision);
    EXPECT_FALSE(loaded.bf16_autocast);
    EXPECT_FALSE(loaded.model->is_training());
    for (const auto& p : loaded.model->parameters()) {
      EXPECT_EQ(p.scalar_type(), torch::kFloat32);
      EXPECT_FALSE(p.requires_grad());
    }
    EXPECT_TRUE(torch::equal(loaded.model->forward(ids).logits, plain.model->forward(ids).logits));
  }
  for (const auto& [precision, message] : std::vector<std::pair<std::string, std::string>>{
           {"bf16", "precision bf16 needs a CUDA device; on the CPU a model computes in float32"},
           {"fp16", "must be auto, fp32 or bf16, got \"fp16\""}}) {
    try {
      load_model_for_inference(folder, torch::kCPU, precision);
      ADD_FAILURE() << "no error for " << precision;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(message), std::string::npos) << e.what();
    }
  }
}

TEST_F(CheckpointFolder, ConfigJsonUsesHfFields) {
  const auto folder = save("m");
  auto j = read_json_file((fs::path(folder) / "config.json").string());
  EXPECT_EQ(j.at("model_type"), "llama");
  EXPECT_EQ(j.at("hidden_size"), 32);
  EXPECT_EQ(j.at("num_key_value_heads"), 2);
  EXPECT_EQ(j.at("vocab_size"), 259);
  auto t = read_json_file((fs::path(folder) / "tokenizer_config.json").string());
  EXPECT_EQ(t.at("kind"), "byte");
  EXPECT_EQ(t.at("eos_token_id"), 257);
}

TEST_F(CheckpointFolder, MissingFolderThrows) {
  expect_model_file_error((dir_ / "does_not_exist").string(), "does not exist");
}

TEST_F(CheckpointFolder, MissingConfigJsonThrows) {
  const auto folder = save("m");
  fs::remove(fs::path(folder) / "config.json");
  expect_model_file_error(folder, "config.json");
}

TEST_F(CheckpointFolder, CorruptConfigJsonThrows) {
  const auto folder = save("m");
  std::ofstream(fs::path(folder) / "config.json") << "{\"model_type\": \"llama\", \"hidden_size\": ";
  expect_model_file_error(folder, "config.json");
}

TEST_F(CheckpointFolder, ConfigWithWrongFieldTypeThrows) {
  const auto folder = save("m");
  std::ofstream(fs::path(folder) / "config.json") << "{\"model_type\": \"llama\", \"hidden_size\": \"big\"}";
  expect_model_file_error(folder);
}

TEST_F(CheckpointFolder, ConfigThatDoesNotMatchTheWeightsThrows) {
  const auto folder = save("m");
  auto j = read_json_file((fs::path(folder) / "config.json").string());
  j["intermediate_size"] = 96;
  write_json_file((fs::path(folder) / "config.json").string(), j);
  expect_model_file_error(folder, "shape");
}

TEST_F(CheckpointFolder, MissingOrCorruptTokenizerConfigThrows) {
  const auto folder = save("m");
  // Without tokenizer_config.json the folder's tokenizer.json is a plain HF tokenizer.
  fs::remove(fs::path(folder) / "tokenizer_config.json");
  EXPECT_EQ(load_model_folder(folder, torch::kCPU).tokenizer->encode("ok"), ByteTokenizer().encode("ok"));
  fs::remove(fs::path(folder) / "tokenizer.json");
  expect_model_file_error(folder, "tokenizer_config.json");
  std::ofstream(fs::path(folder) / "tokenizer_config.json") << "not json";
  expect_model_file_error(folder, "tokenizer_config.json");
  std::ofstream(fs::path(folder) / "tokenizer_config.json") << "{\"kind\": \"sentencepiece\"}";
  expect_model_file_error(folder, "sentencepiece");
}

TEST_F(CheckpointFolder, TruncatedWeightsThrow) {
  const auto folder = save("m");
  const auto weights = fs::path(folder) / "model.safetensors";
  const auto size = fs::file_size(weights);
  for (uintmax_t keep : {size - 1, size / 2, uintmax_t{100}, uintmax_t{4}, uintmax_t{0}}) {
    const auto copy = dir_ / ("t" + std::to_string(keep));
    fs::copy(folder, copy, fs::copy_options::recursive);
    fs::resize_file(copy / "model.safetensors", keep);
    expect_model_file_error(copy.string());
  }
}

TEST_F(CheckpointFolder, MissingWeightsThrow) {
  const auto folder = save("m");
  fs::remove(fs::path(folder) / "model.safetensors");
  expect_model_file_error(folder, "model.safetensors");
}

TEST_F(CheckpointFolder, WriteFolderAtomicallyReplacesAndCleansUp) {
  const auto target = (dir_ / "atomic").string();
  write_folder_atomically(target, [](const std::string& tmp) { std::ofstream(fs::path(tmp) / "a.txt") << "1"; });
  EXPECT_TRUE(fs::exists(fs::path(target) / "a.txt"));
  write_folder_atomically(target, [](const std::string& tmp) { std::ofstream(fs::path(tmp) / "b.txt") << "2"; });
  EXPECT_FALSE(fs::exists(fs::path(target) / "a.txt"));
  EXPECT_TRUE(fs::exists(fs::path(target) / "b.txt"));
  EXPECT_FALSE(fs::exists(target + ".tmp"));
  EXPECT_FALSE(fs::exists(target + ".old"));
  // A writer that throws leaves the previous folder in place.
  EXPECT_THROW(write_folder_atomically(target, [](const std::string&) { throw Error("disk full"); }), Error);
  EXPECT_TRUE(fs::exists(fs::path(target) / "b.txt"));
}

TEST(CheckpointJson, ReadJsonFileErrors) {
  EXPECT_THROW(read_json_file("/nonexistent/ganpo/x.json"), ModelFileError);
}

}  // namespace
}  // namespace ganpo
