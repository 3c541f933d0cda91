// SmoothingControl: the "Smoothing" slider the dashboard and Compare share (0 = raw .. 0.99, the
// debiased-EMA weight of series_smoothing.h) with its value beside it. Moving it emits
// weightChanged; setWeight (from code) moves it without emitting.
#pragma once

#include <QWidget>

class QLabel;
class QSlider;

namespace ganpo::ui {

class SmoothingControl : public QWidget {
  Q_OBJECT
public:
  SmoothingControl(double weight, const QString& tooltip, QWidget* parent = nullptr);
  void setWeight(double weight);
  double weight() const;

Q_SIGNALS:
  void weightChanged(double weight);

private:
  QSlider* slider_ = nullptr;
  QLabel* value_ = nullptr;
};

}  // namespace ganpo::ui
