// SentencePiece tokenizer.model files (model folders that have no tokenizer.json).
//
// Older Llama / Mistral / Gemma checkpoints sometimes ship only the SentencePiece model. This
// wraps libsentencepiece behind the Tokenizer interface: encode() adds no special tokens,
// encode(text, true) puts BOS first (and EOS last when tokenizer_config.json says
// add_eos_token), decode() drops control tokens such as BOS/EOS. Invalid UTF-8 input is read
// with U+FFFD for each invalid sequence, as HfTokenizer does.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/tokenizer.h"

namespace ganpo {

class SentencePieceTokenizer final : public Tokenizer {
public:
  // Reads DIR/tokenizer.model (and tokenizer_config.json for add_bos_token / add_eos_token
  // and the chat template). Throws ModelFileError when the file is missing or unreadable.
  static std::unique_ptr<SentencePieceTokenizer> from_folder(const std::string& dir);
  // A tokenizer.model anywhere.
  static std::unique_ptr<SentencePieceTokenizer> from_file(const std::string& model_path);
  ~SentencePieceTokenizer() override;

  std::string kind() const override { return "sentencepiece"; }
  int64_t vocab_size() const override;
  int64_t bos_id() const override;  // -1 when the model has none
  int64_t eos_id() const override;
  int64_t pad_id() const override;  // the EOS id when the model has no pad piece
  std::vector<int64_t> encode(const std::string& text) const override;
  std::string decode(const std::vector<int64_t>& ids) const override;
  // Copies tokenizer.model (and the config files that were read) into `dir`.
  void save(const std::string& dir) const override;

  std::vector<int64_t> encode(const std::string& text, bool add_special_tokens) const;
  // The BOS where tokenizer_config.json's add_bos_token (default true) adds it.
  std::vector<int64_t> leading_special_tokens() const override;
  const std::string& chat_template() const { return chat_template_; }

private:
  struct Impl;
  explicit SentencePieceTokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
  std::string chat_template_;
};

}  // namespace ganpo
