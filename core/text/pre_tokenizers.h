// The "pre_tokenizer" of tokenizer.json: cutting normalized text into the pieces BPE sees.
//
// Supported, with Hugging Face tokenizers' semantics: ByteLevel (add_prefix_space, use_regex),
// Split (string or regex pattern, all five delimiter behaviours, invert), Metaspace
// (replacement, prepend_scheme first/always/never, split), Digits, Whitespace, WhitespaceSplit,
// Punctuation, CharDelimiterSplit and Sequence. Any other type is a ModelFileError.
//
// Pieces are byte ranges in one arena string (PieceBuffer), so splitting allocates nothing per
// piece. A ByteLevel pre-tokenizer at the very end of the chain may leave its pieces as raw
// bytes (defer_byte_spelling) for a BPE model that spells bytes itself, which saves a copy
// of every piece.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/text/json_read.h"

namespace ganpo::text {

struct Piece {
  uint32_t begin = 0;
  uint32_t len = 0;
  // The piece starts where the user's text starts (Metaspace's prepend_scheme "first").
  bool at_origin = false;
};

struct PieceBuffer {
  std::string text;  // arena the pieces point into
  std::vector<Piece> pieces;
  bool raw_bytes = false;  // pieces are raw bytes still to be spelled in the byte-level alphabet

  std::string_view view(const Piece& p) const { return std::string_view(text).substr(p.begin, p.len); }
  // Starts over with `s` as the only piece.
  void reset(std::string_view s, bool at_origin);
  // Appends `s` (which must not point into the arena) and returns its piece.
  Piece push_text(const std::string& s, bool at_origin);

  // Scratch space reused across calls.
  std::vector<Piece> next;
  std::vector<std::pair<size_t, size_t>> matches;
  struct Range {
    size_t begin, end;
    bool flag;
  };
  std::vector<Range> ranges;
  std::string scratch;
};

enum class SplitBehavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous };

class PreTokenizer {
public:
  virtual ~PreTokenizer() = default;
  virtual void apply(PieceBuffer& buf) const = 0;
  // True when the last thing this pre-tokenizer does is the byte-level spelling.
  virtual bool ends_with_byte_level() const { return false; }
  // Leave the final byte-level spelling to the model (only if ends_with_byte_level()).
  virtual void defer_byte_spelling() {}
};

// nullptr for a JSON null. Throws ModelFileError naming `at`.
std::unique_ptr<PreTokenizer> make_pre_tokenizer(const nlohmann::json& j, const JsonPlace& at);

}  // namespace ganpo::text

