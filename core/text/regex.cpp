#include "core/text/regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <memory>
#include <string>

#include "core/error.h"
#include "core/text/utf8.h"

namespace ganpo::text {

namespace {

// Oniguruma's \s is White_Space: the Z categories, \t..\r and U+0085. PCRE2's \s under UCP
// leaves out U+0085, so the class is spelled out.
constexpr const char* kSpaceItems = "\\t-\\r\\x{20}\\x{85}\\p{Z}";
constexpr const char* kHexItems = "0-9a-fA-F";
// Oniguruma's Unicode \w: Letter | Mark | Number | Connector_Punctuation. PCRE2's (with UCP)
// leaves out the marks (Thai's vowel signs, combining accents) and the connectors but "_".
constexpr const char* kWordItems = "\\p{L}\\p{M}\\p{N}\\p{Pc}";

// Bounds one match attempt; ordinary tokenizer patterns need a few hundred steps per match,
// a catastrophically backtracking one reaches the limit within tens of milliseconds.
constexpr uint32_t kMatchLimit = 10'000'000;
constexpr uint32_t kDepthLimit = 100'000;   // backtracking depth (interpreter)
constexpr uint32_t kHeapLimitKiB = 64 * 1024;  // backtracking memory (interpreter)

// Python patterns match module names (under 200 bytes), a few hundred times per model: a far
// lower bound keeps a hostile adapter_config.json from stalling a load for minutes.
constexpr uint32_t kNameMatchLimit = 100'000;
constexpr uint32_t kNameDepthLimit = 10'000;

// The JIT needs a stack and a match context per thread; both are reused across calls.
struct ThreadScratch {
  pcre2_match_context* context = nullptr;
  pcre2_match_context* name_context = nullptr;  // Python patterns' (the interpreter's) limits
  pcre2_jit_stack* jit_stack = nullptr;
  ThreadScratch() {
    context = pcre2_match_context_create(nullptr);
    name_context = pcre2_match_context_create(nullptr);
    jit_stack = pcre2_jit_stack_create(32 * 1024, 8 * 1024 * 1024, nullptr);
    if (context) {
      pcre2_set_match_limit(context, kMatchLimit);
      pcre2_set_depth_limit(context, kDepthLimit);
      pcre2_set_heap_limit(context, kHeapLimitKiB);
      if (jit_stack) pcre2_jit_stack_assign(context, nullptr, jit_stack);
    }
    if (name_context) {
      pcre2_set_match_limit(name_context, kNameMatchLimit);
      pcre2_set_depth_limit(name_context, kNameDepthLimit);
      pcre2_set_heap_limit(name_context, kHeapLimitKiB);
    }
  }
  ~ThreadScratch() {
    if (context) pcre2_match_context_free(context);
    if (name_context) pcre2_match_context_free(name_context);
    if (jit_stack) pcre2_jit_stack_free(jit_stack);
  }
};

ThreadScratch& scratch() {
  thread_local ThreadScratch s;
  return s;
}

}  // namespace

struct Regex::Impl {
  pcre2_code* code = nullptr;
  bool jit = false;
  ~Impl() {
    if (code) pcre2_code_free(code);
  }
};

std::string Regex::translate_oniguruma(const std::string& p) {
  std::string out;
  out.reserve(p.size() + 32);
  bool in_class = false;
  size_t class_start = 0;  // index in p just after '[' or '[^'
  for (size_t i = 0; i < p.size(); ++i) {
    const char c = p[i];
    if (c == '\\' && i + 1 < p.size()) {
      const char e = p[i + 1];
      if (e == 'Q') {  // quoted run: copied verbatim up to \E
        const size_t end = p.find("\\E", i + 2);
        const size_t stop = end == std::string::npos ? p.size() : end + 2;
        out.append(p, i, stop - i);
        i = stop - 1;
        continue;
      }
      if (in_class) {
        if (e == 's') out += kSpaceItems;
        else if (e == 'h') out += kHexItems;
        else if (e == 'w') out += kWordItems;
        else out.append(p, i, 2);  // (\W inside a class stays PCRE2's: rare in tokenizer patterns)
      } else {
        if (e == 's') out += std::string("[") + kSpaceItems + "]";
        else if (e == 'S') out += std::string("[^") + kSpaceItems + "]";
        else if (e == 'h') out += std::string("[") + kHexItems + "]";
        else if (e == 'H') out += std::string("[^") + kHexItems + "]";
        else if (e == 'w') out += std::string("[") + kWordItems + "]";
        else if (e == 'W') out += std::string("[^") + kWordItems + "]";
        else out.append(p, i, 2);
      }
      ++i;
      continue;
    }
    if (!in_class && c == '[') {
      in_class = true;
      out += c;
      if (i + 1 < p.size() && p[i + 1] == '^') {
        out += '^';
        ++i;
      }
      class_start = i + 1;
      continue;
    }
    if (in_class) {
      if (c == '[' && i + 1 < p.size() && p[i + 1] == ':') {  // POSIX class [:alpha:]
        const size_t end = p.find(":]", i + 2);
        if (end != std::string::npos) {
          out.append(p, i, end + 2 - i);
          i = end + 1;
          continue;
        }
      }
      if (c == ']' && i != class_start) in_class = false;  // a leading ']' is a literal
    }
    out += c;
  }
  return out;
}

Regex::Regex(const std::string& pattern, RegexSyntax syntax) : pattern_(pattern), impl_(std::make_unique<Impl>()) {
  const bool onig = syntax == RegexSyntax::oniguruma;
  const std::string translated = onig ? translate_oniguruma(pattern) : pattern;
  int error = 0;
  PCRE2_SIZE offset = 0;
  // MULTILINE: in Oniguruma's Ruby syntax ^ and $ always match at line boundaries (in Python's,
  // without re.MULTILINE, at the ends of the text).
  impl_->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(translated.data()), translated.size(),
                              PCRE2_UTF | PCRE2_UCP | (onig ? PCRE2_MULTILINE : 0), &error, &offset, nullptr);
  if (!impl_->code) {
    PCRE2_UCHAR buffer[256];
    pcre2_get_error_message(error, buffer, sizeof buffer);
    throw Error("regular expression " + pattern + " does not compile (" +
                reinterpret_cast<const char*>(buffer) + " at offset " + std::to_string(offset) +
                (onig ? " of the PCRE2 form " + translated : std::string()) + ")");
  }
  // Without a JIT (some architectures) the interpreter gives the same matches, only slower.
  // (Python patterns are matched anchored at match time, which only the interpreter does.)
  impl_->jit = onig && pcre2_jit_compile(impl_->code, PCRE2_JIT_COMPLETE) == 0;
}

Regex::~Regex() = default;

void Regex::find_all(std::string_view s, std::vector<std::pair<size_t, size_t>>& out) const {
  if (s.empty()) return;
  ThreadScratch& ts = scratch();
  std::unique_ptr<pcre2_match_data, void (*)(pcre2_match_data*)> match_data(
      pcre2_match_data_create_from_pattern(impl_->code, nullptr), pcre2_match_data_free);
  pcre2_match_data* md = match_data.get();
  if (!md) throw Error("out of memory matching the tokenizer pattern " + pattern_);
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(s.data());
  size_t from = 0;
  size_t last_match_end = static_cast<size_t>(-1);
  while (from <= s.size()) {
    // Input is valid UTF-8 (encode() repairs it first) and `from` is a character boundary.
    const int rc = impl_->jit ? pcre2_jit_match(impl_->code, subject, s.size(), from,
                                                PCRE2_NO_UTF_CHECK, md, ts.context)
                              : pcre2_match(impl_->code, subject, s.size(), from,
                                            PCRE2_NO_UTF_CHECK, md, ts.context);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      // The match, depth, heap or JIT stack limit: the pattern backtracks without end on this
      // text. Failing now beats hanging a run for hours.
      PCRE2_UCHAR reason[256];
      pcre2_get_error_message(rc, reason, sizeof reason);
      const std::string shown = pattern_.size() > 80 ? pattern_.substr(0, 80) + "..." : pattern_;
      throw Error("the tokenizer's regular expression `" + shown + "` gave up on a text of " +
                  std::to_string(s.size()) + " bytes at byte " + std::to_string(from) + " (" +
                  reinterpret_cast<const char*>(reason) +
                  "): it backtracks catastrophically; fix the pattern in tokenizer.json (a Split "
                  "pre-tokenizer or Replace normalizer) or use the model's original tokenizer files");
    }
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
    const size_t start = ov[0], end = ov[1];
    if (end < start || end > s.size()) break;  // \K tricks; not used by tokenizers
    // Oniguruma (like Rust's regex) skips an empty match right where the previous one ended
    // and tries again one character later.
    if (start == end && end == last_match_end) {
      if (from >= s.size()) break;
      from += utf8_length(static_cast<unsigned char>(s[from]));
      continue;
    }
    out.emplace_back(start, end);
    last_match_end = end;
    from = end;
  }
}

namespace {

// One match attempt at the start of s (anchored; end_anchored: also at its end), as Python's
// re.match / re.fullmatch. Match-time anchoring runs PCRE2's interpreter rather than the JIT,
// which is what these short texts (module names) need.
bool match_at_start(const pcre2_code* code, const std::string& pattern, std::string_view s, bool end_anchored,
                    std::vector<std::string>* groups) {
  std::unique_ptr<pcre2_match_data, void (*)(pcre2_match_data*)> match_data(
      pcre2_match_data_create_from_pattern(code, nullptr), pcre2_match_data_free);
  if (!match_data) throw Error("out of memory matching the regular expression " + pattern);
  const int rc = pcre2_match(code, reinterpret_cast<PCRE2_SPTR>(s.data()), s.size(), 0,
                             PCRE2_ANCHORED | (end_anchored ? PCRE2_ENDANCHORED : 0), match_data.get(),
                             scratch().name_context);
  if (rc == PCRE2_ERROR_NOMATCH) return false;
  if (rc < 0) {
    PCRE2_UCHAR reason[256];
    pcre2_get_error_message(rc, reason, sizeof reason);
    const std::string shown = pattern.size() > 80 ? pattern.substr(0, 80) + "..." : pattern;
    throw Error("the regular expression `" + shown + "` gave up on \"" + std::string(s.substr(0, 80)) + "\" (" +
                reinterpret_cast<const char*>(reason) + "): it backtracks catastrophically; simplify it");
  }
  if (groups) {
    groups->clear();
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(match_data.get());
    const uint32_t n = pcre2_get_ovector_count(match_data.get());
    uint32_t captures = 0;
    pcre2_pattern_info(code, PCRE2_INFO_CAPTURECOUNT, &captures);
    for (uint32_t g = 1; g <= captures; ++g) {
      const bool set = g < n && static_cast<int>(g) < rc && ov[2 * g] != PCRE2_UNSET;
      groups->push_back(set ? std::string(s.substr(ov[2 * g], ov[2 * g + 1] - ov[2 * g])) : std::string());
    }
  }
  return true;
}

}  // namespace

bool Regex::match(std::string_view s, std::vector<std::string>* groups) const {
  return match_at_start(impl_->code, pattern_, s, false, groups);
}

bool Regex::full_match(std::string_view s) const { return match_at_start(impl_->code, pattern_, s, true, nullptr); }

}  // namespace ganpo::text
