// CheckpointsView against real checkpoint folders (freshly initialised tiny models written with
// save_model_files) and a real run store. GenerationService's own tests: generation_service_test.cpp.
#include <gtest/gtest.h>

#include <QApplication>
#include <QDialog>
#include <QDialogButtonBox>
#include <QDir>
#include <QFile>
#include <QLabel>
#include <QLineEdit>
#include <QPushButton>
#include <QTableWidget>
#include <QTemporaryDir>
#include <QTimer>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>

#include <nlohmann/json.hpp>

#include "core/atomic_folder.h"
#include "core/checkpoint.h"
#include "db/run_store.h"
#include "ui/checkpoints_view.h"
#include "ui/generation_service.h"
#include "ui/store_worker.h"
#include "dashboard_test_support.h"
#include "generation_test_support.h"
#include "screenshot_test_support.h"

namespace ganpo::ui {
namespace {

using testing::lists_prompt;
using testing::pump_until;
using testing::write_tiny_model;

// ---- the view --------------------------------------------------------------------------------

class CheckpointsViewTest : public ::testing::Test {
protected:
  void SetUp() override {
    ASSERT_TRUE(dir_.isValid());
    ref_ = dir_.filePath(QStringLiteral("sft-final"));
    c10_ = dir_.filePath(QStringLiteral("run/checkpoint-10"));
    c20_ = dir_.filePath(QStringLiteral("run/checkpoint-20"));
    write_tiny_model(ref_, 1);
    // Checkpoints as the trainer writes them: atomically, with the completion marker the view
    // requires before it offers a folder.
    for (const auto& [dir, seed] : {std::pair{c10_, 2}, std::pair{c20_, 3}})
      write_folder_atomically(dir.toStdString(), [&](const std::string& tmp) { write_tiny_model(QString::fromStdString(tmp), seed); });
    db_ = dir_.filePath(QStringLiteral("workspace.sqlite"));
    auto store = RunStore::open(db_.toStdString());
    nlohmann::json cfg{{"model", {{"preset", "tiny"}, {"checkpoint", ref_.toStdString()}, {"reference", ""}}},
                       {"data", {{"builtin", "lists"}}}};
    run_ = store.create_run("dpo-ganpo", "preference", cfg.dump());
    store.add_checkpoint(run_, 10, c10_.toStdString(), R"({"eval_loss":0.69,"eval_rewards/accuracies":0.51})");
    store.add_checkpoint(run_, 20, c20_.toStdString(), R"({"eval_loss":0.61,"eval_rewards/accuracies":0.64})");
    std::vector<SampleRow> samples;
    for (int i = 0; i < 3; ++i) {
      SampleRow r;
      r.prompt_index = i;
      r.prompt = lists_prompt(40 + static_cast<uint64_t>(i));
      r.policy_text = "a, b";
      samples.push_back(r);
    }
    store.add_samples(run_, 10, samples);
    store.add_eval(run_, 20, "eval", "{}",
                   R"({"preference":{"eval_rewards/accuracies":0.66,"eval_rewards/margins":0.2},)"
                   R"("judge":[{"temperature":0.7,"bucket":"all","prompts":3,"policy_score":0.5,"reference_score":0.4,"win_rate":0.6},)"
                   R"({"temperature":0.7,"bucket":"short","prompts":1,"policy_score":0.5,"reference_score":0.4,"win_rate":1.0}]})");
  }

  QTemporaryDir dir_;
  QString ref_, c10_, c20_, db_;
  int64_t run_ = 0;
};

TEST_F(CheckpointsViewTest, ListsCheckpointsGeneratesSideBySideAndScreenshots) {
  StoreWorker store(db_);
  CheckpointsView view(&store, run_, QStringLiteral(GANPO_CLI_PATH));
  view.resize(1280, 860);
  view.show();
  ASSERT_TRUE(pump_until([&] { return view.table()->rowCount() == 3 && !view.samplePrompts().isEmpty(); }, 20000));
  EXPECT_EQ(view.referencePath(), ref_) << "model.checkpoint serves when model.reference is empty";
  EXPECT_EQ(view.table()->item(0, 0)->text(), QStringLiteral("reference"));
  EXPECT_EQ(view.samplePrompts().size(), 3);
  EXPECT_EQ(view.checkpointCount(), 2);
  // The stored evaluation shows up as columns of the checkpoint table and rows of the eval table.
  bool has_win_column = false;
  for (int c = 0; c < view.table()->columnCount(); ++c)
    has_win_column |= view.table()->horizontalHeaderItem(c)->text().contains(QStringLiteral("win rate"));
  EXPECT_TRUE(has_win_column);
  EXPECT_EQ(view.evalTable()->rowCount(), 1);

  view.pickFolders({ref_, c10_, c20_});
  EXPECT_EQ(view.pickedFolders().size(), 3);
  view.setSampling(0.8, 0.95, 40, 5);
  view.setGridMode(true);
  bool finished = false;
  QObject::connect(&view, &CheckpointsView::generationFinished, &view, [&] { finished = true; });
  // While sampling, the columns fill with streamed text (the cells exist from the start).
  QString seen_while_live;
  QObject::connect(view.service(), &GenerationService::textStreamed, &view, [&](int m, const QStringList&) {
    if (!finished && seen_while_live.isEmpty()) seen_while_live = view.liveText(0, m);
  });
  ASSERT_TRUE(view.generateNow());
  EXPECT_EQ(view.findChildren<QLabel*>(QStringLiteral("outputCell")).size(), 9) << "live cells, one per prompt x model";
  ASSERT_TRUE(pump_until([&] { return finished; }, 120000));
  EXPECT_FALSE(seen_while_live.isEmpty()) << "text was shown before the request finished";
  EXPECT_EQ(view.lastOutputs().size(), 9) << view.statusText().toStdString();
  for (const auto& o : view.lastOutputs()) {
    EXPECT_GE(o.judge_score, 0.0);
    EXPECT_EQ(o.precision, QStringLiteral("float32")) << "the CPU runs every folder in float32";
  }
  QApplication::processEvents();
  // What is shown: one finished cell per prompt x model, each with its text's facts and its
  // log-probabilities under the three models, and a status line counting them.
  const auto cells = view.findChildren<QLabel*>(QStringLiteral("outputCell"));
  ASSERT_EQ(cells.size(), 9);
  for (const QLabel* cell : cells) {
    EXPECT_TRUE(cell->text().contains(QStringLiteral(" tokens"))) << cell->text().toStdString();
    EXPECT_TRUE(cell->text().contains(QStringLiteral("log p under:"))) << cell->text().toStdString();
    EXPECT_FALSE(cell->text().contains(QStringLiteral("▍"))) << "no cell is still streaming";
  }
  EXPECT_TRUE(view.statusText().startsWith(QStringLiteral("9 output(s)"))) << view.statusText().toStdString();
  const QImage shot = view.grab().toImage();
  EXPECT_TRUE(testing::shows_content(shot, view.size()));
  testing::save_for_review(shot, QStringLiteral("checkpoints_view.png"));

  // Clone from the current checkpoint row.
  qint64 cloned_step = -1;
  QString cloned_path;
  QObject::connect(&view, &CheckpointsView::cloneFromCheckpoint, &view, [&](qint64 run, qint64 step, QString path) {
    EXPECT_EQ(run, run_);
    cloned_step = step;
    cloned_path = path;
  });
  view.table()->setCurrentCell(2, 1, QItemSelectionModel::NoUpdate);
  QPushButton* clone = nullptr;
  for (auto* b : view.findChildren<QPushButton*>())
    if (b->text().startsWith(QStringLiteral("Clone"))) clone = b;
  ASSERT_NE(clone, nullptr);
  ASSERT_TRUE(clone->isEnabled());
  clone->click();
  EXPECT_EQ(cloned_step, 20);
  EXPECT_EQ(cloned_path, c20_);
}

// Cancel while the first model loads: the service ends with no outputs. The status said
// "0 output(s); the slowest model took 0.00 s." and the columns were replaced by an empty page.
TEST_F(CheckpointsViewTest, CancelBeforeAnyOutputSaysSo) {
  StoreWorker store(db_);
  CheckpointsView view(&store, run_, QStringLiteral(GANPO_CLI_PATH));
  ASSERT_TRUE(pump_until([&] { return view.table()->rowCount() == 3; }, 20000));
  view.pickFolders({c10_, c20_});
  view.setPrompt(QString::fromStdString(lists_prompt(7)));
  // The hook runs on the worker thread once a folder is read: the cancel lands while it loads.
  GenerationService* service = view.service();
  service->setBeforeModelTurnForTests([service](const QString&, int, bool loading) {
    if (loading) service->cancel();
  });
  bool finished = false;
  QObject::connect(&view, &CheckpointsView::generationFinished, &view, [&] { finished = true; });
  ASSERT_TRUE(view.generateNow());
  ASSERT_TRUE(pump_until([&] { return finished; }, 120000));
  EXPECT_TRUE(view.lastOutputs().isEmpty());
  EXPECT_TRUE(view.statusText().startsWith(QStringLiteral("Cancelled"))) << view.statusText().toStdString();
  EXPECT_FALSE(view.statusText().contains(QStringLiteral("output(s)"))) << view.statusText().toStdString();
  for (auto* b : view.findChildren<QPushButton*>()) {
    if (b->text() == QStringLiteral("Generate")) {
      EXPECT_TRUE(b->isEnabled()) << "a new request can start";
    }
  }
}

// Same seed, same text: a sample prompt generated alone reads as its row of the grid did. Alone it
// drew as prompt number 0 and in the grid as its place in the set, so a researcher who picked an
// interesting grid row to look at again got another sample.
TEST_F(CheckpointsViewTest, ASamplePromptAloneDrawsAsInTheGrid) {
  StoreWorker store(db_);
  CheckpointsView view(&store, run_, QStringLiteral(GANPO_CLI_PATH));
  ASSERT_TRUE(pump_until([&] { return view.table()->rowCount() == 3 && view.samplePrompts().size() == 3; }, 20000));
  view.pickFolders({c10_, c20_});
  view.setSampling(1.0, 1.0, 24, 11);
  bool finished = false;
  QObject::connect(&view, &CheckpointsView::generationFinished, &view, [&] { finished = true; });
  view.setGridMode(true);
  ASSERT_TRUE(view.generateNow());
  ASSERT_TRUE(pump_until([&] { return finished; }, 120000));
  ASSERT_EQ(view.lastOutputs().size(), 6) << view.statusText().toStdString();
  std::map<int, QString> in_grid;  // model -> text of prompt 2
  for (const auto& o : view.lastOutputs())
    if (o.prompt_index == 2) in_grid[o.model_index] = o.text;

  finished = false;
  view.setPrompt(view.samplePrompts()[2]);
  ASSERT_TRUE(view.generateNow());
  ASSERT_TRUE(pump_until([&] { return finished; }, 120000));
  ASSERT_EQ(view.lastOutputs().size(), 2) << view.statusText().toStdString();
  for (const auto& o : view.lastOutputs()) EXPECT_EQ(o.text, in_grid[o.model_index]) << o.label.toStdString();
}

// A data file's run judged by its eval.judge_command: the playground's outputs get that judge's
// scores (any finite number) as its live samples and Evaluate do. It judged only prompts a
// built-in task made, so such a run never showed a judge score here.
TEST_F(CheckpointsViewTest, ADataFileRunsOutputsAreJudgedByItsJudgeCommand) {
  const QString judge = dir_.filePath(QStringLiteral("judge.sh"));
  {
    std::ofstream f(judge.toStdString());
    f << R"(#!/bin/sh
while read -r line; do echo '{"score": -0.25}'; done
)";
  }
  std::filesystem::permissions(judge.toStdString(), std::filesystem::perms::owner_all);
  int64_t run = 0;
  {
    auto store = RunStore::open(db_.toStdString());
    nlohmann::json cfg{{"model", {{"preset", "tiny"}, {"checkpoint", ref_.toStdString()}}},
                       {"data", {{"builtin", ""}, {"train", "prefs.jsonl"}}},
                       {"eval", {{"judge_command", judge.toStdString()}, {"judge_timeout_s", 30}}}};
    run = store.create_run("file-run", "preference", cfg.dump());
    store.add_checkpoint(run, 10, c10_.toStdString(), "{}");
  }
  StoreWorker store(db_);
  CheckpointsView view(&store, run, QStringLiteral(GANPO_CLI_PATH));
  ASSERT_TRUE(pump_until([&] { return view.table()->rowCount() == 2; }, 20000));
  view.pickFolders({ref_, c10_});
  view.setSampling(1.0, 1.0, 8, 5);
  bool finished = false;
  QObject::connect(&view, &CheckpointsView::generationFinished, &view, [&] { finished = true; });
  view.setPrompt(QStringLiteral("Write a haiku about rain."));
  ASSERT_TRUE(view.generateNow());
  ASSERT_TRUE(pump_until([&] { return finished; }, 120000));
  ASSERT_EQ(view.lastOutputs().size(), 2) << view.statusText().toStdString();
  for (const auto& o : view.lastOutputs()) EXPECT_EQ(o.judge_score, -0.25) << o.label.toStdString();
  QApplication::processEvents();
  const auto cells = view.findChildren<QLabel*>(QStringLiteral("outputCell"));
  ASSERT_EQ(cells.size(), 2);
  for (const QLabel* cell : cells) EXPECT_TRUE(cell->text().contains(QStringLiteral("judge -0.25"))) << cell->text().toStdString();
}

// A run's final folder has the step of its last checkpoint. Both rows read "checkpoint 20" and
// both output columns "step 20", so nothing on screen told them apart but the (cut) folder column.
TEST_F(CheckpointsViewTest, TheFinalFolderIsNamedApartFromTheCheckpointOfItsStep) {
  const QString final_dir = dir_.filePath(QStringLiteral("run/final"));
  write_folder_atomically(final_dir.toStdString(), [&](const std::string& tmp) { write_tiny_model(QString::fromStdString(tmp), 3); });
  RunStore::open(db_.toStdString()).add_checkpoint(run_, 20, final_dir.toStdString(), R"({"eval_loss":0.61})");
  StoreWorker store(db_);
  CheckpointsView view(&store, run_, QStringLiteral(GANPO_CLI_PATH));
  ASSERT_TRUE(pump_until([&] { return view.table()->rowCount() == 4; }, 20000));
  EXPECT_EQ(view.table()->item(3, 0)->text(), QStringLiteral("final"));
  EXPECT_EQ(view.table()->item(2, 0)->text(), QStringLiteral("checkpoint"));
  view.pickFolders({c20_, final_dir});
  view.setPrompt(QString::fromStdString(lists_prompt(8)));
  view.setSampling(0.7, 1.0, 4, 0);
  bool finished = false;
  QObject::connect(&view, &CheckpointsView::generationFinished, &view, [&] { finished = true; });
  ASSERT_TRUE(view.generateNow());
  ASSERT_TRUE(pump_until([&] { return finished; }, 120000));
  ASSERT_EQ(view.lastOutputs().size(), 2) << view.statusText().toStdString();
  EXPECT_EQ(view.lastOutputs()[0].label, QStringLiteral("step 20"));
  EXPECT_EQ(view.lastOutputs()[1].label, QStringLiteral("step 20 (final)"));
}

// Pressing Generate does not change how wide the tab must be (the window gave the room to it by
// squeezing the run list, and took it back when the request ended).
TEST_F(CheckpointsViewTest, GeneratingKeepsTheTabsMinimumWidth) {
  StoreWorker store(db_);
  CheckpointsView view(&store, run_, QStringLiteral(GANPO_CLI_PATH));
  view.resize(1100, 800);
  view.show();
  ASSERT_TRUE(pump_until([&] { return view.table()->rowCount() == 3; }, 20000));
  view.pickFolders({c10_, c20_});
  view.setPrompt(QString::fromStdString(lists_prompt(9)));
  QApplication::processEvents();
  const int before = view.minimumSizeHint().width();
  bool finished = false;
  QObject::connect(&view, &CheckpointsView::generationFinished, &view, [&] { finished = true; });
  ASSERT_TRUE(view.generateNow());
  QApplication::processEvents();
  EXPECT_EQ(view.minimumSizeHint().width(), before);
  ASSERT_TRUE(pump_until([&] { return finished; }, 120000));
}

TEST_F(CheckpointsViewTest, EvaluateRunsGanpoEvalAndStoresTheReport) {
  StoreWorker store(db_);
  CheckpointsView view(&store, run_, QStringLiteral(GANPO_CLI_PATH));
  ASSERT_TRUE(pump_until([&] { return view.table()->rowCount() == 3; }, 20000));
  view.pickFolders({c10_});
  bool done = false, ok = false;
  QString message;
  QObject::connect(&view, &CheckpointsView::evaluationFinished, &view, [&](qint64 step, bool good, QString m) {
    EXPECT_EQ(step, 10);
    done = true, ok = good, message = m;
  });
  // The dialog's temperatures read as numbers or say why not, and Evaluate waits for them ("x"
  // was dropped without a word; "1,3" is two temperatures, which it now shows).
  QStringList read_as;
  std::vector<bool> ok_enabled;
  QString what;
  QTimer inspector;
  QObject::connect(&inspector, &QTimer::timeout, [&] {
    auto* dialog = qobject_cast<QDialog*>(QApplication::activeModalWidget());
    if (!dialog) return;
    inspector.stop();
    auto* temperatures = dialog->findChild<QLineEdit*>(QStringLiteral("temperatures"));
    auto* label = dialog->findChild<QLabel*>(QStringLiteral("temperaturesReadAs"));
    auto* buttons = dialog->findChild<QDialogButtonBox*>();
    for (const QString& text : {QStringLiteral("0.7, x"), QStringLiteral("0.7, 1,3"), QStringLiteral(" ")}) {
      temperatures->setText(text);
      read_as << label->text();
      ok_enabled.push_back(buttons->button(QDialogButtonBox::Ok)->isEnabled());
    }
    for (auto* l : dialog->findChildren<QLabel*>())
      if (l->text().startsWith(QStringLiteral("Judge")) || l->text().startsWith(QStringLiteral("Held-out"))) what = l->text();
    dialog->reject();
  });
  inspector.start(20);
  ASSERT_TRUE(view.findChildren<QPushButton*>().size() > 0);
  for (auto* b : view.findChildren<QPushButton*>())
    if (b->text().startsWith(QStringLiteral("Evaluate"))) b->click();
  inspector.stop();
  ASSERT_EQ(read_as.size(), 3);
  EXPECT_TRUE(read_as[0].contains("\"x\"")) << read_as[0].toStdString();
  EXPECT_EQ(read_as[1], QStringLiteral("3 temperature(s): 0.7, 1.0, 3.0"));
  EXPECT_TRUE(read_as[2].startsWith("Give at least one temperature")) << read_as[2].toStdString();
  EXPECT_EQ(ok_enabled, (std::vector<bool>{false, true, false}));
  EXPECT_TRUE(what.startsWith("Judge win rates on the lists task's prompts")) << what.toStdString();

  CheckpointEvalOptions options;
  options.num_prompts = 3;
  options.max_new_tokens = 12;
  options.temperatures = {0.7, 1.3};
  ASSERT_TRUE(view.evaluatePicked(options));
  ASSERT_TRUE(pump_until([&] { return done; }, 180000));
  ASSERT_TRUE(ok) << message.toStdString();
  ASSERT_TRUE(pump_until([&] { return view.evalTable()->rowCount() == 3; }, 20000));  // 1 stored + 2 temps
  store.drain();
  auto rs = RunStore::open(db_.toStdString());
  const auto evals = rs.evals(run_);
  ASSERT_EQ(evals.size(), 2u);
  const auto result = nlohmann::json::parse(evals.back().result_json);
  EXPECT_TRUE(result.contains("judge"));
  EXPECT_TRUE(result.contains("preference")) << "built-in held-out pairs give preference accuracy";
  EXPECT_EQ(nlohmann::json::parse(evals.back().params_json)["num_prompts"], 3);
}

}  // namespace
}  // namespace ganpo::ui
