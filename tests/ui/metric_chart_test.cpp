// MetricChart decimation against a brute-force computation over the stored values: 200,000
// points in a real store, the envelope at full view and in zoomed windows.
#include <gtest/gtest.h>

#include <QMouseEvent>
#include <QTemporaryDir>

#include <cmath>
#include <limits>

#include "dashboard_test_support.h"
#include "ui/chart_series.h"
#include "ui/metric_chart.h"
#include "ui/metric_feed.h"
#include "ui/store_worker.h"

using namespace ganpo;
using namespace ganpo::ui;
using ganpo::ui::testing::pump_until;
using ganpo::ui::testing::TempWorkspace;

namespace {

constexpr int64_t kPoints = 200000;

double value_at(int64_t step) {
  if (step % 9973 == 0) return std::numeric_limits<double>::quiet_NaN();
  return std::sin(step * 0.001) + 0.3 * std::sin(step * 1.7) + (step % 1000 == 0 ? 5.0 : 0.0);
}

// Expected buckets by brute force over the stored values.
struct Expected {
  int64_t first = -1, last = -1, count = 0, nans = 0;
  double min = std::numeric_limits<double>::infinity(), max = -std::numeric_limits<double>::infinity();
};
std::map<int64_t, Expected> brute_force(int64_t lo, int64_t hi, int64_t buckets) {
  std::map<int64_t, Expected> out;
  for (int64_t s = std::max<int64_t>(lo, 1); s <= std::min(hi, kPoints); ++s) {
    auto& e = out[RunStore::bucket_of(s, lo, hi, buckets)];
    if (e.first < 0) e.first = s;
    e.last = s;
    const double v = value_at(s);
    if (std::isnan(v)) {
      ++e.nans;
      continue;
    }
    ++e.count;
    e.min = std::min(e.min, v);
    e.max = std::max(e.max, v);
  }
  return out;
}

void expect_envelope_exact(const MetricChart& chart, int64_t lo, int64_t hi) {
  const auto& env = chart.envelope("value");
  ASSERT_FALSE(env.empty());
  const auto [elo, ehi] = chart.envelopeStepRange("value");
  EXPECT_EQ(elo, lo);
  EXPECT_EQ(ehi, hi);
  const int64_t n = chart.envelopeBuckets("value");
  ASSERT_GT(n, 0);
  auto expected = brute_force(lo, hi, n);
  ASSERT_EQ(env.size(), expected.size());
  size_t i = 0;
  for (const auto& [b, e] : expected) {
    const SeriesBucket& got = env[i++];
    EXPECT_EQ(got.first_step, e.first);
    EXPECT_EQ(got.last_step, e.last);
    EXPECT_EQ(got.count, e.count);
    EXPECT_EQ(got.nan_count, e.nans);
    if (e.count > 0) {
      EXPECT_DOUBLE_EQ(got.min, e.min) << "bucket " << b;
      EXPECT_DOUBLE_EQ(got.max, e.max) << "bucket " << b;
    }
  }
}

class MetricChartDecimation : public ::testing::Test {
protected:
  static void SetUpTestSuite() {
    ws = new TempWorkspace;
    std::vector<double> values;
    for (int64_t s = 1; s <= kPoints; ++s) values.push_back(value_at(s));
    ws->log_series("value", 1, values);
  }
  static void TearDownTestSuite() {
    delete ws;
    ws = nullptr;
  }
  static TempWorkspace* ws;
};
TempWorkspace* MetricChartDecimation::ws = nullptr;

}  // namespace

TEST_F(MetricChartDecimation, EnvelopeEqualsBruteForceAtFullAndZoomedViews) {
  StoreWorker worker(QString::fromStdString(ws->path));
  MetricChart chart(&worker, ws->run, "value");
  chart.resize(900, 300);
  MetricFeed feed(&worker, ws->run);
  QObject::connect(&feed, &MetricFeed::pointsArrived, &chart, [&](const MetricBatch& b) {
    for (const auto& [k, pts] : b) chart.appendPoints(QString::fromStdString(k), pts);
  });
  feed.pollNow();
  ASSERT_TRUE(pump_until([&] { return chart.pointCount("value") == kPoints; }, 60000));
  chart.replot();
  EXPECT_EQ(chart.nanCount(), kPoints / 9973);

  // Full range.
  chart.setXRange(1, kPoints);
  ASSERT_TRUE(pump_until([&] { return !chart.decimationPending() && chart.isDecimated("value"); }, 30000));
  EXPECT_FALSE(chart.rawGraph("value")->visible());
  EXPECT_LE(chart.envelope("value").size(), static_cast<size_t>(std::max(64, chart.axisRect()->width())));
  expect_envelope_exact(chart, 1, kPoints);

  // A zoomed window still above the threshold: re-queried for exactly that step range.
  chart.setXRange(50000, 60000);
  ASSERT_TRUE(pump_until([&] {
    return !chart.decimationPending() && chart.envelopeStepRange("value") == std::pair<int64_t, int64_t>{50000, 60000};
  }, 30000));
  expect_envelope_exact(chart, 50000, 60000);

  // Zoomed in far enough: raw points.
  chart.setXRange(1000, 1500);
  ASSERT_TRUE(pump_until([&] { return !chart.decimationPending() && !chart.isDecimated("value"); }, 30000));
  EXPECT_TRUE(chart.rawGraph("value")->visible());
  EXPECT_TRUE(chart.envelope("value").empty());

  // And back to the full range.
  chart.resetZoom();
  chart.setXRange(1, kPoints);
  ASSERT_TRUE(pump_until([&] { return !chart.decimationPending() && chart.isDecimated("value"); }, 30000));
  expect_envelope_exact(chart, 1, kPoints);
  EXPECT_FALSE(chart.tooltipAt(12345).isEmpty());
}

TEST(MetricChartLocal, DerivedSeriesAreDecimatedInMemoryLikeTheStore) {
  MetricChart chart(nullptr, 0, "derived");
  chart.resize(700, 300);
  std::vector<MetricPoint> pts;
  for (int64_t s = 1; s <= 5000; ++s) pts.push_back({s, std::cos(s * 0.01), 1.7e9 + s, s * 10.0});
  chart.addSeries("d", true);
  chart.appendPoints("d", pts);
  chart.replot();
  chart.setXRange(1, 5000);
  ASSERT_TRUE(pump_until([&] { return !chart.decimationPending() && chart.isDecimated("d"); }));
  const auto& env = chart.envelope("d");
  ASSERT_FALSE(env.empty());
  int64_t total = 0;
  for (const auto& b : env) {
    double lo = 1e9, hi = -1e9;
    for (int64_t s = b.first_step; s <= b.last_step; ++s) {
      lo = std::min(lo, std::cos(s * 0.01));
      hi = std::max(hi, std::cos(s * 0.01));
    }
    EXPECT_DOUBLE_EQ(b.min, lo);
    EXPECT_DOUBLE_EQ(b.max, hi);
    total += b.count;
  }
  EXPECT_EQ(total, 5000);
}

// A run that goes on from an earlier step (a resume, or train.auto_find_batch_size going on with a
// smaller batch from a checkpoint) writes those steps again: their new values replace the ones
// drawn, in the same poll or a later one, and the NaN markers of the steps written again go.
TEST(MetricChartLocal, StepsWrittenAgainReplaceThePointsDrawnForThem) {
  MetricChart chart(nullptr, 0, "loss");
  chart.resize(700, 300);
  std::vector<MetricPoint> first;
  for (int64_t s = 1; s <= 12; ++s)
    first.push_back({s, s == 12 ? std::numeric_limits<double>::quiet_NaN() : 1.0 * s, 1.7e9 + s, s * 10.0});
  chart.appendPoints("loss", first);
  EXPECT_EQ(chart.nanCount(), 1);
  // From checkpoint-10: steps 11 and 12 again, then 13; and in one poll, a second go from step 12.
  chart.appendPoints("loss", {{11, 110, 1.7e9 + 20, 110}, {12, 120, 1.7e9 + 21, 120}, {13, 130, 1.7e9 + 22, 130},
                              {12, 121, 1.7e9 + 30, 120}, {13, 131, 1.7e9 + 31, 130}});
  const ChartSeries* s = chart.series("loss");
  ASSERT_TRUE(s);
  EXPECT_EQ(s->steps, (std::vector<int64_t>{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13}));
  EXPECT_EQ(s->values[10], 110);
  EXPECT_EQ(s->values[11], 121);
  EXPECT_EQ(s->values[12], 131);
  EXPECT_EQ(chart.nanCount(), 0);
  EXPECT_EQ(chart.pointCount("loss"), 13);
  EXPECT_EQ(chart.rawGraph("loss")->data()->size(), 13);
  EXPECT_DOUBLE_EQ((chart.rawGraph("loss")->data()->constEnd() - 1)->value, 131);
}

namespace {

// A left click (press and release in place) at plot coordinates (x, y), as a person makes it.
void click_at(MetricChart& chart, double x, double y) {
  const QPointF at(chart.xAxis->coordToPixel(x), chart.yAxis->coordToPixel(y));
  const QPointF global = chart.mapToGlobal(at.toPoint());
  QMouseEvent press(QEvent::MouseButtonPress, at, global, Qt::LeftButton, Qt::LeftButton, Qt::NoModifier);
  QCoreApplication::sendEvent(&chart, &press);
  QMouseEvent release(QEvent::MouseButtonRelease, at, global, Qt::LeftButton, Qt::NoButton, Qt::NoModifier);
  QCoreApplication::sendEvent(&chart, &release);
}

}  // namespace

// UX.md: "zoom/pan/selection preserved across live updates". A click selects a curve (QCustomPlot
// selects the points it had); the points that arrive later, and a redraw with another smoothing,
// are selected with it; the other curves step back; a click on empty space clears it.
TEST(MetricChartLocal, AClickedCurveStaysSelectedWhileRowsStreamIn) {
  MetricChart chart(nullptr, 0, "two curves");
  chart.resize(700, 300);
  chart.show();
  std::vector<MetricPoint> a, b;
  for (int64_t s = 1; s <= 40; ++s) {
    a.push_back({s, 1.0, 1.7e9 + s, s * 10.0});
    b.push_back({s, 3.0, 1.7e9 + s, s * 10.0});
  }
  chart.appendPoints("a", a);
  chart.appendPoints("b", b);
  chart.replot();
  const QColor b_color = chart.smoothGraph("b")->pen().color();
  click_at(chart, 20, 1.0);
  EXPECT_EQ(chart.selectedCurves(), QStringList{"a"});
  EXPECT_TRUE(chart.smoothGraph("a")->selected());
  EXPECT_FALSE(chart.smoothGraph("b")->selected());
  EXPECT_LT(chart.smoothGraph("b")->pen().color().alpha(), b_color.alpha()) << "the other curve is dimmed";
  ASSERT_TRUE(chart.legend->itemWithPlottable(chart.smoothGraph("a")));
  EXPECT_TRUE(chart.legend->itemWithPlottable(chart.smoothGraph("a"))->selected());

  // New rows: the selection covers them too, not only the 40 points there were when clicked.
  std::vector<MetricPoint> more;
  for (int64_t s = 41; s <= 60; ++s) more.push_back({s, 1.0, 1.7e9 + s, s * 10.0});
  chart.appendPoints("a", more);
  chart.appendPoints("b", {{41, 3.0, 1.7e9 + 41, 410.0}});
  EXPECT_EQ(chart.smoothGraph("a")->selection().span().end(), 60);
  EXPECT_EQ(chart.smoothGraph("a")->selection().span().begin(), 0);
  chart.setSmoothing(0.9);  // every point drawn again
  EXPECT_EQ(chart.smoothGraph("a")->selection().span().end(), 60);
  EXPECT_EQ(chart.selectedCurves(), QStringList{"a"});

  // A click on the other curve moves the selection; on empty space it clears it.
  chart.replot();
  click_at(chart, 30, 3.0);
  EXPECT_EQ(chart.selectedCurves(), QStringList{"b"});
  EXPECT_FALSE(chart.smoothGraph("a")->selected());
  chart.replot();
  click_at(chart, 30, 2.0);
  EXPECT_TRUE(chart.selectedCurves().isEmpty());
  EXPECT_EQ(chart.smoothGraph("b")->pen().color(), b_color) << "nothing dimmed without a selection";
}

// Buckets of a derived series (computed in memory) are the store's: NaN and +-Inf are counted
// apart from the finite min / max / last, so an infinite value never stretches the envelope.
TEST(ChartSeries, InMemoryBucketsAreTheStoresWithNonFiniteValuesCountedApart) {
  QTemporaryDir dir;
  RunStore store = RunStore::open(dir.filePath("w.sqlite").toStdString());
  const int64_t id = store.create_run("r", "preference", "{}");
  const double inf = std::numeric_limits<double>::infinity(), nan = std::nan("");
  ui::ChartSeries series;
  std::vector<MetricRow> rows;
  const std::vector<double> values{0.5, inf, 0.25, nan, -inf, 0.75, 1.0, -inf};
  for (size_t i = 0; i < values.size(); ++i) {
    series.steps.push_back(static_cast<int64_t>(i) + 1);
    series.values.push_back(values[i]);
    rows.push_back({0, id, static_cast<int64_t>(i) + 1, "share", values[i], 1.0, std::nullopt});
  }
  store.append_metrics(rows);
  for (int64_t buckets : {1, 3, 8}) {
    const auto mine = ui::decimate_in_memory(series, 1, 8, buckets), stored = store.decimated_series(id, "share", 1, 8, buckets);
    ASSERT_EQ(mine.size(), stored.size()) << buckets;
    for (size_t b = 0; b < mine.size(); ++b) {
      EXPECT_EQ(mine[b].count, stored[b].count) << buckets << "/" << b;
      EXPECT_EQ(mine[b].nan_count, stored[b].nan_count) << buckets << "/" << b;
      for (auto [a, c] : {std::pair{mine[b].min, stored[b].min}, {mine[b].max, stored[b].max}, {mine[b].last, stored[b].last}, {mine[b].mean, stored[b].mean}}) {
        EXPECT_TRUE(std::isnan(a) ? std::isnan(c) : std::abs(a - c) < 1e-12) << buckets << "/" << b << ": " << a << " vs " << c;
        EXPECT_FALSE(std::isinf(a)) << buckets << "/" << b;
      }
    }
  }
}

// UX.md: "NaN/Inf points shown as markers (never silently dropped)". A run whose loss went NaN
// and stayed NaN ends its curve in NaN: the x axis reaches the last of them, so their markers
// are on screen (QCustomPlot's key range skips NaN-valued points and ended the axis at the last
// finite one); a curve that starts in NaN starts the axis at its first.
TEST(MetricChartLocal, NonFinitePointsAtTheEndsOfACurveAreInsideTheXRange) {
  MetricChart chart(nullptr, 0, "loss");
  chart.resize(700, 300);
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  std::vector<MetricPoint> points;
  for (int64_t s = 1; s <= 120; ++s)
    points.push_back({s, s <= 3 ? nan : s >= 80 ? (s == 100 ? inf : nan) : 1.0 + 0.01 * s, 1.7e9 + s, s * 10.0});
  chart.appendPoints("loss", points);
  EXPECT_EQ(chart.nanCount(), 3 + 41);
  EXPECT_LE(chart.xAxis->range().lower, 1.0);
  EXPECT_GE(chart.xAxis->range().upper, 120.0);
  for (QCPGraph* g : {chart.nanMarkerGraph()})
    for (auto it = g->data()->constBegin(); it != g->data()->constEnd(); ++it)
      EXPECT_TRUE(chart.xAxis->range().contains(it->key)) << "marker at step " << it->key << " is off the axis";
}

// A curve that is NaN from its first point still gets an x axis around its markers.
TEST(MetricChartLocal, ACurveOfOnlyNaNHasItsMarkersOnTheAxis) {
  MetricChart chart(nullptr, 0, "loss");
  chart.resize(700, 300);
  const double nan = std::numeric_limits<double>::quiet_NaN();
  chart.appendPoints("loss", {{500, nan, 1.7e9, 0}, {501, nan, 1.7e9 + 1, 0}});
  EXPECT_EQ(chart.nanCount(), 2);
  EXPECT_TRUE(chart.xAxis->range().contains(500));
  EXPECT_TRUE(chart.xAxis->range().contains(501));
}
