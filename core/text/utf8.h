// UTF-8 helpers shared by the tokenizer modules.
//
// Tokenizers take any bytes a user pastes, so the first step of encoding is make_valid_utf8():
// each invalid sequence becomes U+FFFD the way Rust's String::from_utf8_lossy, Python's
// errors="replace" and browsers do it (one U+FFFD per maximal invalid subpart). Every later
// stage can then assume valid UTF-8 cut at character boundaries. Utf8Repair does the same
// conversion on a byte stream that arrives in pieces (decoding generated tokens), holding back
// a sequence that may still be completed by the next piece.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace ganpo::text {

inline constexpr char32_t kReplacementChar = 0xFFFD;

// Appends the UTF-8 encoding of `cp` (must be a Unicode scalar value).
void append_utf8(std::string& out, char32_t cp);

// Length of the sequence a lead byte announces (1 for ASCII and for bytes that cannot start a
// sequence, which callers treat as one invalid unit).
inline size_t utf8_length(unsigned char lead) {
  if (lead < 0xC0) return 1;
  if (lead < 0xE0) return 2;
  if (lead < 0xF0) return 3;
  return 4;
}

// Decodes the character at s[i] of valid UTF-8 and advances i past it.
char32_t next_char(std::string_view s, size_t& i);

// Decodes the last character of valid, non-empty UTF-8 and returns its start in `start`.
char32_t last_char(std::string_view s, size_t& start);

// Length in bytes of the longest prefix of `s` that is valid UTF-8.
size_t valid_utf8_prefix(std::string_view s);

inline bool is_valid_utf8(std::string_view s) { return valid_utf8_prefix(s) == s.size(); }

// Returns `s` with every invalid sequence replaced by U+FFFD (maximal-subpart rule).
std::string make_valid_utf8(std::string_view s);

// Unicode White_Space (what Rust's char::is_whitespace and Oniguruma's \s test).
bool is_unicode_whitespace(char32_t c);

// Streaming lossy UTF-8 conversion: feed bytes, get only complete characters back; finish()
// turns a dangling incomplete sequence into U+FFFD. Concatenating the outputs equals
// make_valid_utf8() of the concatenated input.
class Utf8Repair {
public:
  // Appends the text that is complete after `bytes` to `out`.
  void feed(std::string_view bytes, std::string& out);
  // Appends U+FFFD for a held-back incomplete sequence, if any, and resets.
  void finish(std::string& out);
  bool holding() const { return !pending_.empty(); }

private:
  void drain(std::string& out, bool final);
  std::string pending_;  // at most 3 bytes: the start of a sequence not yet complete
};

}  // namespace ganpo::text
