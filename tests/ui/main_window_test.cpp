// The workbench window against a real workspace file and real `ganpo` worker processes: the run
// filter language, the run list model, a full run (worker -> points on the dashboard -> Stop ->
// stopped with a checkpoint), a worker killed with SIGKILL (failed, window alive), and a
// workspace moved away or on a full disk while the window has it open.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <QAction>
#include <QApplication>
#include <QDir>
#include <QElapsedTimer>
#include <QItemSelectionModel>
#include <QKeyEvent>
#include <QLabel>
#include <QMenu>
#include <QMessageBox>
#include <QPointer>
#include <QPushButton>
#include <QStatusBar>
#include <QTableView>
#include <QTabWidget>
#include <QTableWidget>
#include <QThread>
#include <QTimer>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <thread>

#include "core/config.h"
#include "core/eval/eval_report.h"
#include "core/study_spec.h"
#include "db/run_service.h"
#include "db/study_queue.h"
#include "screenshot_test_support.h"
#include "tests/support/file_size_limit.h"
#include "ui/compare_view.h"
#include "ui/dashboard_view.h"
#include "ui/main_window.h"
#include "ui/new_run_dialog.h"
#include "ui/run_filter.h"
#include "ui/run_list_model.h"
#include "ui/run_tab.h"
#include "ui/store_worker.h"
#include "ui/study_dialog.h"
#include "ui/study_view.h"
#include "ui/welcome_pane.h"
#include "ui/worker_launcher.h"

namespace fs = std::filesystem;
using namespace ganpo;
using namespace ganpo::ui;

namespace {

// Pumps the event loop until ready() or the guard runs out (a guard against hangs, not a timing
// assertion).
bool pump_seconds_until(const std::function<bool()>& ready, int seconds = 120) {
  QElapsedTimer t;
  t.start();
  while (t.elapsed() < seconds * 1000) {
    QCoreApplication::processEvents(QEventLoop::AllEvents, 50);
    if (ready()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return ready();
}

// Runs act(dialog) once a modal dialog of type D is up, however long it takes to open (the
// dialog's exec(), or the test's own pumping for one opened with open(), delivers the checks).
// The returned flag tells whether it ran; the timer is a child of `owner` and stops after acting.
template <class D>
std::shared_ptr<bool> when_modal(QObject* owner, std::function<void(D*)> act) {
  auto seen = std::make_shared<bool>(false);
  auto* poll = new QTimer(owner);
  QObject::connect(poll, &QTimer::timeout, poll, [poll, seen, act = std::move(act)] {
    auto* dialog = qobject_cast<D*>(QApplication::activeModalWidget());
    if (!dialog || *seen) return;
    *seen = true;
    poll->stop();
    act(dialog);
  });
  poll->start(10);
  return seen;
}

class MainWindowTest : public ::testing::Test {
protected:
  void SetUp() override {
    static int counter = 0;
    dir_ = fs::temp_directory_path() / ("ganpo-ui-main-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    qputenv("XDG_CONFIG_HOME", QByteArray::fromStdString((dir_ / "config").string()));  // QSettings stay here
    db_ = QString::fromStdString((dir_ / "workspace.sqlite").string());
  }
  void TearDown() override {
    if (!HasFailure()) fs::remove_all(dir_);
  }

  // A preference run on the built-in task that would take long, so tests stop it.
  static RunConfig long_run(const std::string& name) {
    RunConfig c;
    c.name = name;
    c.stage = "preference";
    c.model.preset = "tiny";
    c.data.builtin_train_size = 400;
    c.data.builtin_eval_size = 16;
    c.ganpo.enabled = true;
    c.ganpo.critic_hidden = 32;
    c.ganpo.critic_layers = 1;
    c.ganpo.critic_heads = 2;
    c.ganpo.critic_max_len = 256;
    c.train.max_steps = 5000;
    c.train.per_device_train_batch_size = 4;
    c.train.logging_steps = 1;
    c.train.num_threads = 1;
    c.sampling.num_prompts = 2;
    c.sampling.max_new_tokens = 12;
    return c;
  }

  // A queued run "alpha" stored in the workspace before the window opens; its id.
  int64_t stored_run() {
    return RunStore::open(db_.toStdString()).create_run("alpha", "preference", config_to_json(long_run("alpha")).dump());
  }

  // Collects what the window's store worker reports as errors (its writes that failed).
  static std::shared_ptr<QStringList> write_errors_of(MainWindow& w) {
    auto errors = std::make_shared<QStringList>();
    QObject::connect(w.store(), &StoreWorker::errorOccurred, &w, [errors](const QString& m) { *errors << m; });
    return errors;
  }

  std::unique_ptr<MainWindow> window() {
    auto w = std::make_unique<MainWindow>(db_);
    w->launcher()->setWorkerProgram(GANPO_CLI_PATH);
    w->setCloseChoice(MainWindow::CloseChoice::StopRuns);
    w->show();
    return w;
  }

  fs::path dir_;
  QString db_;
};

RunRow row_of(const MainWindow& w, int64_t id) {
  const RunListEntry* e = w.runModel()->entry(id);
  return e ? e->row : RunRow{};
}

// The runs selected in the window's run list, in id order.
std::vector<int64_t> selected_run_ids(const MainWindow& w) {
  std::vector<int64_t> ids;
  for (const QModelIndex& i : w.runTable()->selectionModel()->selectedRows())
    ids.push_back(i.data(RunListModel::RunIdRole).toLongLong());
  std::sort(ids.begin(), ids.end());
  return ids;
}

}  // namespace

TEST(RunFilterTest, ParsesTextFieldsAndConfigComparisons) {
  RunRow r;
  r.name = "DPO beta sweep";
  r.status = RunStatus::running;
  r.stage = "preference";
  r.tags = "baseline,tiny";
  RunConfig c;
  c.objective.beta = 0.1;
  c.objective.loss_type = "ipo";
  c.ganpo.enabled = true;
  c.model.lora.r = 8;
  const nlohmann::json config = config_to_json(c);
  auto m = [&](const char* text) {
    RunFilter f = RunFilter::parse(text);
    EXPECT_TRUE(f.valid()) << text << ": " << f.error().toStdString();
    return f.matches(r, config);
  };
  EXPECT_TRUE(m(""));
  EXPECT_TRUE(m("sweep"));
  EXPECT_TRUE(m("SWEEP status:running"));
  EXPECT_FALSE(m("status:failed"));
  EXPECT_TRUE(m("tag:baseline"));
  EXPECT_FALSE(m("tag:base"));
  EXPECT_TRUE(m("tiny"));
  EXPECT_TRUE(m("beta>0.05"));
  EXPECT_FALSE(m("beta>0.1"));
  EXPECT_TRUE(m("beta>=0.1 beta<=0.1 beta=0.1"));
  EXPECT_TRUE(m("objective.beta!=0.2"));
  EXPECT_TRUE(m("loss_type=ipo"));
  EXPECT_TRUE(m("loss_type=IPO"));
  EXPECT_FALSE(m("loss_type=sigmoid"));
  EXPECT_TRUE(m("ganpo.enabled=true"));
  EXPECT_TRUE(m("loss_type~ip"));
  EXPECT_TRUE(m("stage:preference"));
  // A field of a table inside a table ([model.lora]), by its full path or its end.
  EXPECT_TRUE(m("model.lora.r=8"));
  EXPECT_TRUE(m("lora.r>4"));
  EXPECT_FALSE(m("lora.r>8"));
  EXPECT_TRUE(m("target_modules~v_proj"));
}

TEST(RunFilterTest, BadTermsSayWhyAndMatchEverything) {
  RunRow r;
  const nlohmann::json config = config_to_json(RunConfig{});
  RunFilter unknown = RunFilter::parse("betta>0.1");
  EXPECT_FALSE(unknown.valid());
  EXPECT_EQ(unknown.error().toStdString(), "no config field named 'betta'");
  EXPECT_TRUE(unknown.matches(r, config)) << "an invalid filter hides nothing";
  EXPECT_FALSE(RunFilter::parse("beta>").valid());
  EXPECT_FALSE(RunFilter::parse("status:").valid());
  // A short key names the one field that ends with it; one that several sections share asks
  // for the section.
  RunFilter unique = RunFilter::parse("enabled=true");
  EXPECT_TRUE(unique.valid()) << unique.error().toStdString();
  EXPECT_TRUE(unique.matches(r, config)) << "ganpo.enabled is true by default";
  EXPECT_FALSE(RunFilter::parse("enabled=false").matches(r, config));
  RunFilter ambiguous = RunFilter::parse("max_new_tokens>1");  // sampling. and eval.max_new_tokens
  EXPECT_FALSE(ambiguous.valid());
  EXPECT_NE(ambiguous.error().indexOf("'max_new_tokens' is ambiguous; write its section, e.g. "), -1)
      << ambiguous.error().toStdString();
  EXPECT_TRUE(ambiguous.matches(r, config)) << "an invalid filter hides nothing";
}

// A config comparison reads the value the run trained with: beta 0 stands for the loss's default
// (0.1 for DPO, 2.5 for SimPO), and an SFT stage has neither a preference beta nor GANPO, whatever
// its stored [objective] and [ganpo] tables say (the list's Objective column reads "sft").
TEST(RunFilterTest, ComparesTheValuesARunTrainedWith) {
  auto matches = [](const char* text, const RunRow& r, const RunConfig& c) {
    RunFilter f = RunFilter::parse(text);
    EXPECT_TRUE(f.valid()) << text << ": " << f.error().toStdString();
    return f.matches(r, config_to_json(c));
  };
  RunRow dpo;
  dpo.stage = "preference";
  RunConfig default_beta;  // objective.beta = 0: trains at 0.1
  default_beta.objective.loss_type = "sigmoid";
  ASSERT_EQ(default_beta.objective.beta, 0.0);
  EXPECT_TRUE(matches("beta>0.05", dpo, default_beta)) << "UX.md's own example misses a DPO run at the default beta";
  EXPECT_TRUE(matches("beta=0.1", dpo, default_beta));
  RunConfig simpo = default_beta;
  simpo.objective.loss_type = "simpo";
  EXPECT_TRUE(matches("beta=2.5", dpo, simpo));
  RunConfig explicit_beta = default_beta;
  explicit_beta.objective.beta = 0.02;
  EXPECT_FALSE(matches("beta>0.05", dpo, explicit_beta));
  EXPECT_TRUE(matches("ganpo.enabled=true", dpo, default_beta));

  RunRow sft;
  sft.stage = "sft";
  RunConfig sft_config = default_beta;
  sft_config.stage = "sft";
  ASSERT_TRUE(sft_config.ganpo.enabled) << "stored as the default, though SFT trains no critics";
  EXPECT_FALSE(matches("ganpo.enabled=true", sft, sft_config)) << "an SFT run is listed among the GANPO runs";
  EXPECT_TRUE(matches("ganpo.enabled=false", sft, sft_config));
  EXPECT_FALSE(matches("beta>0.05", sft, sft_config));
}

// UX.md "First run": the empty right-hand pane of a fresh window says what to do next, as buttons
// that do it; it gives way to the tabs and comes back when the last one is closed.
TEST_F(MainWindowTest, AFreshWindowSaysWhatToDoNext) {
  auto w = window();
  auto* welcome = w->findChild<WelcomePane*>("welcome-pane");
  ASSERT_NE(welcome, nullptr);
  EXPECT_TRUE(welcome->isVisible());
  EXPECT_TRUE(welcome->hintText().isEmpty()) << "no run to open yet";
  QPushButton* demo = nullptr;
  for (QPushButton* b : welcome->findChildren<QPushButton*>())
    if (b->text().startsWith("Try the demo")) demo = b;
  ASSERT_NE(demo, nullptr);
  std::string preset_name;
  auto seen = when_modal<NewRunDialog>(w.get(), [&](NewRunDialog* d) {
    preset_name = d->config().name;
    d->reject();
  });
  demo->click();  // the dialog's exec() runs the check, then returns
  EXPECT_TRUE(*seen);
  EXPECT_EQ(preset_name, "demo") << "the demo preset is chosen";
  ganpo::ui::testing::save_for_review(w->grab().toImage(), "main-window-welcome.png");

  const int64_t id = stored_run();
  ASSERT_TRUE(pump_seconds_until([&] { return !welcome->hintText().isEmpty(); }, 20));
  EXPECT_TRUE(welcome->hintText().startsWith("This workspace has 1 run:")) << welcome->hintText().toStdString();
  ASSERT_NE(w->openRunTab(id), nullptr);
  EXPECT_FALSE(welcome->isVisible());
  auto* tabs = w->findChild<QTabWidget*>();
  ASSERT_NE(tabs, nullptr);
  EXPECT_TRUE(tabs->isVisible());
  Q_EMIT tabs->tabCloseRequested(0);
  EXPECT_TRUE(welcome->isVisible()) << "the last tab closed: the pane is back";
}

TEST_F(MainWindowTest, RunListFollowsTheStoreWithFilterAndSort) {
  {
    auto store = RunStore::open(db_.toStdString());
    RunConfig a = long_run("alpha");
    a.objective.beta = 0.1;
    RunConfig b = long_run("bravo");
    b.objective.beta = 0.01;
    b.ganpo.enabled = false;
    store.create_run(a.name, a.stage, config_to_json(a).dump());
    const int64_t id = store.create_run(b.name, b.stage, config_to_json(b).dump());
    store.set_tags(id, "baseline");
  }
  auto w = window();
  ASSERT_TRUE(pump_seconds_until([&] { return w->runModel()->rowCount() == 2; }, 20));
  EXPECT_EQ(w->runModel()->objective_of(*w->runModel()->entry(1)), "dpo+ganpo");
  EXPECT_EQ(w->runModel()->objective_of(*w->runModel()->entry(2)), "dpo");
  // bravo selected, then hidden by the filter: Qt makes alpha's row current without selecting it,
  // and the toolbar must not act on alpha (Start was offered for it).
  QAction* start = nullptr;
  for (QAction* a : w->findChildren<QAction*>())
    if (a->text() == "Start") start = a;
  ASSERT_NE(start, nullptr);
  for (int r = 0; r < w->runProxy()->rowCount(); ++r)
    if (w->runProxy()->index(r, RunListModel::Name).data().toString() == "bravo")
      w->runTable()->selectionModel()->setCurrentIndex(w->runProxy()->index(r, 0),
                                                       QItemSelectionModel::ClearAndSelect | QItemSelectionModel::Rows);
  EXPECT_TRUE(start->isEnabled());
  w->runProxy()->setFilterText("beta>0.05");
  EXPECT_EQ(w->runProxy()->rowCount(), 1);
  EXPECT_EQ(w->runProxy()->index(0, RunListModel::Name).data().toString(), "alpha");
  EXPECT_FALSE(start->isEnabled()) << "no run chosen";
  w->runProxy()->setFilterText("tag:baseline");
  EXPECT_EQ(w->runProxy()->index(0, RunListModel::Name).data().toString(), "bravo");
  w->runProxy()->setFilterText("");
  w->runProxy()->sort(RunListModel::Name, Qt::AscendingOrder);
  EXPECT_EQ(w->runProxy()->index(0, RunListModel::Name).data().toString(), "alpha");
  // A change made elsewhere (another process) shows up in place.
  RunStore::open(db_.toStdString()).set_status(1, RunStatus::stopped);
  ASSERT_TRUE(pump_seconds_until([&] { return row_of(*w, 1).status == RunStatus::stopped; }, 20));
  // The best held-out number, from evaluations as this build stores them (under "preference":
  // the column read only the older flat rows and stayed blank), also once the run has finished.
  {
    auto store = RunStore::open(db_.toStdString());
    store.set_status(1, RunStatus::completed);
    EvalReport first, second;
    first.preference = {{"eval_rewards/accuracies", 0.625}, {"eval_loss", 0.6}};
    second.preference = {{"eval_rewards/accuracies", 0.75}, {"eval_loss", 0.5}};
    store.add_eval(1, 10, "eval", "{}", to_json_text(first));
    store.add_eval(1, 20, "eval", "{}", to_json_text(second));
  }
  ASSERT_TRUE(pump_seconds_until([&] { return w->runModel()->entry(1)->best_eval.has_value(); }, 20));
  QString alpha_best;
  for (int r = 0; r < w->runProxy()->rowCount(); ++r)
    if (w->runProxy()->index(r, RunListModel::Name).data().toString() == "alpha")
      alpha_best = w->runProxy()->index(r, RunListModel::BestEval).data().toString();
  EXPECT_EQ(alpha_best, QStringLiteral("acc 0.750"));
  // A deletion elsewhere removes the row.
  RunStore::open(db_.toStdString()).delete_run(2);
  ASSERT_TRUE(pump_seconds_until([&] { return w->runModel()->rowCount() == 1; }, 20));
  // A stored config of another shape (another version, a script) reads as "?", and the window
  // goes on (nlohmann's value() threw while the table painted). The run deleted last keeps its id
  // to itself: the new run is #3, not #2, whose kept log and folder it would have written into.
  const int64_t odd = RunStore::open(db_.toStdString())
                          .create_run("odd", "preference", R"({"objective": {"loss_type": 1}, "ganpo": {"enabled": "yes"}})");
  EXPECT_EQ(odd, 3);
  ASSERT_TRUE(pump_seconds_until([&] { return w->runModel()->rowCount() == 2; }, 20));
  EXPECT_EQ(w->runModel()->objective_of(*w->runModel()->entry(odd)), "?");
  w->grab();  // paints every cell
}

// Bringing a run's tab to the front selects its run in the list, so Pause, Sample now and the
// status bar act on the run in view; several runs selected to compare stay selected.
TEST_F(MainWindowTest, TheRunListFollowsTheRunTabInFront) {
  {
    auto store = RunStore::open(db_.toStdString());
    store.create_run("alpha", "preference", config_to_json(long_run("alpha")).dump());
    store.create_run("bravo", "preference", config_to_json(long_run("bravo")).dump());
  }
  auto w = window();
  ASSERT_TRUE(pump_seconds_until([&] { return w->runModel()->rowCount() == 2; }, 20));
  const auto selected = [&] { return selected_run_ids(*w); };
  w->openRunTab(1);
  w->openRunTab(2);
  EXPECT_EQ(selected(), std::vector<int64_t>{2});
  auto* tabs = w->findChild<QTabWidget*>();
  ASSERT_NE(tabs, nullptr);
  tabs->setCurrentWidget(w->runTab(1));
  EXPECT_EQ(selected(), std::vector<int64_t>{1});
  w->runTable()->selectRow(w->runProxy()->mapFromSource(w->runModel()->index(w->runModel()->rowOf(2), 0)).row());
  w->openRunTab(1);  // already in front: asking for it selects its run all the same
  EXPECT_EQ(selected(), std::vector<int64_t>{1});
  const auto status_text = [&] {
    QString text;
    for (auto* label : w->statusBar()->findChildren<QLabel*>()) text += label->text() + "|";
    return text;
  };
  EXPECT_TRUE(status_text().contains("run 1 · queued")) << status_text().toStdString();
  w->runTable()->selectAll();
  tabs->setCurrentWidget(w->runTab(2));
  EXPECT_EQ(selected(), (std::vector<int64_t>{1, 2}));
  // A tab whose run the filter hides: no row stays selected, so the actions take the tab's run.
  w->runTable()->clearSelection();
  w->runTable()->selectRow(0);
  w->runProxy()->setFilterText("bravo");
  tabs->setCurrentWidget(w->runTab(1));
  EXPECT_TRUE(selected().empty());
  EXPECT_TRUE(status_text().contains("run 1 · queued")) << status_text().toStdString();
}

// A rename (the list's name) is the name everywhere: the open tab's title, and Clone's proposal.
TEST_F(MainWindowTest, ARenamedRunIsClonedAndShownUnderItsNewName) {
  const int64_t id = stored_run();
  auto w = window();
  ASSERT_TRUE(pump_seconds_until([&] { return w->runModel()->rowCount() == 1; }, 20));
  RunTab* tab = w->openRunTab(id);
  ASSERT_NE(tab, nullptr);
  auto* tabs = qobject_cast<QTabWidget*>(tab->parentWidget() ? tab->parentWidget()->parentWidget() : nullptr);
  ASSERT_NE(tabs, nullptr);
  RunStore::open(db_.toStdString()).set_name(id, "baseline");  // what Rename… writes
  ASSERT_TRUE(pump_seconds_until([&] { return row_of(*w, id).name == "baseline"; }, 20));
  EXPECT_EQ(tabs->tabText(tabs->indexOf(tab)).toStdString(), "#" + std::to_string(id) + " baseline");
  w->runTable()->selectRow(0);
  QAction* clone = nullptr;
  for (QAction* a : w->findChildren<QAction*>())
    if (a->text() == "Clone") clone = a;
  ASSERT_NE(clone, nullptr);
  std::string proposed;
  auto asked = when_modal<NewRunDialog>(w.get(), [&](NewRunDialog* d) {
    proposed = d->config().name;
    d->reject();
  });
  clone->trigger();
  ASSERT_TRUE(pump_seconds_until([&] { return *asked; }, 20));
  EXPECT_EQ(proposed, "baseline-clone");
}

TEST_F(MainWindowTest, FullFlowWorkerPointsOnDashboardThenStop) {
  auto w = window();
  int64_t id = -1;
  QObject::connect(w.get(), &MainWindow::runCreated, [&](qint64 created) { id = created; });
  // Through the New Run dialog, as a person would: the demo preset, shortened, then OK.
  const auto dialog_seen = when_modal<NewRunDialog>(w.get(), [&](NewRunDialog* dialog) {
    EXPECT_TRUE(dialog->selectPreset("demo"));
    // The demo is a pipeline (SFT first); this test trains its preference stage alone.
    ASSERT_FALSE(dialog->config().pipeline.empty());
    auto* drop = dialog->findChild<QPushButton*>("dropPipeline");
    ASSERT_TRUE(drop && drop->isVisible());
    drop->click();
    RunConfig c = dialog->config();
    EXPECT_TRUE(c.pipeline.empty());
    EXPECT_EQ(c.name, "demo");
    RunConfig quick = long_run("flow");
    c.name = quick.name;
    c.data = quick.data;
    c.ganpo = quick.ganpo;
    c.train = quick.train;
    c.sampling = quick.sampling;
    dialog->setConfig(c);
    EXPECT_TRUE(dialog->problems().isEmpty()) << dialog->problems().join("; ").toStdString();
    dialog->accept();
  });
  w->openNewRunDialog();
  ASSERT_TRUE(*dialog_seen);
  ASSERT_TRUE(pump_seconds_until([&] { return id > 0; }, 20));
  ASSERT_TRUE(pump_seconds_until([&] { return row_of(*w, id).status == RunStatus::running; }, 120))
      << "status " << to_string(row_of(*w, id).status) << " " << row_of(*w, id).error;
  EXPECT_EQ(row_of(*w, id).name, "flow");
  RunTab* tab = w->runTab(id);
  ASSERT_NE(tab, nullptr);
  ASSERT_TRUE(pump_seconds_until([&] { return tab->dashboard()->pointsLoaded() > 0; }, 120)) << "points on the dashboard";
  const int64_t first = tab->dashboard()->pointsLoaded();
  ASSERT_TRUE(pump_seconds_until([&] { return tab->dashboard()->pointsLoaded() > first; }, 60)) << "and more arrive live";
  w->sendControl(id, "stop");
  ASSERT_TRUE(pump_seconds_until([&] { return row_of(*w, id).status == RunStatus::stopped; }, 120));
  auto store = RunStore::open(db_.toStdString());
  const auto checkpoints = store.checkpoints(id);
  ASSERT_FALSE(checkpoints.empty());
  EXPECT_EQ(checkpoints.back().step, store.run(id)->last_step);
  EXPECT_TRUE(fs::is_directory(fs::path(checkpoints.back().path) / "trainer_state"));
  // The worker's output went to the run's log file, which the Log tab shows.
  EXPECT_TRUE(QFile::exists(w->launcher()->logPath(id)));
}

// The demo preset's pipeline, shortened: queued as a study, its driver started by the window,
// the SFT run's tab opened at once and the preference run's tab when it starts; both complete.
TEST_F(MainWindowTest, APipelineRunsItsStagesInOrderAndOpensEachTab) {
  NewRunDialog dialog;
  ASSERT_TRUE(dialog.selectPreset("demo"));
  RunConfig c = dialog.config();
  ASSERT_EQ(c.pipeline.size(), 1u);
  const RunConfig small = long_run("chain");
  c.name = "chain";
  c.data = small.data;
  c.ganpo = small.ganpo;
  c.sampling = small.sampling;
  c.train.max_steps = 2;
  c.train.eval_steps = 0;
  c.train.save_steps = 0;
  c.train.per_device_train_batch_size = 4;
  c.eval.num_prompts = 6;
  c.eval.temperatures = "1.0";
  c.eval.max_new_tokens = 12;
  c.pipeline[0].assignments = {"stage=sft", "ganpo.enabled=false", "train.max_steps=3"};

  auto w = window();
  int64_t study = -1;
  QObject::connect(w.get(), &MainWindow::studyCreated, [&](qint64 id) { study = id; });
  w->createAndStartRun(c);
  ASSERT_TRUE(pump_seconds_until([&] { return study > 0; }, 20));
  ASSERT_TRUE(pump_seconds_until([&] { return w->runTab(1) != nullptr; }, 20)) << "the first stage's tab opens at once";
  ASSERT_TRUE(pump_seconds_until([&] { return row_of(*w, 2).status == RunStatus::completed; }, 120))
      << "run 1 " << to_string(row_of(*w, 1).status) << " " << row_of(*w, 1).error << "; run 2 "
      << to_string(row_of(*w, 2).status) << " " << row_of(*w, 2).error;
  EXPECT_EQ(row_of(*w, 1).status, RunStatus::completed);
  EXPECT_EQ(row_of(*w, 1).stage, "sft");
  EXPECT_EQ(row_of(*w, 2).name, "chain");
  EXPECT_NE(w->runTab(2), nullptr) << "the next stage's tab opened when it started";
  EXPECT_EQ(selected_run_ids(*w), std::vector<int64_t>{1}) << "a tab that opens on its own leaves the row selected";
  auto store = RunStore::open(db_.toStdString());
  EXPECT_EQ(study_run_ids(store, study), (std::vector<int64_t>{1, 2}));
}

// New study from a run (right-click): the dialog starts from that run's config; Start queues the
// study, starts its driver and opens its Study tab; the runs train to completion.
TEST_F(MainWindowTest, NewStudyFromARunQueuesAndRunsIt) {
  RunConfig base = long_run("base");
  base.train.max_steps = 2;
  base.eval.num_prompts = 6;
  base.eval.temperatures = "1.0";
  base.eval.max_new_tokens = 12;
  int64_t base_id = 0;
  {
    RunStore store = RunStore::open(db_.toStdString());
    base_id = RunService(store).create(base);
  }
  auto w = window();
  ASSERT_TRUE(pump_seconds_until([&] { return w->runModel()->entry(base_id) != nullptr; }, 20));
  int64_t study = -1;
  QObject::connect(w.get(), &MainWindow::studyCreated, [&](qint64 id) { study = id; });
  const auto dialog_seen = when_modal<StudyDialog>(w.get(), [&](StudyDialog* dialog) {
    EXPECT_EQ(dialog->spec().base.name, "base") << "the run's config is the base";
    dialog->clearGrid();
    dialog->addGridRow("ganpo.enabled", "false, true");
    dialog->setSeeds("5");
    EXPECT_EQ(dialog->runCount(), 2);
    dialog->accept();
  });
  w->openStudyDialog(base_id);
  ASSERT_TRUE(pump_seconds_until([&] { return *dialog_seen && study > 0; }, 20));
  ASSERT_TRUE(pump_seconds_until([&] { return w->findChild<StudyView*>() != nullptr; }, 20)) << "its Study tab opens";
  RunStore store = RunStore::open(db_.toStdString());
  const auto ids = study_run_ids(store, study);
  ASSERT_EQ(ids.size(), 2u);
  ASSERT_TRUE(pump_seconds_until([&] { return row_of(*w, ids[1]).status == RunStatus::completed; }, 120))
      << to_string(row_of(*w, ids[0]).status) << " / " << to_string(row_of(*w, ids[1]).status);
  EXPECT_EQ(row_of(*w, ids[0]).status, RunStatus::completed);
  EXPECT_EQ(row_of(*w, base_id).status, RunStatus::queued) << "the base run itself is untouched";
}

// A worker that ends before it takes its run (here a program that exits at once; in life a
// library it cannot load, a workspace it cannot open) leaves the run failed, saying where its
// output is, not queued for ever.
TEST_F(MainWindowTest, AWorkerThatEndsBeforeTakingItsRunLeavesItFailed) {
  const int64_t id = stored_run();
  auto w = window();
  ASSERT_TRUE(pump_seconds_until([&] { return w->runModel()->rowCount() == 1; }, 20));
  w->launcher()->setWorkerProgram("/bin/true");
  w->startRun(id);
  ASSERT_TRUE(pump_seconds_until([&] { return row_of(*w, id).status == RunStatus::failed; }, 60))
      << to_string(row_of(*w, id).status);
  EXPECT_NE(row_of(*w, id).error.find("ended before it took the run; its output is in "), std::string::npos)
      << row_of(*w, id).error;
  EXPECT_NE(row_of(*w, id).error.find("logs/run-" + std::to_string(id) + ".log"), std::string::npos) << row_of(*w, id).error;
}

TEST_F(MainWindowTest, KilledWorkerShowsFailedAndTheWindowKeepsWorking) {
  auto w = window();
  int64_t id = -1;
  QObject::connect(w.get(), &MainWindow::runCreated, [&](qint64 created) { id = created; });
  QString finished_status;
  QObject::connect(w.get(), &MainWindow::runFinished, [&](qint64, const QString& s) { finished_status = s; });
  w->createAndStartRun(long_run("doomed"));
  ASSERT_TRUE(pump_seconds_until([&] { return id > 0 && row_of(*w, id).status == RunStatus::running && row_of(*w, id).worker_pid; }, 120));
  const pid_t pid = static_cast<pid_t>(*row_of(*w, id).worker_pid);
  ASSERT_EQ(::kill(pid, SIGKILL), 0);
  ASSERT_TRUE(pump_seconds_until([&] { return row_of(*w, id).status == RunStatus::failed; }, 60));
  EXPECT_NE(row_of(*w, id).error.find("stopped without reporting"), std::string::npos) << row_of(*w, id).error;
  EXPECT_EQ(finished_status, "failed") << "the window announced it";
  EXPECT_TRUE(w->isVisible());
  // Still working: another run starts and runs.
  w->createAndStartRun(long_run("after"));
  ASSERT_TRUE(pump_seconds_until([&] { return w->runModel()->rowCount() == 2; }, 20));
  const int64_t second = id;
  ASSERT_TRUE(pump_seconds_until([&] { return row_of(*w, second).status == RunStatus::running; }, 120));
  w->close();  // close choice: stop runs
  ASSERT_TRUE(pump_seconds_until([&] { return RunStore::open(db_.toStdString()).run(second)->status == RunStatus::stopped; }, 120));
}

// Deleting asks, and Enter (or Return) in that question keeps the runs: Cancel is its default, not
// Delete.
TEST_F(MainWindowTest, EnterInTheDeleteQuestionKeepsTheRuns) {
  const int64_t id = stored_run();
  auto w = window();
  ASSERT_TRUE(pump_seconds_until([&] { return w->runModel()->rowCount() == 1; }, 20));
  w->runTable()->selectRow(0);
  const QPoint at = w->runTable()->visualRect(w->runProxy()->index(0, RunListModel::Name)).center();
  // The run list's context menu: its Delete… entry.
  auto* menu_poll = new QTimer(w.get());
  QObject::connect(menu_poll, &QTimer::timeout, menu_poll, [menu_poll] {
    auto* menu = qobject_cast<QMenu*>(QApplication::activePopupWidget());
    if (!menu) return;
    menu_poll->stop();
    for (QAction* a : menu->actions())
      if (a->text().startsWith("Delete")) {
        menu->close();
        a->trigger();
        return;
      }
  });
  menu_poll->start(10);
  bool cancel_is_default = false;
  auto asked = when_modal<QMessageBox>(w.get(), [&](QMessageBox* box) {
    cancel_is_default = box->defaultButton() == box->button(QMessageBox::Cancel);
    QPointer<QMessageBox> guard(box);
    QTimer::singleShot(1000, [guard] {
      if (guard) guard->reject();  // (whatever Enter did not close)
    });
    QKeyEvent press(QEvent::KeyPress, Qt::Key_Return, Qt::NoModifier);
    QApplication::sendEvent(box->focusWidget() ? box->focusWidget() : box, &press);
  });
  Q_EMIT w->runTable()->customContextMenuRequested(at);
  ASSERT_TRUE(pump_seconds_until([&] { return *asked; }, 20));
  w->store()->drain();
  w->pollNow();
  pump_seconds_until([] { return false; }, 1);
  EXPECT_TRUE(cancel_is_default) << "the delete question's default button is not Cancel";
  EXPECT_TRUE(RunStore::open(db_.toStdString()).run(id).has_value()) << "Enter deleted the run";
}

TEST_F(MainWindowTest, AStudyOpensInATabOfItsOwnOnce) {
  int64_t study = 0;
  {
    RunStore store = RunStore::open(db_.toStdString());
    const std::string text = "name = \"tabbed\"\nseeds = [1]\n[base]\n[grid]\n\"ganpo.enabled\" = [false, true]\n";
    study = create_study(store, "tabbed", text, expand_study(study_from_toml(text, ".", "s"), (dir_ / "o").string()));
  }
  auto w = window();
  StudyView* view = w->openStudyTab(study);
  ASSERT_NE(view, nullptr);
  EXPECT_EQ(w->openStudyTab(study), view) << "the open tab is brought forward, not a second one";
  ASSERT_TRUE(pump_seconds_until([&] { return view->isLoaded(); }, 20));
  EXPECT_EQ(view->runsTable()->rowCount(), 2);
  EXPECT_EQ(view->armsTable()->rowCount(), 2);
  // Clicking an arm selects its runs in the run list and compares them (UX.md; it only compared).
  ASSERT_TRUE(pump_seconds_until([&] { return w->runModel()->rowCount() == 2; }, 20));
  Q_EMIT view->armActivated(std::vector<int64_t>{1, 2});
  EXPECT_EQ(selected_run_ids(*w), (std::vector<int64_t>{1, 2}));
  EXPECT_NE(qobject_cast<CompareView*>(w->findChild<QTabWidget*>()->currentWidget()), nullptr);
  // A study's queued run is not started alone (it would skip its stages and the jobs limit).
  QAction* start = nullptr;
  for (QAction* a : w->findChildren<QAction*>())
    if (a->text() == "Start") start = a;
  ASSERT_NE(start, nullptr);
  for (int r = 0; r < w->runProxy()->rowCount(); ++r)
    if (w->runProxy()->index(r, 0).data(RunListModel::RunIdRole).toLongLong() == 1)
      w->runTable()->selectionModel()->setCurrentIndex(w->runProxy()->index(r, 0),
                                                       QItemSelectionModel::ClearAndSelect | QItemSelectionModel::Rows);
  EXPECT_FALSE(start->isEnabled());
  EXPECT_TRUE(start->toolTip().contains("waits in study")) << start->toolTip().toStdString();
}

// Export (the toolbar's, UX.md): each selected run's tables as CSV files in the folder picked,
// written whole (no .part left), and a folder that cannot be written is said.
TEST_F(MainWindowTest, ExportWritesEachRunsTablesAsCsv) {
  const int64_t a = stored_run(), b = stored_run();
  {
    RunStore store = RunStore::open(db_.toStdString());
    for (int64_t step = 1; step <= 3; ++step) store.append_metrics({{0, a, step, "loss", 0.5, 1.0 * step, std::nullopt}});
    store.add_event(b, "info", "hello, \"quoted\"");
  }
  auto w = window();
  ASSERT_TRUE(pump_seconds_until([&] { return w->runModel()->rowCount() == 2; }, 20));
  QString message;
  QObject::connect(w.get(), &MainWindow::exported, [&](const QString& m) { message = m; });
  const fs::path out = dir_ / "exported";
  fs::create_directories(out);
  w->exportRuns({a, b}, QString::fromStdString(out.string()));
  ASSERT_TRUE(pump_seconds_until([&] { return !message.isEmpty(); }, 20));
  EXPECT_TRUE(message.startsWith("Exported 2 run(s) to ")) << message.toStdString();
  EXPECT_TRUE(message.contains("8 CSV files")) << message.toStdString();
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(out)) names.push_back(entry.path().filename().string());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"run-1-evals.csv", "run-1-events.csv", "run-1-metrics.csv", "run-1-samples.csv",
                                             "run-2-evals.csv", "run-2-events.csv", "run-2-metrics.csv", "run-2-samples.csv"}));
  std::ifstream metrics(out / "run-1-metrics.csv");
  std::string header, first;
  std::getline(metrics, header);
  std::getline(metrics, first);
  EXPECT_EQ(header, "step,wall_time,loss\r");  // (RFC 4180 line ends)
  EXPECT_EQ(first.substr(0, 2), "1,");
  message.clear();
  w->exportRuns({a}, QString::fromStdString((dir_ / "no-such-folder").string()));
  ASSERT_TRUE(pump_seconds_until([&] { return !message.isEmpty(); }, 20));
  EXPECT_TRUE(message.startsWith("Export failed after 0 file(s): cannot write ")) << message.toStdString();
}

TEST_F(MainWindowTest, AWorkspaceMovedAwayIsSaidOnceAndTheWindowRecoversWhenItIsPutBack) {
  const int64_t id = stored_run();
  auto w = window();
  ASSERT_TRUE(pump_seconds_until([&] { return w->runModel()->rowCount() == 1; }, 20));
  int announced = 0;
  QObject::connect(w->store(), &StoreWorker::workspaceProblemChanged, w.get(),
                   [&](const QString& problem) { announced += problem.isEmpty() ? 0 : 1; });
  const auto write_errors = write_errors_of(*w);

  // Moved away while open (a sync tool, a cleanup): the window says so once, however often it polls.
  const fs::path path = db_.toStdString();
  const fs::path moved = dir_ / "moved-away.sqlite";
  fs::rename(path, moved);
  for (int i = 0; i < 3; ++i) {
    w->pollNow();
    w->store()->drain();
    QCoreApplication::processEvents();
  }
  ASSERT_TRUE(pump_seconds_until([&] { return !w->workspaceProblem().isEmpty(); }, 20));
  EXPECT_TRUE(w->workspaceProblem().contains("was deleted, moved or replaced while the window had it open"))
      << w->workspaceProblem().toStdString();
  EXPECT_TRUE(w->workspaceProblem().contains("put the file back")) << w->workspaceProblem().toStdString();
  EXPECT_TRUE(w->statusBar()->currentMessage().contains("Workspace unavailable"));
  EXPECT_EQ(announced, 1);
  EXPECT_EQ(w->runModel()->rowCount(), 1);  // what it showed stays

  // A write now is refused with the reason: it would land in a file nobody will open again.
  w->store()->execute([id](RunStore& s) { s.set_tags(id, "lost"); });
  ASSERT_TRUE(pump_seconds_until([&] { return !write_errors->isEmpty(); }, 20));
  EXPECT_TRUE(write_errors->front().contains("deleted, moved or replaced")) << write_errors->front().toStdString();

  // Put back: the window says it can use it again, and writes land.
  fs::rename(moved, path);
  w->pollNow();
  ASSERT_TRUE(pump_seconds_until([&] { return w->workspaceProblem().isEmpty(); }, 20));
  EXPECT_EQ(announced, 1);
  w->store()->execute([id](RunStore& s) { s.set_tags(id, "kept"); });
  w->store()->drain();
  EXPECT_EQ(RunStore::open(db_.toStdString()).run(id)->tags, "kept");
  EXPECT_EQ(write_errors->size(), 1);
}

TEST_F(MainWindowTest, AWindowWriteOnAFullDiskSaysWhatToFreeAndLosesNothing) {
  const int64_t id = stored_run();
  RunStore::open(db_.toStdString()).set_tags(id, "before");
  auto w = window();
  ASSERT_TRUE(pump_seconds_until([&] { return w->runModel()->rowCount() == 1; }, 20));
  const auto write_errors = write_errors_of(*w);

  {
    test::FileSizeLimit full_disk(0);  // no file of this process may grow
    w->store()->execute([id](RunStore& s) { s.set_tags(id, "while full"); });
    w->store()->drain();
  }

  ASSERT_TRUE(pump_seconds_until([&] { return !write_errors->isEmpty(); }, 20));
  EXPECT_TRUE(write_errors->front().contains("cannot be written")) << write_errors->front().toStdString();
  EXPECT_TRUE(write_errors->front().contains("Free disk space on its drive")) << write_errors->front().toStdString();
  EXPECT_TRUE(w->statusBar()->currentMessage().contains("Workspace: The workspace"));
  // The window keeps working, the stored value is intact, and the next write lands.
  w->pollNow();
  ASSERT_TRUE(pump_seconds_until([&] { return w->runModel()->rowCount() == 1; }, 20));
  EXPECT_EQ(RunStore::open(db_.toStdString()).run(id)->tags, "before");
  w->store()->execute([id](RunStore& s) { s.set_tags(id, "after"); });
  w->store()->drain();
  EXPECT_EQ(RunStore::open(db_.toStdString()).run(id)->tags, "after");
  EXPECT_EQ(write_errors->size(), 1);
}

TEST_F(MainWindowTest, AnotherProgramHoldingTheWriteLockNeitherFreezesTheWindowNorLosesItsWrites) {
  const int64_t id = stored_run();
  auto w = window();
  ASSERT_TRUE(pump_seconds_until([&] { return w->runModel()->rowCount() == 1; }, 20));
  const auto write_errors = write_errors_of(*w);
  int polls = 0;
  QObject::connect(w.get(), &MainWindow::polled, w.get(), [&] { ++polls; });

  // Another connection takes the write lock and keeps it.
  auto other = RunStore::open(db_.toStdString());
  other.database().exec("BEGIN IMMEDIATE");
  other.database().exec("UPDATE runs SET notes = 'uncommitted' WHERE id = " + std::to_string(id));
  // The window still reads (WAL readers never wait for the writer), on its store thread.
  const int before = polls;
  w->pollNow();
  ASSERT_TRUE(pump_seconds_until([&] { return polls > before; }, 20));
  // A write from the window waits SQLite's busy timeout, then says what happened; nothing changes.
  w->store()->execute([id](RunStore& s) { s.set_tags(id, "while locked"); });
  ASSERT_TRUE(pump_seconds_until([&] { return !write_errors->isEmpty(); }, 60));
  EXPECT_TRUE(write_errors->front().contains("is locked: another program")) << write_errors->front().toStdString();
  other.database().exec("COMMIT");
  // Once the lock is gone the same write lands, beside the other program's change.
  w->store()->execute([id](RunStore& s) { s.set_tags(id, "after the lock"); });
  w->store()->drain();
  const auto run = RunStore::open(db_.toStdString()).run(id);
  EXPECT_EQ(run->tags, "after the lock");
  EXPECT_EQ(run->notes, "uncommitted");
  EXPECT_EQ(write_errors->size(), 1);
}

// UX.md "Errors": a run that fails (here its data file is gone) shows a box with what happened and
// what to do, and the window keeps working: the box is not modal.
TEST_F(MainWindowTest, ARunThatFailsSaysWhatHappenedAndWhatToDo) {
  RunConfig c = long_run("data-gone");
  c.data.builtin = "";
  c.data.train = (dir_ / "moved-away.jsonl").string();
  const int64_t id = RunStore::open(db_.toStdString()).create_run(c.name, c.stage, config_to_json(c).dump());
  auto w = window();
  ASSERT_TRUE(pump_seconds_until([&] { return w->runModel()->rowCount() == 1; }, 20));
  w->startRun(id);
  ASSERT_TRUE(pump_seconds_until([&] { return row_of(*w, id).status == RunStatus::failed; }, 120))
      << to_string(row_of(*w, id).status);
  QMessageBox* box = nullptr;
  pump_seconds_until([&] {
    for (auto* b : w->findChildren<QMessageBox*>("run-failed"))
      if (b->isVisible()) box = b;
    return box != nullptr;
  }, 5);
  ASSERT_NE(box, nullptr) << "a failed run was announced in the status bar only: "
                          << w->statusBar()->currentMessage().toStdString();
  // (Its reason is the run's error as the window read it when the run failed: the worker's own
  // "cannot open dataset .../moved-away.jsonl", or, where the window saw the worker end first,
  // that it ended; the box names the run either way.)
  EXPECT_NE(box->text().indexOf(QString("Run %1 'data-gone' failed: ").arg(id)), -1) << box->text().toStdString();
  EXPECT_FALSE(box->detailedText().isEmpty());
  EXPECT_NE(box->informativeText().indexOf("press Start"), -1) << box->informativeText().toStdString();
  EXPECT_EQ(QApplication::activeModalWidget(), nullptr) << "the window keeps working";
  box->close();
}
