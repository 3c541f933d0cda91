#include "ui/chart_style.h"

namespace ganpo::ui {

void apply_chart_palette(QCustomPlot* plot, const QPalette& pal, QCPTextElement* title) {
  const QColor base = pal.color(QPalette::Base), text = pal.color(QPalette::Text);
  QColor grid = pal.color(QPalette::Mid), fill = base;
  grid.setAlpha(110);
  fill.setAlpha(200);
  plot->setBackground(base);
  for (QCPAxis* axis : {plot->xAxis, plot->yAxis, plot->xAxis2, plot->yAxis2}) {
    for (auto set : {&QCPAxis::setBasePen, &QCPAxis::setTickPen, &QCPAxis::setSubTickPen}) (axis->*set)(QPen(text));
    axis->setTickLabelColor(text);
    axis->setLabelColor(text);
    axis->grid()->setPen(QPen(grid, 1, Qt::DotLine));
  }
  if (title) title->setTextColor(text);
  plot->legend->setBrush(fill);
  plot->legend->setBorderPen(QPen(grid));
  plot->legend->setTextColor(text);
  // A selected curve's entry is bold (set by the chart), not boxed and recoloured.
  plot->legend->setSelectedTextColor(text);
  plot->legend->setSelectedIconBorderPen(Qt::NoPen);
  plot->legend->setSelectedBorderPen(QPen(grid));
}

void set_x_axis_mode(QCPAxis* axis, XAxisMode mode) {
  switch (mode) {
    case XAxisMode::Step:
      axis->setTicker(QSharedPointer<QCPAxisTicker>(new QCPAxisTicker));
      axis->setLabel("step");
      break;
    case XAxisMode::WallTime: {
      QSharedPointer<QCPAxisTickerTime> t(new QCPAxisTickerTime);
      t->setTimeFormat("%h:%m:%s");
      axis->setTicker(t);
      axis->setLabel("wall time (h:m:s)");
      break;
    }
    case XAxisMode::TokensSeen:
      axis->setTicker(QSharedPointer<QCPAxisTicker>(new QCPAxisTicker));
      axis->setLabel("tokens seen");
      break;
  }
}

}  // namespace ganpo::ui
