// Hugging Face tokenizer.json tokenizers (BPE), without Python, Rust or LibTorch.
//
// HfTokenizer reads a model folder's tokenizer.json (plus tokenizer_config.json,
// special_tokens_map.json and a chat template when present) and encodes and decodes with the
// same ids as Hugging Face's tokenizers library: byte-level BPE (GPT-2, Llama 3, Qwen 2/3) and
// SentencePiece-style BPE with byte fallback (Llama 2, Mistral, Gemma). The pipeline is HF's:
// added tokens cut out -> normalizer -> pre-tokenizer -> BPE -> post-processor (special tokens,
// only with add_special_tokens); decoding runs the decoder as a stream (IncrementalDecoder) so
// generated text can be shown token by token, never showing half a UTF-8 character.
//
// Input text need not be valid UTF-8: each invalid byte sequence is encoded as U+FFFD (the
// replacement character), the way Python's errors="replace" reads it, so encode never fails on
// text (only on a text over 2 GiB, which it refuses with ganpo::Error). Round trips, as in HF:
// decode(encode(x)) == x for valid UTF-8 x with byte-level tokenizers without a normalizer
// (GPT-2, Llama 3); Qwen's NFC normalizer gives NFC(x). SentencePiece-style files (Llama 2 /
// Mistral, Gemma) spell spaces as "▁", so a "▁" typed in x comes back as a space, and Llama 2's
// normalizer prepends "▁" to each stretch of text, so text right after an added token comes
// back with one more leading space; otherwise x comes back.
// Not implemented: truncation and padding settings of tokenizer.json (callers truncate), BPE
// dropout (encoding is deterministic), pair sequences, offsets. Other model types (WordPiece,
// Unigram, WordLevel) are reported as a ModelFileError.
//
// Encoding and decoding are const and safe from several threads at once.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/tokenizer.h"

namespace ganpo {

namespace text {
class DecodeStream;
}

class HfTokenizer final : public Tokenizer {
public:
  // Reads DIR/tokenizer.json and, when present, DIR/tokenizer_config.json,
  // DIR/special_tokens_map.json and DIR/chat_template.jinja. Throws ModelFileError naming the
  // file and the part of it that cannot be used.
  static std::unique_ptr<HfTokenizer> from_folder(const std::string& dir);
  // Same from explicit paths; empty config / map paths mean "none".
  static std::unique_ptr<HfTokenizer> from_files(const std::string& tokenizer_json,
                                                 const std::string& tokenizer_config = "",
                                                 const std::string& special_tokens_map = "");
  ~HfTokenizer() override;

  // Tokenizer interface.
  std::string kind() const override { return "hf"; }
  // One more than the largest id of the vocabulary and the added tokens.
  int64_t vocab_size() const override;
  int64_t bos_id() const override { return bos_id_; }  // -1 when the model has no BOS
  int64_t eos_id() const override { return eos_id_; }  // -1 when none is configured
  int64_t pad_id() const override { return pad_id_; }  // the EOS id when no pad is configured
  // encode(text, /*add_special_tokens=*/false).
  std::vector<int64_t> encode(const std::string& text) const override;
  // decode(ids, /*skip_special_tokens=*/true).
  std::string decode(const std::vector<int64_t>& ids) const override;
  // Copies tokenizer.json, tokenizer_config.json, special_tokens_map.json and the chat template
  // file (those that were read) into `dir`, byte for byte.
  void save(const std::string& dir) const override;
  // An IncrementalDecoder that skips special tokens.
  std::unique_ptr<TextStream> text_stream() const override;

  std::vector<int64_t> encode(const std::string& text, bool add_special_tokens) const;
  // What the post-processor puts before a text (its template's part before $A).
  std::vector<int64_t> leading_special_tokens() const override;
  // Ids that are not tokens are skipped.
  std::string decode(const std::vector<int64_t>& ids, bool skip_special_tokens) const;

  std::optional<int64_t> token_to_id(std::string_view token) const;
  std::optional<std::string> id_to_token(int64_t id) const;
  // Whether decode(..., skip_special_tokens=true) drops this id.
  bool is_special(int64_t id) const;

  // tokenizer_config.json's chat_template (the "default" one when it lists several), else
  // chat_template.jinja; empty when there is none.
  const std::string& chat_template() const { return chat_template_; }
  // Special token texts from tokenizer_config.json / special_tokens_map.json ("" when absent).
  const std::string& bos_token() const { return bos_token_; }
  const std::string& eos_token() const { return eos_token_; }
  const std::string& pad_token() const { return pad_token_; }  // the EOS text when absent
  const std::string& unk_token() const { return unk_token_; }
  // tokenizer_config.json's add_bos_token / add_eos_token, when it says.
  std::optional<bool> add_bos_token() const { return add_bos_token_; }
  std::optional<bool> add_eos_token() const { return add_eos_token_; }

  // Turns ids into text one id at a time. Each push() returns the text that is now certain
  // (complete UTF-8 characters that later ids cannot change); finish() returns the rest. The
  // concatenation of everything returned equals decode(all ids, skip_special_tokens).
  // The tokenizer must outlive its decoders; one decoder is for one thread at a time.
  class IncrementalDecoder {
  public:
    IncrementalDecoder(IncrementalDecoder&&) noexcept;
    IncrementalDecoder& operator=(IncrementalDecoder&&) noexcept;
    ~IncrementalDecoder();
    std::string push(int64_t id);
    // The held-back rest; the decoder then starts a new text.
    std::string finish();

  private:
    friend class HfTokenizer;
    IncrementalDecoder(const HfTokenizer* tok, bool skip_special_tokens);
    const HfTokenizer* tok_;
    bool skip_;
    std::unique_ptr<text::DecodeStream> stream_;
  };
  IncrementalDecoder incremental_decoder(bool skip_special_tokens = true) const;

private:
  struct Impl;
  explicit HfTokenizer(std::unique_ptr<Impl> impl);
  // The token text decode uses for `id`, or nullopt for an id that is not a token.
  std::optional<std::string_view> token_text(int64_t id) const;

  std::unique_ptr<Impl> impl_;
  int64_t bos_id_ = -1, eos_id_ = -1, pad_id_ = -1;
  std::string bos_token_, eos_token_, pad_token_, unk_token_, chat_template_;
  std::optional<bool> add_bos_token_, add_eos_token_;
};

// Opens a Hugging Face model folder's tokenizer: tokenizer.json when present, otherwise
// tokenizer.model through SentencePiece. Throws ModelFileError when neither can be used.
std::unique_ptr<Tokenizer> open_hf_folder_tokenizer(const std::string& dir);

}  // namespace ganpo
