#include "ui/sample_text_delegate.h"

#include <QAbstractTextDocumentLayout>
#include <QApplication>
#include <QPainter>
#include <QTableView>
#include <QTextDocument>

#include <algorithm>
#include <cmath>

namespace ganpo::ui {

SampleTextDelegate::SampleTextDelegate(QTableView* view) : QStyledItemDelegate(view), view_(view) {}

void SampleTextDelegate::layout(QTextDocument& doc, const QModelIndex& index, const QFont& font,
                                const QPalette& palette, int width) const {
  QString html = index.data(kHtmlRole).toString();
  if (html.isEmpty()) {
    html = QStringLiteral("<div style=\"white-space:pre-wrap;\">") + index.data(Qt::DisplayRole).toString().toHtmlEscaped() +
           QStringLiteral("</div>");
  }
  const QString footer = index.data(kFooterRole).toString();
  if (!footer.isEmpty()) {
    // PlaceholderText is the palette's muted colour, light or dark.
    html += QStringLiteral("<div style=\"color:%1; font-size:small; margin-top:4px;\">%2</div>")
                .arg(palette.color(QPalette::PlaceholderText).name(), footer.toHtmlEscaped());
  }
  doc.setDefaultFont(font);
  doc.setDocumentMargin(6);
  doc.setHtml(html);
  doc.setTextWidth(std::max(40, width));
}

void SampleTextDelegate::paint(QPainter* painter, const QStyleOptionViewItem& option, const QModelIndex& index) const {
  QStyleOptionViewItem opt = option;
  initStyleOption(&opt, index);
  opt.text.clear();
  QStyle* style = opt.widget ? opt.widget->style() : QApplication::style();
  style->drawControl(QStyle::CE_ItemViewItem, &opt, painter, opt.widget);

  QTextDocument doc;
  layout(doc, index, opt.font, opt.palette, opt.rect.width());
  QAbstractTextDocumentLayout::PaintContext ctx;
  ctx.palette = opt.palette;
  if (opt.state & QStyle::State_Selected)
    ctx.palette.setColor(QPalette::Text, opt.palette.color(QPalette::HighlightedText));
  painter->save();
  painter->translate(opt.rect.topLeft());
  ctx.clip = QRectF(0, 0, opt.rect.width(), opt.rect.height());
  painter->setClipRect(ctx.clip);
  doc.documentLayout()->draw(painter, ctx);
  painter->restore();
}

QSize SampleTextDelegate::sizeHint(const QStyleOptionViewItem& option, const QModelIndex& index) const {
  const int width = view_ ? view_->columnWidth(index.column()) : option.rect.width();
  QTextDocument doc;
  layout(doc, index, option.font, view_ ? view_->palette() : option.palette, width);
  const int height = static_cast<int>(std::ceil(doc.size().height()));
  return {width, std::min(height, kMaxHeight)};
}

}  // namespace ganpo::ui
