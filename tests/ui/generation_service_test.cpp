// GenerationService against real model folders (freshly initialised tiny models written with
// save_model_files): determinism, scoring, streaming, chat templates, the cache, cancel and
// broken folders. Needs no widgets, so it also runs under ThreadSanitizer (tests/tsan).
#include <gtest/gtest.h>

#include <QElapsedTimer>
#include <QFile>
#include <QTemporaryDir>

#include <atomic>
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>

#include <c10/util/Exception.h>
#include <nlohmann/json.hpp>

#include "dashboard_test_support.h"
#include "generation_test_support.h"
#include "core/generate.h"
#include "core/tokenizer.h"
#include "ui/generation_service.h"

namespace ganpo::ui {
namespace {

using testing::lists_prompt;
using testing::pump_until;
using testing::write_tiny_model;

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
  ASSERT_TRUE(pump_until([&] { return first.done; }, 120000));
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
  ASSERT_TRUE(pump_until([&] { return second.done; }, 120000));
  ASSERT_TRUE(second.error.isEmpty()) << second.error.toStdString();
  ASSERT_EQ(second.outputs.size(), 2);
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(second.outputs[i].text, first.outputs[i].text);
    EXPECT_NEAR(second.outputs[i].logprob_under_each_model[0], first.outputs[i].logprob_under_each_model[0], 1e-4);
  }
  EXPECT_EQ(service.loadCount(), 2) << "the second request must not reload the models";
}

// The sum of log p(response | prompt ids) under the model, in float64: what the playground shows.
double response_logprob(LoadedModel& lm, const std::vector<int64_t>& ids, const std::vector<int64_t>& response) {
  std::vector<int64_t> sequence = ids;
  sequence.insert(sequence.end(), response.begin(), response.end());
  torch::NoGradGuard no_grad;
  const auto logps = torch::log_softmax(
      lm.model->forward(torch::tensor(sequence, torch::kLong).unsqueeze(0)).logits[0].to(torch::kFloat64), -1);  // [T, V]
  double sum = 0;
  for (size_t k = 0; k < response.size(); ++k)
    sum += logps[static_cast<int64_t>(ids.size() + k) - 1][response[k]].item<double>();
  return sum;
}

// A prompt longer than half the model's length (the tiny model's 256 positions, a byte each): its
// sample is scored after the same prompt ids it was sampled after. The scorer cut such a prompt
// to half the model's length (TRL's cut for training rows), so the log-prob shown was that of the
// text after another prompt.
TEST_F(GenerationServiceTest, ALongPromptIsScoredAfterTheIdsItWasSampledAfter) {
  GenerationService service(nullptr, QStringLiteral("cpu"));
  Outcome out;
  watch(service, out);
  std::string prompt;
  for (int i = 0; prompt.size() < 200; ++i) prompt += "item" + std::to_string(i) + ", ";
  GenerationRequest req;
  req.model_dirs = {a()};
  req.prompts = {QString::fromStdString(prompt)};
  req.temperature = 0.0;
  req.max_new_tokens = 16;
  ASSERT_TRUE(service.generate(req));
  ASSERT_TRUE(pump_until([&] { return out.done; }, 120000));
  ASSERT_TRUE(out.error.isEmpty()) << out.error.toStdString();
  ASSERT_EQ(out.outputs.size(), 1);
  const GenerationOutput& o = out.outputs[0];
  ASSERT_EQ(o.logprob_under_each_model.size(), 1u);

  LoadedModel lm = load_model_for_inference(a().toStdString(), torch::kCPU, "auto");
  lm.model->eval();
  const Tokenizer& tok = *lm.tokenizer;
  const std::vector<int64_t> ids = encode_prompt(tok, prompt);
  ASSERT_GT(static_cast<int64_t>(ids.size()), lm.shape.max_seq_len / 2);
  std::vector<int64_t> response = encode_response(tok, prompt, o.text.toStdString());
  // (Cut at max_new_tokens, a sample said no EOS; one that stopped said it.)
  if (o.tokens == req.max_new_tokens && !response.empty() && response.back() == tok.eos_id()) response.pop_back();
  EXPECT_NEAR(o.logprob_under_each_model[0], response_logprob(lm, ids, response), 1e-3);
}

// A byte-level model's sample is bytes, not always valid UTF-8 (an early checkpoint's noise). Its
// log-prob is that of the bytes it sampled: the scorer re-encoded the displayed QString, where
// each invalid byte had become U+FFFD (three other bytes), so it scored another, longer text.
TEST_F(GenerationServiceTest, ASampleThatIsNoValidUtf8IsScoredAsTheBytesItSampled) {
  GenerationService service(nullptr, QStringLiteral("cpu"));
  Outcome out;
  watch(service, out);
  const std::string prompt = lists_prompt(5);
  GenerationRequest req;
  req.model_dirs = {a()};  // untrained: about half its bytes are >= 0x80
  req.prompts = {QString::fromStdString(prompt)};
  req.temperature = 1.0;
  req.max_new_tokens = 24;
  req.seed = 9;
  ASSERT_TRUE(service.generate(req));
  ASSERT_TRUE(pump_until([&] { return out.done; }, 120000));
  ASSERT_TRUE(out.error.isEmpty()) << out.error.toStdString();
  ASSERT_EQ(out.outputs.size(), 1);
  const GenerationOutput& o = out.outputs[0];
  ASSERT_EQ(o.logprob_under_each_model.size(), 1u);

  // The ids it sampled, drawn again with the same settings (one prompt: prompt number 0).
  LoadedModel lm = load_model_for_inference(a().toStdString(), torch::kCPU, "auto");
  lm.model->eval();
  const Tokenizer& tok = *lm.tokenizer;
  const std::vector<int64_t> ids = encode_prompt(tok, prompt);
  SamplingOptions so;
  so.temperature = req.temperature;
  so.top_p = req.top_p;
  so.max_new_tokens = req.max_new_tokens;
  so.seed = req.seed;
  std::vector<int64_t> stopped_by;
  const auto rows = ganpo::generate(lm.model, {ids}, so, tok.eos_id(), tok.pad_id(), nullptr, {}, &stopped_by);
  std::vector<int64_t> response = rows[0];
  ASSERT_EQ(static_cast<int>(response.size()), o.tokens);
  ASSERT_TRUE(o.text.contains(QChar(0xFFFD))) << "the sample holds bytes that are no valid UTF-8";
  if (stopped_by[0] >= 0) response.push_back(stopped_by[0]);
  EXPECT_NEAR(o.logprob_under_each_model[0], response_logprob(lm, ids, response), 1e-3);
}

// A run's eval.judge_command judges the playground's outputs as it judges the run's live samples:
// every output goes to it as {"prompt", "completion"} (the bytes sampled) and its score, any
// finite number, is the output's. The playground judged only prompts a built-in task made, so a
// data file's run (a typed prompt) had no judge score. A judge that fails keeps the outputs and
// says why.
TEST_F(GenerationServiceTest, TheRunsJudgeCommandScoresEveryOutput) {
  const QString judge = dir_->filePath(QStringLiteral("judge.sh"));
  const QString seen = dir_->filePath(QStringLiteral("judge-input.jsonl"));
  {
    std::ofstream f(judge.toStdString());
    // Scores -1, 0, 1, ... in input order; keeps what it was given.
    f << "#!/bin/sh\ntee '" << seen.toStdString() << R"(' | awk '{ print "{\"score\": " NR - 2 "}" }')" << "\n";
  }
  std::filesystem::permissions(judge.toStdString(), std::filesystem::perms::owner_all);
  GenerationService service(nullptr, QStringLiteral("cpu"));
  Outcome out;
  watch(service, out);
  GenerationRequest req;
  req.model_dirs = {a(), b()};
  req.prompts = {QStringLiteral("Tell me about your day.")};  // no built-in task made it
  req.max_new_tokens = 8;
  req.seed = 3;
  req.judge_command = judge;
  req.judge_timeout_s = 60;
  ASSERT_TRUE(service.generate(req));
  ASSERT_TRUE(pump_until([&] { return out.done; }, 120000));
  ASSERT_TRUE(out.error.isEmpty()) << out.error.toStdString();
  ASSERT_EQ(out.outputs.size(), 2);
  EXPECT_EQ(out.outputs[0].judge_score, -1.0) << "a judge's -1 is a score";
  EXPECT_EQ(out.outputs[1].judge_score, 0.0);
  EXPECT_TRUE(out.outputs[0].judge_error.isEmpty());
  std::ifstream in(seen.toStdString());
  std::string line;
  std::vector<nlohmann::json> rows;
  while (std::getline(in, line)) rows.push_back(nlohmann::json::parse(line));
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0]["prompt"], "Tell me about your day.");
  EXPECT_EQ(QString::fromStdString(rows[1]["completion"].get<std::string>()), out.outputs[1].text);

  // A built-in task's prompt goes to the command too: it replaces the task's judge, as in training.
  Outcome builtin;
  QObject::disconnect(&service, nullptr, nullptr, nullptr);
  watch(service, builtin);
  req.model_dirs = {a()};
  req.prompts = {QString::fromStdString(lists_prompt(3))};
  ASSERT_TRUE(service.generate(req));
  ASSERT_TRUE(pump_until([&] { return builtin.done; }, 120000));
  ASSERT_EQ(builtin.outputs.size(), 1);
  EXPECT_EQ(builtin.outputs[0].judge_score, -1.0);

  // A judge that fails: the outputs come back without scores, and say why.
  Outcome failed;
  QObject::disconnect(&service, nullptr, nullptr, nullptr);
  watch(service, failed);
  req.judge_command = QStringLiteral("sh -c 'echo no judge today >&2; exit 3'");
  ASSERT_TRUE(service.generate(req));
  ASSERT_TRUE(pump_until([&] { return failed.done; }, 120000));
  ASSERT_TRUE(failed.error.isEmpty()) << failed.error.toStdString();
  ASSERT_EQ(failed.outputs.size(), 1);
  EXPECT_TRUE(std::isnan(failed.outputs[0].judge_score));
  EXPECT_TRUE(failed.outputs[0].judge_error.contains("exited with status 3")) << failed.outputs[0].judge_error.toStdString();
  EXPECT_TRUE(failed.outputs[0].judge_error.contains("no judge today"));
  EXPECT_FALSE(failed.outputs[0].text.isEmpty());
}

// Cancel while the run's judge command scores the outputs stops the judge (a slow LLM judge held
// Cancel, and closing the tab, for up to its time limit): the request ends cut short.
TEST_F(GenerationServiceTest, CancelStopsTheJudgeCommand) {
  const QString judge = dir_->filePath(QStringLiteral("slow-judge.sh"));
  const QString started = dir_->filePath(QStringLiteral("judge-started"));
  {
    std::ofstream f(judge.toStdString());
    f << "#!/bin/sh\ntouch '" << started.toStdString() << "'\nexec sleep 60\n";
  }
  std::filesystem::permissions(judge.toStdString(), std::filesystem::perms::owner_all);
  GenerationService service(nullptr, QStringLiteral("cpu"));
  Outcome out;
  watch(service, out);
  GenerationRequest req;
  req.model_dirs = {a()};
  req.prompts = {QStringLiteral("Tell me about your day.")};
  req.max_new_tokens = 4;
  req.judge_command = judge;
  req.judge_timeout_s = 600;
  ASSERT_TRUE(service.generate(req));
  ASSERT_TRUE(pump_until([&] { return QFile::exists(started); }, 120000)) << "the judge never started";
  service.cancel();
  ASSERT_TRUE(pump_until([&] { return out.done; }, 120000));
  ASSERT_EQ(out.outputs.size(), 1);
  EXPECT_TRUE(out.outputs[0].cancelled) << out.outputs[0].judge_error.toStdString();
  EXPECT_TRUE(std::isnan(out.outputs[0].judge_score));
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
  ASSERT_TRUE(pump_until([&] { return outcome.done; }, 120000));
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
    ASSERT_TRUE(pump_until([&] { return outcome.done; }, 120000));
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
  ASSERT_TRUE(pump_until([&] { return o1.done; }, 60000));
  EXPECT_EQ(service.loadCount(), 1);
  o1.done = false;
  req.prompts = {QStringLiteral("another prompt")};
  ASSERT_TRUE(service.generate(req));
  ASSERT_TRUE(pump_until([&] { return o1.done; }, 60000));
  EXPECT_EQ(service.loadCount(), 1) << "same folder, new prompt: no reload";
  o1.done = false;
  req.model_dirs = {b()};
  ASSERT_TRUE(service.generate(req));
  ASSERT_TRUE(pump_until([&] { return o1.done; }, 60000));
  o1.done = false;
  req.model_dirs = {a()};
  ASSERT_TRUE(service.generate(req));
  ASSERT_TRUE(pump_until([&] { return o1.done; }, 60000));
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
  ASSERT_TRUE(pump_until([&] { return out.progress_reports >= 3 || out.done; }, 60000));
  ASSERT_FALSE(out.done) << "2 models x 48 prompts x 180 tokens must still be running";
  QElapsedTimer t;
  t.start();
  service.cancel();
  ASSERT_TRUE(pump_until([&] { return out.done; }, 30000));
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
  ASSERT_TRUE(pump_until([&] { return out.done; }, 60000));
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
  ASSERT_TRUE(pump_until([&] { return out.done; }, 60000));
  EXPECT_TRUE(out.outputs.isEmpty());
  EXPECT_TRUE(out.error.contains(bad)) << out.error.toStdString();
  std::printf("[ message  ] %s\n", out.error.toStdString().c_str());

  out = Outcome{};
  watch(service, out);
  req.model_dirs = {dir_->filePath(QStringLiteral("no-such-checkpoint"))};
  ASSERT_TRUE(service.generate(req));
  ASSERT_TRUE(pump_until([&] { return out.done; }, 60000));
  EXPECT_TRUE(out.error.contains(QStringLiteral("no-such-checkpoint"))) << out.error.toStdString();
}

// A device that cannot hold every model of a request beside the ones cached (the test hook
// throws LibTorch's out-of-memory error whenever another model is cached: while a folder loads
// onto the device, or as its turn starts): each such turn drops the others and runs again, so
// the request gives the outputs and scores of a run without the fault. A model that does not fit
// even alone fails the request, saying so and what to do.
TEST_F(GenerationServiceTest, OutOfMemoryDropsTheOtherCachedModelsAndRetriesOnce) {
  GenerationRequest req;
  req.model_dirs = {a(), b()};
  req.prompts = {QStringLiteral("hello"), QString::fromStdString(lists_prompt(5))};
  req.max_new_tokens = 6;
  req.seed = 3;
  GenerationService plain(nullptr, QStringLiteral("cpu"));
  Outcome expected;
  watch(plain, expected);
  ASSERT_TRUE(plain.generate(req));
  ASSERT_TRUE(pump_until([&] { return expected.done; }, 60000));
  ASSERT_TRUE(expected.error.isEmpty()) << expected.error.toStdString();
  auto out_of_memory = [] { TORCH_CHECK_WITH(OutOfMemoryError, false, "CUDA out of memory. Tried to allocate 2.00 GiB"); };

  for (const bool at_load : {true, false}) {
    SCOPED_TRACE(at_load ? "out of memory while loading" : "out of memory as the turn starts");
    std::atomic<int> faults{0};
    GenerationService service(nullptr, QStringLiteral("cpu"));
    service.setBeforeModelTurnForTests([&](const QString&, int cached_models, bool loading) {
      if (loading != at_load || cached_models < (loading ? 1 : 2)) return;
      faults.fetch_add(1);
      out_of_memory();
    });
    Outcome out;
    watch(service, out);
    ASSERT_TRUE(service.generate(req));
    ASSERT_TRUE(pump_until([&] { return out.done; }, 60000));
    ASSERT_TRUE(out.error.isEmpty()) << out.error.toStdString();
    // b's sampling turn (a cached) and a's scoring turn (b cached) each ran twice.
    EXPECT_EQ(faults.load(), 2);
    EXPECT_EQ(service.loadCount(), 3) << "a, b, and a again after b's turn dropped it";
    ASSERT_EQ(out.outputs.size(), expected.outputs.size());
    for (int i = 0; i < out.outputs.size(); ++i) {
      EXPECT_EQ(out.outputs[i].text, expected.outputs[i].text) << i;
      // (to float rounding: the CPU's thread count, which can differ between the two requests on
      // a loaded machine, orders the sums)
      const auto& got = out.outputs[i].logprob_under_each_model;
      const auto& want = expected.outputs[i].logprob_under_each_model;
      ASSERT_EQ(got.size(), want.size()) << i;
      for (size_t m = 0; m < want.size(); ++m) EXPECT_NEAR(got[m], want[m], 1e-4 * std::max(1.0, std::abs(want[m]))) << i;
    }

    // Out of memory even alone: after the others were dropped (b's turn, a cached from above),
    // and with nothing to drop (a fresh service's first model).
    service.setBeforeModelTurnForTests([&](const QString&, int, bool loading) {
      if (loading == at_load) out_of_memory();
    });
    GenerationService fresh(nullptr, QStringLiteral("cpu"));
    fresh.setBeforeModelTurnForTests([&](const QString&, int, bool loading) {
      if (loading == at_load) out_of_memory();
    });
    for (GenerationService* s : {&service, &fresh}) {
      GenerationRequest alone = req;
      alone.model_dirs = {b(), a()};
      out = Outcome{};
      watch(*s, out);
      ASSERT_TRUE(s->generate(alone));
      ASSERT_TRUE(pump_until([&] { return out.done; }, 60000));
      EXPECT_TRUE(out.outputs.isEmpty());
      for (const QString& part : {QStringLiteral("ran out of memory for ") + b(), QStringLiteral("with no other model loaded"),
                                  QStringLiteral("Tried to allocate 2.00 GiB"), QStringLiteral("Free memory on it")})
        EXPECT_TRUE(out.error.contains(part)) << out.error.toStdString();
    }
    std::printf("[ message  ] %s\n", out.error.toStdString().c_str());
  }
}

// The CPU allocator's failure (a plain LibTorch error, as its text says it) is met as CUDA's: the
// other models are dropped and the turn runs again; alone, the request fails naming this
// machine's RAM.
TEST_F(GenerationServiceTest, TheCpuAllocatorsFailureDropsTheOtherModelsToo) {
  GenerationRequest req;
  req.model_dirs = {a(), b()};
  req.prompts = {QStringLiteral("hello")};
  req.max_new_tokens = 4;
  auto refused = [] {
    TORCH_CHECK(false, "DefaultCPUAllocator: can't allocate memory: you tried to allocate 1099511627776 bytes. "
                       "Error code 12 (Cannot allocate memory)");
  };
  GenerationService service(nullptr, QStringLiteral("cpu"));
  Outcome out;
  watch(service, out);
  const auto request = [&] {
    out = Outcome{};
    EXPECT_TRUE(service.generate(req));
    EXPECT_TRUE(pump_until([&] { return out.done; }, 60000));
  };
  // Out of memory in a turn while the other model is cached, for LibTorch's CPU allocator and
  // for an allocation refused outside LibTorch's allocators (std::bad_alloc): the other model
  // is dropped and the turn runs again.
  for (const std::function<void()>& fail : {std::function<void()>(refused), std::function<void()>([] {
                                              throw std::bad_alloc();
                                            })}) {
    std::atomic<int> faults{0};
    service.setBeforeModelTurnForTests([&](const QString&, int cached_models, bool loading) {
      if (!loading && cached_models >= 2) faults.fetch_add(1), fail();
    });
    request();
    EXPECT_TRUE(out.error.isEmpty()) << out.error.toStdString();
    EXPECT_EQ(out.outputs.size(), 2);
    EXPECT_EQ(faults.load(), 2);
  }

  service.setBeforeModelTurnForTests([&](const QString&, int, bool loading) {
    if (!loading) refused();
  });
  request();
  EXPECT_TRUE(out.outputs.isEmpty());
  for (const QString& part : {QStringLiteral("This machine's RAM ran out of memory for ") + a(),
                              QStringLiteral("with no other model loaded"), QStringLiteral("can't allocate memory")})
    EXPECT_TRUE(out.error.contains(part)) << out.error.toStdString();
  // Loading a model, too.
  service.setBeforeModelTurnForTests([&](const QString&, int, bool loading) {
    if (loading) throw std::bad_alloc();
  });
  request();
  EXPECT_TRUE(out.error.contains(QStringLiteral("This machine's RAM ran out of memory for "))) << out.error.toStdString();
  // Another LibTorch error is not memory: it fails the request at once, as it did.
  service.setBeforeModelTurnForTests([&](const QString&, int, bool) { TORCH_CHECK(false, "a kernel failed"); });
  request();
  EXPECT_TRUE(out.error.contains(QStringLiteral("a kernel failed"))) << out.error.toStdString();
  EXPECT_FALSE(out.error.contains(QStringLiteral("ran out of memory"))) << out.error.toStdString();
}

// A cancel that lands as a turn runs out of memory ends the request as cancelled, with what was
// sampled before, and drops nothing from the cache.
TEST_F(GenerationServiceTest, CancelledAsATurnRunsOutOfMemoryKeepsTheCacheAndEndsCancelled) {
  GenerationService service(nullptr, QStringLiteral("cpu"));
  service.setBeforeModelTurnForTests([&service](const QString&, int cached_models, bool loading) {
    if (loading || cached_models < 2) return;
    service.cancel();
    TORCH_CHECK_WITH(OutOfMemoryError, false, "CUDA out of memory. Tried to allocate 2.00 GiB");
  });
  GenerationRequest req;
  req.model_dirs = {a(), b()};
  req.prompts = {QStringLiteral("hello")};
  req.max_new_tokens = 4;
  Outcome out;
  watch(service, out);
  ASSERT_TRUE(service.generate(req));
  ASSERT_TRUE(pump_until([&] { return out.done; }, 60000));
  EXPECT_TRUE(out.error.isEmpty()) << out.error.toStdString();
  ASSERT_EQ(out.outputs.size(), 1) << "a's output, sampled before b's turn";
  EXPECT_EQ(out.outputs[0].model_dir, a());
  EXPECT_TRUE(out.outputs[0].cancelled);
  EXPECT_TRUE(out.outputs[0].logprob_under_each_model.empty());
  EXPECT_EQ(service.loadCount(), 2);

  service.setBeforeModelTurnForTests({});
  out = Outcome{};
  watch(service, out);
  req.model_dirs = {a()};
  ASSERT_TRUE(service.generate(req));
  ASSERT_TRUE(pump_until([&] { return out.done; }, 60000));
  ASSERT_TRUE(out.error.isEmpty()) << out.error.toStdString();
  EXPECT_EQ(service.loadCount(), 2) << "a stayed cached";
}

}  // namespace
}  // namespace ganpo::ui
