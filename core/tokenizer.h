// Tokenizers behind one interface.
//
// The built-in models use ByteTokenizer: the 256 byte values plus BOS, EOS and PAD (vocab 259),
// so any UTF-8 text round-trips exactly and no vocabulary file is needed. A tokenizer saves
// itself into a checkpoint folder (tokenizer_config.json) and load_tokenizer() restores it.
// encode_prompt / encode_response fix how a prompt and a response are joined into one sequence
// for every stage, so training, sampling and evaluation agree.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace ganpo {

// Generated ids turned into text as they come: push(id) returns the text that is now complete
// (never half a UTF-8 character), finish() the held-back rest. Special tokens give no text.
class TextStream {
public:
  virtual ~TextStream() = default;
  virtual std::string push(int64_t id) = 0;
  virtual std::string finish() = 0;
};

class Tokenizer {
public:
  virtual ~Tokenizer() = default;
  virtual std::string kind() const = 0;
  virtual int64_t vocab_size() const = 0;
  virtual int64_t bos_id() const = 0;
  virtual int64_t eos_id() const = 0;
  virtual int64_t pad_id() const = 0;
  virtual std::vector<int64_t> encode(const std::string& text) const = 0;
  // Special tokens are dropped; invalid ids are skipped.
  virtual std::string decode(const std::vector<int64_t>& ids) const = 0;
  virtual void save(const std::string& dir) const = 0;
  // The special tokens encoding with them (transformers' add_special_tokens) puts before a text:
  // Llama's and Gemma's BOS, none for GPT-2's or Qwen's tokenizer. Default: the BOS, if any.
  virtual std::vector<int64_t> leading_special_tokens() const;
  // The prompt part of a sequence, as TRL (1.x) tokenizes one: the leading special tokens, then
  // the prompt's tokens; once, so a prompt a chat template rendered them into as text (BOS as
  // "<|begin_of_text|>") gets none added.
  virtual std::vector<int64_t> prompt_ids(const std::string& prompt) const;
  // A response's tokens as the continuation of its prompt, as TRL (1.x) takes them: the tokens of
  // prompt + response after the prompt's own. Tokenized alone, a response would begin as a text
  // does (Llama 2's and Mistral's tokenizers put a lone "▁" before " Hi", which follows "[/INST]"
  // as "▁Hi"). Where the prompt's last token merges with the response's first ("Answer: " +
  // "Paris" is "Answer", ":", "ĠParis"), the prompt's tokens are not the start of the whole's and
  // the response's own tokens are taken, so none of its text is lost.
  std::vector<int64_t> continuation_ids(const std::string& prompt, const std::string& response) const;
  // Whether conversational rows are rendered with the model's chat template (false: the plain
  // <|role|> rendering of core/dataset_files.h).
  virtual bool uses_chat_template() const { return true; }
  // A stream decoder. The default re-decodes the ids so far and hands out the new complete part,
  // which suits tokenizers whose decode of a prefix is a prefix of the decode (bytes).
  virtual std::unique_ptr<TextStream> text_stream() const;
};

class ByteTokenizer final : public Tokenizer {
public:
  std::string kind() const override { return "byte"; }
  int64_t vocab_size() const override { return 259; }
  int64_t bos_id() const override { return 256; }
  int64_t eos_id() const override { return 257; }
  int64_t pad_id() const override { return 258; }
  std::vector<int64_t> encode(const std::string& text) const override;
  std::string decode(const std::vector<int64_t>& ids) const override;
  void save(const std::string& dir) const override;
  std::vector<int64_t> prompt_ids(const std::string& prompt) const override;  // [BOS] prompt "\n"
  bool uses_chat_template() const override { return false; }  // no template: the plain rendering
};

// The folder's tokenizer: our byte tokenizer (tokenizer_config.json "kind": "byte"), else a
// Hugging Face tokenizer.json or tokenizer.model (core/text/hf_tokenizer.h). Throws
// ModelFileError if none is usable.
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& dir);
// Whether dir holds tokenizer files load_tokenizer() reads (tokenizer_config.json, tokenizer.json
// or tokenizer.model).
bool has_tokenizer_files(const std::string& dir);

// A continuation's text as it reads after its prompt: the decoding of prompt + ids after the
// prompt's (decoded alone, Llama 2's tokenizer drops the space its first "▁Hi" stands for), its
// own decoding where the prompt's is not the start of the whole's. Tokenized as its prompt's
// continuation (continuation_ids), it gives `ids` back where the tokenizer is consistent.
std::string continuation_text(const Tokenizer& tok, const std::vector<int64_t>& prompt, const std::vector<int64_t>& ids);

// The prompt part of every sequence: [BOS] prompt "\n" for the byte tokenizer; the leading
// special tokens (once) and the prompt's tokens for Hugging Face tokenizers (Tokenizer::prompt_ids).
std::vector<int64_t> encode_prompt(const Tokenizer& tok, const std::string& prompt);
// response [EOS], the part the losses score: the response's tokens after its prompt's
// (Tokenizer::continuation_ids), then one EOS, as TRL adds it: none where they end with it
// already (a chat template's turn that ends with the EOS, Llama 3.1's <|eot_id|>), and none
// where the tokenizer has none.
std::vector<int64_t> encode_response(const Tokenizer& tok, const std::string& prompt, const std::string& response);

}  // namespace ganpo
