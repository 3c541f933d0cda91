#include "core/text/added_tokens.h"

#include <map>

#include <utf8proc.h>

#include "core/text/utf8.h"

namespace ganpo::text {

namespace {

// Rust regex's \w, which HF uses for single_word: letters, marks, decimal and letter numbers,
// connector punctuation and the joiners.
bool is_word_char(char32_t c) {
  if (c < 0x80) return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
  if (c == 0x200C || c == 0x200D) return true;
  switch (utf8proc_category(static_cast<utf8proc_int32_t>(c))) {
    case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LL: case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM: case UTF8PROC_CATEGORY_LO: case UTF8PROC_CATEGORY_MN:
    case UTF8PROC_CATEGORY_MC: case UTF8PROC_CATEGORY_ME: case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_NL: case UTF8PROC_CATEGORY_PC:
      return true;
    default:
      return false;
  }
}

bool ends_with_word(std::string_view s) {
  if (s.empty()) return false;
  size_t start = 0;
  return is_word_char(last_char(s, start));
}

bool starts_with_word(std::string_view s) {
  if (s.empty()) return false;
  size_t i = 0;
  return is_word_char(next_char(s, i));
}

// Start of the whitespace run that ends `s` (HF: \s*$).
size_t space_leftmost_at_end(std::string_view s) {
  size_t end = s.size();
  while (end > 0) {
    size_t start = 0;
    if (!is_unicode_whitespace(last_char(s.substr(0, end), start))) break;
    end = start;
  }
  return end;
}

// Length of the whitespace run that starts `s` (HF: ^\s*).
size_t space_rightmost_at_start(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    size_t j = i;
    if (!is_unicode_whitespace(next_char(s, j))) break;
    i = j;
  }
  return i;
}

}  // namespace

TokenMatcher::TokenMatcher(const std::vector<std::string>& patterns) {
  // Build with maps, then freeze into sorted edge arrays for compact, cache-friendly walks.
  std::vector<std::map<unsigned char, uint32_t>> children(1);
  std::vector<int32_t> pattern_of(1, -1);
  for (size_t p = 0; p < patterns.size(); ++p) {
    const std::string& s = patterns[p];
    if (s.empty()) continue;
    first_[static_cast<unsigned char>(s[0])] = true;
    uint32_t node = 0;
    for (unsigned char b : s) {
      auto it = children[node].find(b);
      if (it == children[node].end()) {
        const uint32_t fresh = static_cast<uint32_t>(children.size());
        children[node].emplace(b, fresh);
        children.emplace_back();
        pattern_of.push_back(-1);
        node = fresh;
      } else {
        node = it->second;
      }
    }
    pattern_of[node] = static_cast<int32_t>(p);  // a later duplicate wins
  }
  nodes_.resize(children.size());
  for (size_t n = 0; n < children.size(); ++n) {
    nodes_[n].pattern = pattern_of[n];
    nodes_[n].edges_begin = static_cast<uint32_t>(edges_.size());
    for (const auto& [b, child] : children[n]) edges_.push_back({b, child});
    nodes_[n].edges_end = static_cast<uint32_t>(edges_.size());
  }
}

int32_t TokenMatcher::match_at(std::string_view s, size_t pos, size_t& len) const {
  int32_t found = -1;
  uint32_t node = 0;
  for (size_t i = pos; i < s.size(); ++i) {
    const unsigned char b = static_cast<unsigned char>(s[i]);
    const Node& n = nodes_[node];
    uint32_t next = 0;
    for (uint32_t e = n.edges_begin; e < n.edges_end; ++e) {
      if (edges_[e].byte == b) {
        next = edges_[e].node;
        break;
      }
      if (edges_[e].byte > b) break;
    }
    if (next == 0) break;
    node = next;
    if (nodes_[node].pattern >= 0) {
      found = nodes_[node].pattern;
      len = i + 1 - pos;
    }
  }
  return found;
}

void split_added_tokens(std::string_view s, const TokenMatcher& matcher,
                        const std::vector<const AddedToken*>& tokens, std::vector<TextSegment>& out) {
  if (matcher.empty()) {
    if (!s.empty()) out.push_back({0, s.size(), -1});
    return;
  }
  // HF's AddedVocabulary::find_matches, on the matches of its leftmost-longest automaton.
  size_t start_offset = 0;
  size_t pos = 0;
  while (pos < s.size()) {
    if (!matcher.may_start(static_cast<unsigned char>(s[pos]))) {
      ++pos;
      continue;
    }
    size_t len = 0;
    const int32_t p = matcher.match_at(s, pos, len);
    if (p < 0) {
      ++pos;
      continue;
    }
    size_t start = pos, stop = pos + len;
    pos = stop;
    const AddedToken& t = *tokens[static_cast<size_t>(p)];
    if (t.single_word) {
      const bool start_space = start == 0 || !ends_with_word(s.substr(0, start));
      const bool stop_space = stop == s.size() || !starts_with_word(s.substr(stop));
      if (!start_space || !stop_space) continue;
    }
    if (t.lstrip) start = std::max(space_leftmost_at_end(s.substr(0, start)), start_offset);
    if (t.rstrip) stop += space_rightmost_at_start(s.substr(stop));
    if (start_offset < start) out.push_back({start_offset, start, -1});
    out.push_back({start, stop, t.id});
    start_offset = stop;
  }
  if (start_offset < s.size()) out.push_back({start_offset, s.size(), -1});
}

}  // namespace ganpo::text
