// Word diff: a word-level comparison of two sample texts for the Samples tab, and its rendering
// as HTML (removed words struck through on red, added words on green). Texts are split into
// words, single punctuation characters and whitespace runs; the longest common subsequence of
// those tokens gives the pieces, and every separator is kept, so the Same + Removed pieces spell
// the first text and the Same + Added pieces the second, byte for byte. Texts may hold any bytes
// (tiny byte-level models): bytes >= 0x80 stay inside words, so a UTF-8 sequence is never split,
// and invalid bytes render as U+FFFD. The LCS work is capped (kMaxDiffTokens per side after the
// common prefix and suffix are set aside): a bigger input falls back to a line diff, then to a
// prefix / suffix diff, so a huge sample cannot freeze the UI. Pure functions; no widgets.
#pragma once

#include <QString>

#include <cstddef>
#include <string>
#include <vector>

namespace ganpo::ui {

struct DiffPiece {
  enum Kind { Same, Removed, Added } kind;
  std::string text;
};

// Most tokens per side the LCS table is built for (the table is at most this squared).
constexpr std::size_t kMaxDiffTokens = 2000;

// The pieces that turn a into b, in text order; in each changed region the Removed piece comes
// before the Added one. Adjacent pieces of one kind are merged.
std::vector<DiffPiece> word_diff(const std::string& a, const std::string& b);
// The same for Qt strings (compared as UTF-8).
std::vector<DiffPiece> word_diff(const QString& a, const QString& b);
inline std::vector<DiffPiece> word_diff(const char* a, const char* b) { return word_diff(std::string(a), std::string(b)); }

// The text that the chosen pieces spell: Same pieces, plus Removed and / or Added ones.
std::string diff_side_text(const std::vector<DiffPiece>& pieces, bool removed, bool added);

// HTML for a rich-text label or QTextDocument: Same pieces plain, Removed pieces (when
// show_removed) red background + strikethrough, Added pieces (when show_added) green background.
// Escaped, whitespace preserved (pre-wrap), control bytes shown as U+FFFD; a thin space (display
// only) separates a removed piece from the added piece after it.
QString diff_to_html(const std::vector<DiffPiece>& pieces, bool show_removed = true, bool show_added = true);

}  // namespace ganpo::ui
