#include "core/text/utf8.h"

#include <cstring>

namespace ganpo::text {

namespace {

// Outcome of looking at the sequence that starts at p[0].
struct SeqCheck {
  enum Kind { kValid, kInvalid, kIncomplete } kind;
  size_t len;  // kValid: sequence length; kInvalid: maximal invalid subpart; kIncomplete: bytes seen
};

// The ranges are those of the Unicode Standard, table 3-7 (well-formed byte sequences); an
// invalid sequence is cut where the first byte leaves its range, which is the
// "maximal subpart" rule Rust, Python and browsers use for U+FFFD substitution.
SeqCheck check_sequence(const unsigned char* p, size_t n) {
  const unsigned char b0 = p[0];
  if (b0 < 0x80) return {SeqCheck::kValid, 1};
  size_t need;
  unsigned char lo = 0x80, hi = 0xBF;  // range of the second byte
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    need = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    need = 3;
    if (b0 == 0xE0) lo = 0xA0;
    if (b0 == 0xED) hi = 0x9F;  // no UTF-16 surrogates
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    need = 4;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;  // nothing above U+10FFFF
  } else {
    return {SeqCheck::kInvalid, 1};
  }
  for (size_t k = 1; k < need; ++k) {
    if (k >= n) return {SeqCheck::kIncomplete, k};
    const unsigned char b = p[k];
    const unsigned char l = k == 1 ? lo : 0x80, h = k == 1 ? hi : 0xBF;
    if (b < l || b > h) return {SeqCheck::kInvalid, k};
  }
  return {SeqCheck::kValid, need};
}

inline bool all_ascii8(const char* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return (v & 0x8080808080808080ULL) == 0;
}

}  // namespace

void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

char32_t next_char(std::string_view s, size_t& i) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const unsigned char b0 = p[i];
  if (b0 < 0x80) {
    ++i;
    return b0;
  }
  const size_t n = utf8_length(b0);
  if (i + n > s.size()) {  // cannot happen on valid input; stay safe on any other
    ++i;
    return kReplacementChar;
  }
  char32_t cp = n == 2 ? (b0 & 0x1F) : n == 3 ? (b0 & 0x0F) : (b0 & 0x07);
  for (size_t k = 1; k < n; ++k) cp = (cp << 6) | (p[i + k] & 0x3F);
  i += n;
  return cp;
}

char32_t last_char(std::string_view s, size_t& start) {
  size_t i = s.size() - 1;
  while (i > 0 && (static_cast<unsigned char>(s[i]) & 0xC0) == 0x80 && s.size() - i < 4) --i;
  start = i;
  size_t j = i;
  return next_char(s, j);
}

size_t valid_utf8_prefix(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    if (i + 8 <= n && all_ascii8(s.data() + i)) {
      i += 8;
      continue;
    }
    const SeqCheck c = check_sequence(p + i, n - i);
    if (c.kind != SeqCheck::kValid) return i;
    i += c.len;
  }
  return n;
}

std::string make_valid_utf8(std::string_view s) {
  size_t i = valid_utf8_prefix(s);
  if (i == s.size()) return std::string(s);
  std::string out(s.substr(0, i));
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  while (i < s.size()) {
    const SeqCheck c = check_sequence(p + i, s.size() - i);
    if (c.kind == SeqCheck::kValid) {
      out.append(s.data() + i, c.len);
    } else {
      append_utf8(out, kReplacementChar);
    }
    i += c.len;
  }
  return out;
}

bool is_unicode_whitespace(char32_t c) {
  if (c <= 0x20) return c == 0x20 || (c >= 0x09 && c <= 0x0D);
  if (c < 0x85) return false;
  return c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 ||
         c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

void Utf8Repair::feed(std::string_view bytes, std::string& out) {
  if (pending_.empty()) {
    // Common case: the new bytes are complete text on their own.
    const size_t ok = valid_utf8_prefix(bytes);
    out.append(bytes.data(), ok);
    bytes.remove_prefix(ok);
    if (bytes.empty()) return;
  }
  pending_.append(bytes.data(), bytes.size());
  drain(out, false);
}

void Utf8Repair::finish(std::string& out) { drain(out, true); }

void Utf8Repair::drain(std::string& out, bool final) {
  const auto* p = reinterpret_cast<const unsigned char*>(pending_.data());
  const size_t n = pending_.size();
  size_t i = 0;
  while (i < n) {
    const SeqCheck c = check_sequence(p + i, n - i);
    if (c.kind == SeqCheck::kValid) {
      out.append(pending_.data() + i, c.len);
    } else if (c.kind == SeqCheck::kInvalid || final) {
      append_utf8(out, kReplacementChar);
    } else {
      break;  // may still be completed by the next bytes
    }
    i += c.len;
  }
  pending_.erase(0, i);
}

}  // namespace ganpo::text
