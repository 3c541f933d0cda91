#include "core/text/normalizers.h"

#include <cstdlib>
#include <vector>

#include <utf8proc.h>

#include "core/text/byte_level.h"
#include "core/text/regex.h"
#include "core/text/utf8.h"

namespace ganpo::text {

namespace {

// Hangul vowel and trailing jamo compose algorithmically, outside utf8proc's property flags.
bool is_hangul_vt(char32_t c) { return (c >= 0x1161 && c <= 0x1175) || (c >= 0x11A8 && c <= 0x11C2); }

// A code point NFC leaves alone whatever surrounds it: no canonical decomposition, combining
// class 0, and never the second half of a composition.
bool nfc_stable(char32_t c) {
  if (c < 0x300) return true;
  if (is_hangul_vt(c)) return false;
  const utf8proc_property_t* p = utf8proc_get_property(static_cast<utf8proc_int32_t>(c));
  if (p->combining_class != 0) return false;
  if (p->decomp_seqindex != UINT16_MAX && p->decomp_type == 0) return false;  // canonical
  // "Second half of a composition": utf8proc 2.10 turned the 0x8000 bit of comb_index into a
  // field of its own (Debian 12 has 2.8; later distributions 2.10 and up).
#if UTF8PROC_VERSION_MAJOR > 2 || (UTF8PROC_VERSION_MAJOR == 2 && UTF8PROC_VERSION_MINOR >= 10)
  if (p->comb_issecond) return false;
#else
  if (p->comb_index != UINT16_MAX && (p->comb_index & 0x8000)) return false;
#endif
  return true;
}

class SequenceNormalizer final : public Normalizer {
public:
  explicit SequenceNormalizer(std::vector<std::unique_ptr<Normalizer>> parts)
      : parts_(std::move(parts)) {}
  void normalize(std::string& s) const override {
    for (const auto& p : parts_) p->normalize(s);
  }

private:
  std::vector<std::unique_ptr<Normalizer>> parts_;
};

class UnicodeNormalizer final : public Normalizer {
public:
  explicit UnicodeNormalizer(UnicodeForm form) : form_(form) {}
  void normalize(std::string& s) const override { s = unicode_normalize(s, form_); }

private:
  UnicodeForm form_;
};

class LowercaseNormalizer final : public Normalizer {
public:
  void normalize(std::string& s) const override {
    std::string out;
    out.reserve(s.size());
    size_t i = 0;
    while (i < s.size()) {
      const unsigned char b = static_cast<unsigned char>(s[i]);
      if (b < 0x80) {  // ASCII fast path
        out.push_back(static_cast<char>(b >= 'A' && b <= 'Z' ? b + 32 : b));
        ++i;
        continue;
      }
      const char32_t c = next_char(s, i);
      // Rust's char::to_lowercase: the simple mapping, except U+0130 whose unconditional
      // lowercase is two characters.
      if (c == 0x130) {
        out += "i\xCC\x87";
        continue;
      }
      append_utf8(out, static_cast<char32_t>(utf8proc_tolower(static_cast<utf8proc_int32_t>(c))));
    }
    s.swap(out);
  }
};

class StripNormalizer final : public Normalizer {
public:
  StripNormalizer(bool left, bool right) : left_(left), right_(right) {}
  void normalize(std::string& s) const override {
    size_t begin = 0, end = s.size();
    if (left_) {
      while (begin < end) {
        size_t j = begin;
        if (!is_unicode_whitespace(next_char(s, j))) break;
        begin = j;
      }
    }
    if (right_) {
      while (end > begin) {
        size_t start = 0;
        if (!is_unicode_whitespace(last_char(std::string_view(s).substr(0, end), start))) break;
        end = start;
      }
    }
    s = s.substr(begin, end - begin);
  }

private:
  bool left_, right_;
};

class StripAccentsNormalizer final : public Normalizer {
public:
  void normalize(std::string& s) const override {
    std::string out;
    out.reserve(s.size());
    size_t i = 0;
    while (i < s.size()) {
      const size_t start = i;
      const char32_t c = next_char(s, i);
      // HF's is_combining_mark: general category Mn.
      if (c >= 0x300 &&
          utf8proc_category(static_cast<utf8proc_int32_t>(c)) == UTF8PROC_CATEGORY_MN)
        continue;
      out.append(s, start, i - start);
    }
    s.swap(out);
  }
};

class ReplaceNormalizer final : public Normalizer {
public:
  ReplaceNormalizer(std::string literal, std::unique_ptr<Regex> regex, std::string content)
      : literal_(std::move(literal)), regex_(std::move(regex)), content_(std::move(content)) {}
  void normalize(std::string& s) const override {
    if (regex_) {
      std::vector<std::pair<size_t, size_t>> matches;
      regex_->find_all(s, matches);
      if (matches.empty()) return;
      std::string out;
      size_t last = 0;
      for (auto [b, e] : matches) {
        out.append(s, last, b - last);
        out += content_;
        last = e;
      }
      out.append(s, last, std::string::npos);
      s.swap(out);
      return;
    }
    if (literal_.empty()) return;  // HF: an empty pattern matches nothing
    size_t pos = s.find(literal_);
    if (pos == std::string::npos) return;
    std::string out;
    out.reserve(s.size() + 16);
    size_t last = 0;
    while (pos != std::string::npos) {
      out.append(s, last, pos - last);
      out += content_;
      last = pos + literal_.size();
      pos = s.find(literal_, last);
    }
    out.append(s, last, std::string::npos);
    s.swap(out);
  }

private:
  std::string literal_;
  std::unique_ptr<Regex> regex_;
  std::string content_;
};

class PrependNormalizer final : public Normalizer {
public:
  explicit PrependNormalizer(std::string prefix) : prefix_(std::move(prefix)) {}
  void normalize(std::string& s) const override {
    if (!s.empty()) s.insert(0, prefix_);  // HF leaves an empty string empty
  }

private:
  std::string prefix_;
};

class ByteLevelNormalizer final : public Normalizer {
public:
  void normalize(std::string& s) const override {
    std::string out;
    ByteLevelAlphabet::get().spell(s, out);
    s.swap(out);
  }
};

}  // namespace

bool nfc_quick_check(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    if (static_cast<unsigned char>(s[i]) < 0xCC) {  // below U+0300: always stable
      i += utf8_length(static_cast<unsigned char>(s[i]));
      continue;
    }
    if (!nfc_stable(next_char(s, i))) return false;
  }
  return true;
}

std::string unicode_normalize(const std::string& s, UnicodeForm form) {
  if (form == UnicodeForm::NFC && nfc_quick_check(s)) return s;
  bool ascii = true;
  for (unsigned char b : s)
    if (b >= 0x80) {
      ascii = false;
      break;
    }
  if (ascii) return s;
  int options = UTF8PROC_STABLE;
  switch (form) {
    case UnicodeForm::NFC: options |= UTF8PROC_COMPOSE; break;
    case UnicodeForm::NFD: options |= UTF8PROC_DECOMPOSE; break;
    case UnicodeForm::NFKC: options |= UTF8PROC_COMPOSE | UTF8PROC_COMPAT; break;
    case UnicodeForm::NFKD: options |= UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT; break;
  }
  utf8proc_uint8_t* result = nullptr;
  const utf8proc_ssize_t n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(s.data()),
                                          static_cast<utf8proc_ssize_t>(s.size()), &result,
                                          static_cast<utf8proc_option_t>(options));
  if (n < 0 || !result) {  // only on invalid input or out of memory; keep the text as it is
    std::free(result);
    return s;
  }
  std::string out(reinterpret_cast<const char*>(result), static_cast<size_t>(n));
  std::free(result);
  return out;
}

std::unique_ptr<Normalizer> make_normalizer(const nlohmann::json& j, const JsonPlace& at) {
  if (j.is_null()) return nullptr;
  const std::string type = json_type(j, at);
  if (type == "Sequence") {
    auto it = j.find("normalizers");
    if (it == j.end() || !it->is_array()) at.child("normalizers").fail("expected a list");
    std::vector<std::unique_ptr<Normalizer>> parts;
    for (size_t i = 0; i < it->size(); ++i) {
      auto p = make_normalizer((*it)[i], at.child("normalizers").index(i));
      if (p) parts.push_back(std::move(p));
    }
    return std::make_unique<SequenceNormalizer>(std::move(parts));
  }
  if (type == "NFC") return std::make_unique<UnicodeNormalizer>(UnicodeForm::NFC);
  if (type == "NFD") return std::make_unique<UnicodeNormalizer>(UnicodeForm::NFD);
  if (type == "NFKC") return std::make_unique<UnicodeNormalizer>(UnicodeForm::NFKC);
  if (type == "NFKD") return std::make_unique<UnicodeNormalizer>(UnicodeForm::NFKD);
  if (type == "Lowercase") return std::make_unique<LowercaseNormalizer>();
  if (type == "StripAccents") return std::make_unique<StripAccentsNormalizer>();
  if (type == "ByteLevel") return std::make_unique<ByteLevelNormalizer>();
  if (type == "Strip")
    return std::make_unique<StripNormalizer>(json_bool(j, "strip_left", true, at),
                                             json_bool(j, "strip_right", true, at));
  if (type == "Prepend") return std::make_unique<PrependNormalizer>(json_string(j, "prepend", at));
  if (type == "Replace") {
    const std::string content = json_string(j, "content", at);
    auto it = j.find("pattern");
    const JsonPlace pat = at.child("pattern");
    if (it == j.end() || !it->is_object()) pat.fail("expected {\"String\": ...} or {\"Regex\": ...}");
    if (it->contains("String") && (*it)["String"].is_string())
      return std::make_unique<ReplaceNormalizer>((*it)["String"].get<std::string>(), nullptr, content);
    if (it->contains("Regex") && (*it)["Regex"].is_string()) {
      try {
        return std::make_unique<ReplaceNormalizer>(
            "", std::make_unique<Regex>((*it)["Regex"].get<std::string>()), content);
      } catch (const ModelFileError&) {
        throw;
      } catch (const Error& e) {
        pat.fail(std::string(e.what()) + "; fix the pattern or use the file the model was published with");
      }
    }
    pat.fail("expected {\"String\": ...} or {\"Regex\": ...}, found " + json_excerpt(*it));
  }
  at.fail("normalizer type \"" + type +
          "\" is not supported (supported: Sequence, NFC, NFD, NFKC, NFKD, Lowercase, Strip, "
          "StripAccents, Replace, Prepend, ByteLevel); this build reads BPE tokenizers of the "
          "GPT-2, Llama, Qwen, Mistral and Gemma families");
}

}  // namespace ganpo::text
