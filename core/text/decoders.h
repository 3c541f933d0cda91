// The "decoder" of tokenizer.json, run as a stream so generated text can be shown as it comes.
//
// Hugging Face's decoders transform the whole list of token strings at once (ByteLevel turns
// all tokens into bytes and reads them as UTF-8; Fuse joins tokens; Strip trims the first
// token; ...). Here each decoder is a stage that takes tokens one at a time, as begin / text /
// end events, and passes on what is already certain, holding back only what the next token
// may still change: an incomplete UTF-8 sequence (ByteLevel), an open run of <0xNN> byte
// tokens (ByteFallback decodes a run all or nothing), a possible start of a Replace pattern,
// trailing characters Strip may remove. Feeding every token and then finish() gives exactly
// HF's decode(); feeding them one by one gives the same text in pieces.
//
// Supported: ByteLevel, Metaspace, Replace, ByteFallback, Fuse, Strip, Sequence; no decoder
// joins tokens with spaces as HF does. Any other type is a ModelFileError.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/text/json_read.h"

namespace ganpo::text {

// One step of the stream. A token arrives as begin(), text() zero or more times, end();
// finish() says no token follows.
class DecodeStage {
public:
  virtual ~DecodeStage() = default;
  virtual void begin() = 0;
  virtual void text(std::string_view s) = 0;
  virtual void end() = 0;
  virtual void finish() = 0;
};

// A decoder as read from tokenizer.json; build() makes a fresh stateful stream of it.
class DecoderSpec {
public:
  virtual ~DecoderSpec() = default;
  // Creates this decoder's stages in `owned`, feeding `next`; returns the first stage.
  virtual DecodeStage* build(std::vector<std::unique_ptr<DecodeStage>>& owned,
                             DecodeStage* next) const = 0;
};

// nullptr for a JSON null (tokens are then joined with spaces). Throws ModelFileError.
std::unique_ptr<DecoderSpec> make_decoder(const nlohmann::json& j, const JsonPlace& at);

// A ready stream: push token strings, collect text.
class DecodeStream {
public:
  explicit DecodeStream(const DecoderSpec* spec);  // spec may be null
  DecodeStream(DecodeStream&&) noexcept;
  DecodeStream& operator=(DecodeStream&&) noexcept;
  ~DecodeStream();

  void push(std::string_view token);
  void finish();
  // The text produced since the last take().
  std::string take();

private:
  struct Collect;
  std::vector<std::unique_ptr<DecodeStage>> owned_;
  std::unique_ptr<Collect> sink_;
  DecodeStage* head_ = nullptr;
};

}  // namespace ganpo::text
