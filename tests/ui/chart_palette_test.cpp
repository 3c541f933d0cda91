// Charts follow the window's palette: a dark palette gives a dark chart with light text, and a
// palette change at run time (the system switching theme) repaints the chart in the new colours.
#include <gtest/gtest.h>

#include <QImage>
#include <QPalette>

#include "tests/ui/dashboard_test_support.h"
#include "ui/metric_chart.h"
#include "ui/store_worker.h"

using namespace ganpo::ui;
using namespace ganpo::ui::testing;

namespace {

QPalette dark_palette() {
  QPalette p;
  p.setColor(QPalette::Window, QColor(37, 37, 38));
  p.setColor(QPalette::Base, QColor(30, 30, 30));
  p.setColor(QPalette::Text, QColor(220, 220, 220));
  p.setColor(QPalette::WindowText, QColor(220, 220, 220));
  p.setColor(QPalette::Mid, QColor(90, 90, 90));
  return p;
}

}  // namespace

TEST(ChartPalette, FollowsALightToDarkSwitch) {
  TempWorkspace ws;
  StoreWorker worker(QString::fromStdString(ws.path));
  MetricChart chart(&worker, ws.run, "loss");
  chart.resize(400, 260);
  const QColor light_base = chart.palette().color(QPalette::Base);
  EXPECT_EQ(chart.grab().toImage().pixelColor(3, 3), light_base);
  chart.setPalette(dark_palette());
  EXPECT_EQ(chart.xAxis->tickLabelColor(), QColor(220, 220, 220));
  EXPECT_EQ(chart.grab().toImage().pixelColor(3, 3), QColor(30, 30, 30)) << "background repainted dark";
}
