// ui_bench: fills a MetricChart with 1,000,000 points from a temporary run store (through the
// StoreWorker and MetricFeed, as the dashboard does) and prints the replot time at full view
// and zoomed: the median of 10 replots each, offscreen. A program that prints figures, not a test.
#include <QApplication>
#include <QElapsedTimer>
#include <QTemporaryDir>
#include <QThread>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <vector>

#include "db/run_store.h"
#include "ui/metric_chart.h"
#include "ui/metric_feed.h"
#include "ui/store_worker.h"

using namespace ganpo;
using namespace ganpo::ui;

namespace {

bool pump_until(const std::function<bool()>& done, int timeout_ms) {
  QElapsedTimer t;
  t.start();
  while (!done() && t.elapsed() < timeout_ms) {
    QCoreApplication::processEvents(QEventLoop::AllEvents, 20);
    QThread::msleep(1);
  }
  return done();
}

double median_replot_ms(MetricChart& chart) {
  std::vector<double> ms;
  for (int i = 0; i < 10; ++i) {
    QElapsedTimer t;
    t.start();
    chart.replot(QCustomPlot::rpImmediateRefresh);
    ms.push_back(static_cast<double>(t.nsecsElapsed()) / 1e6);
  }
  std::sort(ms.begin(), ms.end());
  return (ms[4] + ms[5]) / 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (qEnvironmentVariableIsEmpty("QT_QPA_PLATFORM")) qputenv("QT_QPA_PLATFORM", "offscreen");
  QApplication app(argc, argv);
  const int64_t n = argc > 1 ? std::atoll(argv[1]) : 1000000;

  QTemporaryDir dir;
  const std::string path = dir.filePath("bench.sqlite").toStdString();
  int64_t run = 0;
  {
    QElapsedTimer t;
    t.start();
    RunStore store = RunStore::open(path);
    run = store.create_run("bench", "preference", "{}");
    std::vector<MetricRow> rows;
    rows.reserve(static_cast<size_t>(n));
    for (int64_t s = 1; s <= n; ++s) {
      MetricRow r;
      r.run_id = run;
      r.step = s;
      r.key = "loss";
      r.value = 0.69 * std::exp(-s / 3e5) + 0.05 * std::sin(s * 0.37) + (s % 50000 == 0 ? 1.0 : 0.0);
      r.wall_time = 1.7e9 + s * 0.2;
      r.tokens_seen = s * 512.0;
      rows.push_back(std::move(r));
    }
    store.append_metrics(rows);
    std::printf("stored %lld points in %.0f ms\n", static_cast<long long>(n), static_cast<double>(t.elapsed()));
  }

  StoreWorker worker(QString::fromStdString(path));
  MetricChart chart(&worker, run, "loss (benchmark)");
  chart.resize(1000, 400);
  chart.setReferenceLine(std::log(2.0));
  MetricFeed feed(&worker, run);
  QObject::connect(&feed, &MetricFeed::pointsArrived, &chart, [&](const MetricBatch& b) {
    for (const auto& [k, pts] : b) chart.appendPoints(QString::fromStdString(k), pts);
  });
  QElapsedTimer load;
  load.start();
  feed.pollNow();
  if (!pump_until([&] { return chart.pointCount() == n && !feed.busy(); }, 600000)) {
    std::printf("loading timed out at %lld points\n", static_cast<long long>(chart.pointCount()));
    return 1;
  }
  std::printf("loaded into the chart in %.0f ms\n", static_cast<double>(load.elapsed()));
  chart.replot();

  auto settle = [&] { return pump_until([&] { return !chart.decimationPending(); }, 120000); };
  QElapsedTimer q;
  q.start();
  chart.setXRange(1, static_cast<double>(n));
  settle();
  std::printf("full view: envelope of %zu buckets (decimated=%d) ready %.0f ms after the zoom (incl. 100 ms debounce)\n",
              chart.envelope("loss").size(), chart.isDecimated("loss"), static_cast<double>(q.elapsed()));
  std::printf("replot, 1M points, full view:   median %.2f ms (10 replots)\n", median_replot_ms(chart));

  q.restart();
  const double mid = static_cast<double>(n) / 2;
  chart.setXRange(mid, mid + static_cast<double>(n) / 100);
  settle();
  std::printf("zoom to 1%%: envelope of %zu buckets (decimated=%d) ready %.0f ms after the zoom\n",
              chart.envelope("loss").size(), chart.isDecimated("loss"), static_cast<double>(q.elapsed()));
  std::printf("replot, 1M points, zoomed 1%%:  median %.2f ms (10 replots)\n", median_replot_ms(chart));

  chart.setXRange(mid, mid + 1000);
  settle();
  std::printf("replot, 1M points, zoomed to 1,000 raw points (decimated=%d): median %.2f ms\n",
              chart.isDecimated("loss"), median_replot_ms(chart));
  return 0;
}
