// The Compare tab: config_diff on real configs, the results parser on the shapes the trainer and
// `ganpo eval` write, and a CompareView over runs in a real store (overlay curves with the runs'
// colours and point counts, decimation of a long run, the tables, and every export file).
#include <gtest/gtest.h>

#include <QDir>
#include <QFile>
#include <QImage>
#include <QTableWidget>
#include <QTemporaryDir>

#include <cmath>
#include <set>

#include <nlohmann/json.hpp>

#include "core/config.h"
#include "dashboard_test_support.h"
#include "screenshot_test_support.h"
#include "ui/chart_qcustomplot.h"
#include "ui/compare_view.h"
#include "ui/config_diff.h"
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

QStringList read_lines(const QString& path) {
  QFile f(path);
  if (!f.open(QIODevice::ReadOnly | QIODevice::Text)) return {};
  QStringList lines = QString::fromUtf8(f.readAll()).split('\n');
  if (!lines.isEmpty() && lines.back().isEmpty()) lines.removeLast();
  return lines;
}

}  // namespace

TEST(ConfigDiff, TwoRealConfigsDifferingInBetaAndGanpo) {
  RunConfig a, b;
  b.objective.beta = 0.25;
  b.ganpo.enabled = false;
  const auto rows = config_diff({config_to_json(a), config_to_json(b)});
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0].field, "ganpo.enabled");
  EXPECT_EQ(rows[0].values, (std::vector<std::string>{"true", "false"}));
  EXPECT_EQ(rows[1].field, "objective.beta");
  ASSERT_EQ(rows[1].values.size(), 2u);
  EXPECT_EQ(std::stod(rows[1].values[0]), 0.0);
  EXPECT_EQ(std::stod(rows[1].values[1]), 0.25);
}

TEST(ConfigDiff, IdenticalMissingAndThreeWay) {
  RunConfig a;
  EXPECT_TRUE(config_diff({config_to_json(a), config_to_json(a)}).empty());
  EXPECT_TRUE(config_diff({config_to_json(a)}).empty());
  nlohmann::json x = {{"train", {{"learning_rate", 1}}}, {"name", "x"}};
  nlohmann::json y = {{"train", {{"learning_rate", 1.0}}}, {"name", "x"}, {"extra", {{"k", 2}}}};
  nlohmann::json z = {{"train", {{"learning_rate", 2e-6}}}, {"name", "z"}};
  const auto rows = config_diff({x, y, z});
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[0].field, "extra.k");
  EXPECT_EQ(rows[0].values, (std::vector<std::string>{kAbsent, "2", kAbsent}));
  EXPECT_EQ(rows[1].field, "name");
  EXPECT_EQ(rows[1].values, (std::vector<std::string>{"x", "x", "z"}));
  EXPECT_EQ(rows[2].field, "train.learning_rate");
  // 1 and 1.0 alone would not make a row; the third run's value does.
  EXPECT_TRUE(config_diff({x, {{"train", {{"learning_rate", 1.0}}}, {"name", "x"}}}).empty());
}

// Two seeds beyond 2^53 differ by one: as doubles they are the same number, as settings they are
// not. A field one run's (older) stored config lacks is compared at the default it runs with and
// marked; only where that default differs from the other run's value is it a row.
TEST(ConfigDiff, BigIntegersStayApartAndUnstoredFieldsShowTheirDefault) {
  const nlohmann::json a = {{"seed", 9007199254740993LL}}, b = {{"seed", 9007199254740992LL}};
  const auto seeds = config_diff({a, b});
  ASSERT_EQ(seeds.size(), 1u);
  EXPECT_EQ(seeds[0].values, (std::vector<std::string>{"9007199254740993", "9007199254740992"}));

  RunConfig older, newer;
  newer.objective.rpo_alpha = 0.5;
  nlohmann::json stored_older = config_to_json(older);
  stored_older["objective"].erase("rpo_alpha");    // an older build did not know the key
  stored_older["objective"].erase("simpo_gamma");
  const std::vector<nlohmann::json> stored = {stored_older, config_to_json(newer)};
  const std::vector<nlohmann::json> effective = {config_to_json(config_from_json(stored_older)), config_to_json(newer)};
  const auto rows = config_diff(effective, &stored);
  ASSERT_EQ(rows.size(), 1u) << "simpo_gamma is at its default in both: no row";
  EXPECT_EQ(rows[0].field, "objective.rpo_alpha");
  EXPECT_EQ(rows[0].values[0], std::string("0.0") + kDefaultMark);
  EXPECT_EQ(rows[0].values[1], "0.5");
  // Without the stored configs the raw ones say which run lacks the field.
  EXPECT_EQ(config_diff(stored).size(), 2u);
  // A field an older build stored that this one no longer reads is compared as stored.
  std::vector<nlohmann::json> stored_gone = stored;
  stored_gone[0]["objective"]["old_knob"] = 3;
  const auto gone = config_diff(effective, &stored_gone);
  ASSERT_EQ(gone.size(), 2u);
  EXPECT_EQ(gone[0].field, "objective.old_knob");
  EXPECT_EQ(gone[0].values, (std::vector<std::string>{std::string("3") + kNotReadMark, kAbsent}));
}

TEST(CompareResults, TrainerEvalsMetricsAndJudgeTables) {
  std::vector<EvalRow> evals(3);
  evals[0].id = 1;
  evals[0].checkpoint_step = 100;
  // An older judged evaluation at another temperature: the newest one stands as a whole.
  evals[0].result_json = R"({"eval_loss":0.7,"eval_rewards/accuracies":0.5,
                             "judge":[{"temperature":1.5,"bucket":"all","win_rate":0.4}]})";
  evals[1].id = 2;
  evals[1].checkpoint_step = 200;
  evals[1].result_json = R"({"eval_loss":0.6,"eval_rewards/margins":0.3})";
  evals[2].id = 3;
  evals[2].checkpoint_step = 200;
  evals[2].kind = "judge";
  evals[2].result_json = R"({"judge":[{"temperature":0.7,"bucket":"short","win_rate":0.9},
                                      {"temperature":0.7,"bucket":"all","win_rate":0.6},
                                      {"temperature":1.0,"bucket":"all","win_rate":0.55}]})";
  MetricRow latest;
  latest.key = "eval_rewards/accuracies";
  latest.value = 0.8;
  MetricRow other;
  other.key = "loss";
  other.value = 0.1;
  const auto r = collect_compare_results(evals, {latest, other});
  // The newest evaluation's figures, all of them and only them: no accuracy of step 100 beside the
  // loss of step 200, and none of the trainer's logged metrics (eval rows are the final word).
  EXPECT_DOUBLE_EQ(r.metrics.at("eval_loss"), 0.6);
  EXPECT_EQ(r.metrics.count("eval_rewards/accuracies"), 0u);
  EXPECT_DOUBLE_EQ(r.metrics.at("eval_rewards/margins"), 0.3);
  EXPECT_EQ(r.metrics_step, 200);
  EXPECT_EQ(r.win_rates_step, 200);
  EXPECT_EQ(r.metrics.count("loss"), 0u);
  ASSERT_EQ(r.win_rates.size(), 2u);
  EXPECT_DOUBLE_EQ(r.win_rates.at(0.7), 0.6);
  EXPECT_DOUBLE_EQ(r.win_rates.at(1.0), 0.55);
  EXPECT_TRUE(collect_compare_results({}, {other}).metrics.empty());
  // Logged metrics only, the last evaluation with fewer keys: its figures and its step, never an
  // older evaluation's accuracy under the newer step.
  MetricRow loss_300 = latest, acc_200 = latest;
  loss_300.key = "eval_loss", loss_300.step = 300, loss_300.value = 0.5;
  acc_200.step = 200;
  const auto logged = collect_compare_results({}, {acc_200, loss_300, other});
  EXPECT_EQ(logged.metrics_step, 300);
  EXPECT_DOUBLE_EQ(logged.metrics.at("eval_loss"), 0.5);
  EXPECT_EQ(logged.metrics.count("eval_rewards/accuracies"), 0u);
  // A later evaluation without a judge: the win rates stay those of the judged one, and say so.
  evals.push_back(evals[1]);
  evals.back().id = 4;
  evals.back().checkpoint_step = 300;
  const auto later = collect_compare_results(evals, {});
  EXPECT_EQ(later.metrics_step, 300);
  EXPECT_EQ(later.win_rates_step, 200);
}

TEST(CompareView, OverlaysTablesAndExports) {
  RunConfig a, b;
  b.name = "ganpo-off";
  b.objective.beta = 0.25;
  b.ganpo.enabled = false;
  TempWorkspace ws(config_to_json(a).dump());
  const int64_t run_a = ws.run;
  std::vector<double> va, vb;
  for (int i = 0; i < 120; ++i) va.push_back(0.69 * std::exp(-i / 60.0));
  ws.log_series("loss", 1, va);
  std::vector<double> accuracies(40, 0.75);
  accuracies[10] = std::numeric_limits<double>::infinity();
  accuracies[20] = std::nan("");
  ws.log_series("rewards/accuracies", 1, accuracies);
  ws.log_series("opo_loss", 1, std::vector<double>(10, 0.6));
  ws.store->add_eval(run_a, 120, "eval", "{}", R"({"eval_loss":0.41,"eval_rewards/accuracies":0.83,"eval_rewards/margins":1.2})");
  ws.store->add_eval(run_a, 120, "judge", "{}",
                     R"({"judge":[{"temperature":0.7,"bucket":"all","prompts":64,"win_rate":0.62},
                                  {"temperature":1.3,"bucket":"all","prompts":64,"win_rate":0.57}]})");
  // Run b: many points, so the overlay reads it as run-store buckets.
  const int64_t run_b = ws.store->create_run("ganpo-off", "preference", config_to_json(b).dump());
  ws.run = run_b;
  for (int i = 0; i < 6000; ++i) vb.push_back(0.69 * std::exp(-i / 3000.0) + (i == 3001 ? 2.0 : 0.0));
  ws.log_series("loss", 1, vb);
  ws.log_step(6000, {{"eval_loss", 0.5}});

  StoreWorker store(QString::fromStdString(ws.path));
  CompareView view(&store, {run_a, run_b});
  view.resize(1200, 800);
  view.show();
  ASSERT_TRUE(pump_until([&] { return view.isLoaded(); }));

  EXPECT_EQ(view.metric(), "loss");
  EXPECT_EQ(view.metricKeys(), (QStringList{"eval_loss", "loss", "opo_loss", "rewards/accuracies"}));
  QCustomPlot* plot = view.plot();
  // Per run: raw values (faint) and their smoothing (the legend's line); run b's buckets also as a band.
  EXPECT_EQ(plot->graphCount(), 2 + 4);
  EXPECT_EQ(view.runGraphs(run_a)->smooth->pen().color(), run_color(run_a));
  EXPECT_EQ(view.runGraphs(run_b)->smooth->pen().color(), run_color(run_b));
  EXPECT_EQ(view.runGraphs(run_a)->smooth->name(), QString("#%1 dashboard-test").arg(run_a));
  EXPECT_EQ(view.runGraphs(run_b)->smooth->name(), QString("#%1 ganpo-off").arg(run_b));
  EXPECT_EQ(plot->legend->itemCount(), 2);
  EXPECT_EQ(view.runGraphs(run_a)->raw->dataCount(), 120);
  EXPECT_FALSE(view.isDecimated(run_a));
  EXPECT_TRUE(view.isDecimated(run_b));
  EXPECT_EQ(view.runGraphs(run_a)->band_max, nullptr);
  std::set<int64_t> buckets;
  for (int64_t step = 1; step <= 6000; ++step)
    buckets.insert(RunStore::bucket_of(step, 0, 6000, CompareView::kBuckets));
  EXPECT_EQ(view.runGraphs(run_b)->raw->dataCount(), static_cast<int>(buckets.size()));
  double top = 0;
  for (auto it = view.runGraphs(run_b)->band_max->data()->constBegin(); it != view.runGraphs(run_b)->band_max->data()->constEnd(); ++it)
    top = std::max(top, it->value);
  EXPECT_NEAR(top, vb[3001], 1e-12);  // the spike survives decimation
  // Smoothed as the dashboard smooths (debiased EMA); weight 0 draws the raw values.
  EXPECT_DOUBLE_EQ(view.smoothing(), 0.6);
  EXPECT_NEAR(view.runGraphs(run_a)->smooth->data()->at(1)->value, (0.4 * 0.6 * va[0] + 0.4 * va[1]) / (1 - 0.36), 1e-12);
  view.setSmoothing(0);
  EXPECT_DOUBLE_EQ(view.runGraphs(run_a)->smooth->data()->at(7)->value, va[7]);
  view.setSmoothing(0.6);
  EXPECT_FALSE(view.referenceLine().has_value()) << "the total loss of a GANPO run is no BCE";
  view.setMetric("opo_loss");
  ASSERT_TRUE(pump_until([&] { return view.isLoaded(); }));
  ASSERT_TRUE(view.referenceLine().has_value()) << "both runs are sigmoid DPO: the base loss is a BCE";
  EXPECT_NEAR(*view.referenceLine(), std::log(2.0), 1e-12);
  view.setMetric("loss");
  ASSERT_TRUE(pump_until([&] { return view.isLoaded(); }));
  EXPECT_FALSE(view.referenceLine().has_value());

  // Config diff: exactly the fields that differ, one column per run.
  QTableWidget* diff = view.configTable();
  ASSERT_EQ(diff->columnCount(), 2);
  QStringList fields;
  for (int r = 0; r < diff->rowCount(); ++r) fields << diff->verticalHeaderItem(r)->text();
  EXPECT_EQ(fields, (QStringList{"ganpo.enabled", "name", "objective.beta"}));
  EXPECT_EQ(diff->item(0, 1)->text(), "false");

  // Results: eval rows, the newest eval_ metric, win rates per temperature.
  QTableWidget* results = view.resultsTable();
  ASSERT_EQ(results->rowCount(), 2);
  ASSERT_EQ(results->columnCount(), 8);  // run, 3 figures, their step, 2 win rates, their step
  EXPECT_EQ(results->horizontalHeaderItem(5)->text(), "win T=0.7");
  EXPECT_EQ(results->item(0, 1)->text(), "0.41");
  EXPECT_EQ(results->item(0, 4)->text(), "120");
  EXPECT_EQ(results->item(0, 6)->text(), "0.57");
  EXPECT_EQ(results->item(1, 1)->text(), "0.5");

  view.setMetric("rewards/accuracies");
  ASSERT_TRUE(pump_until([&] { return view.isLoaded(); }));
  EXPECT_EQ(view.runGraphs(run_a)->raw->dataCount(), 40);
  EXPECT_EQ(view.runGraphs(run_b)->raw->dataCount(), 0);
  // +Inf and NaN: gaps in the line, marked in the run's colour; the axis keeps a finite range.
  ASSERT_NE(view.runGraphs(run_a)->marks, nullptr);
  EXPECT_EQ(view.runGraphs(run_b)->marks, nullptr);
  EXPECT_EQ(view.runGraphs(run_a)->marks->dataCount(), 2);
  EXPECT_EQ(view.runGraphs(run_a)->marks->data()->at(0)->key, 11.0);
  EXPECT_EQ(view.runGraphs(run_a)->marks->scatterStyle().pen().color(), run_color(run_a));
  EXPECT_TRUE(std::isfinite(plot->yAxis->range().upper) && plot->yAxis->range().upper < 10);
  EXPECT_TRUE(view.statusText().contains("2 NaN / Inf point(s) marked")) << view.statusText().toStdString();
  view.setMetric("loss");
  ASSERT_TRUE(pump_until([&] { return view.isLoaded(); }));

  // The picture: both runs' curves drawn in their colours, on screen and in the exported image.
  plot->replot();
  const QImage shot = view.grab().toImage();
  EXPECT_TRUE(shows_content(shot, view.size()));
  save_for_review(shot, "compare_view.png");
  QTemporaryDir out;
  const QString overlay_png = out.filePath("compare_overlay.png");
  ASSERT_TRUE(view.exportOverlayImage(overlay_png));
  const QImage overlay_image(overlay_png);
  EXPECT_TRUE(shows_content(overlay_image, overlay_image.size()));
  EXPECT_GE(overlay_image.width(), 900);
  EXPECT_GE(overlay_image.height(), 500);
  for (int64_t run : {run_a, run_b})
    EXPECT_GT(pixels_near(overlay_image, run_color(run), 30), 150) << "run " << run << "'s curve is drawn";
  save_for_review(overlay_image, "compare_overlay.png");

  const QString folder = out.filePath("export");
  ASSERT_TRUE(view.exportAll(folder));
  const QImage exported(folder + "/overlay.png");
  EXPECT_TRUE(shows_content(exported, exported.size()));
  for (int64_t run : {run_a, run_b}) EXPECT_GT(pixels_near(exported, run_color(run), 30), 150) << "run " << run;
  QFile pdf(folder + "/overlay.pdf");
  ASSERT_TRUE(pdf.open(QIODevice::ReadOnly));
  EXPECT_EQ(pdf.read(4), QByteArray("%PDF"));
  const QStringList overlay = read_lines(folder + "/overlay.csv");
  ASSERT_EQ(overlay.size(), 1 + 120 + static_cast<int>(3 * buckets.size()));
  EXPECT_EQ(overlay[0], "run_id,run_name,step,wall_time_s,tokens_seen,value,kind");
  const QStringList first = overlay[1].split(',');
  ASSERT_EQ(first.size(), 7);
  EXPECT_EQ(first[0].toLongLong(), run_a);
  EXPECT_EQ(first[2], "1");
  EXPECT_EQ(first[3], "0") << "the run's first point";
  EXPECT_EQ(first[4], "512");
  EXPECT_EQ(overlay[2].split(',')[3], "0.5") << "half a second a step, as logged";
  EXPECT_NEAR(first[5].toDouble(), 0.69, 1e-5);
  EXPECT_EQ(first[6], "value");
  EXPECT_TRUE(overlay.back().endsWith(",bucket_mean")) << overlay.back().toStdString() << " (the decimated run)";
  EXPECT_TRUE(overlay[overlay.size() - 2].endsWith(",bucket_max"));
  const QStringList config_csv = read_lines(folder + "/config_diff.csv");
  ASSERT_EQ(config_csv.size(), 4);
  EXPECT_EQ(config_csv[0], QString("field,#%1 dashboard-test,#%2 ganpo-off").arg(run_a).arg(run_b));
  EXPECT_EQ(config_csv[1], "ganpo.enabled,true,false");
  const QStringList results_csv = read_lines(folder + "/results.csv");
  ASSERT_EQ(results_csv.size(), 3);
  EXPECT_EQ(results_csv[0], "run_id,run_name,eval_loss,eval_rewards/accuracies,eval_rewards/margins,eval_step,"
                            "win_rate@0.7,win_rate@1.3,judge_step");
  EXPECT_EQ(results_csv[1], QString("%1,dashboard-test,0.41,0.83,1.2,120,0.62,0.57,120").arg(run_a));
  EXPECT_EQ(results_csv[2], QString("%1,ganpo-off,0.5,,,6000,,,").arg(run_b));
  EXPECT_EQ(QDir(folder).entryList(QDir::Files).size(), 5);  // no .part files left behind

  // Zoomed in to 11 steps of run b (drawn from buckets): those steps are read again, every one,
  // and the view stays where the user put it; Reset zoom reads every step again.
  view.setStepRange(2995, 3005);
  ASSERT_TRUE(pump_until([&] { return !view.zoomPending() && !view.isDecimated(run_b); }));
  EXPECT_EQ(view.stepsRead(run_b), (std::pair<int64_t, int64_t>{2995, 3005}));
  EXPECT_EQ(view.runGraphs(run_b)->raw->dataCount(), 11);
  EXPECT_NEAR(view.runGraphs(run_b)->raw->data()->at(7)->value, vb[3001], 1e-12) << "step 3002, the spike, raw";
  // The smoothed line goes on from the whole run's rather than starting again at the first step
  // in view (where, debiased, it would equal the raw value exactly).
  const double smooth_first = view.runGraphs(run_b)->smooth->data()->at(0)->value;
  const double raw_first = view.runGraphs(run_b)->raw->data()->at(0)->value;
  EXPECT_NE(smooth_first, raw_first);
  EXPECT_LT(std::fabs(smooth_first - raw_first), 1e-3);
  EXPECT_EQ(view.stepsRead(run_a), (std::pair<int64_t, int64_t>{0, 120})) << "run a had every point: not read again";
  EXPECT_DOUBLE_EQ(plot->xAxis->range().lower, 2995);
  EXPECT_DOUBLE_EQ(plot->xAxis->range().upper, 3005);
  view.resetZoom();
  ASSERT_TRUE(pump_until([&] { return view.isLoaded() && view.isDecimated(run_b); }));
  EXPECT_EQ(view.stepsRead(run_b), (std::pair<int64_t, int64_t>{0, 6000}));
  EXPECT_GE(plot->xAxis->range().upper, 5990);  // (the last bucket drawn at its middle step)
}

// A stored config of the wrong shape (a hostile or damaged workspace): Compare still loads, draws,
// and diffs what was stored; no ln 2 line is claimed for a run whose loss it cannot read.
TEST(CompareView, AConfigOfTheWrongShapeNeitherThrowsNorClaimsALn2Line) {
  TempWorkspace ws(R"({"stage":5,"ganpo":{"enabled":"yes"},"objective":{"loss_type":7,"rpo_alpha":"x"}})");
  const int64_t bad = ws.run;
  ws.log_series("opo_loss", 1, std::vector<double>(10, 0.6));
  const int64_t good = ws.store->create_run("good", "preference", config_to_json(RunConfig{}).dump());
  ws.run = good;
  ws.log_series("opo_loss", 1, std::vector<double>(10, 0.5));
  StoreWorker store(QString::fromStdString(ws.path));
  CompareView view(&store, {bad, good});
  ASSERT_TRUE(pump_until([&] { return view.isLoaded(); }));
  EXPECT_EQ(view.metric(), "opo_loss");
  EXPECT_EQ(view.runGraphs(bad)->raw->dataCount(), 10);
  EXPECT_FALSE(view.referenceLine().has_value());
  EXPECT_FALSE(view.configDiff().empty());
}

// A long noisy run drawn from buckets: the line is each bucket's mean (so smoothing it is smoothing
// the run, not one point per bucket), NaN points are counted one by one, runs whose run-list
// colours repeat (ids ten apart) get shades of their own, a long run name does not push the
// tables' other columns out of view, and runs that log more are read again while the view stays.
TEST(CompareView, LongRunsAreDrawnFromBucketMeansAndTheViewFollowsRunsThatLogMore) {
  TempWorkspace ws(config_to_json(RunConfig{}).dump());
  const int64_t first = ws.run;
  ws.log_series("loss", 1, std::vector<double>(50, 0.5));
  int64_t tenth_later = first;
  for (int i = 0; i < 10; ++i)
    tenth_later = ws.store->create_run(std::string(120, 'n') + std::to_string(i), "preference",
                                       config_to_json(RunConfig{}).dump());
  ASSERT_EQ(tenth_later, first + 10);
  ws.run = tenth_later;
  std::vector<double> noisy;
  uint32_t x = 12345;
  for (int i = 0; i < 9000; ++i) {
    x = x * 1664525u + 1013904223u;  // (a fixed sequence: the test is the same on every machine)
    noisy.push_back(i >= 8000 ? std::nan("") : 1.0 + (static_cast<double>(x >> 8) / 16777216.0 - 0.5));
  }
  ws.log_series("loss", 1, noisy);

  StoreWorker store(QString::fromStdString(ws.path));
  CompareView view(&store, {first, tenth_later});
  view.setLiveInterval(0);
  view.resize(1000, 700);
  view.show();
  ASSERT_TRUE(pump_until([&] { return view.isLoaded(); }));
  ASSERT_TRUE(view.isDecimated(tenth_later));

  // Each drawn point of the decimated run is the mean of its bucket's finite values.
  const QCPGraph* raw = view.runGraphs(tenth_later)->raw;
  const auto buckets = ws.store->decimated_series(tenth_later, "loss", 0, 9000, CompareView::kBuckets);
  size_t finite_buckets = 0;
  for (const auto& b : buckets) {
    if (b.count == 0) continue;
    double sum = 0;
    for (int64_t step = b.first_step; step <= b.last_step; ++step)
      if (step <= 8000) sum += noisy[static_cast<size_t>(step - 1)];
    const double mean = sum / static_cast<double>(b.count);
    ASSERT_LT(finite_buckets, static_cast<size_t>(raw->dataCount()));
    EXPECT_NEAR(raw->data()->at(static_cast<int>(finite_buckets))->value, mean, 1e-9) << "bucket at " << b.first_step;
    ++finite_buckets;
  }
  EXPECT_GT(finite_buckets, 1000u);
  EXPECT_TRUE(view.statusText().contains("1000 NaN / Inf point(s) marked")) << view.statusText().toStdString();
  // The NaN crosses follow the y range a wheel zoom sets.
  view.plot()->yAxis->setRange(0, 100);
  ASSERT_NE(view.runGraphs(tenth_later)->marks, nullptr);
  EXPECT_DOUBLE_EQ(view.runGraphs(tenth_later)->marks->data()->begin()->value, 96);

  // Colours: run-list colours repeat every ten ids; here the later run has a shade of its own.
  EXPECT_EQ(run_color(first), run_color(tenth_later));
  EXPECT_EQ(view.runColor(first), run_color(first));
  EXPECT_NE(view.runColor(tenth_later), view.runColor(first));
  EXPECT_EQ(view.runGraphs(tenth_later)->smooth->pen().color(), view.runColor(tenth_later));

  // The tables: a 120-character name is elided, and said whole in its tooltip.
  QTableWidget* results = view.resultsTable();
  EXPECT_LE(results->columnWidth(0), 220);
  EXPECT_EQ(results->item(1, 0)->toolTip().toStdString().find(std::string(120, 'n')), 4u) << "\"#11 nnn...\"";
  // The legend cuts it at 40 characters (a study's names covered the plot).
  const QString legend = view.runGraphs(tenth_later)->smooth->name();
  EXPECT_EQ(legend.size(), 40);
  EXPECT_TRUE(legend.startsWith("#11 nnn")) << legend.toStdString();

  // More steps logged by the first run: read again on the poll's word, the zoom kept.
  view.setStepRange(10, 40);
  ASSERT_TRUE(pump_until([&] { return !view.zoomPending(); }));
  // Zoomed, the CSV still holds every run's whole range (not the steps in view for some runs).
  QTemporaryDir dir;
  ASSERT_TRUE(view.exportOverlayCsv(dir.filePath("o.csv")));
  const QStringList csv = read_lines(dir.filePath("o.csv"));
  ASSERT_FALSE(csv.isEmpty());
  EXPECT_TRUE(csv.back().startsWith(QString::number(tenth_later) + ",")) << csv.back().toStdString();
  EXPECT_TRUE(csv.back().endsWith(",bucket_mean")) << csv.back().toStdString();
  EXPECT_GT(csv.back().section(',', 2, 2).toLongLong(), 7000) << csv.back().toStdString();

  ws.run = first;
  ws.log_series("loss", 51, std::vector<double>(30, 0.25));
  view.runsChanged({first});
  ASSERT_TRUE(pump_until([&] { return view.isLoaded() && view.stepsRead(first).second >= 80 && !view.zoomPending(); }))
      << "steps read: " << view.stepsRead(first).second;
  EXPECT_DOUBLE_EQ(view.plot()->xAxis->range().lower, 10) << "the view stays where the user put it";
  EXPECT_DOUBLE_EQ(view.plot()->xAxis->range().upper, 40);
  view.resetZoom();
  ASSERT_TRUE(pump_until([&] { return view.isLoaded() && !view.zoomPending() && view.isDecimated(tenth_later); }));
  EXPECT_GE(view.plot()->xAxis->range().upper, 7990) << "every finite step again";
  EXPECT_TRUE(view.statusText().contains("read at")) << view.statusText().toStdString();
}

// A study's many runs: the legend would cover the plot, so it is hidden (the Legend button shows
// it) and hovering names each run with its value, highest first. The tab stays narrow enough
// that the run list beside it keeps its width (four export buttons and the status line in the
// controls row made it over 1,200 px wide).
TEST(CompareView, ManyRunsHideTheLegendAndHoverNamesEachRun) {
  TempWorkspace ws(config_to_json(RunConfig{}).dump());
  std::vector<int64_t> ids{ws.run};
  for (int i = 1; i < 12; ++i)
    ids.push_back(ws.store->create_run(std::string(60, 's') + std::to_string(i), "preference",
                                       config_to_json(RunConfig{}).dump()));
  for (size_t i = 0; i < ids.size(); ++i) {
    ws.run = ids[i];
    // Run i logs 0.1 * i every other step, except the last, logged at every step.
    std::vector<double> values(i + 1 == ids.size() ? 40 : 20, 0.1 * static_cast<double>(i));
    if (i + 1 == ids.size()) {
      ws.log_series("loss", 1, values);
    } else {
      for (size_t k = 0; k < values.size(); ++k) ws.log_series("loss", static_cast<int64_t>(2 * k + 2), {values[k]});
    }
  }
  StoreWorker store(QString::fromStdString(ws.path));
  CompareView view(&store, ids);
  view.setLiveInterval(0);
  view.resize(1000, 700);
  view.show();
  ASSERT_TRUE(pump_until([&] { return view.isLoaded(); }));
  EXPECT_FALSE(view.legendVisible());
  // The window's first layout gives the tabs 840 px beside a 560 px run list.
  EXPECT_LE(view.minimumSizeHint().width(), 840) << "the run list beside the tab keeps its width";

  const QStringList lines = view.tooltipAt(9.4).split('\n');
  ASSERT_EQ(lines.size(), 13) << view.tooltipAt(9.4).toStdString();
  EXPECT_EQ(lines[0], "step 10");
  EXPECT_TRUE(lines[1].startsWith(QString("#%1 sss").arg(ids.back()))) << lines[1].toStdString();
  EXPECT_TRUE(lines[1].contains(": 1.1  (smoothed 1.1)  at step 9")) << lines[1].toStdString();
  EXPECT_TRUE(lines[1].contains(QString(60, 's') + "11: ")) << "named whole, unlike the legend: " << lines[1].toStdString();
  EXPECT_TRUE(lines[12].startsWith(QString("#%1 ").arg(ids.front()))) << lines[12].toStdString();
  EXPECT_TRUE(lines[12].endsWith(": 0  (smoothed 0)")) << lines[12].toStdString();
  view.setLegendVisible(true);
  EXPECT_TRUE(view.legendVisible());
  view.plot()->replot();
  save_for_review(view.grab().toImage(), "compare_many_runs.png");

  CompareView two(&store, {ids[0], ids[1]});
  two.show();
  ASSERT_TRUE(pump_until([&] { return two.isLoaded(); }));
  EXPECT_TRUE(two.legendVisible());
}

// x by wall time or tokens seen: each run placed by its own rows' clock (wall time from its first
// point), a run without tokens seen left out and said, and a zoom read again over each run's own
// steps in the x range.
TEST(CompareView, WallTimeAndTokensSeenPlaceEachRunByItsOwnClock) {
  TempWorkspace ws(config_to_json(RunConfig{}).dump());
  const auto log = [&](int64_t run, int64_t steps, double wall0, double wall_per_step, std::optional<double> tokens_per_step) {
    std::vector<MetricRow> rows;
    for (int64_t step = 1; step <= steps; ++step) {
      MetricRow r;
      r.run_id = run, r.step = step, r.key = "loss", r.value = static_cast<double>(step % 7);
      r.wall_time = wall0 + wall_per_step * static_cast<double>(step);
      if (tokens_per_step) r.tokens_seen = *tokens_per_step * static_cast<double>(step);
      rows.push_back(r);
    }
    ws.store->append_metrics(rows);
  };
  const std::string config = config_to_json(RunConfig{}).dump();
  const int64_t a = ws.run, b = ws.store->create_run("b", "preference", config),
                long_run = ws.store->create_run("long", "preference", config),
                no_tokens = ws.store->create_run("no tokens", "preference", config);
  log(a, 100, 1000, 2, 100);          // 2 s a step, 100 tokens a step
  log(b, 100, 5000, 1, 400);          // started later, twice as fast, 4x the batch
  log(long_run, 9000, 100, 1, 10);    // read as buckets
  log(no_tokens, 10, 100, 1, std::nullopt);

  StoreWorker store(QString::fromStdString(ws.path));
  CompareView view(&store, {a, b, long_run, no_tokens});
  view.setLiveInterval(0);
  view.resize(1000, 700);
  view.show();
  ASSERT_TRUE(pump_until([&] { return view.isLoaded(); }));
  ASSERT_TRUE(view.isDecimated(long_run));
  const auto x_at = [&](int64_t run, int point) { return view.runGraphs(run)->smooth->data()->at(point)->key; };
  EXPECT_DOUBLE_EQ(x_at(a, 9), 10);

  view.setXAxisMode(XAxisMode::WallTime);
  EXPECT_EQ(view.plot()->xAxis->label(), "wall time (h:m:s)");
  EXPECT_DOUBLE_EQ(x_at(a, 0), 0) << "from each run's first point";
  EXPECT_DOUBLE_EQ(x_at(a, 9), 18);
  EXPECT_DOUBLE_EQ(x_at(b, 9), 9);
  const QStringList lines = view.tooltipAt(18).split('\n');
  ASSERT_GE(lines.size(), 3);
  EXPECT_EQ(lines[0], "0:00:18 since each run's first point");
  EXPECT_TRUE(view.tooltipAt(18).contains(QString("#%1 b: ").arg(b))) << view.tooltipAt(18).toStdString();
  EXPECT_TRUE(view.tooltipAt(18).contains("at step 19")) << "b, twice as fast" << view.tooltipAt(18).toStdString();

  view.setXAxisMode(XAxisMode::TokensSeen);
  EXPECT_DOUBLE_EQ(x_at(a, 9), 1000);
  EXPECT_DOUBLE_EQ(x_at(b, 9), 4000);
  EXPECT_EQ(view.runGraphs(no_tokens)->smooth->dataCount(), 0);
  EXPECT_TRUE(view.statusText().contains("1 not drawn: no tokens seen logged")) << view.statusText().toStdString();
  // A zoom to 10,000-20,000 tokens reads the long run's steps 1,000-2,000 (10 tokens a step).
  view.setStepRange(10000, 20000);
  ASSERT_TRUE(pump_until([&] { return !view.zoomPending() && view.stepsRead(long_run).first > 0; }));
  EXPECT_EQ(view.stepsRead(long_run), (std::pair<int64_t, int64_t>{1000, 2000}));
  EXPECT_FALSE(view.isDecimated(long_run)) << "1,001 points: drawn raw";
  EXPECT_DOUBLE_EQ(view.runGraphs(long_run)->smooth->data()->at(0)->key, 10000);

  view.setXAxisMode(XAxisMode::Step);
  EXPECT_DOUBLE_EQ(x_at(a, 9), 10);
  EXPECT_TRUE(view.isDecimated(long_run)) << "the whole run again";
  EXPECT_EQ(view.runGraphs(no_tokens)->smooth->dataCount(), 10);

  // A zoom asked for in one mode and not yet read is dropped by a switch to another (its x range
  // would be read as the other's units).
  view.setXAxisMode(XAxisMode::TokensSeen);
  view.setStepRange(10000, 20000);
  view.setXAxisMode(XAxisMode::Step);
  ASSERT_TRUE(pump_until([&] { return !view.zoomPending(); }));
  EXPECT_TRUE(view.isDecimated(long_run));
  EXPECT_EQ(view.stepsRead(long_run).first, 0);
}

// The config diff reads each config as this build does even where one stored a field since
// removed (marked, not every run compared as stored), and a deleted run is a column that says so
// rather than a config whose every field differs.
TEST(CompareView, ARemovedFieldIsMarkedAndADeletedRunAddsNoRows) {
  nlohmann::json old_config = config_to_json(RunConfig{});
  old_config["objective"]["old_knob"] = 3;
  old_config["objective"].erase("beta");  // stored before beta existed: read at its default
  TempWorkspace ws(old_config.dump());
  const int64_t old_run = ws.run;
  ws.log_series("loss", 1, std::vector<double>(5, 0.5));
  RunConfig changed;
  changed.objective.beta = 0.3;
  const int64_t new_run = ws.store->create_run("new", "preference", config_to_json(changed).dump());
  const int64_t gone = ws.store->create_run("gone", "preference", config_to_json(changed).dump());
  ws.store->delete_run(gone);

  StoreWorker store(QString::fromStdString(ws.path));
  CompareView view(&store, {old_run, new_run, gone});
  ASSERT_TRUE(pump_until([&] { return view.isLoaded(); }));
  const auto& diff = view.configDiff();
  ASSERT_EQ(diff.size(), 2u);
  EXPECT_EQ(diff[0].field, "objective.beta");
  EXPECT_EQ(diff[0].values, (std::vector<std::string>{config_value_text(config_to_json(RunConfig{})["objective"]["beta"]) + kDefaultMark, "0.3", "(run deleted)"}));
  EXPECT_EQ(diff[1].field, "objective.old_knob");
  EXPECT_EQ(diff[1].values, (std::vector<std::string>{std::string("3") + kNotReadMark, kAbsent, "(run deleted)"}));
}
