#include "ui/sample_text_delegate.h"

#include <QAbstractTextDocumentLayout>
#include <QApplication>
#include <QHelpEvent>
#include <QPainter>
#include <QTableView>
#include <QTextDocument>
#include <QToolTip>

#include <algorithm>
#include <cmath>

namespace ganpo::ui {

SampleTextDelegate::SampleTextDelegate(QTableView* view) : QStyledItemDelegate(view), view_(view) {}

void SampleTextDelegate::layout(QTextDocument& text, QTextDocument& footer, const QModelIndex& index,
                                const QFont& font, const QPalette& palette, int width) const {
  QString html = index.data(kHtmlRole).toString();
  if (html.isEmpty()) {
    html = QStringLiteral("<div style=\"white-space:pre-wrap;\">") + index.data(Qt::DisplayRole).toString().toHtmlEscaped() +
           QStringLiteral("</div>");
  }
  for (QTextDocument* doc : {&text, &footer}) {
    doc->setDefaultFont(font);
    doc->setDocumentMargin(6);
    doc->setTextWidth(std::max(40, width));
  }
  text.setHtml(html);
  const QString foot = index.data(kFooterRole).toString();
  if (!foot.isEmpty()) {
    // PlaceholderText is the palette's muted colour, light or dark.
    footer.setHtml(QStringLiteral("<div style=\"color:%1; font-size:small;\">%2</div>")
                       .arg(palette.color(QPalette::PlaceholderText).name(), foot.toHtmlEscaped()));
  }
}

namespace {

double height_of(const QTextDocument& doc) { return doc.isEmpty() ? 0.0 : doc.size().height(); }

}  // namespace

void SampleTextDelegate::paint(QPainter* painter, const QStyleOptionViewItem& option, const QModelIndex& index) const {
  QStyleOptionViewItem opt = option;
  initStyleOption(&opt, index);
  opt.text.clear();
  QStyle* style = opt.widget ? opt.widget->style() : QApplication::style();
  style->drawControl(QStyle::CE_ItemViewItem, &opt, painter, opt.widget);

  QTextDocument text, footer;
  layout(text, footer, index, opt.font, opt.palette, opt.rect.width());
  QAbstractTextDocumentLayout::PaintContext ctx;
  ctx.palette = opt.palette;
  if (opt.state & QStyle::State_Selected)
    ctx.palette.setColor(QPalette::Text, opt.palette.color(QPalette::HighlightedText));
  // The footer right below the text, or at the cell's bottom where the text is cut above it.
  const double footer_height = height_of(footer);
  const double text_room = std::max(0.0, opt.rect.height() - footer_height);
  const double text_height = std::min(height_of(text), text_room);
  painter->save();
  painter->translate(opt.rect.topLeft());
  ctx.clip = QRectF(0, 0, opt.rect.width(), text_height);
  painter->setClipRect(ctx.clip);
  text.documentLayout()->draw(painter, ctx);
  painter->restore();
  if (footer_height > 0) {
    painter->save();
    painter->translate(opt.rect.topLeft() + QPointF(0, text_height));
    ctx.clip = QRectF(0, 0, opt.rect.width(), footer_height);
    painter->setClipRect(ctx.clip);
    footer.documentLayout()->draw(painter, ctx);
    painter->restore();
  }
}

QSize SampleTextDelegate::sizeHint(const QStyleOptionViewItem& option, const QModelIndex& index) const {
  const int width = view_ ? view_->columnWidth(index.column()) : option.rect.width();
  QTextDocument text, footer;
  layout(text, footer, index, option.font, view_ ? view_->palette() : option.palette, width);
  const int height = static_cast<int>(std::ceil(height_of(text) + height_of(footer)));
  return {width, std::min(height, kMaxHeight)};
}

bool SampleTextDelegate::cutsText(const QModelIndex& index, const QFont& font, const QPalette& palette, int width,
                                  int height) const {
  QTextDocument text, footer;
  layout(text, footer, index, font, palette, width);
  return height_of(text) + height_of(footer) > height + 0.5;
}

bool SampleTextDelegate::helpEvent(QHelpEvent* event, QAbstractItemView* view, const QStyleOptionViewItem& option,
                                   const QModelIndex& index) {
  if (event && event->type() == QEvent::ToolTip && index.isValid() &&
      cutsText(index, option.font, option.palette, option.rect.width(), option.rect.height())) {
    // The whole text, wrapped (rich text), then the footer.
    QString tip = QStringLiteral("<div style=\"white-space:pre-wrap;\">%1</div>")
                      .arg(index.data(Qt::DisplayRole).toString().toHtmlEscaped());
    const QString foot = index.data(kFooterRole).toString();
    if (!foot.isEmpty()) tip += QStringLiteral("<p><i>%1</i></p>").arg(foot.toHtmlEscaped());
    QToolTip::showText(event->globalPos(), tip, view);
    return true;
  }
  return QStyledItemDelegate::helpEvent(event, view, option, index);
}

}  // namespace ganpo::ui
