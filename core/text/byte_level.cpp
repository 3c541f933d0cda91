#include "core/text/byte_level.h"

#include "core/text/utf8.h"

namespace ganpo::text {

const ByteLevelAlphabet& ByteLevelAlphabet::get() {
  static const ByteLevelAlphabet alphabet;
  return alphabet;
}

// Same construction as GPT-2's bytes_to_unicode() and HF tokenizers' bytes_char().
ByteLevelAlphabet::ByteLevelAlphabet() {
  bytes_.fill(-1);
  char32_t next = 256;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
    chars_[b] = printable ? static_cast<char32_t>(b) : next++;
  }
  for (int b = 0; b < 256; ++b) {
    append_utf8(utf8_[b], chars_[b]);
    bytes_[chars_[b]] = static_cast<int16_t>(b);
  }
}

void ByteLevelAlphabet::spell(const std::string& raw, std::string& out) const {
  for (unsigned char b : raw) out += utf8_[b];
}

bool ByteLevelAlphabet::unspell(const std::string& spelled, std::string& raw) const {
  raw.clear();
  size_t i = 0;
  while (i < spelled.size()) {
    const int b = byte_of(next_char(spelled, i));
    if (b < 0) return false;
    raw.push_back(static_cast<char>(b));
  }
  return true;
}

}  // namespace ganpo::text
