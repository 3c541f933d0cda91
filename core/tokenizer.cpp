#include "core/tokenizer.h"

#include <algorithm>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/run_files.h"
#include "core/text/byte_level.h"
#include "core/text/hf_tokenizer.h"
#include "core/text/utf8.h"

namespace ganpo {

std::vector<int64_t> ByteTokenizer::encode(const std::string& text) const {
  std::vector<int64_t> ids;
  ids.reserve(text.size());
  for (unsigned char c : text) ids.push_back(static_cast<int64_t>(c));
  return ids;
}

std::string ByteTokenizer::decode(const std::vector<int64_t>& ids) const {
  std::string out;
  out.reserve(ids.size());
  for (int64_t id : ids)
    if (id >= 0 && id < 256) out.push_back(static_cast<char>(id));
  return out;
}

namespace {

constexpr const char* kByteSpecials[] = {"<|bos|>", "<|eos|>", "<|pad|>"};  // ids 256, 257, 258

// The byte tokenizer as Hugging Face's tokenizers library spells it: byte-level BPE without
// merges, whose 256 tokens are the GPT-2 byte characters in byte order (so id = byte value),
// plus BOS / EOS / PAD as special added tokens. transformers' AutoTokenizer then encodes and
// decodes exactly as ByteTokenizer does (text that spells a special token literally aside).
nlohmann::json byte_tokenizer_json() {
  const auto& alphabet = text::ByteLevelAlphabet::get();
  nlohmann::json vocab = nlohmann::json::object();
  for (int b = 0; b < 256; ++b) vocab[alphabet.utf8_of(static_cast<unsigned char>(b))] = b;
  nlohmann::json added = nlohmann::json::array();
  for (int i = 0; i < 3; ++i)
    added.push_back({{"id", 256 + i}, {"content", kByteSpecials[i]}, {"single_word", false}, {"lstrip", false},
                     {"rstrip", false}, {"normalized", false}, {"special", true}});
  const nlohmann::json byte_level = {
      {"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", false}, {"use_regex", false}};
  return {{"version", "1.0"},
          {"truncation", nullptr},
          {"padding", nullptr},
          {"added_tokens", added},
          {"normalizer", nullptr},
          {"pre_tokenizer", byte_level},
          {"post_processor", nullptr},
          {"decoder", byte_level},
          {"model",
           {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr}, {"continuing_subword_prefix", nullptr},
            {"end_of_word_suffix", nullptr}, {"fuse_unk", false}, {"byte_fallback", false},
            {"ignore_merges", false}, {"vocab", vocab}, {"merges", nlohmann::json::array()}}}};
}

}  // namespace

void ByteTokenizer::save(const std::string& dir) const {
  // "kind": "byte" is ours (load_tokenizer); the rest is what transformers reads.
  nlohmann::json config = {{"tokenizer_class", "PreTrainedTokenizerFast"}, {"kind", "byte"},
                           {"vocab_size", vocab_size()}, {"bos_token_id", bos_id()},
                           {"eos_token_id", eos_id()}, {"pad_token_id", pad_id()},
                           {"bos_token", kByteSpecials[0]}, {"eos_token", kByteSpecials[1]},
                           {"pad_token", kByteSpecials[2]}, {"model_max_length", 1000000},
                           {"clean_up_tokenization_spaces", false}};
  const auto folder = std::filesystem::path(dir);
  write_text_file((folder / "tokenizer_config.json").string(), config.dump(2) + "\n");
  write_text_file((folder / "tokenizer.json").string(), byte_tokenizer_json().dump(2) + "\n");
}

bool has_tokenizer_files(const std::string& dir) {
  for (const char* name : {"tokenizer_config.json", "tokenizer.json", "tokenizer.model"})
    if (std::filesystem::exists(std::filesystem::path(dir) / name)) return true;
  return false;
}

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& dir) {
  const auto path = std::filesystem::path(dir) / "tokenizer_config.json";
  const bool hf_files = std::filesystem::exists(std::filesystem::path(dir) / "tokenizer.json") ||
                        std::filesystem::exists(std::filesystem::path(dir) / "tokenizer.model");
  std::ifstream in(path);
  if (!in && hf_files) return open_hf_folder_tokenizer(dir);
  if (!in)
    throw ModelFileError("missing " + path.string() +
                         ": the folder is not a GANPO checkpoint (or it is incomplete); pick a "
                         "checkpoint-<step> or final folder");
  nlohmann::json j;
  try {
    in >> j;
  } catch (const std::exception& e) {
    throw ModelFileError(path.string() + " is not valid JSON (" + e.what() +
                         "); the checkpoint is corrupt, use another one");
  }
  const std::string kind = j.is_object() ? j.value("kind", "") : "";
  if (kind == "byte") return std::make_unique<ByteTokenizer>();
  if (hf_files) return open_hf_folder_tokenizer(dir);
  throw ModelFileError(path.string() + ": unsupported tokenizer kind \"" + kind +
                       "\"; this build reads \"byte\" tokenizers");
}

std::vector<int64_t> ByteTokenizer::prompt_ids(const std::string& prompt) const {
  std::vector<int64_t> ids{bos_id()};
  auto body = encode(prompt + "\n");
  ids.insert(ids.end(), body.begin(), body.end());
  return ids;
}

namespace {

// Decodes everything pushed so far and feeds the bytes after those already fed through a
// Utf8Repair, which holds back a character cut short and turns invalid bytes into U+FFFD.
class RedecodingTextStream final : public TextStream {
public:
  explicit RedecodingTextStream(const Tokenizer* tok) : tok_(tok) {}
  std::string push(int64_t id) override {
    ids_.push_back(id);
    std::string out;
    feed_new_bytes(out);
    return out;
  }
  std::string finish() override {
    std::string out;
    feed_new_bytes(out);
    repair_.finish(out);
    ids_.clear();
    fed_ = 0;
    return out;
  }

private:
  void feed_new_bytes(std::string& out) {
    const std::string text = tok_->decode(ids_);
    if (text.size() > fed_) repair_.feed(std::string_view(text).substr(fed_), out);
    fed_ = std::max(fed_, text.size());
  }
  const Tokenizer* tok_;
  std::vector<int64_t> ids_;
  size_t fed_ = 0;  // bytes of the decoded text fed to repair_
  text::Utf8Repair repair_;
};

}  // namespace

std::unique_ptr<TextStream> Tokenizer::text_stream() const { return std::make_unique<RedecodingTextStream>(this); }

std::vector<int64_t> Tokenizer::leading_special_tokens() const {
  return bos_id() >= 0 ? std::vector<int64_t>{bos_id()} : std::vector<int64_t>{};
}

std::vector<int64_t> Tokenizer::prompt_ids(const std::string& prompt) const {
  auto ids = encode(prompt);
  const auto lead = leading_special_tokens();
  if (ids.size() < lead.size() || !std::equal(lead.begin(), lead.end(), ids.begin()))
    ids.insert(ids.begin(), lead.begin(), lead.end());
  return ids;
}

std::vector<int64_t> encode_prompt(const Tokenizer& tok, const std::string& prompt) { return tok.prompt_ids(prompt); }

std::vector<int64_t> Tokenizer::continuation_ids(const std::string& prompt, const std::string& response) const {
  if (prompt.empty()) return encode(response);
  const auto alone = encode(prompt);
  auto joined = encode(prompt + response);
  if (joined.size() < alone.size() || !std::equal(alone.begin(), alone.end(), joined.begin())) return encode(response);
  joined.erase(joined.begin(), joined.begin() + static_cast<std::ptrdiff_t>(alone.size()));
  return joined;
}

std::string continuation_text(const Tokenizer& tok, const std::vector<int64_t>& prompt, const std::vector<int64_t>& ids) {
  std::vector<int64_t> joined = prompt;
  joined.insert(joined.end(), ids.begin(), ids.end());
  const std::string before = tok.decode(prompt), whole = tok.decode(joined);
  if (whole.compare(0, before.size(), before) != 0) return tok.decode(ids);
  return whole.substr(before.size());
}

std::vector<int64_t> encode_response(const Tokenizer& tok, const std::string& prompt, const std::string& response) {
  auto ids = tok.continuation_ids(prompt, response);
  // (one: a chat template's turn may end with the EOS already, as Llama 3.1's <|eot_id|>)
  if (tok.eos_id() >= 0 && (ids.empty() || ids.back() != tok.eos_id())) ids.push_back(tok.eos_id());
  return ids;
}

}  // namespace ganpo
