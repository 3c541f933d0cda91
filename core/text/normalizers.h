// The "normalizer" of tokenizer.json: text rewrites applied before pre-tokenization.
//
// Supported, with Hugging Face tokenizers' semantics: Sequence, NFC, NFD, NFKC, NFKD (through
// utf8proc), Lowercase, Strip, StripAccents, Replace (string or regex pattern), Prepend and
// ByteLevel. These cover the BPE tokenizers in use (Qwen's NFC, the Prepend + Replace pair of
// Llama 2 / Mistral, Gemma's Replace). Any other type is reported as a ModelFileError.
// Normalizers see valid UTF-8 and keep it valid.
#pragma once

#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "core/text/json_read.h"

namespace ganpo::text {

class Normalizer {
public:
  virtual ~Normalizer() = default;
  // Rewrites `s` in place.
  virtual void normalize(std::string& s) const = 0;
};

// nullptr for a JSON null (no normalizer). Throws ModelFileError naming `at`.
std::unique_ptr<Normalizer> make_normalizer(const nlohmann::json& j, const JsonPlace& at);

// Unicode normalization forms, exposed for tests.
enum class UnicodeForm { NFC, NFD, NFKC, NFKD };
std::string unicode_normalize(const std::string& s, UnicodeForm form);

// True when NFC cannot change `s` (a conservative quick check; false means "maybe").
bool nfc_quick_check(const std::string& s);

}  // namespace ganpo::text
