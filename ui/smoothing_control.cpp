#include "ui/smoothing_control.h"

#include <QHBoxLayout>
#include <QLabel>
#include <QSignalBlocker>
#include <QSlider>

#include <cmath>

#include "ui/series_smoothing.h"

namespace ganpo::ui {

SmoothingControl::SmoothingControl(double weight, const QString& tooltip, QWidget* parent) : QWidget(parent) {
  auto* row = new QHBoxLayout(this);
  row->setContentsMargins(0, 0, 0, 0);
  row->addWidget(new QLabel("Smoothing:"));
  slider_ = new QSlider(Qt::Horizontal);
  slider_->setRange(0, static_cast<int>(std::lround(kMaxSmoothingWeight * 100)));
  slider_->setFixedWidth(140);
  slider_->setToolTip(tooltip);
  row->addWidget(slider_);
  value_ = new QLabel;
  value_->setMinimumWidth(32);
  row->addWidget(value_);
  setWeight(weight);
  connect(slider_, &QSlider::valueChanged, this, [this](int v) {
    value_->setText(QString::number(v / 100.0, 'f', 2));
    Q_EMIT weightChanged(v / 100.0);
  });
}

void SmoothingControl::setWeight(double weight) {
  const QSignalBlocker quiet(slider_);
  slider_->setValue(static_cast<int>(std::lround(weight * 100)));
  value_->setText(QString::number(slider_->value() / 100.0, 'f', 2));
}

double SmoothingControl::weight() const { return slider_->value() / 100.0; }

}  // namespace ganpo::ui
