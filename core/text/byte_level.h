// The GPT-2 byte <-> character mapping of byte-level BPE.
//
// Byte-level vocabularies (GPT-2, Llama 3, Qwen) spell every byte as one printable character:
// printable Latin-1 bytes stand for themselves, the other 68 bytes for U+0100 onwards, so a
// space is "Ġ" and a newline "Ċ". Encoding maps text bytes to these characters before BPE;
// decoding maps them back and then reads the bytes as UTF-8.
#pragma once

#include <array>
#include <cstdint>
#include <string>

namespace ganpo::text {

class ByteLevelAlphabet {
public:
  static const ByteLevelAlphabet& get();

  // The character byte `b` is spelled with.
  char32_t char_of(unsigned char b) const { return chars_[b]; }
  // Its UTF-8 form (1 or 2 bytes).
  const std::string& utf8_of(unsigned char b) const { return utf8_[b]; }
  // The byte a character spells, or -1 when it is not one of the 256.
  int byte_of(char32_t c) const { return c < bytes_.size() ? bytes_[c] : -1; }

  // Appends the spelling of every byte of `raw`.
  void spell(const std::string& raw, std::string& out) const;
  // If every character of `spelled` (valid UTF-8) is in the alphabet, writes the bytes to
  // `raw` and returns true.
  bool unspell(const std::string& spelled, std::string& raw) const;

private:
  ByteLevelAlphabet();
  std::array<char32_t, 256> chars_{};
  std::array<std::string, 256> utf8_;
  std::array<int16_t, 0x144> bytes_{};  // every alphabet character is below U+0144
};

}  // namespace ganpo::text
