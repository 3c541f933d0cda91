// The live Dashboard tab against a real temporary workspace: charts appear as rows are written,
// rows are appended (never reloaded), NaN values become markers, the chart catalog puts every key
// in one chart, zoom survives live updates, health reads the curves, export writes files that
// parse, and a screenshot shows the curves (saved to $GANPO_SCREENSHOT_DIR when that is set).
#include <gtest/gtest.h>

#include <QFile>
#include <QImage>
#include <QScrollArea>
#include <QScrollBar>
#include <QSet>
#include <QSvgRenderer>
#include <QWheelEvent>

#include <cmath>
#include <limits>
#include <random>

#include "dashboard_test_support.h"
#include "screenshot_test_support.h"
#include "ui/chart_catalog.h"
#include "ui/dashboard_view.h"
#include "ui/metric_chart.h"
#include "ui/run_list_model.h"
#include "ui/store_worker.h"

using namespace ganpo;
using namespace ganpo::ui;
using ganpo::ui::testing::pixels_near;
using ganpo::ui::testing::pump_until;
using ganpo::ui::testing::save_for_review;
using ganpo::ui::testing::shows_content;
using ganpo::ui::testing::TempWorkspace;

namespace {

// Every key the trainer logs for a GANPO preference run (core/train/trainer_step.cpp, core/train/critic.cpp).
const std::vector<std::string> kGanpoKeys = {
    "loss", "opo_loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies",
    "logps/chosen", "logps/rejected", "adv/loss", "adv/g_chosen", "adv/g_rejected", "critic/loss_chosen",
    "critic/loss_rejected", "critic/acc_chosen", "critic/acc_rejected", "ema/w_ref_chosen", "ema/w_ref_rejected",
    "ema/w_policy_chosen", "ema/l_ref_chosen", "ema/l_ref_rejected", "ema/l_policy_rejected", "learning_rate",
    "critic/learning_rate", "grad_norm", "step_time_s", "tokens_per_s", "tokens_seen", "epoch", "memory/rss_mb"};

// A plausible GANPO run, step by step.
std::map<std::string, double> ganpo_step(int64_t step, std::mt19937& rng) {
  std::normal_distribution<double> n(0, 1);
  const double t = static_cast<double>(step);
  std::map<std::string, double> m;
  const double opo = 0.69 * std::exp(-t / 800) + 0.15 + 0.04 * n(rng);
  const double adv = 0.69 + 0.03 * n(rng) - 0.05 * std::exp(-t / 300);
  m["opo_loss"] = opo;
  m["adv/loss"] = adv;
  m["loss"] = opo + 0.5 * adv;
  m["rewards/chosen"] = 0.002 * t + 0.3 * n(rng);
  m["rewards/rejected"] = -0.003 * t + 0.3 * n(rng);
  m["rewards/margins"] = m["rewards/chosen"] - m["rewards/rejected"];
  m["rewards/accuracies"] = std::clamp(0.5 + 0.45 * (1 - std::exp(-t / 400)) + 0.1 * n(rng), 0.0, 1.0);
  m["logps/chosen"] = -60 + 0.004 * t + n(rng);
  m["logps/rejected"] = -62 - 0.01 * t + n(rng);
  m["adv/g_chosen"] = 0.7 + 0.05 * n(rng);
  m["adv/g_rejected"] = 0.68 + 0.05 * n(rng);
  m["critic/loss_chosen"] = 0.62 + 0.05 * n(rng);
  m["critic/loss_rejected"] = 0.64 + 0.05 * n(rng);
  m["critic/acc_chosen"] = 0.7 + 0.05 * n(rng);
  m["critic/acc_rejected"] = 0.68 + 0.05 * n(rng);
  for (const char* k : {"ema/w_ref_chosen", "ema/w_ref_rejected", "ema/w_policy_chosen", "ema/l_ref_chosen",
                        "ema/l_ref_rejected", "ema/l_policy_rejected"})
    m[k] = 0.1 * n(rng) + (std::string(k).find("policy") != std::string::npos ? -0.3 : 0.3);
  m["learning_rate"] = 5e-6 * std::min(1.0, t / 100) * (1 - t / 4000);
  m["critic/learning_rate"] = m["learning_rate"] * 0.5;
  m["grad_norm"] = 2.0 * std::exp(-t / 1000) + 0.3 + 0.2 * std::fabs(n(rng));
  m["step_time_s"] = 0.21 + 0.01 * n(rng);
  m["tokens_per_s"] = 5000 + 200 * n(rng);
  m["tokens_seen"] = t * 512;
  m["epoch"] = t / 1000.0;
  m["memory/rss_mb"] = 1800 + 0.05 * t;
  return m;
}

}  // namespace

TEST(DashboardCatalog, EveryTrainerKeyLandsInExactlyOneKnownChart) {
  QSet<QString> ids;
  for (const auto& k : kGanpoKeys) {
    const ChartSpec spec = chart_spec_for_key(QString::fromStdString(k));
    EXPECT_NE(spec.group, "Other") << k;
    EXPECT_TRUE(chart_groups().contains(spec.group));
    ids.insert(spec.id);
  }
  EXPECT_EQ(chart_spec_for_key("rewards/chosen").id, chart_spec_for_key("rewards/rejected").id);
  EXPECT_EQ(chart_spec_for_key("ema/w_ref_chosen").group, "Adversarial");
  EXPECT_EQ(chart_spec_for_key("grad_norm").group, "Optimisation");
  EXPECT_EQ(chart_spec_for_key("memory/rss_mb").group, "System");
  EXPECT_EQ(chart_spec_for_key("cpu/cores").group, "System");  // every CPU run logs it (trainer_step.cpp)
  // A CUDA run's GPU memory keys share a chart apart from the process's memory.
  EXPECT_EQ(chart_spec_for_key("memory/cuda_reserved_mb").id, chart_spec_for_key("memory/gpu_used_mb").id);
  EXPECT_NE(chart_spec_for_key("memory/cuda_reserved_mb").id, chart_spec_for_key("memory/rss_mb").id);
  EXPECT_EQ(chart_spec_for_key("memory/cpu_tensor_peak_mb").id, chart_spec_for_key("memory/rss_mb").id);
  const ChartSpec unknown = chart_spec_for_key("my/custom_metric");
  EXPECT_EQ(unknown.group, "Other");
  EXPECT_NE(chart_spec_for_key("my/other").id, unknown.id);
  // ln 2 line on BCE-valued charts only; the base loss only for sigmoid DPO.
  EXPECT_TRUE(chart_spec_for_key("critic/loss_chosen").bce);
  EXPECT_TRUE(chart_spec_for_key("adv/loss").bce);
  EXPECT_TRUE(chart_spec_for_key("opo_loss", true).bce);
  EXPECT_FALSE(chart_spec_for_key("opo_loss", false).bce);
  EXPECT_FALSE(chart_spec_for_key("rewards/margins").bce);
  // The total loss only where it is the sigmoid base loss alone (no GANPO, no RPO).
  EXPECT_TRUE(chart_spec_for_key("loss", true, true).bce);
  EXPECT_FALSE(chart_spec_for_key("loss", true, false).bce);
  EXPECT_FALSE(chart_spec_for_key("loss", false, true).bce);
}

namespace {

// True once no chart waits on a store query or a debounce timer.
bool no_decimation_pending(const DashboardView& view) {
  for (MetricChart* c : view.charts())
    if (c->decimationPending()) return false;
  return true;
}

// Runs the replots queued so far (rpQueuedReplot posts them), so a grab shows the latest data.
void replot_now(const DashboardView& view) {
  QCoreApplication::processEvents();
  for (MetricChart* c : view.charts()) c->replot();
}

}  // namespace

// A run that goes on from a checkpoint (a resume, or train.auto_find_batch_size going on with a
// smaller batch) writes the steps after it again: the store drops the old rows, and every chart,
// the derived adv share too, shows the new values for those steps.
TEST(DashboardFeed, StepsARewoundRunWritesAgainReplaceTheirPoints) {
  TempWorkspace ws;
  std::mt19937 rng(2);
  for (int64_t s = 1; s <= 20; ++s) ws.log_step(s, ganpo_step(s, rng));
  // Held-out evaluations at steps 10 and 18, and a metric logged only at step 18: after the
  // rewind to step 15 nothing writes them again, so the charts must drop them by themselves.
  ws.log_step(10, {{"eval/loss", 0.6}});
  ws.log_step(18, {{"eval/loss", 0.5}, {"eval/rewards/margins", 1.5}});
  StoreWorker worker(QString::fromStdString(ws.path));
  DashboardView view(&worker, ws.run);
  view.setLive(true);
  ASSERT_TRUE(pump_until([&] {
    return view.chart("loss") && view.chart("loss")->pointCount("loss") == 20 && view.chart("eval/rewards/margins");
  }));
  ASSERT_EQ(view.chart("eval/loss")->pointCount("eval/loss"), 2);
  ws.store->rewind(ws.run, 15);
  std::map<std::string, double> again;
  for (int64_t s = 16; s <= 22; ++s) {
    again = ganpo_step(s, rng);
    again["loss"] = 100.0 + static_cast<double>(s);
    ws.log_step(s, again);
  }
  MetricChart* loss = view.chart("loss");
  ASSERT_TRUE(pump_until([&] { return loss->pointCount("loss") == 22 && loss->series("loss")->values.back() == 122.0; }));
  const ChartSeries* l = loss->series("loss");
  EXPECT_EQ(l->steps.size(), 22u);
  EXPECT_EQ(l->steps[15], 16);
  EXPECT_EQ(l->values[15], 116.0) << [&] {
    std::string t;
    for (size_t i = 0; i < l->steps.size(); ++i) t += std::to_string(l->steps[i]) + "=" + std::to_string(l->values[i]) + " ";
    return t;
  }();
  MetricChart* share = view.chart(kAdvShareKey);
  ASSERT_NE(share, nullptr);
  ASSERT_TRUE(pump_until([&] { return share->pointCount(kAdvShareKey) == 22; }));
  EXPECT_NEAR(share->series(kAdvShareKey)->values.back(), 0.5 * again.at("adv/loss") / 122.0, 1e-12);
  const ChartSeries* eval = view.chart("eval/loss")->series("eval/loss");
  EXPECT_EQ(eval->steps, std::vector<int64_t>{10});
  EXPECT_EQ(view.chart("eval/rewards/margins")->pointCount("eval/rewards/margins"), 0);
  view.resize(1400, 1000);
  view.show();
  ASSERT_TRUE(pump_until([&] { return no_decimation_pending(view); }));
  replot_now(view);
  save_for_review(view.grab().toImage(), "dashboard-rewound.png");
}

TEST(DashboardFeed, PointsAppearAfterPollAndNewRowsAreAppended) {
  TempWorkspace ws;
  std::mt19937 rng(1);
  for (int64_t s = 1; s <= 50; ++s) ws.log_step(s, ganpo_step(s, rng));
  StoreWorker worker(QString::fromStdString(ws.path));
  DashboardView view(&worker, ws.run);
  view.setLive(true);
  ASSERT_TRUE(pump_until([&] { return view.pointsLoaded() == 50 * static_cast<int64_t>(kGanpoKeys.size()); }));
  MetricChart* loss = view.chart("loss");
  ASSERT_NE(loss, nullptr);
  EXPECT_EQ(loss->pointCount("loss"), 50);
  EXPECT_EQ(loss->rawGraph("loss")->data()->size(), 50);
  // Each key in exactly one chart; rewards chosen/rejected share one.
  EXPECT_EQ(view.chart("rewards/chosen"), view.chart("rewards/rejected"));
  for (const auto& k : kGanpoKeys) EXPECT_NE(view.chart(QString::fromStdString(k)), nullptr) << k;
  EXPECT_EQ(view.visibleGroups(), (QStringList{"Preference", "Adversarial", "Optimisation", "System"}));
  // ln 2 reference on BCE charts.
  ASSERT_TRUE(view.chart("critic/loss_chosen")->referenceLine().has_value());
  EXPECT_NEAR(*view.chart("critic/loss_chosen")->referenceLine(), 0.693147, 1e-6);
  EXPECT_TRUE(view.chart("opo_loss")->referenceLine().has_value());
  EXPECT_FALSE(view.chart("grad_norm")->referenceLine().has_value());
  // Derived lambda * adv share (adv_weight 0.5 from the config).
  MetricChart* share = view.chart(kAdvShareKey);
  ASSERT_NE(share, nullptr);
  EXPECT_EQ(share->pointCount(kAdvShareKey), 50);
  const ChartSeries* adv = view.chart("adv/loss")->series("adv/loss");
  const ChartSeries* tot = loss->series("loss");
  EXPECT_NEAR(share->series(kAdvShareKey)->values[7], 0.5 * adv->values[7] / tot->values[7], 1e-12);

  // Appended, not reloaded: the same data container grows by exactly the new rows.
  const auto container = loss->rawGraph("loss")->data();
  const double first_key = container->at(0)->key;
  for (int64_t s = 51; s <= 57; ++s) ws.log_step(s, ganpo_step(s, rng));
  ASSERT_TRUE(pump_until([&] { return loss->pointCount("loss") == 57; }));
  EXPECT_EQ(loss->rawGraph("loss")->data(), container);
  EXPECT_EQ(container->size(), 57);
  EXPECT_EQ(container->at(0)->key, first_key);
  EXPECT_EQ(view.pointsLoaded(), 57 * static_cast<int64_t>(kGanpoKeys.size()));
  // A poll that finds nothing new changes nothing: one more poll, waited for until it answered.
  MetricFeed* feed = view.feed();
  ASSERT_TRUE(pump_until([&] { return !feed->busy(); }));
  const int64_t last_row = feed->lastRowId();
  feed->pollNow();
  ASSERT_TRUE(feed->busy()) << "the poll was sent";
  ASSERT_TRUE(pump_until([&] { return !feed->busy(); }));
  EXPECT_EQ(feed->lastRowId(), last_row);
  EXPECT_EQ(loss->pointCount("loss"), 57);
  EXPECT_EQ(container->size(), 57);
  EXPECT_EQ(view.pointsLoaded(), 57 * static_cast<int64_t>(kGanpoKeys.size()));
  view.setLive(false);
  EXPECT_FALSE(view.isLive());
}

TEST(DashboardFeed, SftRunShowsOnlyItsMetricsAndUnknownKeysGoToOther) {
  TempWorkspace ws(R"({"objective":{"loss_type":"sigmoid"},"ganpo":{"enabled":false}})");
  for (int64_t s = 1; s <= 20; ++s)
    ws.log_step(s, {{"loss", 3.0 - s * 0.05}, {"learning_rate", 1e-4}, {"grad_norm", 1.0}, {"tokens_per_s", 900},
                    {"step_time_s", 0.1}, {"memory/rss_mb", 700}, {"tokens_seen", s * 100.0}, {"my_metric", 1}});
  StoreWorker worker(QString::fromStdString(ws.path));
  DashboardView view(&worker, ws.run);
  ASSERT_TRUE(pump_until([&] { return view.pointsLoaded() == 160; }));
  EXPECT_EQ(view.visibleGroups(), (QStringList{"Preference", "Optimisation", "System", "Other"}));
  EXPECT_EQ(view.chart("adv/loss"), nullptr);
  EXPECT_EQ(view.chart(kAdvShareKey), nullptr);
  EXPECT_EQ(view.charts().size(), 8);
  EXPECT_EQ(view.healthText(), "healthy");
  EXPECT_FALSE(view.chart("loss")->referenceLine().has_value()) << "an SFT loss is no BCE";
}

TEST(DashboardFeed, NanValuesBecomeMarkersAndTheHealthLineSaysSo) {
  TempWorkspace ws;
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  for (int64_t s = 1; s <= 60; ++s) {
    double v = 1.0 / s;
    if (s == 10) v = inf;
    if (s == 20) v = -inf;
    if (s >= 55) v = nan;
    ws.log_step(s, {{"loss", v}, {"grad_norm", 1.0}});
  }
  StoreWorker worker(QString::fromStdString(ws.path));
  DashboardView view(&worker, ws.run);
  ASSERT_TRUE(pump_until([&] { return view.pointsLoaded() == 120; }));
  MetricChart* c = view.chart("loss");
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(c->pointCount("loss"), 60);  // never dropped
  // +Inf at 10 and 6 NaN (stored as NULL) marked at the top, -Inf at 20 at the bottom.
  EXPECT_EQ(c->nanCount(), 8);
  EXPECT_EQ(c->nanMarkerGraph()->data()->size(), 7);
  c->resize(600, 300);
  c->replot();
  EXPECT_TRUE(c->tooltipAt(57).contains("NaN at step 57")) << c->tooltipAt(57).toStdString();
  EXPECT_TRUE(c->tooltipAt(10).contains("+Inf at step 10"));
  EXPECT_TRUE(c->tooltipAt(30).contains("step 30"));
  EXPECT_TRUE(c->tooltipAt(30).contains("smoothed"));
  // The markers sit inside the visible y range.
  const QCPRange y = c->yAxis->range();
  for (auto it = c->nanMarkerGraph()->data()->begin(); it != c->nanMarkerGraph()->data()->end(); ++it)
    EXPECT_TRUE(y.contains(it->value));
  EXPECT_TRUE(view.healthText().contains("loss is NaN since step 55")) << view.healthText().toStdString();
}

TEST(DashboardFeed, UserZoomSurvivesLiveUpdatesUntilReset) {
  TempWorkspace ws;
  for (int64_t s = 1; s <= 100; ++s) ws.log_step(s, {{"loss", 1.0 / s}});
  StoreWorker worker(QString::fromStdString(ws.path));
  DashboardView view(&worker, ws.run);
  view.setLive(true);
  ASSERT_TRUE(pump_until([&] { return view.pointsLoaded() == 100; }));
  MetricChart* c = view.chart("loss");
  c->setXRange(10, 40);
  for (int64_t s = 101; s <= 150; ++s) ws.log_step(s, {{"loss", 1.0 / s}});
  ASSERT_TRUE(pump_until([&] { return c->pointCount("loss") == 150; }));
  EXPECT_DOUBLE_EQ(c->xAxis->range().lower, 10);
  EXPECT_DOUBLE_EQ(c->xAxis->range().upper, 40);
  view.resetZoom();
  EXPECT_FALSE(c->userZoomed());
  EXPECT_LE(c->xAxis->range().lower, 1);
  EXPECT_GE(c->xAxis->range().upper, 150);
  // Auto range follows new rows again.
  for (int64_t s = 151; s <= 160; ++s) ws.log_step(s, {{"loss", 1.0 / s}});
  ASSERT_TRUE(pump_until([&] { return c->pointCount("loss") == 160; }));
  EXPECT_GE(c->xAxis->range().upper, 160);
}

TEST(DashboardFeed, ControlsReachEveryChart) {
  TempWorkspace ws;
  std::mt19937 rng(2);
  for (int64_t s = 1; s <= 30; ++s) ws.log_step(s, ganpo_step(s, rng));
  // A key that first appears at step 21 (GPU memory after a CPU run was resumed on CUDA).
  for (int64_t s = 21; s <= 30; ++s) ws.log_step(s, {{"memory/cuda_allocated_mb", 100.0}});
  StoreWorker worker(QString::fromStdString(ws.path));
  DashboardView view(&worker, ws.run);
  ASSERT_TRUE(pump_until([&] { return view.pointsLoaded() > 0; }));
  view.setSmoothing(0.0);
  MetricChart* c = view.chart("grad_norm");
  EXPECT_DOUBLE_EQ(c->smoothGraph("grad_norm")->data()->at(5)->value, c->series("grad_norm")->values[5]);
  view.setXAxisMode(XAxisMode::TokensSeen);
  EXPECT_DOUBLE_EQ(c->rawGraph("grad_norm")->data()->at(5)->key, 6 * 512.0);
  view.setXAxisMode(XAxisMode::WallTime);
  EXPECT_DOUBLE_EQ(c->rawGraph("grad_norm")->data()->at(5)->key, 2.5);  // 0.5 s per step from step 1
  // Every chart's time 0 is the run's first row, not the chart's own first point.
  MetricChart* gpu = view.chart("memory/cuda_allocated_mb");
  ASSERT_NE(gpu, nullptr);
  EXPECT_DOUBLE_EQ(gpu->rawGraph("memory/cuda_allocated_mb")->data()->at(0)->key, 10.0);
  view.setLogY(true);
  EXPECT_EQ(c->yAxis->scaleType(), QCPAxis::stLogarithmic);
  EXPECT_GT(c->yAxis->range().lower, 0);
  // Log-probs are negative: that chart stays linear rather than draw nothing.
  EXPECT_TRUE(view.chart("logps/chosen")->logY());
  EXPECT_FALSE(view.chart("logps/chosen")->logYApplied());
  EXPECT_EQ(view.chart("logps/chosen")->yAxis->scaleType(), QCPAxis::stLinear);
  view.setLogY(false);
  EXPECT_EQ(c->yAxis->scaleType(), QCPAxis::stLinear);
}

// UX.md: "overlay of other runs". Another run of the workspace, logged at other steps and live,
// is drawn on the charts this run has (dashed, in its run-list colour, named in the legend), its
// points of keys this run logs later wait for their chart, its derived curves come with it, and
// removing it takes every curve of it away.
TEST(DashboardOverlay, AnotherRunIsDrawnOnThisRunsChartsWhileItRuns) {
  TempWorkspace ws;
  const int64_t other = ws.store->create_run("baseline", "preference", R"({"ganpo":{"adv_weight":2.0}})");
  std::mt19937 rng(4);
  for (int64_t s = 1; s <= 30; ++s) {
    auto m = ganpo_step(s, rng);
    ws.log_step(s, {{"loss", m["loss"]}, {"adv/loss", m["adv/loss"]}, {"rewards/margins", m["rewards/margins"]},
                    {"rewards/chosen", 0.1}, {"rewards/rejected", -0.1}});
  }
  // The other run logs every second step, and grad_norm, which this run has not logged (yet).
  for (int64_t s = 2; s <= 80; s += 2)
    ws.log_step(s, {{"loss", 2.0 + s}, {"adv/loss", 0.5}, {"grad_norm", 1.0 * s}, {"rewards/chosen", 0.2},
                    {"rewards/rejected", -0.2}}, other);
  StoreWorker worker(QString::fromStdString(ws.path));
  DashboardView view(&worker, ws.run);
  view.resize(1400, 900);
  view.show();
  view.setLive(true);
  ASSERT_TRUE(pump_until([&] { return view.pointsLoaded() == 150; }));
  view.addOverlay(ws.run);  // itself: nothing to overlay
  EXPECT_TRUE(view.overlays().empty());
  view.addOverlay(other);
  ASSERT_TRUE(pump_until([&] { return view.overlayPointsLoaded(other) == 200; }));
  EXPECT_EQ(view.overlays(), std::vector<int64_t>{other});

  MetricChart* loss = view.chart("loss");
  const ChartSeries* theirs = loss->overlaySeries(other, "loss");
  ASSERT_NE(theirs, nullptr);
  EXPECT_EQ(theirs->steps.size(), 40u);
  EXPECT_EQ(theirs->steps.back(), 80);
  EXPECT_EQ(loss->series("loss")->steps.size(), 30u) << "this run's own curve is unchanged";
  EXPECT_EQ(loss->seriesKeys(), QStringList{"loss"});
  QCPGraph* line = loss->overlayGraph(other, "loss");
  EXPECT_EQ(line->pen().color().rgb(), run_color(other).rgb());
  EXPECT_EQ(line->pen().style(), Qt::DashLine);
  const QString label = QString("#%1 baseline loss").arg(other);
  EXPECT_EQ(line->name(), QString("#%1 baseline").arg(other)) << "the chart's one key goes without saying";
  // Two keys of one chart: the run's colour for both, a dash pattern and the key's name for each.
  MetricChart* rewards = view.chart("rewards/chosen");
  QCPGraph* chosen = rewards->overlayGraph(other, "rewards/chosen");
  QCPGraph* rejected = rewards->overlayGraph(other, "rewards/rejected");
  ASSERT_TRUE(chosen && rejected);
  EXPECT_EQ(chosen->pen().color(), rejected->pen().color());
  EXPECT_NE(chosen->pen().style(), rejected->pen().style());
  EXPECT_EQ(rejected->name(), QString("#%1 baseline rewards/rejected").arg(other));
  EXPECT_TRUE(loss->legend->hasItemWithPlottable(line));
  EXPECT_TRUE(loss->tooltipAt(60).contains(label)) << loss->tooltipAt(60).toStdString();
  EXPECT_GE(loss->xAxis->range().upper, 80) << "the auto range takes the overlay in";
  EXPECT_EQ(view.chart("rewards/margins")->overlayRuns(), std::vector<int64_t>{}) << "the other run has no margins";
  EXPECT_EQ(view.chart("grad_norm"), nullptr) << "no chart for a key only the overlay has";
  // Derived curves with the other run's own lambda (2.0).
  MetricChart* share = view.chart(kAdvShareKey);
  ASSERT_NE(share, nullptr);
  ASSERT_NE(share->overlaySeries(other, kAdvShareKey), nullptr);
  EXPECT_DOUBLE_EQ(share->overlaySeries(other, kAdvShareKey)->values.front(), 2.0 * 0.5 / 4.0);

  // This run logs grad_norm now: the other run's 40 waiting points are drawn on the new chart.
  ws.log_step(31, {{"grad_norm", 0.5}});
  ASSERT_TRUE(pump_until([&] { return view.chart("grad_norm") != nullptr; }));
  ASSERT_NE(view.chart("grad_norm")->overlaySeries(other, "grad_norm"), nullptr);
  EXPECT_EQ(view.chart("grad_norm")->overlaySeries(other, "grad_norm")->steps.size(), 40u);
  // Live: the other run's new rows arrive while this dashboard is live.
  for (int64_t s = 82; s <= 90; s += 2) ws.log_step(s, {{"loss", 2.0 + s}}, other);
  ASSERT_TRUE(pump_until([&] { return loss->overlaySeries(other, "loss")->steps.size() == 45u; }));
  // A selection made on the overlay stays while rows stream in.
  loss->selectCurve("loss", other);
  EXPECT_EQ(loss->selectedCurves(), QStringList{label});
  ws.log_step(92, {{"loss", 94.0}}, other);
  ASSERT_TRUE(pump_until([&] { return loss->overlaySeries(other, "loss")->steps.size() == 46u; }));
  EXPECT_EQ(line->selection().span().end(), 46);
  ASSERT_TRUE(pump_until([&] { return no_decimation_pending(view); }));
  replot_now(view);
  save_for_review(view.grab().toImage(), "dashboard-overlay.png");

  const int graphs_without = loss->graphCount() - 6;  // six graphs per curve
  view.removeOverlay(other);
  EXPECT_TRUE(view.overlays().empty());
  EXPECT_EQ(loss->overlaySeries(other, "loss"), nullptr);
  EXPECT_EQ(loss->graphCount(), graphs_without);
  EXPECT_EQ(view.chart("grad_norm")->overlayRuns(), std::vector<int64_t>{});
  EXPECT_TRUE(loss->selectedCurves().isEmpty());
  EXPECT_FALSE(loss->tooltipAt(60).contains("baseline"));
  // Rows the other run writes now reach nothing.
  ws.log_step(94, {{"loss", 96.0}}, other);
  ws.log_step(32, {{"loss", 1.0}});
  ASSERT_TRUE(pump_until([&] { return loss->pointCount("loss") == 31; }));
  EXPECT_EQ(loss->overlaySeries(other, "loss"), nullptr);
}

// Which runs a dashboard overlays is remembered for its run and workspace: the tab opened again
// draws them again; removed, they stay removed; a run deleted since is dropped from the list.
TEST(DashboardOverlay, OverlaysAreRememberedForTheRunAndItsWorkspace) {
  TempWorkspace ws;
  const int64_t other = ws.store->create_run("baseline", "preference", "{}");
  const int64_t gone = ws.store->create_run("deleted later", "preference", "{}");
  for (int64_t s = 1; s <= 5; ++s) {
    ws.log_step(s, {{"loss", 1.0 * s}});
    ws.log_step(s, {{"loss", 2.0 * s}}, other);
    ws.log_step(s, {{"loss", 3.0 * s}}, gone);
  }
  StoreWorker worker(QString::fromStdString(ws.path));
  {
    DashboardView first(&worker, ws.run);
    first.addOverlay(other);
    first.addOverlay(gone);
    ASSERT_TRUE(pump_until([&] { return first.overlayPointsLoaded(other) == 5 && first.overlayPointsLoaded(gone) == 5; }));
  }
  {
    DashboardView again(&worker, ws.run);
    EXPECT_EQ(again.overlays(), (std::vector<int64_t>{other, gone}));
    ASSERT_TRUE(pump_until([&] { return again.overlayPointsLoaded(other) == 5; }));
    DashboardView another_run(&worker, other);
    EXPECT_TRUE(another_run.overlays().empty()) << "remembered for its own run";
    again.removeOverlay(gone);
  }
  ws.store->delete_run(gone);
  {
    DashboardView third(&worker, ws.run);
    EXPECT_EQ(third.overlays(), std::vector<int64_t>{other});
    third.removeOverlay(other);
  }
  DashboardView none(&worker, ws.run);
  EXPECT_TRUE(none.overlays().empty());
  // A run deleted while remembered: read, found gone, dropped from what is remembered.
  none.addOverlay(gone);
  ASSERT_TRUE(pump_until([&] { return none.overlays().empty(); }));
  DashboardView last(&worker, ws.run);
  EXPECT_TRUE(last.overlays().empty());
}

// A long overlaid run: its derived curves are decimated in memory (the store has no rows of
// them), its colour steps aside where this run's curves already use it (run #11 has run #1's
// blue), and a key it logged 25,000 times before this run logged it (too many to keep waiting) is
// read again once this run logs it.
TEST(DashboardOverlay, ALongRunKeepsItsDerivedCurvesItsOwnShadeAndItsLateKeys) {
  TempWorkspace ws;
  ASSERT_EQ(ws.run, 1);
  for (int i = 2; i <= 10; ++i) ws.store->create_run("filler", "preference", "{}");
  const int64_t other = ws.store->create_run("long", "preference", "{}");
  ASSERT_EQ(other, 11);
  ASSERT_EQ(run_color(other), run_color(ws.run));
  for (int64_t s = 1; s <= 10; ++s) ws.log_step(s, {{"loss", 2.0}, {"adv/loss", 0.6}});
  std::vector<double> loss, adv, grad(25000, 0.5);
  for (int i = 0; i < 3000; ++i) loss.push_back(2.0 + std::sin(i * 0.01)), adv.push_back(0.6);
  ws.run = other;
  ws.log_series("loss", 1, loss);
  ws.log_series("adv/loss", 1, adv);
  ws.log_series("grad_norm", 1, grad);
  ws.run = 1;
  StoreWorker worker(QString::fromStdString(ws.path));
  DashboardView view(&worker, ws.run);
  view.resize(1400, 900);
  view.show();
  view.setLive(true);
  ASSERT_TRUE(pump_until([&] { return view.pointsLoaded() == 20; }));
  view.addOverlay(other);
  ASSERT_TRUE(pump_until([&] { return view.overlayPointsLoaded(other) == 31000; }, 30000));
  MetricChart* share = view.chart(kAdvShareKey);
  ASSERT_NE(share, nullptr);
  ASSERT_TRUE(pump_until([&] { return share->overlaySeries(other, kAdvShareKey) &&
                                      share->overlaySeries(other, kAdvShareKey)->size() == 3000 &&
                                      !share->decimationPending(); }, 30000));
  int64_t counted = 0;
  for (const SeriesBucket& b : share->overlayEnvelope(other, kAdvShareKey)) counted += b.count;
  EXPECT_EQ(counted, 3000) << "the in-memory envelope holds every derived point";
  MetricChart* loss_chart = view.chart("loss");
  EXPECT_NE(loss_chart->overlayGraph(other, "loss")->pen().color().rgb(), run_color(other).rgb())
      << "this run's own loss curve is drawn in that blue";
  // This run logs grad_norm: the other run's 25,000 points were let go, so they are read again.
  ws.log_step(11, {{"grad_norm", 0.4}});
  ASSERT_TRUE(pump_until([&] { return view.chart("grad_norm") && view.chart("grad_norm")->overlaySeries(other, "grad_norm") &&
                                      view.chart("grad_norm")->overlaySeries(other, "grad_norm")->size() == 25000; }, 30000));
  EXPECT_EQ(loss_chart->overlaySeries(other, "loss")->size(), 3000u) << "read again, not twice";
}

// The EMA score gaps UX.md names: mu_w[A] - mu_w[P] and mu_l[B] - mu_l[P] from the logged means,
// on a chart with a line at 0 (the critics cannot tell policy from reference there).
TEST(DashboardFeed, EmaScoreGapsAreDrawnFromTheLoggedMeans) {
  TempWorkspace ws;
  std::mt19937 rng(5);
  std::vector<std::map<std::string, double>> logged;
  for (int64_t s = 1; s <= 20; ++s) {
    logged.push_back(ganpo_step(s, rng));
    ws.log_step(s, logged.back());
  }
  StoreWorker worker(QString::fromStdString(ws.path));
  DashboardView view(&worker, ws.run);
  view.setLive(true);
  ASSERT_TRUE(pump_until([&] { return view.chart(kEmaGapRejectedKey) && view.chart(kEmaGapRejectedKey)->pointCount(kEmaGapRejectedKey) == 20; }));
  MetricChart* gaps = view.chart(kEmaGapChosenKey);
  EXPECT_EQ(gaps, view.chart(kEmaGapRejectedKey));
  EXPECT_NE(gaps, view.chart("ema/w_ref_chosen")) << "the six means keep their own chart";
  ASSERT_TRUE(gaps->referenceLine().has_value());
  EXPECT_EQ(*gaps->referenceLine(), 0.0);
  for (size_t i = 0; i < 20; ++i) {
    EXPECT_DOUBLE_EQ(gaps->series(kEmaGapChosenKey)->values[i], logged[i]["ema/w_ref_chosen"] - logged[i]["ema/w_policy_chosen"]);
    EXPECT_DOUBLE_EQ(gaps->series(kEmaGapRejectedKey)->values[i],
                     logged[i]["ema/l_ref_rejected"] - logged[i]["ema/l_policy_rejected"]);
  }
}

TEST(DashboardExport, ChartAndDashboardFilesParse) {
  TempWorkspace ws;
  std::mt19937 rng(4);
  for (int64_t s = 1; s <= 200; ++s) ws.log_step(s, ganpo_step(s, rng));
  StoreWorker worker(QString::fromStdString(ws.path));
  DashboardView view(&worker, ws.run);
  view.resize(1200, 900);
  ASSERT_TRUE(pump_until([&] { return view.pointsLoaded() == 200 * static_cast<int64_t>(kGanpoKeys.size()); }));
  QTemporaryDir dir;
  MetricChart* c = view.chart("rewards/chosen");
  for (const char* ext : {"png", "svg", "pdf"}) {
    const QString chart_path = dir.filePath(QString("chart.%1").arg(ext));
    const QString dash_path = dir.filePath(QString("dashboard.%1").arg(ext));
    ASSERT_TRUE(c->exportImage(chart_path)) << ext;
    ASSERT_TRUE(view.exportDashboard(dash_path)) << ext;
    for (const QString& p : {chart_path, dash_path}) {
      QFile f(p);
      ASSERT_TRUE(f.open(QIODevice::ReadOnly));
      const QByteArray bytes = f.readAll();
      ASSERT_GT(bytes.size(), 100) << p.toStdString();
      if (QString(ext) == "png") {
        QImage img(p);
        EXPECT_FALSE(img.isNull());
        EXPECT_GT(img.width(), 300);
      } else if (QString(ext) == "svg") {
        QSvgRenderer svg(p);
        EXPECT_TRUE(svg.isValid()) << p.toStdString();
      } else {
        EXPECT_TRUE(bytes.startsWith("%PDF")) << p.toStdString();
        EXPECT_TRUE(bytes.trimmed().endsWith("%%EOF"));
      }
    }
  }
  const QString csv = dir.filePath("rewards_rejected.csv");
  ASSERT_TRUE(c->exportCsv(csv, "rewards/rejected"));
  QFile f(csv);
  ASSERT_TRUE(f.open(QIODevice::ReadOnly | QIODevice::Text));
  const QStringList lines = QString::fromUtf8(f.readAll()).split('\n', Qt::SkipEmptyParts);
  ASSERT_EQ(lines.size(), 201);
  EXPECT_EQ(lines[0], "step,wall_time,tokens_seen,value");
  const QStringList row = lines[3].split(',');
  ASSERT_EQ(row.size(), 4);
  EXPECT_EQ(row[0], "3");
  EXPECT_DOUBLE_EQ(row[1].toDouble(), 1.7e9 + 1.5);
  EXPECT_DOUBLE_EQ(row[2].toDouble(), 3 * 512.0);
  EXPECT_DOUBLE_EQ(row[3].toDouble(), c->series("rewards/rejected")->values[2]);
}

// The live dashboard as a person sees it: the image has the widget's size and shows content, the
// loss chart draws its curve in the curve's own colour, and the full-dashboard export matches.
TEST(DashboardScreenshot, GrabsALiveDashboard) {
  TempWorkspace ws;
  std::mt19937 rng(9);
  for (int64_t s = 1; s <= 3000; ++s) {
    auto m = ganpo_step(s, rng);
    if (s == 2500) m["grad_norm"] = std::numeric_limits<double>::quiet_NaN();
    ws.log_step(s, m);
  }
  StoreWorker worker(QString::fromStdString(ws.path));
  DashboardView view(&worker, ws.run);
  view.resize(1400, 1000);
  view.show();
  ASSERT_TRUE(pump_until([&] { return view.pointsLoaded() == 3000 * static_cast<int64_t>(kGanpoKeys.size()); }, 30000));
  ASSERT_TRUE(pump_until([&] { return no_decimation_pending(view); }, 30000));
  replot_now(view);
  EXPECT_TRUE(view.chart("loss")->isDecimated("loss"));  // 3,000 visible points > 2,000
  EXPECT_EQ(view.chart("grad_norm")->nanCount(), 1);
  const QImage shot = view.grab().toImage();
  EXPECT_TRUE(shows_content(shot, view.size()));
  save_for_review(shot, "dashboard.png");
  MetricChart* loss = view.chart("loss");
  const QImage loss_shot = loss->grab().toImage();
  EXPECT_TRUE(shows_content(loss_shot, loss->size()));
  EXPECT_GT(pixels_near(loss_shot, loss->smoothGraph("loss")->pen().color()), 50) << "the smoothed loss curve is drawn";

  QTemporaryDir dir;
  const QString full = dir.filePath("dashboard-full.png");
  ASSERT_TRUE(view.exportDashboard(full));
  const QImage exported(full);
  EXPECT_FALSE(exported.isNull());
  EXPECT_TRUE(shows_content(exported, exported.size() / exported.devicePixelRatio()));
  save_for_review(exported, "dashboard-full.png");

  // Wall-time axis, log y, one chart zoomed in to raw points.
  view.setXAxisMode(XAxisMode::WallTime);
  view.setLogY(true);
  MetricChart* opo = view.chart("opo_loss");
  opo->setXRange(100, 160);
  ASSERT_TRUE(pump_until([&] { return no_decimation_pending(view); }, 30000));
  replot_now(view);
  EXPECT_FALSE(opo->isDecimated("opo_loss"));
  EXPECT_DOUBLE_EQ(opo->xAxis->range().lower, 100);
  EXPECT_DOUBLE_EQ(opo->xAxis->range().upper, 160);
  const QImage zoomed = opo->grab().toImage();
  EXPECT_TRUE(shows_content(zoomed, opo->size()));
  EXPECT_GT(pixels_near(zoomed, opo->smoothGraph("opo_loss")->pen().color()), 20) << "the zoomed curve is drawn";
  const QImage walltime = view.grab().toImage();
  EXPECT_TRUE(shows_content(walltime, view.size()));
  EXPECT_NE(walltime, shot) << "the new axis and scale are drawn";
  save_for_review(walltime, "dashboard-walltime-logy.png");
}

// The System group of a CUDA run as the trainer logs it (core/train/trainer_step.cpp flush_metrics and
// add_gpu_metrics): throughput, model TFLOP/s and MFU, the GPU's utilisation and memory.
TEST(DashboardScreenshot, SystemChartsOfACudaRun) {
  TempWorkspace ws(R"({"objective":{"loss_type":"sigmoid"},"ganpo":{"enabled":false},"device":"cuda"})");
  std::mt19937 rng(4);
  std::normal_distribution<double> n(0, 1);
  for (int64_t s = 1; s <= 400; ++s) {
    const double t = static_cast<double>(s);
    std::map<std::string, double> m;
    m["loss"] = 0.69 * std::exp(-t / 200) + 0.2 + 0.03 * n(rng);
    m["opo_loss"] = m["loss"];
    m["step_time_s"] = 0.052 + 0.002 * n(rng);
    m["tokens_per_s"] = 16384 / m["step_time_s"];
    m["model_tflops"] = 410 + 15 * n(rng);
    m["mfu"] = m["model_tflops"] / 989.4;
    m["gpu/utilization_pct"] = std::clamp(96 + 2 * n(rng), 0.0, 100.0);
    m["memory/rss_mb"] = 5200 + 0.1 * t;
    m["memory/gpu_used_mb"] = 31000;
    m["memory/cuda_allocated_mb"] = 4100 + 50 * n(rng);
    m["memory/cuda_reserved_mb"] = 30400;
    m["memory/cuda_peak_mb"] = 27800 + 200 * n(rng);
    m["tokens_seen"] = t * 16384;
    m["epoch"] = t / 400.0;
    ws.log_step(s, m);
  }
  StoreWorker worker(QString::fromStdString(ws.path));
  DashboardView view(&worker, ws.run);
  view.resize(1400, 1000);
  view.show();
  ASSERT_TRUE(pump_until([&] { return view.pointsLoaded() == 400 * 14; }, 30000));
  ASSERT_TRUE(pump_until([&] { return no_decimation_pending(view); }, 30000));
  replot_now(view);
  EXPECT_EQ(view.visibleGroups(), (QStringList{"Preference", "System"}));
  // The GPU's memory in one chart (used, allocated, reserved, peak), the process's in another.
  MetricChart* gpu_memory = view.chart("memory/cuda_peak_mb");
  ASSERT_NE(gpu_memory, nullptr);
  for (const char* k : {"memory/gpu_used_mb", "memory/cuda_allocated_mb", "memory/cuda_reserved_mb"})
    EXPECT_EQ(view.chart(k), gpu_memory) << k;
  EXPECT_NE(view.chart("memory/rss_mb"), gpu_memory);
  EXPECT_EQ(view.chart("gpu/utilization_pct")->series("gpu/utilization_pct")->values.size(), 400u);
  EXPECT_GT(pixels_near(gpu_memory->grab().toImage(), gpu_memory->smoothGraph("memory/cuda_peak_mb")->pen().color()), 50)
      << "the peak curve is drawn";
  QTemporaryDir dir;
  const QString full = dir.filePath("dashboard-cuda.png");
  ASSERT_TRUE(view.exportDashboard(full));
  const QImage exported(full);
  EXPECT_TRUE(shows_content(exported, exported.size() / exported.devicePixelRatio()));
  save_for_review(exported, "dashboard-cuda.png");
}

namespace {
// A wheel turn over w; true when w took it (an event w ignores goes on to its parent, the scroll
// area, when it comes from the window system: QApplication::notify).
bool wheel_on(QWidget* w, Qt::KeyboardModifiers modifiers) {
  const QPointF at(w->width() / 2.0, w->height() / 2.0);
  QWheelEvent e(at, w->mapToGlobal(at), QPoint(), QPoint(0, -120), Qt::NoButton, modifiers, Qt::NoScrollPhase, false);
  QCoreApplication::sendEvent(w, &e);
  return e.isAccepted();
}
}  // namespace

// The charts fill the dashboard's width, so the pointer is nearly always over one: the wheel
// scrolls the page (it zoomed the chart under the pointer, and that chart then stopped following
// the live run, as a zoom does); Ctrl + wheel zooms.
TEST(DashboardFeed, TheWheelScrollsTheDashboardAndCtrlWheelZoomsAChart) {
  TempWorkspace ws;
  for (int64_t s = 1; s <= 40; ++s)
    ws.log_step(s, {{"loss", 1.0 / s}, {"opo_loss", 0.7}, {"grad_norm", 1.0}, {"learning_rate", 1e-4},
                    {"tokens_per_s", 5000}, {"step_time_s", 0.2}, {"critic/acc_chosen", 0.6}});
  StoreWorker worker(QString::fromStdString(ws.path));
  DashboardView view(&worker, ws.run);
  view.resize(900, 500);
  view.show();
  ASSERT_TRUE(pump_until([&] { return view.pointsLoaded() == 40 * 7; }));
  auto* scroll = view.findChild<QScrollArea*>();
  ASSERT_NE(scroll, nullptr);
  ASSERT_TRUE(pump_until([&] { return scroll->verticalScrollBar()->maximum() > 0; }));  // laid out
  MetricChart* c = view.chart("loss");
  const QCPRange x = c->xAxis->range();
  EXPECT_FALSE(wheel_on(c, Qt::NoModifier));  // left to the scroll area
  // ... which gets it only where the chart lets an ignored wheel event go up to its parents
  // (QApplication::notify stops at a widget with WA_NoMousePropagation, as QCustomPlot sets it).
  EXPECT_FALSE(c->testAttribute(Qt::WA_NoMousePropagation));
  EXPECT_FALSE(c->userZoomed());
  EXPECT_EQ(c->xAxis->range(), x);
  // What the scroll area then does with it.
  QWheelEvent down(QPointF(10, 10), scroll->viewport()->mapToGlobal(QPointF(10, 10)), QPoint(), QPoint(0, -120),
                   Qt::NoButton, Qt::NoModifier, Qt::NoScrollPhase, false);
  QCoreApplication::sendEvent(scroll->viewport(), &down);
  EXPECT_GT(scroll->verticalScrollBar()->value(), 0);
  EXPECT_TRUE(wheel_on(c, Qt::ControlModifier));
  EXPECT_TRUE(c->userZoomed());
  EXPECT_NE(c->xAxis->range(), x);
}

// UX.md: the health line "reads the curves for the user": when the run is started again from its
// first step (a failed run retried without a checkpoint: the store drops every row), the charts
// are emptied and the line no longer says what the dropped rows said ("loss is NaN since step 30")
// while the new attempt has logged nothing yet.
TEST(DashboardFeed, ARunStartedAgainFromScratchDropsTheHealthLineOfItsOldRows) {
  TempWorkspace ws;
  for (int64_t s = 1; s <= 30; ++s)
    ws.log_step(s, {{"loss", s == 30 ? std::numeric_limits<double>::quiet_NaN() : 1.0 / s}, {"grad_norm", 1.0}});
  StoreWorker worker(QString::fromStdString(ws.path));
  DashboardView view(&worker, ws.run);
  view.setLive(true);
  ASSERT_TRUE(pump_until([&] { return view.healthText().contains("loss is NaN since step 30"); }))
      << view.healthText().toStdString();
  ws.store->rewind(ws.run, -1);  // RunRecorder::on_start of an attempt from step 0
  ASSERT_TRUE(pump_until([&] { return view.chart("loss")->pointCount("loss") == 0 && view.pointsLoaded() == 0; }));
  pump_until([] { return false; }, 500);  // a few more polls: still no rows
  EXPECT_FALSE(view.healthText().contains("NaN")) << view.healthText().toStdString();
  // The new attempt's rows bring the line back from them.
  for (int64_t s = 1; s <= 3; ++s) ws.log_step(s, {{"loss", 1.0 / s}, {"grad_norm", 1.0}});
  ASSERT_TRUE(pump_until([&] { return view.pointsLoaded() == 6; }));
  EXPECT_EQ(view.healthText(), "healthy");
}
