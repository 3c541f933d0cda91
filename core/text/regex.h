// Regular expressions of tokenizer.json files, run with PCRE2.
//
// Hugging Face's tokenizers compile the Split pre-tokenizer and Replace patterns with Oniguruma
// (Ruby syntax). Regex compiles the same pattern with PCRE2 in UTF + Unicode-property mode with
// its JIT, after rewriting the few escapes whose meaning differs between the two engines (\s is
// Unicode White_Space in Oniguruma, \h a hex digit; ^ and $ are line anchors). find_all()
// iterates matches the way Oniguruma's find_iter does, empty matches included.
//
// Matching is bounded (PCRE2 match, depth and heap limits, a fixed JIT stack): a pattern that
// backtracks catastrophically on a text throws ganpo::Error naming the pattern and what to do,
// within milliseconds, instead of hanging a run.
//
// The same class runs Python's `re` patterns (RegexSyntax::python, as PEFT's adapter_config.json
// holds them: target_modules, exclude_modules, rank_pattern): PCRE2's syntax is Python's for
// what such patterns use, so they are compiled as written (without the JIT, and under far lower
// limits: they match short names); match() is Python's re.match and full_match() its
// re.fullmatch. Where the two differ (x{,n} before PCRE2 10.43, \v, [[:alpha:]], Python's \u
// escapes, an inline (?i) mid-pattern) module-name patterns do not use them.
// A Regex is immutable after construction and safe to use from several threads at once.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace ganpo::text {

enum class RegexSyntax {
  oniguruma,  // tokenizer.json's (Ruby syntax): a few escapes rewritten, ^ and $ at line boundaries
  python,     // Python's re, without flags
};

class Regex {
public:
  // Throws ganpo::Error whose message gives PCRE2's reason and the offset in the pattern.
  explicit Regex(const std::string& pattern, RegexSyntax syntax = RegexSyntax::oniguruma);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Appends the [start, end) byte ranges of the successive matches in `s` (valid UTF-8).
  // Throws ganpo::Error when a match attempt reaches the limits above.
  void find_all(std::string_view s, std::vector<std::pair<size_t, size_t>>& out) const;

  // Python's re.match: whether the pattern matches at the start of s; groups (when given) gets
  // the text of groups 1..n ("" for a group that took no part). re.fullmatch: the whole of s.
  // Both throw ganpo::Error when the attempt reaches the limits above.
  bool match(std::string_view s, std::vector<std::string>* groups = nullptr) const;
  bool full_match(std::string_view s) const;

  const std::string& pattern() const { return pattern_; }

  // The PCRE2 pattern an Oniguruma pattern is rewritten to (exposed for tests).
  static std::string translate_oniguruma(const std::string& pattern);

private:
  struct Impl;
  std::string pattern_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ganpo::text
