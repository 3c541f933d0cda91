#include "core/text/pre_tokenizers.h"

#include <algorithm>

#include <utf8proc.h>

#include "core/text/byte_level.h"
#include "core/text/regex.h"
#include "core/text/utf8.h"

namespace ganpo::text {

void PieceBuffer::reset(std::string_view s, bool at_origin) {
  text.assign(s.data(), s.size());
  pieces.clear();
  raw_bytes = false;
  if (!s.empty()) pieces.push_back({0, static_cast<uint32_t>(s.size()), at_origin});
}

Piece PieceBuffer::push_text(const std::string& s, bool at_origin) {
  const Piece p{static_cast<uint32_t>(text.size()), static_cast<uint32_t>(s.size()), at_origin};
  text += s;
  return p;
}

namespace {

using Range = PieceBuffer::Range;

// HF's NormalizedString::split: turns (range, is_match) into (range, remove) per behaviour.
void apply_behavior(std::vector<Range>& rs, SplitBehavior behavior) {
  switch (behavior) {
    case SplitBehavior::Isolated:
      for (Range& r : rs) r.flag = false;
      return;
    case SplitBehavior::Removed:
      return;
    case SplitBehavior::Contiguous: {
      std::vector<Range> acc;
      bool previous = false;
      for (const Range& r : rs) {
        if (r.flag == previous && !acc.empty()) acc.back().end = r.end;
        else acc.push_back({r.begin, r.end, false});
        previous = r.flag;
      }
      rs.swap(acc);
      return;
    }
    case SplitBehavior::MergedWithPrevious: {
      std::vector<Range> acc;
      bool previous = false;
      for (const Range& r : rs) {
        if (r.flag && !previous && !acc.empty()) acc.back().end = r.end;
        else acc.push_back({r.begin, r.end, false});
        previous = r.flag;
      }
      rs.swap(acc);
      return;
    }
    case SplitBehavior::MergedWithNext: {
      std::vector<Range> acc;
      bool previous = false;
      for (auto it = rs.rbegin(); it != rs.rend(); ++it) {
        if (it->flag && !previous && !acc.empty()) acc.back().begin = it->begin;
        else acc.push_back({it->begin, it->end, false});
        previous = it->flag;
      }
      std::reverse(acc.begin(), acc.end());
      rs.swap(acc);
      return;
    }
  }
}

// Splits every piece at the matches `find(view, out)` reports, like HF's split with a Pattern.
template <typename Finder>
void split_pieces(PieceBuffer& buf, SplitBehavior behavior, bool invert, Finder&& find) {
  buf.next.clear();
  for (const Piece& piece : buf.pieces) {
    const std::string_view s = buf.view(piece);
    buf.matches.clear();
    find(s, buf.matches);
    auto& rs = buf.ranges;
    rs.clear();
    size_t prev = 0;
    for (const auto& [b, e] : buf.matches) {
      if (prev != b) rs.push_back({prev, b, false});
      rs.push_back({b, e, true});
      prev = e;
    }
    if (prev != s.size()) rs.push_back({prev, s.size(), false});
    if (invert)
      for (Range& r : rs) r.flag = !r.flag;
    apply_behavior(rs, behavior);
    for (const Range& r : rs) {
      if (r.flag || r.end <= r.begin) continue;  // removed, or empty (HF drops empty splits)
      buf.next.push_back({static_cast<uint32_t>(piece.begin + r.begin),
                          static_cast<uint32_t>(r.end - r.begin), piece.at_origin && r.begin == 0});
    }
  }
  buf.pieces.swap(buf.next);
}

// Every character for which `pred` holds is its own match (HF's Pattern for Fn(char) -> bool).
template <typename Pred>
auto char_finder(Pred pred) {
  return [pred](std::string_view s, std::vector<std::pair<size_t, size_t>>& out) {
    size_t i = 0;
    while (i < s.size()) {
      const size_t b = i;
      const char32_t c = next_char(s, i);
      if (pred(c)) out.emplace_back(b, i);
    }
  };
}

SplitBehavior parse_behavior(const nlohmann::json& j, const JsonPlace& at, SplitBehavior fallback) {
  auto it = j.find("behavior");
  if (it == j.end() || it->is_null()) return fallback;
  const std::string s = it->is_string() ? it->get<std::string>() : std::string();
  if (s == "Removed") return SplitBehavior::Removed;
  if (s == "Isolated") return SplitBehavior::Isolated;
  if (s == "MergedWithPrevious") return SplitBehavior::MergedWithPrevious;
  if (s == "MergedWithNext") return SplitBehavior::MergedWithNext;
  if (s == "Contiguous") return SplitBehavior::Contiguous;
  at.child("behavior").fail("unknown split behavior " + json_excerpt(*it) +
                            " (expected Removed, Isolated, MergedWithPrevious, MergedWithNext or "
                            "Contiguous)");
}

std::unique_ptr<Regex> compile(const std::string& pattern, const JsonPlace& at) {
  try {
    return std::make_unique<Regex>(pattern);
  } catch (const ModelFileError&) {
    throw;
  } catch (const Error& e) {
    at.fail(std::string(e.what()) +
            "; the file may need a regex feature this build lacks, or it is damaged");
  }
}

// The split GPT-2 introduced; HF's ByteLevel pre-tokenizer hard-codes it.
constexpr const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

class ByteLevelPreTokenizer final : public PreTokenizer {
public:
  ByteLevelPreTokenizer(bool add_prefix_space, bool use_regex, const JsonPlace& at)
      : add_prefix_space_(add_prefix_space),
        regex_(use_regex ? compile(kGpt2Pattern, at) : nullptr) {}

  void apply(PieceBuffer& buf) const override {
    if (add_prefix_space_) {
      for (Piece& p : buf.pieces) {
        if (buf.text[p.begin] == ' ') continue;
        buf.scratch.assign(" ");
        buf.scratch.append(buf.view(p));
        p = buf.push_text(buf.scratch, p.at_origin);
      }
    }
    if (regex_) {
      split_pieces(buf, SplitBehavior::Isolated, false,
                   [this](std::string_view s, auto& out) { regex_->find_all(s, out); });
    }
    if (defer_) {
      buf.raw_bytes = true;
      return;
    }
    const ByteLevelAlphabet& alphabet = ByteLevelAlphabet::get();
    for (Piece& p : buf.pieces) {
      buf.scratch.clear();
      for (unsigned char b : buf.view(p)) buf.scratch += alphabet.utf8_of(b);
      p = buf.push_text(buf.scratch, p.at_origin);
    }
  }
  bool ends_with_byte_level() const override { return true; }
  void defer_byte_spelling() override { defer_ = true; }

private:
  bool add_prefix_space_;
  std::unique_ptr<Regex> regex_;
  bool defer_ = false;
};

class SplitPreTokenizer final : public PreTokenizer {
public:
  SplitPreTokenizer(std::string literal, std::unique_ptr<Regex> regex, SplitBehavior behavior,
                    bool invert)
      : literal_(std::move(literal)), regex_(std::move(regex)), behavior_(behavior), invert_(invert) {}

  void apply(PieceBuffer& buf) const override {
    if (regex_) {
      split_pieces(buf, behavior_, invert_,
                   [this](std::string_view s, auto& out) { regex_->find_all(s, out); });
      return;
    }
    split_pieces(buf, behavior_, invert_, [this](std::string_view s, auto& out) {
      if (literal_.empty()) return;  // HF: an empty pattern matches nothing
      for (size_t pos = s.find(literal_); pos != std::string_view::npos;
           pos = s.find(literal_, pos + literal_.size()))
        out.emplace_back(pos, pos + literal_.size());
    });
  }

private:
  std::string literal_;
  std::unique_ptr<Regex> regex_;
  SplitBehavior behavior_;
  bool invert_;
};

enum class PrependScheme { First, Always, Never };

class MetaspacePreTokenizer final : public PreTokenizer {
public:
  MetaspacePreTokenizer(std::string replacement, PrependScheme scheme, bool split)
      : replacement_(std::move(replacement)), scheme_(scheme), split_(split) {}

  void apply(PieceBuffer& buf) const override {
    for (Piece& p : buf.pieces) {
      const std::string_view s = buf.view(p);
      std::string& out = buf.scratch;
      out.clear();
      for (char c : s) {
        if (c == ' ') out += replacement_;
        else out += c;
      }
      const bool starts_with_rep = out.compare(0, replacement_.size(), replacement_) == 0;
      if (!starts_with_rep &&
          (scheme_ == PrependScheme::Always || (scheme_ == PrependScheme::First && p.at_origin)))
        out.insert(0, replacement_);
      p = buf.push_text(out, p.at_origin);
    }
    if (split_) {
      split_pieces(buf, SplitBehavior::MergedWithNext, false, [this](std::string_view s, auto& out) {
        for (size_t pos = s.find(replacement_); pos != std::string_view::npos;
             pos = s.find(replacement_, pos + replacement_.size()))
          out.emplace_back(pos, pos + replacement_.size());
      });
    }
  }

private:
  std::string replacement_;
  PrependScheme scheme_;
  bool split_;
};

class CharSplitPreTokenizer final : public PreTokenizer {
public:
  enum class Kind { Numeric, Whitespace, Punctuation, Delimiter };
  CharSplitPreTokenizer(Kind kind, SplitBehavior behavior, char32_t delimiter = 0)
      : kind_(kind), behavior_(behavior), delimiter_(delimiter) {}

  void apply(PieceBuffer& buf) const override {
    switch (kind_) {
      case Kind::Numeric:
        split_pieces(buf, behavior_, false, char_finder([](char32_t c) {
                       if (c < 0x80) return c >= '0' && c <= '9';
                       const auto cat = utf8proc_category(static_cast<utf8proc_int32_t>(c));
                       return cat == UTF8PROC_CATEGORY_ND || cat == UTF8PROC_CATEGORY_NL ||
                              cat == UTF8PROC_CATEGORY_NO;
                     }));
        return;
      case Kind::Whitespace:
        split_pieces(buf, behavior_, false, char_finder(is_unicode_whitespace));
        return;
      case Kind::Punctuation:
        split_pieces(buf, behavior_, false, char_finder([](char32_t c) {
                       if (c < 0x80)
                         return (c >= '!' && c <= '/') || (c >= ':' && c <= '@') ||
                                (c >= '[' && c <= '`') || (c >= '{' && c <= '~');
                       const auto cat = utf8proc_category(static_cast<utf8proc_int32_t>(c));
                       return cat >= UTF8PROC_CATEGORY_PC && cat <= UTF8PROC_CATEGORY_PO;
                     }));
        return;
      case Kind::Delimiter: {
        const char32_t d = delimiter_;
        split_pieces(buf, behavior_, false, char_finder([d](char32_t c) { return c == d; }));
        return;
      }
    }
  }

private:
  Kind kind_;
  SplitBehavior behavior_;
  char32_t delimiter_;
};

class RegexSplitPreTokenizer final : public PreTokenizer {  // HF's Whitespace: \w+|[^\w\s]+
public:
  explicit RegexSplitPreTokenizer(const JsonPlace& at) : regex_(compile(R"(\w+|[^\w\s]+)", at)) {}
  void apply(PieceBuffer& buf) const override {
    split_pieces(buf, SplitBehavior::Removed, true,
                 [this](std::string_view s, auto& out) { regex_->find_all(s, out); });
  }

private:
  std::unique_ptr<Regex> regex_;
};

class SequencePreTokenizer final : public PreTokenizer {
public:
  explicit SequencePreTokenizer(std::vector<std::unique_ptr<PreTokenizer>> parts)
      : parts_(std::move(parts)) {}
  void apply(PieceBuffer& buf) const override {
    for (const auto& p : parts_) {
      if (buf.pieces.empty()) return;
      p->apply(buf);
    }
  }
  bool ends_with_byte_level() const override {
    return !parts_.empty() && parts_.back()->ends_with_byte_level();
  }
  void defer_byte_spelling() override {
    if (!parts_.empty()) parts_.back()->defer_byte_spelling();
  }

private:
  std::vector<std::unique_ptr<PreTokenizer>> parts_;
};

}  // namespace

std::unique_ptr<PreTokenizer> make_pre_tokenizer(const nlohmann::json& j, const JsonPlace& at) {
  if (j.is_null()) return nullptr;
  const std::string type = json_type(j, at);
  if (type == "Sequence") {
    auto it = j.find("pretokenizers");
    const JsonPlace list = at.child("pretokenizers");
    if (it == j.end() || !it->is_array()) list.fail("expected a list");
    std::vector<std::unique_ptr<PreTokenizer>> parts;
    for (size_t i = 0; i < it->size(); ++i) {
      auto p = make_pre_tokenizer((*it)[i], list.index(i));
      if (p) parts.push_back(std::move(p));
    }
    return std::make_unique<SequencePreTokenizer>(std::move(parts));
  }
  if (type == "ByteLevel")
    return std::make_unique<ByteLevelPreTokenizer>(json_bool(j, "add_prefix_space", true, at),
                                                   json_bool(j, "use_regex", true, at), at);
  if (type == "Split") {
    auto it = j.find("pattern");
    const JsonPlace pat = at.child("pattern");
    const SplitBehavior behavior = parse_behavior(j, at, SplitBehavior::Isolated);
    const bool invert = json_bool(j, "invert", false, at);
    if (it != j.end() && it->is_object()) {
      if (it->contains("String") && (*it)["String"].is_string())
        return std::make_unique<SplitPreTokenizer>((*it)["String"].get<std::string>(), nullptr,
                                                   behavior, invert);
      if (it->contains("Regex") && (*it)["Regex"].is_string())
        return std::make_unique<SplitPreTokenizer>(
            "", compile((*it)["Regex"].get<std::string>(), pat), behavior, invert);
    }
    pat.fail("expected {\"String\": ...} or {\"Regex\": ...}, found " +
             (it == j.end() ? std::string("nothing") : json_excerpt(*it)));
  }
  if (type == "Metaspace") {
    const std::string replacement = json_char(j, "replacement", at);
    PrependScheme scheme = PrependScheme::Always;
    auto ps = j.find("prepend_scheme");
    if (ps != j.end() && !ps->is_null()) {
      const std::string s = ps->is_string() ? ps->get<std::string>() : std::string();
      if (s == "first") scheme = PrependScheme::First;
      else if (s == "always") scheme = PrependScheme::Always;
      else if (s == "never") scheme = PrependScheme::Never;
      else at.child("prepend_scheme").fail("expected \"first\", \"always\" or \"never\", found " + json_excerpt(*ps));
    }
    // Files written before prepend_scheme existed say add_prefix_space instead.
    if (!json_bool(j, "add_prefix_space", true, at)) scheme = PrependScheme::Never;
    return std::make_unique<MetaspacePreTokenizer>(replacement, scheme, json_bool(j, "split", true, at));
  }
  if (type == "Digits")
    return std::make_unique<CharSplitPreTokenizer>(
        CharSplitPreTokenizer::Kind::Numeric,
        json_bool(j, "individual_digits", false, at) ? SplitBehavior::Isolated : SplitBehavior::Contiguous);
  if (type == "WhitespaceSplit")
    return std::make_unique<CharSplitPreTokenizer>(CharSplitPreTokenizer::Kind::Whitespace,
                                                   SplitBehavior::Removed);
  if (type == "Punctuation")
    return std::make_unique<CharSplitPreTokenizer>(CharSplitPreTokenizer::Kind::Punctuation,
                                                   parse_behavior(j, at, SplitBehavior::Isolated));
  if (type == "CharDelimiterSplit") {
    const std::string d = json_char(j, "delimiter", at);
    size_t i = 0;
    return std::make_unique<CharSplitPreTokenizer>(CharSplitPreTokenizer::Kind::Delimiter,
                                                   SplitBehavior::Removed, next_char(d, i));
  }
  if (type == "Whitespace") return std::make_unique<RegexSplitPreTokenizer>(at);
  at.fail("pre-tokenizer type \"" + type +
          "\" is not supported (supported: ByteLevel, Split, Metaspace, Digits, Whitespace, "
          "WhitespaceSplit, Punctuation, CharDelimiterSplit, Sequence); this build reads BPE "
          "tokenizers of the GPT-2, Llama, Qwen, Mistral and Gemma families");
}

}  // namespace ganpo::text
