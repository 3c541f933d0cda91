#include "ui/word_diff.h"

#include <algorithm>
#include <cstdint>
#include <string_view>
#include <unordered_map>

namespace ganpo::ui {
namespace {

using Tokens = std::vector<std::string_view>;

bool is_space(unsigned char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }
// ASCII only: bytes >= 0x80 belong to words so a UTF-8 sequence is never cut.
bool is_punct(unsigned char c) {
  return (c >= 0x21 && c <= 0x2F) || (c >= 0x3A && c <= 0x40) || (c >= 0x5B && c <= 0x60) || (c >= 0x7B && c <= 0x7E);
}
bool is_control(unsigned char c) { return (c < 0x20 && !is_space(c)) || c == 0x7F; }
bool is_word(unsigned char c) { return !is_space(c) && !is_punct(c) && !is_control(c); }

Tokens word_tokens(std::string_view s) {
  Tokens out;
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    size_t j = i + 1;
    if (is_space(c)) {
      while (j < s.size() && is_space(static_cast<unsigned char>(s[j]))) ++j;
    } else if (is_word(c)) {
      while (j < s.size() && is_word(static_cast<unsigned char>(s[j]))) ++j;
    }
    out.push_back(s.substr(i, j - i));
    i = j;
  }
  return out;
}

Tokens line_tokens(std::string_view s) {
  Tokens out;
  size_t i = 0;
  while (i < s.size()) {
    const size_t nl = s.find('\n', i);
    const size_t j = nl == std::string_view::npos ? s.size() : nl + 1;
    out.push_back(s.substr(i, j - i));
    i = j;
  }
  return out;
}

// Collects Same / Removed / Added text; a changed region is written as its Removed text, then
// its Added text, when the next Same text (or the end) arrives.
class PieceBuilder {
public:
  void same(std::string_view t) {
    if (t.empty()) return;
    flush();
    push(DiffPiece::Same, t);
  }
  void removed(std::string_view t) { removed_.append(t); }
  void added(std::string_view t) { added_.append(t); }
  std::vector<DiffPiece> finish() {
    flush();
    return std::move(pieces_);
  }

private:
  void flush() {
    if (!removed_.empty()) push(DiffPiece::Removed, removed_);
    if (!added_.empty()) push(DiffPiece::Added, added_);
    removed_.clear();
    added_.clear();
  }
  void push(DiffPiece::Kind kind, std::string_view t) {
    if (!pieces_.empty() && pieces_.back().kind == kind) {
      pieces_.back().text.append(t);
    } else {
      pieces_.push_back({kind, std::string(t)});
    }
  }
  std::vector<DiffPiece> pieces_;
  std::string removed_, added_;
};

// Common leading and trailing tokens, so the LCS only sees the part that differs.
void trim_common(const Tokens& a, const Tokens& b, size_t& prefix, size_t& suffix) {
  prefix = 0;
  while (prefix < a.size() && prefix < b.size() && a[prefix] == b[prefix]) ++prefix;
  suffix = 0;
  while (suffix < a.size() - prefix && suffix < b.size() - prefix &&
         a[a.size() - 1 - suffix] == b[b.size() - 1 - suffix])
    ++suffix;
}

std::string_view joined(const Tokens& t, size_t from, size_t to) {
  if (from >= to) return {};
  const char* begin = t[from].data();
  const char* end = t[to - 1].data() + t[to - 1].size();
  return std::string_view(begin, static_cast<size_t>(end - begin));
}

// LCS of a[0..na) and b[0..nb) (both <= kMaxDiffTokens), written to out.
void lcs(const Tokens& a, const Tokens& b, PieceBuilder& out) {
  // Tokens become small ints so the table fill compares integers, not strings.
  std::unordered_map<std::string_view, uint32_t> ids;
  auto to_ids = [&ids](const Tokens& t) {
    std::vector<uint32_t> v;
    v.reserve(t.size());
    for (auto tok : t) v.push_back(ids.emplace(tok, static_cast<uint32_t>(ids.size())).first->second);
    return v;
  };
  const std::vector<uint32_t> ia = to_ids(a), ib = to_ids(b);
  const size_t na = ia.size(), nb = ib.size(), w = nb + 1;
  // len[i * w + j]: LCS length of a[i..) and b[j..).
  std::vector<uint16_t> len((na + 1) * w, 0);
  for (size_t i = na; i-- > 0;) {
    for (size_t j = nb; j-- > 0;) {
      len[i * w + j] = ia[i] == ib[j] ? static_cast<uint16_t>(len[(i + 1) * w + j + 1] + 1)
                                      : std::max(len[(i + 1) * w + j], len[i * w + j + 1]);
    }
  }
  size_t i = 0, j = 0;
  while (i < na && j < nb) {
    if (ia[i] == ib[j]) {
      out.same(a[i++]);
      ++j;
    } else if (len[(i + 1) * w + j] >= len[i * w + j + 1]) {
      out.removed(a[i++]);
    } else {
      out.added(b[j++]);
    }
  }
  while (i < na) out.removed(a[i++]);
  while (j < nb) out.added(b[j++]);
}

// Sets aside the common prefix and suffix of a and b, then diffs the rest: with an LCS of
// tokens when it fits the cap, else with an LCS of its lines, else as one replaced block.
void diff_tokens(const Tokens& a, const Tokens& b, PieceBuilder& out, bool then_lines) {
  size_t prefix = 0, suffix = 0;
  trim_common(a, b, prefix, suffix);
  const Tokens mid_a(a.begin() + prefix, a.end() - suffix), mid_b(b.begin() + prefix, b.end() - suffix);
  out.same(joined(a, 0, prefix));
  if (mid_a.size() <= kMaxDiffTokens && mid_b.size() <= kMaxDiffTokens) {
    lcs(mid_a, mid_b, out);
  } else if (then_lines) {
    diff_tokens(line_tokens(joined(mid_a, 0, mid_a.size())), line_tokens(joined(mid_b, 0, mid_b.size())), out, false);
  } else {
    out.removed(joined(mid_a, 0, mid_a.size()));
    out.added(joined(mid_b, 0, mid_b.size()));
  }
  out.same(joined(a, a.size() - suffix, a.size()));
}

bool is_blank(const std::string& s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return is_space(static_cast<unsigned char>(c)); });
}

// A whitespace-only Same piece between two changes joins them, so "a b c" -> "x y z" reads as
// one replaced phrase instead of three word swaps. The texts each side spells are unchanged.
std::vector<DiffPiece> join_changes_across_spaces(const std::vector<DiffPiece>& in) {
  struct Region {
    bool same = false;
    std::string text, removed, added;
  };
  std::vector<Region> regions;
  for (const auto& p : in) {
    if (p.kind == DiffPiece::Same) {
      regions.push_back({true, p.text, {}, {}});
      continue;
    }
    if (regions.empty() || regions.back().same) regions.push_back({false, {}, {}, {}});
    (p.kind == DiffPiece::Removed ? regions.back().removed : regions.back().added) += p.text;
  }
  std::vector<Region> merged;
  for (size_t i = 0; i < regions.size(); ++i) {
    Region r = regions[i];
    if (r.same && is_blank(r.text) && !merged.empty() && !merged.back().same && i + 1 < regions.size()) {
      const Region& next = regions[i + 1];
      merged.back().removed += r.text + next.removed;
      merged.back().added += r.text + next.added;
      ++i;
      continue;
    }
    merged.push_back(std::move(r));
  }
  std::vector<DiffPiece> out;
  for (auto& r : merged) {
    if (r.same) {
      out.push_back({DiffPiece::Same, std::move(r.text)});
      continue;
    }
    if (!r.removed.empty()) out.push_back({DiffPiece::Removed, std::move(r.removed)});
    if (!r.added.empty()) out.push_back({DiffPiece::Added, std::move(r.added)});
  }
  return out;
}

}  // namespace

std::vector<DiffPiece> word_diff(const std::string& a, const std::string& b) {
  PieceBuilder out;
  diff_tokens(word_tokens(a), word_tokens(b), out, true);
  return join_changes_across_spaces(out.finish());
}

std::vector<DiffPiece> word_diff(const QString& a, const QString& b) {
  return word_diff(a.toUtf8().toStdString(), b.toUtf8().toStdString());
}

std::string diff_side_text(const std::vector<DiffPiece>& pieces, bool removed, bool added) {
  std::string out;
  for (const auto& p : pieces) {
    if (p.kind == DiffPiece::Same || (p.kind == DiffPiece::Removed && removed) || (p.kind == DiffPiece::Added && added))
      out += p.text;
  }
  return out;
}

namespace {

QString escaped(const std::string& bytes) {
  QString t = QString::fromUtf8(bytes.data(), static_cast<qsizetype>(bytes.size()));
  for (QChar& c : t) {
    const char16_t u = c.unicode();
    if ((u < 0x20 && u != '\n' && u != '\t') || u == 0x7F) c = QChar(QChar::ReplacementCharacter);
  }
  return t.toHtmlEscaped();
}

}  // namespace

QString diff_to_html(const std::vector<DiffPiece>& pieces, bool show_removed, bool show_added) {
  // Dark text on light tints: readable whatever the palette's own text colour is.
  static const QString kRemoved =
      QStringLiteral("<span style=\"background-color:#ffd4d1; color:#7a0b16; text-decoration:line-through;\">");
  static const QString kAdded = QStringLiteral("<span style=\"background-color:#c9f2d2; color:#0b5223;\">");
  QString html = QStringLiteral("<div style=\"white-space:pre-wrap;\">");
  const DiffPiece* previous = nullptr;
  for (const auto& p : pieces) {
    // A thin space (display only) between a removed and an added piece keeps "old" and "new"
    // from reading as one word.
    if (p.kind == DiffPiece::Added && show_added && show_removed && previous && previous->kind == DiffPiece::Removed)
      html += QChar(0x2009);
    previous = &p;
    if (p.kind == DiffPiece::Same) {
      html += escaped(p.text);
    } else if (p.kind == DiffPiece::Removed && show_removed) {
      html += kRemoved + escaped(p.text) + QStringLiteral("</span>");
    } else if (p.kind == DiffPiece::Added && show_added) {
      html += kAdded + escaped(p.text) + QStringLiteral("</span>");
    }
  }
  html += QStringLiteral("</div>");
  return html;
}

}  // namespace ganpo::ui
