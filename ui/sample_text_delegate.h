// SampleTextDelegate: draws a Samples-table cell as rich text (the HTML in kHtmlRole, e.g. a word
// diff from word_diff.h) wrapped to the column's width, followed by a small grey footer line
// (kFooterRole: judge score, lengths), and reports the height that text needs so the table can
// size each row to its sample. Cells without HTML fall back to their escaped display text. A
// sample taller than kMaxHeight is cut above its footer, which stays in view, and its tooltip
// holds the whole text.
#pragma once

#include <QStyledItemDelegate>

class QTableView;
class QTextDocument;

namespace ganpo::ui {

class SampleTextDelegate : public QStyledItemDelegate {
public:
  static constexpr int kHtmlRole = Qt::UserRole + 1;
  static constexpr int kFooterRole = Qt::UserRole + 2;
  // Tallest row it asks for.
  static constexpr int kMaxHeight = 900;

  explicit SampleTextDelegate(QTableView* view);

  void paint(QPainter* painter, const QStyleOptionViewItem& option, const QModelIndex& index) const override;
  QSize sizeHint(const QStyleOptionViewItem& option, const QModelIndex& index) const override;
  bool helpEvent(QHelpEvent* event, QAbstractItemView* view, const QStyleOptionViewItem& option,
                 const QModelIndex& index) override;
  // Whether a cell of this height cuts the cell's text (what the tooltip then shows whole).
  bool cutsText(const QModelIndex& index, const QFont& font, const QPalette& palette, int width, int height) const;

private:
  // The text, and the footer below it (an empty document where there is none).
  void layout(QTextDocument& text, QTextDocument& footer, const QModelIndex& index, const QFont& font,
              const QPalette& palette, int width) const;

  QTableView* view_;
};

}  // namespace ganpo::ui
