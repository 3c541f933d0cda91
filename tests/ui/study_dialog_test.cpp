// The New Study dialog: every key and value checked as typed (the reason beside its row), the run
// count and duration estimate following each edit, invalid combinations named before Start, the
// base config's pipeline stages shared or not, and the study it returns.
#include "ui/study_dialog.h"

#include <gtest/gtest.h>

#include <QCoreApplication>
#include <QDialogButtonBox>
#include <QLabel>
#include <QLineEdit>
#include <QImage>
#include <QPushButton>
#include <QTableWidget>

#include "core/run_work.h"
#include "screenshot_test_support.h"

using namespace ganpo;
using namespace ganpo::ui;

namespace {

std::vector<StudyDialog::Base> bases() {
  RunConfig plain;
  plain.name = "plain";
  plain.train.max_steps = 50;
  RunConfig piped = plain;
  piped.name = "piped";
  piped.pipeline = {{"sft", {"stage=sft", "train.max_steps=100"}}};
  return {{"Run 1: piped", piped}, {"Run 2: plain", plain}};
}

bool ok_enabled(const StudyDialog& d) { return d.findChild<QDialogButtonBox*>()->button(QDialogButtonBox::Ok)->isEnabled(); }

QString row_problem(const StudyDialog& d, int row) {
  return qobject_cast<QLabel*>(d.findChild<QTableWidget*>("study.grid")->cellWidget(row, 2))->text();
}

}  // namespace

TEST(StudyDialog, CountsRunsAndEstimatesTheirDuration) {
  const double speed = run_work(bases()[1].config).total() / 60;  // the plain run takes a minute
  StudyDialog dialog(bases(), WorkSpeed{speed, 4});
  EXPECT_EQ(dialog.windowTitle(), QStringLiteral("New Study"));
  // The default question: GANPO off and on, three seeds, after the shared stage.
  EXPECT_TRUE(ok_enabled(dialog)) << dialog.problems().join('\n').toStdString();
  EXPECT_EQ(dialog.runCount(), 1 + 2 * 3);
  EXPECT_TRUE(dialog.summaryText().contains("7 runs = 1 shared stage(s) + 2 arm(s) x 3 seed(s)"))
      << dialog.summaryText().toStdString();
  EXPECT_TRUE(dialog.summaryText().contains("last 4 finished run(s)")) << dialog.summaryText().toStdString();
  dialog.addGridRow("objective.loss_type", "sigmoid, simpo");
  EXPECT_EQ(dialog.runCount(), 1 + 4 * 3);
  dialog.setSeeds("7");
  EXPECT_EQ(dialog.runCount(), 1 + 4);

  // Without the shared stage, and on the plain base: every arm x seed, nothing else.
  dialog.setShareStages(false);
  EXPECT_EQ(dialog.runCount(), 4);
  EXPECT_TRUE(dialog.spec().stages.empty());
  dialog.setBase(1);
  dialog.clearGrid();
  dialog.addGridRow("ganpo.enabled", "true");  // the base itself: a minute's work
  EXPECT_EQ(dialog.runCount(), 1);
  EXPECT_TRUE(dialog.summaryText().contains("Estimated duration: 1m")) << dialog.summaryText().toStdString();
}

TEST(StudyDialog, ProblemsAreNamedBesideTheRowAndBlockStart) {
  StudyDialog dialog(bases(), WorkSpeed{1e9, 0});
  dialog.addGridRow("objective.loss_typ", "sigmoid");
  EXPECT_FALSE(ok_enabled(dialog));
  EXPECT_TRUE(row_problem(dialog, 1).contains("did you mean \"objective.loss_type\"")) << row_problem(dialog, 1).toStdString();
  dialog.clearGrid();
  dialog.addGridRow("train.max_steps", "10, many");
  EXPECT_TRUE(row_problem(dialog, 0).contains("train.max_steps must be an integer")) << row_problem(dialog, 0).toStdString();
  dialog.clearGrid();
  dialog.addGridRow("seed", "1, 2");
  EXPECT_TRUE(row_problem(dialog, 0).contains("set per run")) << row_problem(dialog, 0).toStdString();
  dialog.clearGrid();
  dialog.addGridRow("ganpo.enabled", "true, true");
  EXPECT_TRUE(row_problem(dialog, 0).contains("listed twice"));
  dialog.clearGrid();
  dialog.setSeeds("1, x");
  EXPECT_TRUE(dialog.problems().join('\n').contains("\"x\" is not an integer"));
  dialog.setSeeds("1, 2");
  EXPECT_TRUE(ok_enabled(dialog));
  // Values of the right type that make an invalid run: named with the arm before anything runs.
  dialog.addGridRow("objective.beta", "0.1, -1");
  EXPECT_FALSE(ok_enabled(dialog));
  EXPECT_TRUE(dialog.problems().join('\n').contains("arm objective.beta=-1, seed 1: objective.beta must be"))
      << dialog.problems().join('\n').toStdString();
  EXPECT_TRUE(dialog.summaryText().startsWith("Not ready"));
}

TEST(StudyDialog, TheStudyItReturnsIsTheOneShown) {
  StudyDialog dialog(bases(), WorkSpeed{1e9, 0});
  dialog.setName("my study");
  dialog.addGridRow("data.chat_template", "\"a, b\", chatml");
  dialog.setSeeds("3, 4");
  dialog.setJobs(2);
  const StudySpec spec = dialog.spec();
  EXPECT_EQ(spec.name, "my study");
  EXPECT_EQ(spec.seeds, (std::vector<int64_t>{3, 4}));
  ASSERT_EQ(spec.grid.size(), 2u);
  EXPECT_EQ(spec.grid[1].second, (std::vector<std::string>{"a, b", "chatml"}));
  ASSERT_EQ(spec.stages.size(), 1u);
  EXPECT_TRUE(spec.base.pipeline.empty());
  EXPECT_EQ(dialog.jobs(), 2);
  // Saved as a study file, it reads back as the same runs.
  const StudySpec again = study_from_toml(study_to_toml(spec), ".", "saved");
  EXPECT_EQ(expand_study(again, "/tmp/x").size(), expand_study(spec, "/tmp/x").size());
}

TEST(StudyDialog, GridValuesAndDurations) {
  EXPECT_EQ(split_grid_values("sigmoid, simpo"), (QStringList{"sigmoid", "simpo"}));
  EXPECT_EQ(split_grid_values("\"0.5, 0.7\", 1.0"), (QStringList{"0.5, 0.7", "1.0"}));
  EXPECT_EQ(split_grid_values(""), QStringList{});
  EXPECT_EQ(split_grid_values("a,,b"), (QStringList{"a", "", "b"}));
  EXPECT_EQ(format_estimated_duration(42), "42s");
  EXPECT_EQ(format_estimated_duration(44 * 60 + 10), "44m");
  EXPECT_EQ(format_estimated_duration(3900), "1h05m");
}

// The dialog as a person sees it: the demo preset as base, GANPO off / on x two loss types, three
// seeds (saved to GANPO_SCREENSHOT_DIR when set). The image shows the dialog, and the grid and
// summary on it hold the three rows and the 25 runs.
TEST(StudyDialog, Screenshot) {
  StudyDialog dialog({{"Preset: Demo (CPU, minutes)", load_config_file(std::string(GANPO_SOURCE_DIR) + "/resources/presets/demo.toml")}},
                     WorkSpeed{reference_work_per_second(), 0});
  dialog.addGridRow("objective.loss_type", "sigmoid, simpo");
  dialog.addGridRow("data.label_noise", "0, 0.2");
  dialog.show();
  QCoreApplication::processEvents();
  EXPECT_TRUE(dialog.problems().isEmpty()) << dialog.problems().join('\n').toStdString();
  EXPECT_EQ(dialog.runCount(), 1 + 8 * 3);
  auto* grid = dialog.findChild<QTableWidget*>("study.grid");
  ASSERT_NE(grid, nullptr);
  ASSERT_EQ(grid->rowCount(), 3);
  QStringList keys;
  for (int r = 0; r < grid->rowCount(); ++r) keys << qobject_cast<QLineEdit*>(grid->cellWidget(r, 0))->text();
  EXPECT_EQ(keys, (QStringList{"ganpo.enabled", "objective.loss_type", "data.label_noise"}));
  EXPECT_TRUE(dialog.summaryText().startsWith("25 runs = 1 shared stage(s) + 8 arm(s) x 3 seed(s)"))
      << dialog.summaryText().toStdString();
  EXPECT_TRUE(grid->isVisible());
  const QImage shot = dialog.grab().toImage();
  EXPECT_TRUE(ganpo::ui::testing::shows_content(shot, dialog.size()));
  ganpo::ui::testing::save_for_review(shot, "study_dialog.png");
}
