// The Study tab over a real workspace: a study whose runs stored typed evaluation reports shows
// its queue, the arms with their intervals, the GANPO-on against GANPO-off verdicts and the win
// rate bands; Pause reaches the store; the export writes the HTML, CSV and JSON reports.
#include <gtest/gtest.h>
#include <signal.h>

#include <QFile>
#include <QLabel>
#include <QTableWidget>
#include <QPushButton>
#include <QTemporaryDir>

#include <nlohmann/json.hpp>

#include "core/eval/eval_report.h"
#include "core/study_spec.h"
#include "dashboard_test_support.h"
#include "screenshot_test_support.h"
#include "db/study_queue.h"
#include <QTabWidget>

#include "ui/chart_qcustomplot.h"
#include "ui/store_worker.h"
#include "ui/study_view.h"

using namespace ganpo;
using namespace ganpo::ui;
using ganpo::ui::testing::pump_until;

TEST(StudyView, ShowsTheQueueTheArmsAndTheVerdictsAndExports) {
  QTemporaryDir dir;
  const std::string db = dir.filePath("workspace.sqlite").toStdString();
  int64_t study = 0;
  {
    RunStore store = RunStore::open(db);
    const std::string text = "name = \"tab\"\nseeds = [1, 2, 3]\n[base]\n[grid]\n\"ganpo.enabled\" = [false, true]\n"
                             "\"data.label_noise\" = [0.2]\n";
    study = create_study(store, "tab", text, expand_study(study_from_toml(text, ".", "s"), dir.filePath("o").toStdString()));
    const auto ids = study_run_ids(store, study);  // off x3, on x3
    for (size_t i = 0; i + 1 < ids.size(); ++i) {  // the last GANPO run is still queued
      const bool on = i >= 3;
      JudgeEvaluation e;
      e.prompts_digest = digest_of_prompts({"a", "b"});
      e.buckets = {"short", "long"};
      for (double t : {0.7, 1.3}) {
        JudgeSamples s;
        s.temperature = t;
        s.policy_score = on ? std::vector<double>{1.0, 0.75} : std::vector<double>{0.5, 0.25};
        s.reference_score = {0.5, 0.5};
        s.policy_length = {4, 5};
        s.reference_length = {4, 4};
        e.samples.push_back(s);
      }
      e.summarize();
      EvalReport r = EvalReport::of({{"eval_rewards/accuracies", on ? 0.8 + 0.01 * static_cast<double>(i) : 0.6}});
      r.judge = e;
      store.set_status(ids[i], RunStatus::completed);
      store.add_eval(ids[i], 10, "eval", "{}", to_json(r).dump());
      MetricRow step_time;
      step_time.run_id = ids[i];
      step_time.step = 10;
      step_time.key = "step_time_s";
      step_time.value = on ? 0.30 : 0.20;
      store.append_metrics({step_time});
    }
  }
  StoreWorker worker(QString::fromStdString(db));
  StudyView view(&worker, study, QStringLiteral(GANPO_CLI_PATH));
  view.resize(1200, 800);
  view.show();
  ASSERT_TRUE(pump_until([&] { return view.isLoaded(); }));
  EXPECT_TRUE(view.summary()->text().contains("6 runs: 5 completed, 0 running, 1 queued")) << view.summary()->text().toStdString();
  EXPECT_EQ(view.runsTable()->rowCount(), 6);
  EXPECT_EQ(view.runsTable()->item(5, 1)->text(), "queued");

  QTableWidget* arms = view.armsTable();
  ASSERT_EQ(arms->rowCount(), 2);
  EXPECT_EQ(arms->item(0, 0)->text(), "ganpo.enabled=false, data.label_noise=0.2");
  EXPECT_EQ(arms->item(1, 1)->text(), "2 (1 queued)");
  EXPECT_EQ(arms->horizontalHeaderItem(2)->text(), "Pref. accuracy");
  EXPECT_EQ(arms->item(0, 2)->text(), "0.600 [0.600, 0.600]");
  EXPECT_EQ(arms->horizontalHeaderItem(4)->text(), "Win @ 0.7");
  // GANPO off: {0.5, 0.25} against 0.5 -> a tie and a loss = 0.25; on: two wins = 1.
  EXPECT_EQ(arms->item(0, 4)->text(), "0.250 [0.250, 0.250]");
  EXPECT_EQ(arms->item(1, 4)->text(), "1.000 [1.000, 1.000]");

  QTableWidget* diffs = view.differencesTable();
  bool head_to_head = false;
  for (int r = 0; r < diffs->rowCount(); ++r)
    if (diffs->item(r, 1)->text() == "judge/win_rate_vs_base@1.3") {
      head_to_head = true;
      EXPECT_EQ(diffs->item(r, 2)->text(), "1.000 [1.000, 1.000]");
      EXPECT_EQ(diffs->item(r, 3)->text(), "GANPO judged better");
    }
  EXPECT_TRUE(head_to_head);
  auto* multiplicity = view.findChild<QLabel*>("study.multiplicity");
  ASSERT_NE(multiplicity, nullptr);
  EXPECT_FALSE(multiplicity->isHidden());
  EXPECT_NE(multiplicity->text().indexOf("tested at 95 % each"), -1) << multiplicity->text().toStdString();
  EXPECT_EQ(view.plot()->graphCount(), 6);  // per arm: lower edge, upper edge (band), mean line
  // The legends lie outside the axes: one entry per arm inside them would cover the lines and
  // bands they name.
  for (QCustomPlot* p : {view.plot(), view.noisePlot()}) {
    p->replot();
    EXPECT_TRUE(p->legend->visible());
    EXPECT_FALSE(p->legend->outerRect().intersects(p->axisRect()->rect()))
        << "legend " << p->legend->outerRect().top() << ".." << p->legend->outerRect().bottom() << ", axes "
        << p->axisRect()->rect().top() << ".." << p->axisRect()->rect().bottom();
  }
  // Accuracy against label noise: one point per arm at the grid's 0.2, with error bars (an arm
  // the grid gives no noise value is left out, as in the HTML report).
  ASSERT_EQ(view.noisePlot()->graphCount(), 2);
  EXPECT_EQ(view.noisePlot()->plottableCount(), 4);
  EXPECT_NEAR(view.noisePlot()->graph(1)->data()->at(0)->key, 0.2, 1e-12);
  EXPECT_NEAR(view.noisePlot()->graph(1)->data()->at(0)->value, (0.83 + 0.84) / 2, 1e-9);
  // Step time per arm: one bar each, with error bars.
  auto* bars = qobject_cast<QCPBars*>(view.timePlot()->plottable(0));
  ASSERT_NE(bars, nullptr);
  ASSERT_EQ(bars->data()->size(), 2);
  EXPECT_NEAR(bars->data()->at(0)->value, 0.20, 1e-9);
  EXPECT_NEAR(bars->data()->at(1)->value, 0.30, 1e-9);

  std::vector<int64_t> activated;
  QObject::connect(&view, &StudyView::armActivated, [&](std::vector<int64_t> ids) { activated = ids; });
  Q_EMIT arms->cellDoubleClicked(1, 0);
  EXPECT_EQ(activated.size(), 2u);

  QTemporaryDir out;
  QString why;
  EXPECT_TRUE(view.existingExportFiles(out.path()).isEmpty());
  ASSERT_TRUE(view.exportReport(out.path(), &why)) << why.toStdString();
  // Exported again into the same folder, the button asks before it replaces these.
  EXPECT_EQ(view.existingExportFiles(out.path()).size(), 3);
  QFile html(out.filePath(QStringLiteral("study-%1.html").arg(study)));
  ASSERT_TRUE(html.open(QIODevice::ReadOnly));
  EXPECT_TRUE(html.readAll().contains("<svg"));
  EXPECT_TRUE(QFile::exists(out.filePath(QStringLiteral("study-%1.csv").arg(study))));
  EXPECT_TRUE(QFile::exists(out.filePath(QStringLiteral("study-%1.json").arg(study))));

  // Pause reaches the store; the buttons follow.
  QMetaObject::invokeMethod(view.findChildren<QPushButton*>().at(1), "click");
  ASSERT_TRUE(pump_until([&] {
    RunStore s = RunStore::open(db);
    return find_study(s, study)->state == StudyState::paused;
  }));
}

// One completed seed per arm (a study just started, or seeds = [1]): the tab shows the mean with
// no interval, as the HTML report does, and gives no verdict, rather than "x [x, x]" beside
// "interval contains 0".
TEST(StudyView, OneSeedShowsNoIntervalAndNoVerdict) {
  QTemporaryDir dir;
  const std::string db = dir.filePath("workspace.sqlite").toStdString();
  int64_t study = 0;
  {
    RunStore store = RunStore::open(db);
    const std::string text = "name = \"one\"\nseeds = [1]\n[base]\n[grid]\n\"ganpo.enabled\" = [false, true]\n";
    study = create_study(store, "one", text, expand_study(study_from_toml(text, ".", "s"), dir.filePath("o").toStdString()));
    const auto ids = study_run_ids(store, study);
    ASSERT_EQ(ids.size(), 2u);
    for (size_t i = 0; i < ids.size(); ++i) {
      store.set_status(ids[i], RunStatus::completed);
      store.add_eval(ids[i], 10, "eval", "{}",
                     to_json(EvalReport::of({{"eval_rewards/accuracies", i == 0 ? 0.6 : 0.7}})).dump());
    }
  }
  StoreWorker worker(QString::fromStdString(db));
  StudyView view(&worker, study, QStringLiteral(GANPO_CLI_PATH));
  view.show();
  ASSERT_TRUE(pump_until([&] { return view.isLoaded(); }));
  ASSERT_EQ(view.armsTable()->rowCount(), 2);
  EXPECT_EQ(view.armsTable()->item(0, 2)->text().toStdString(), "0.600 (n=1, no interval)");
  QTableWidget* diffs = view.differencesTable();
  ASSERT_GE(diffs->rowCount(), 1);
  EXPECT_EQ(diffs->item(0, 1)->text().toStdString(), "eval_rewards/accuracies");
  EXPECT_EQ(diffs->item(0, 2)->text().toStdString(), "0.100 (n=1, no interval)");
  EXPECT_EQ(diffs->item(0, 3)->text().toStdString(), "no verdict from one seed (no interval)");
}

// The README's Study screenshot: $GANPO_SCREENSHOT_DIR/study.png of study
// $GANPO_SCREENSHOT_STUDY (default 1) in the workspace $GANPO_SCREENSHOT_STUDY_DB.
TEST(StudyView, Screenshot) {
  const QString out_dir = qEnvironmentVariable("GANPO_SCREENSHOT_DIR");
  const QString db = qEnvironmentVariable("GANPO_SCREENSHOT_STUDY_DB");
  if (out_dir.isEmpty() || db.isEmpty()) GTEST_SKIP() << "set GANPO_SCREENSHOT_DIR and GANPO_SCREENSHOT_STUDY_DB";
  StoreWorker worker(db);
  StudyView view(&worker,
                 qEnvironmentVariableIntValue("GANPO_SCREENSHOT_STUDY") > 0 ? qEnvironmentVariableIntValue("GANPO_SCREENSHOT_STUDY") : 1,
                 QStringLiteral(GANPO_CLI_PATH));
  view.resize(1400, 900);
  view.show();
  ASSERT_TRUE(pump_until([&] { return view.isLoaded(); }, 60000));
  EXPECT_GT(view.runsTable()->rowCount(), 0) << "the study has runs to show";
  EXPECT_GT(view.armsTable()->rowCount(), 0);
  // Queued replots run now, so each grab shows the loaded data.
  const auto grab_shown = [&] {
    QCoreApplication::processEvents();
    for (QCustomPlot* p : {view.plot(), view.noisePlot(), view.timePlot()}) p->replot();
    const QImage shot = view.grab().toImage();
    EXPECT_TRUE(ganpo::ui::testing::shows_content(shot, view.size()));
    return shot;
  };
  ganpo::ui::testing::save_for_review(grab_shown(), "study.png");
  // The other two plots, as a person switching tabs sees them.
  auto* plots = view.findChild<QTabWidget*>();
  ASSERT_NE(plots, nullptr);
  for (int i = 1; i < plots->count(); ++i) {
    plots->setCurrentIndex(i);
    EXPECT_TRUE(plots->widget(i)->isVisible());
    ganpo::ui::testing::save_for_review(grab_shown(), QStringLiteral("study_plot_%1.png").arg(i));
  }
}

// "Run queue" drives a real study to its end from the window: a stage and two arms of two steps.
TEST(StudyView, RunQueueFinishesTheStudyWithTheSameDriverAsTheTerminal) {
  QTemporaryDir dir;
  const std::string db = dir.filePath("workspace.sqlite").toStdString();
  const std::string text = R"(name = "window"
[base]
[base.model]
preset = "tiny"
[base.data]
builtin_train_size = 32
builtin_eval_size = 8
[base.train]
max_steps = 2
per_device_train_batch_size = 4
num_threads = 1
[base.sampling]
num_prompts = 1
max_new_tokens = 4
[base.eval]
num_prompts = 3
temperatures = "1.0"
[grid]
"ganpo.enabled" = [false, true]
[[stage]]
name = "sft"
set = { stage = "sft" }
)";
  int64_t study = 0;
  {
    RunStore store = RunStore::open(db);
    study = create_study(store, "window", text, expand_study(study_from_toml(text, ".", "s"), dir.filePath("o").toStdString()));
  }
  StoreWorker worker(QString::fromStdString(db));
  StudyView view(&worker, study, QStringLiteral(GANPO_CLI_PATH));
  view.show();
  ASSERT_TRUE(pump_until([&] { return view.isLoaded(); }));
  auto* button = view.findChild<QPushButton*>(QStringLiteral("study.runQueue"));
  ASSERT_TRUE(button->isEnabled());
  QString why;
  ASSERT_TRUE(view.runQueue(&why)) << why.toStdString();
  ASSERT_TRUE(pump_until(
      [&] {
        RunStore s = RunStore::open(db);
        return study_counts(s, study).completed == 3;
      },
      180000));
  view.refresh();
  ASSERT_TRUE(pump_until([&] { return view.armsTable()->rowCount() == 2 && view.armsTable()->item(1, 1)->text() == "1"; }));
  EXPECT_FALSE(view.armsTable()->item(1, 2)->text().isEmpty()) << "the arm's held-out accuracy";
  // The driver's own account, once it has seen nothing left and exited.
  EXPECT_TRUE(pump_until([&] {
    QFile log(dir.filePath(QStringLiteral("logs/study-%1.log").arg(study)));
    return log.open(QIODevice::ReadOnly) && log.readAll().contains("3 completed");
  }));
}

// Resume after Cancel: the cancelled study's driver has ended, so Resume starts the queue again
// (the runs were queued again and nothing started them until Run queue was pressed too).
TEST(StudyView, ResumeAfterCancelStartsTheQueue) {
  QTemporaryDir dir;
  const std::string db = dir.filePath("workspace.sqlite").toStdString();
  int64_t study = 0;
  {
    RunStore store = RunStore::open(db);
    const std::string text = "name = \"again\"\nseeds = [1]\n[base]\n[grid]\n\"ganpo.enabled\" = [false, true]\n";
    study = create_study(store, "again", text, expand_study(study_from_toml(text, ".", "s"), dir.filePath("o").toStdString()));
    set_study_state(store, study, StudyState::cancelled);
  }
  // A driver that lives a while (the real one would train the runs).
  const QString driver = dir.filePath("driver.sh");
  {
    QFile f(driver);
    ASSERT_TRUE(f.open(QIODevice::WriteOnly));
    f.write("#!/bin/sh\nexec sleep 30\n");
  }
  QFile::setPermissions(driver, QFile::permissions(driver) | QFileDevice::ExeOwner);
  StoreWorker worker(QString::fromStdString(db));
  StudyView view(&worker, study, driver);
  ASSERT_TRUE(pump_until([&] { return view.isLoaded(); }));
  // A cancelled study's runs are not "to run".
  EXPECT_EQ(view.armsTable()->item(0, 1)->text().toStdString(), "0 (1 not run: study cancelled)");
  QPushButton* resume = nullptr;
  for (auto* b : view.findChildren<QPushButton*>())
    if (b->text() == "Resume") resume = b;
  ASSERT_NE(resume, nullptr);
  EXPECT_EQ(view.driverPid(), 0);
  resume->click();
  ASSERT_TRUE(pump_until([&] { return view.driverPid() > 0; }));
  worker.drain();
  RunStore check = RunStore::open(db);
  EXPECT_EQ(find_study(check, study)->state, StudyState::active);
  ::kill(static_cast<pid_t>(view.driverPid()), SIGTERM);
}
