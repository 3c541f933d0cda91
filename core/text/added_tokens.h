// Added and special tokens: found in the text before normalization and pre-tokenization.
//
// tokenizer.json's "added_tokens" (<|eot_id|>, <start_of_turn>, "\n\n" in Gemma, ...) are cut
// out of the text whole, so the model never splits them. As in Hugging Face tokenizers, tokens
// with normalized=false are searched in the raw text and those with normalized=true in the
// normalized text; matching is leftmost-longest; single_word keeps a match only between
// non-word characters; lstrip / rstrip swallow the whitespace on that side. All patterns are
// found in one pass with a byte trie (a first-byte filter skips most positions), not one
// search per token.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace ganpo::text {

struct AddedToken {
  std::string content;
  int32_t id = -1;
  bool single_word = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = true;
  bool special = false;
};

// A segment of text: either a found token (id >= 0) or plain text [begin, end).
struct TextSegment {
  size_t begin = 0, end = 0;
  int32_t id = -1;
};

// Leftmost-longest multi-pattern matcher over bytes.
class TokenMatcher {
public:
  // `patterns[i]` is reported as i; empty patterns are ignored.
  explicit TokenMatcher(const std::vector<std::string>& patterns);
  TokenMatcher() = default;
  bool empty() const { return nodes_.size() <= 1; }

  // Longest pattern starting at s[pos], or -1; its length in `len`.
  int32_t match_at(std::string_view s, size_t pos, size_t& len) const;
  // Whether some pattern may start with byte b.
  bool may_start(unsigned char b) const { return first_[b]; }

private:
  struct Node {
    uint32_t edges_begin = 0, edges_end = 0;  // range in edges_
    int32_t pattern = -1;
  };
  struct Edge {
    unsigned char byte;
    uint32_t node;
  };
  std::vector<Node> nodes_;
  std::vector<Edge> edges_;  // sorted by byte within each node
  bool first_[256] = {};
};

// Splits `s` around the tokens of `tokens` (indices into `all`) that `matcher` finds, applying
// single_word / lstrip / rstrip; appends to `out`. Segment ids are the AddedToken ids.
void split_added_tokens(std::string_view s, const TokenMatcher& matcher,
                        const std::vector<const AddedToken*>& tokens, std::vector<TextSegment>& out);

}  // namespace ganpo::text
