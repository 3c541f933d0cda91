// GenerationService and CheckpointsView against real checkpoint folders (freshly initialised
// tiny models written with save_model_files) and a real run store.
#include <gtest/gtest.h>

#include <QApplication>
#include <QDir>
#include <QElapsedTimer>
#include <QFile>
#include <QLabel>
#include <QPushButton>
#include <QTableWidget>
#include <QTemporaryDir>
#include <QThread>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>

#include <nlohmann/json.hpp>

#include "core/atomic_folder.h"
#include "core/checkpoint.h"
#include "core/tasks/lists_task.h"
#include "core/model/model_shape.h"
#include "db/run_store.h"
#include "ui/checkpoints_view.h"
#include "ui/generation_service.h"
#include "ui/store_worker.h"
#include "screenshot_test_support.h"

namespace ganpo::ui {
namespace {

template <class Pred>
bool wait_until(Pred pred, int timeout_ms) {
  QElapsedTimer t;
  t.start();
  while (!pred() && t.elapsed() < timeout_ms) {
    QCoreApplication::processEvents(QEventLoop::AllEvents, 20);
    QThread::msleep(2);
  }
  return pred();
}

// Writes a freshly initialised tiny model (seeded) into dir.
void write_tiny_model(const QString& dir, uint64_t seed) {
  torch::manual_seed(seed);
  ModelConfig mc;
  mc.preset = "tiny";
  ByteTokenizer tok;
  CausalLM model(resolve_model_shape(mc, tok.vocab_size()));
  save_model_files(dir.toStdString(), model, tok);
}

std::string lists_prompt(uint64_t seed) {
  std::mt19937_64 rng(seed);
  return lists::render_prompt(lists::random_spec(rng));
}

struct Outcome {
  bool done = false;
  QVector<GenerationOutput> outputs;
  QString error;
  int progress_reports = 0;
};

void watch(GenerationService& s, Outcome& o) {
  QObject::connect(&s, &GenerationService::finished, &s, [&o](const QVector<GenerationOutput>& out) {
    o.outputs = out;
    o.done = true;
  });
  QObject::connect(&s, &GenerationService::failed, &s, [&o](const QString& e) {
    o.error = e;
    o.done = true;
  });
  QObject::connect(&s, &GenerationService::progress, &s, [&o](int, int) { ++o.progress_reports; });
}

class GenerationServiceTest : public ::testing::Test {
protected:
  static void SetUpTestSuite() {
    dir_ = new QTemporaryDir;
    ASSERT_TRUE(dir_->isValid());
    write_tiny_model(a(), 11);
    write_tiny_model(b(), 22);
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }
  static QString a() { return dir_->filePath(QStringLiteral("checkpoint-10")); }
  static QString b() { return dir_->filePath(QStringLiteral("checkpoint-20")); }
  static QTemporaryDir* dir_;
};
QTemporaryDir* GenerationServiceTest::dir_ = nullptr;

TEST_F(GenerationServiceTest, RoundTripTwoCheckpointsIsDeterministicAndScored) {
  GenerationService service(nullptr, QStringLiteral("cpu"));
  Outcome first;
  watch(service, first);
  GenerationRequest req;
  req.model_dirs = {a(), b()};
  req.labels = {QStringLiteral("step 10"), QStringLiteral("step 20")};
  req.prompts = {QString::fromStdString(lists_prompt(3))};
  req.temperature = 1.0;
  req.max_new_tokens = 24;
  req.seed = 7;
  ASSERT_TRUE(service.generate(req));
  EXPECT_FALSE(service.generate(req)) << "a second request while busy is refused";
  ASSERT_TRUE(wait_until([&] { return first.done; }, 120000));
  ASSERT_TRUE(first.error.isEmpty()) << first.error.toStdString();
  ASSERT_EQ(first.outputs.size(), 2);
  EXPECT_GT(first.progress_reports, 0);
  for (const auto& o : first.outputs) {
    EXPECT_FALSE(o.text.isEmpty()) << o.label.toStdString();
    EXPECT_GT(o.tokens, 0);
    EXPECT_FALSE(o.cancelled);
    ASSERT_EQ(o.logprob_under_each_model.size(), 2u);
    for (double lp : o.logprob_under_each_model) {
      EXPECT_TRUE(std::isfinite(lp));
      EXPECT_LT(lp, 0.0);
    }
    EXPECT_GE(o.judge_score, 0.0);
    EXPECT_LE(o.judge_score, 1.0);
    EXPECT_GE(o.seconds_total, o.seconds_to_first_token);
  }
  EXPECT_EQ(first.outputs[0].label, QStringLiteral("step 10"));
  EXPECT_EQ(first.outputs[1].model_index, 1);
  // A model scores its own sample; different weights give different log-probs.
  EXPECT_NE(first.outputs[0].logprob_under_each_model[0], first.outputs[0].logprob_under_each_model[1]);
  EXPECT_EQ(service.loadCount(), 2);

  // Same seed, same text; the second request finds both models in the cache.
  Outcome second;
  GenerationService* s = &service;
  QObject::disconnect(s, nullptr, nullptr, nullptr);
  watch(service, second);
  ASSERT_TRUE(service.generate(req));
  ASSERT_TRUE(wait_until([&] { return second.done; }, 120000));
  ASSERT_TRUE(second.error.isEmpty()) << second.error.toStdString();
  ASSERT_EQ(second.outputs.size(), 2);
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(second.outputs[i].text, first.outputs[i].text);
    EXPECT_NEAR(second.outputs[i].logprob_under_each_model[0], first.outputs[i].logprob_under_each_model[0], 1e-4);
  }
  EXPECT_EQ(service.loadCount(), 2) << "the second request must not reload the models";
}

// Text streams into each (model, prompt) cell while sampling; the last text streamed is the
// final output's text.
TEST_F(GenerationServiceTest, TextStreamsAndEndsAsTheFinalText) {
  GenerationService service(nullptr, QStringLiteral("cpu"));
  Outcome outcome;
  watch(service, outcome);
  std::map<std::pair<int, int>, QString> last;
  std::map<std::pair<int, int>, int> growths;
  int signals = 0;
  QObject::connect(&service, &GenerationService::textStreamed, &service, [&](int m, const QStringList& texts) {
    ++signals;
    for (int p = 0; p < texts.size(); ++p) {
      const QString before = last[{p, m}];
      EXPECT_TRUE(texts[p].startsWith(before)) << "streamed text only grows";
      if (texts[p] != before) ++growths[{p, m}];
      last[{p, m}] = texts[p];
    }
  });
  GenerationRequest req;
  req.model_dirs = {a(), b()};
  req.prompts = {QString::fromStdString(lists_prompt(4)), QStringLiteral("Hello")};
  req.temperature = 1.0;
  req.max_new_tokens = 20;
  req.seed = 3;
  ASSERT_TRUE(service.generate(req));
  ASSERT_TRUE(wait_until([&] { return outcome.done; }, 120000));
  ASSERT_TRUE(outcome.error.isEmpty()) << outcome.error.toStdString();
  EXPECT_GE(signals, 2) << "at least the first token and the end of each model";
  for (const auto& o : outcome.outputs) {
    EXPECT_EQ((last[{o.prompt_index, o.model_index}]), o.text) << o.label.toStdString();
    EXPECT_TRUE(o.chat_template.isEmpty()) << "the byte tokenizer has no chat template";
    EXPECT_EQ(o.model_prompt, o.prompt);
  }
}

// A model folder with a Hugging Face tokenizer and a chat template gets the prompt as a user
// turn in that template (scored the same way); with the checkbox off, the plain prompt.
TEST_F(GenerationServiceTest, ChatTemplateOfTheModelFolderFramesThePrompt) {
  const QString chat = dir_->filePath(QStringLiteral("chatml-model"));
  write_tiny_model(chat, 33);
  // The byte tokenizer's tokenizer.json read as a Hugging Face tokenizer, with ChatML.
  const std::string config_path = (chat + QStringLiteral("/tokenizer_config.json")).toStdString();
  nlohmann::json config = nlohmann::json::parse(std::ifstream(config_path));
  config.erase("kind");
  std::ifstream fixture(std::string(GANPO_SOURCE_DIR) + "/tests/core/text/chat_templates/chatml.json");
  config["chat_template"] = nlohmann::json::parse(fixture)["chat_template"];
  std::ofstream(config_path) << config.dump(2);

  GenerationService service(nullptr, QStringLiteral("cpu"));
  GenerationRequest req;
  req.model_dirs = {chat, a()};
  req.prompts = {QStringLiteral("Hi")};
  req.temperature = 0;
  req.max_new_tokens = 6;
  for (bool use_template : {true, false}) {
    Outcome outcome;
    QObject::disconnect(&service, nullptr, nullptr, nullptr);
    watch(service, outcome);
    req.chat_template = use_template;
    ASSERT_TRUE(service.generate(req));
    ASSERT_TRUE(wait_until([&] { return outcome.done; }, 120000));
    ASSERT_TRUE(outcome.error.isEmpty()) << outcome.error.toStdString();
    ASSERT_EQ(outcome.outputs.size(), 2);
    const GenerationOutput& templated = outcome.outputs[0];
    EXPECT_EQ(templated.prompt, QStringLiteral("Hi"));
    if (use_template) {
      EXPECT_EQ(templated.chat_template, QStringLiteral("chatml"));
      EXPECT_EQ(templated.model_prompt, QStringLiteral("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"));
    } else {
      EXPECT_TRUE(templated.chat_template.isEmpty());
      EXPECT_EQ(templated.model_prompt, QStringLiteral("Hi"));
    }
    // The byte-tokenizer model has no template either way.
    EXPECT_EQ(outcome.outputs[1].model_prompt, QStringLiteral("Hi"));
    for (const auto& o : outcome.outputs)
      for (double lp : o.logprob_under_each_model) EXPECT_TRUE(std::isfinite(lp));
  }
}

TEST_F(GenerationServiceTest, CacheIsBoundedAndKeyedByFolder) {
  GenerationService service(nullptr, QStringLiteral("cpu"), /*cache_capacity=*/1);
  EXPECT_EQ(service.cacheCapacity(), 1);
  Outcome o1;
  watch(service, o1);
  GenerationRequest req;
  req.model_dirs = {a()};
  req.prompts = {QStringLiteral("hello")};
  req.max_new_tokens = 4;
  ASSERT_TRUE(service.generate(req));
  ASSERT_TRUE(wait_until([&] { return o1.done; }, 60000));
  EXPECT_EQ(service.loadCount(), 1);
  o1.done = false;
  req.prompts = {QStringLiteral("another prompt")};
  ASSERT_TRUE(service.generate(req));
  ASSERT_TRUE(wait_until([&] { return o1.done; }, 60000));
  EXPECT_EQ(service.loadCount(), 1) << "same folder, new prompt: no reload";
  o1.done = false;
  req.model_dirs = {b()};
  ASSERT_TRUE(service.generate(req));
  ASSERT_TRUE(wait_until([&] { return o1.done; }, 60000));
  o1.done = false;
  req.model_dirs = {a()};
  ASSERT_TRUE(service.generate(req));
  ASSERT_TRUE(wait_until([&] { return o1.done; }, 60000));
  EXPECT_EQ(service.loadCount(), 3) << "capacity 1: b evicted a, so a is loaded again";
}

// Whichever moment cancel() lands at (the first model sampling, between the models, the second
// model sampling, or scoring), the request finishes with what it had: the models sampled so far,
// in order, and no scores. Every branch is checked; none depends on when cancel() arrived.
TEST_F(GenerationServiceTest, CancelReturnsPartialResultQuickly) {
  GenerationService service(nullptr, QStringLiteral("cpu"));
  Outcome out;
  watch(service, out);
  bool sampled_one = false;
  QObject::connect(&service, &GenerationService::modelSampled, &service, [&](int) { sampled_one = true; });
  GenerationRequest req;
  req.model_dirs = {a(), b()};
  for (int i = 0; i < 48; ++i) req.prompts << QString::fromStdString(lists_prompt(100 + static_cast<uint64_t>(i)));
  req.max_new_tokens = 180;
  req.temperature = 1.0;
  ASSERT_TRUE(service.generate(req));
  // The third progress report comes from the first model's sampling (the first two are the start
  // and its first token), so the cut comes after that model has begun.
  ASSERT_TRUE(wait_until([&] { return out.progress_reports >= 3 || out.done; }, 60000));
  ASSERT_FALSE(out.done) << "2 models x 48 prompts x 180 tokens must still be running";
  QElapsedTimer t;
  t.start();
  service.cancel();
  ASSERT_TRUE(wait_until([&] { return out.done; }, 30000));
  const auto cancel_ms = t.elapsed();
  std::printf("[ cancel   ] finished %lld ms after cancel()\n", static_cast<long long>(cancel_ms));
  EXPECT_TRUE(out.error.isEmpty()) << out.error.toStdString();
  EXPECT_FALSE(service.isBusy());
  ASSERT_TRUE(out.outputs.size() == 48 || out.outputs.size() == 96) << out.outputs.size() << " outputs";
  const int models_sampled = out.outputs.size() / 48;
  for (int i = 0; i < out.outputs.size(); ++i) {
    const GenerationOutput& o = out.outputs[i];
    EXPECT_EQ(o.model_index, i / 48);
    EXPECT_EQ(o.prompt_index, i % 48);
    EXPECT_TRUE(o.logprob_under_each_model.empty()) << "cut before scoring finished: no scores";
    EXPECT_LE(o.tokens, 180);
    // Cut in a model, between the two or in scoring: the request was cut short, so every output
    // says so (and the view says "Cancelled", not "48 output(s)").
    EXPECT_TRUE(o.cancelled) << "output " << i << " of " << models_sampled << " model(s)";
  }
  // The first model's turn ended (cut or complete), so its columns were told to fill in.
  EXPECT_TRUE(sampled_one);
  // The service is usable again.
  out.done = false;
  req.prompts = {QStringLiteral("hi")};
  req.max_new_tokens = 3;
  ASSERT_TRUE(service.generate(req));
  ASSERT_TRUE(wait_until([&] { return out.done; }, 60000));
  EXPECT_EQ(out.outputs.size(), 2);
}

TEST_F(GenerationServiceTest, CorruptOrMissingCheckpointFailsWithTheFolderName) {
  const QString bad = dir_->filePath(QStringLiteral("checkpoint-broken"));
  std::filesystem::copy(a().toStdString(), bad.toStdString(), std::filesystem::copy_options::recursive);
  const std::string weights = (bad + QStringLiteral("/model.safetensors")).toStdString();
  std::filesystem::resize_file(weights, std::filesystem::file_size(weights) / 2);

  GenerationService service(nullptr, QStringLiteral("cpu"));
  Outcome out;
  watch(service, out);
  GenerationRequest req;
  req.model_dirs = {a(), bad};
  req.prompts = {QStringLiteral("hello")};
  req.max_new_tokens = 4;
  ASSERT_TRUE(service.generate(req));
  ASSERT_TRUE(wait_until([&] { return out.done; }, 60000));
  EXPECT_TRUE(out.outputs.isEmpty());
  EXPECT_TRUE(out.error.contains(bad)) << out.error.toStdString();
  std::printf("[ message  ] %s\n", out.error.toStdString().c_str());

  out = Outcome{};
  watch(service, out);
  req.model_dirs = {dir_->filePath(QStringLiteral("no-such-checkpoint"))};
  ASSERT_TRUE(service.generate(req));
  ASSERT_TRUE(wait_until([&] { return out.done; }, 60000));
  EXPECT_TRUE(out.error.contains(QStringLiteral("no-such-checkpoint"))) << out.error.toStdString();
}

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
  ASSERT_TRUE(wait_until([&] { return view.table()->rowCount() == 3 && !view.samplePrompts().isEmpty(); }, 20000));
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
  ASSERT_TRUE(wait_until([&] { return finished; }, 120000));
  EXPECT_FALSE(seen_while_live.isEmpty()) << "text was shown before the request finished";
  EXPECT_EQ(view.lastOutputs().size(), 9) << view.statusText().toStdString();
  for (const auto& o : view.lastOutputs()) EXPECT_GE(o.judge_score, 0.0);
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

TEST_F(CheckpointsViewTest, EvaluateRunsGanpoEvalAndStoresTheReport) {
  StoreWorker store(db_);
  CheckpointsView view(&store, run_, QStringLiteral(GANPO_CLI_PATH));
  ASSERT_TRUE(wait_until([&] { return view.table()->rowCount() == 3; }, 20000));
  view.pickFolders({c10_});
  bool done = false, ok = false;
  QString message;
  QObject::connect(&view, &CheckpointsView::evaluationFinished, &view, [&](qint64 step, bool good, QString m) {
    EXPECT_EQ(step, 10);
    done = true, ok = good, message = m;
  });
  CheckpointEvalOptions options;
  options.num_prompts = 3;
  options.max_new_tokens = 12;
  options.temperatures = {0.7, 1.3};
  ASSERT_TRUE(view.evaluatePicked(options));
  ASSERT_TRUE(wait_until([&] { return done; }, 180000));
  ASSERT_TRUE(ok) << message.toStdString();
  ASSERT_TRUE(wait_until([&] { return view.evalTable()->rowCount() == 3; }, 20000));  // 1 stored + 2 temps
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
