#include "core/text/sentencepiece_tokenizer.h"

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>
#include <sentencepiece_processor.h>

#include "core/error.h"
#include "core/text/utf8.h"

namespace ganpo {

namespace fs = std::filesystem;

struct SentencePieceTokenizer::Impl {
  sentencepiece::SentencePieceProcessor sp;
  std::string model_path, config_path;
  bool add_bos = true, add_eos = false;
};

SentencePieceTokenizer::SentencePieceTokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
SentencePieceTokenizer::~SentencePieceTokenizer() = default;

std::unique_ptr<SentencePieceTokenizer> SentencePieceTokenizer::from_file(const std::string& path) {
  auto impl = std::make_unique<Impl>();
  impl->model_path = path;
  std::error_code ec;
  if (!fs::is_regular_file(path, ec))
    throw ModelFileError("no SentencePiece model at " + path +
                         ": pick a model folder that has tokenizer.json or tokenizer.model");
  const auto status = impl->sp.Load(path);
  if (!status.ok())
    throw ModelFileError(path + " is not a usable SentencePiece model (" + status.ToString() +
                         "); the download is incomplete or damaged: download it again");
  return std::unique_ptr<SentencePieceTokenizer>(new SentencePieceTokenizer(std::move(impl)));
}

std::unique_ptr<SentencePieceTokenizer> SentencePieceTokenizer::from_folder(const std::string& dir) {
  auto tok = from_file((fs::path(dir) / "tokenizer.model").string());
  const fs::path config = fs::path(dir) / "tokenizer_config.json";
  std::error_code ec;
  if (fs::is_regular_file(config, ec)) {
    std::ifstream in(config);
    nlohmann::json j;
    try {
      in >> j;
    } catch (const std::exception& e) {
      throw ModelFileError(config.string() + " is not valid JSON (" + e.what() +
                           "); the download is incomplete or damaged: download it again");
    }
    if (j.is_object()) {
      tok->impl_->config_path = config.string();
      if (j.contains("add_bos_token") && j["add_bos_token"].is_boolean()) tok->impl_->add_bos = j["add_bos_token"].get<bool>();
      if (j.contains("add_eos_token") && j["add_eos_token"].is_boolean()) tok->impl_->add_eos = j["add_eos_token"].get<bool>();
      if (j.contains("chat_template") && j["chat_template"].is_string())
        tok->chat_template_ = j["chat_template"].get<std::string>();
    }
  }
  return tok;
}

int64_t SentencePieceTokenizer::vocab_size() const { return impl_->sp.GetPieceSize(); }
int64_t SentencePieceTokenizer::bos_id() const { return impl_->sp.bos_id(); }
int64_t SentencePieceTokenizer::eos_id() const { return impl_->sp.eos_id(); }
int64_t SentencePieceTokenizer::pad_id() const {
  return impl_->sp.pad_id() >= 0 ? impl_->sp.pad_id() : impl_->sp.eos_id();
}

std::vector<int64_t> SentencePieceTokenizer::leading_special_tokens() const {
  return impl_->add_bos && bos_id() >= 0 ? std::vector<int64_t>{bos_id()} : std::vector<int64_t>{};
}

std::vector<int64_t> SentencePieceTokenizer::encode(const std::string& text) const {
  return encode(text, false);
}

std::vector<int64_t> SentencePieceTokenizer::encode(const std::string& input, bool add_special_tokens) const {
  std::vector<int> ids;
  const std::string valid = text::make_valid_utf8(input);
  // Encode fails only on an unloaded model; the model is loaded in from_file.
  (void)impl_->sp.Encode(valid, &ids);
  std::vector<int64_t> out;
  out.reserve(ids.size() + 2);
  if (add_special_tokens && impl_->add_bos && bos_id() >= 0) out.push_back(bos_id());
  out.insert(out.end(), ids.begin(), ids.end());
  if (add_special_tokens && impl_->add_eos && eos_id() >= 0) out.push_back(eos_id());
  return out;
}

std::string SentencePieceTokenizer::decode(const std::vector<int64_t>& ids) const {
  std::vector<int> valid;
  valid.reserve(ids.size());
  const int64_t n = vocab_size();
  for (int64_t id : ids)
    if (id >= 0 && id < n) valid.push_back(static_cast<int>(id));
  std::string out;
  (void)impl_->sp.Decode(valid, &out);
  return out;
}

void SentencePieceTokenizer::save(const std::string& dir) const {
  std::error_code ec;
  fs::create_directories(dir, ec);
  auto copy = [&](const std::string& src, const char* name) {
    if (src.empty()) return;
    const fs::path dst = fs::path(dir) / name;
    std::error_code e;
    if (fs::exists(dst, e) && fs::equivalent(src, dst, e)) return;
    fs::copy_file(src, dst, fs::copy_options::overwrite_existing, e);
    if (e)
      throw ModelFileError("cannot copy " + src + " to " + dst.string() + " (" + e.message() +
                           "): check that the source still exists and the folder is writable");
  };
  copy(impl_->model_path, "tokenizer.model");
  copy(impl_->config_path, "tokenizer_config.json");
}

}  // namespace ganpo
