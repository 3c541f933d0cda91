// generation_bench: prints how long the Checkpoints tab waits from Generate to the first and the
// last token, through GenerationService (worker thread, model cache), for two tiny checkpoints
// and for one ~10M-parameter model (preset "small"), 64 new tokens, cold (folder load included)
// and warm (cached). A program that prints figures, not a test.
#include <QCoreApplication>
#include <QElapsedTimer>
#include <QTemporaryDir>
#include <QThread>

#include <cstdio>
#include <random>

#include "core/checkpoint.h"
#include "core/tasks/lists_task.h"
#include "core/model/model_shape.h"
#include "ui/generation_service.h"

using namespace ganpo;
using namespace ganpo::ui;

namespace {

void write_model(const QString& dir, const std::string& preset, uint64_t seed) {
  torch::manual_seed(seed);
  ModelConfig mc;
  mc.preset = preset;
  ByteTokenizer tok;
  CausalLM model(resolve_model_shape(mc, tok.vocab_size()));
  save_model_files(dir.toStdString(), model, tok);
}

void measure(GenerationService& service, const QStringList& dirs, const QString& prompt, const char* name,
             const char* phase) {
  GenerationRequest req;
  req.model_dirs = dirs;
  req.prompts = {prompt};
  req.max_new_tokens = 64;
  req.temperature = 1.0;
  req.seed = 1;
  bool done = false;
  double first_ms = -1, last_ms = -1;
  QString error;
  QElapsedTimer t;
  auto c1 = QObject::connect(&service, &GenerationService::progress, [&](int d, int) {
    if (d >= 1 && first_ms < 0) first_ms = static_cast<double>(t.nsecsElapsed()) / 1e6;
  });
  auto c2 = QObject::connect(&service, &GenerationService::modelSampled, [&](int m) {
    if (m == dirs.size() - 1) last_ms = static_cast<double>(t.nsecsElapsed()) / 1e6;
  });
  QVector<GenerationOutput> outs;
  auto c3 = QObject::connect(&service, &GenerationService::finished, [&](const QVector<GenerationOutput>& o) {
    outs = o;
    done = true;
  });
  auto c4 = QObject::connect(&service, &GenerationService::failed, [&](const QString& e) {
    error = e;
    done = true;
  });
  t.start();
  service.generate(req);
  while (!done) QCoreApplication::processEvents(QEventLoop::AllEvents, 5);
  const double scored_ms = static_cast<double>(t.nsecsElapsed()) / 1e6;
  QObject::disconnect(c1), QObject::disconnect(c2), QObject::disconnect(c3), QObject::disconnect(c4);
  if (!error.isEmpty()) {
    std::printf("%s: failed: %s\n", name, error.toStdString().c_str());
    return;
  }
  int tokens = 0;
  for (const auto& o : outs) tokens += o.tokens;
  std::printf("%-28s %-5s first token %8.1f ms   last token %8.1f ms   + log-probs/judge %8.1f ms   (%d tokens)\n",
              name, phase, first_ms, last_ms, scored_ms, tokens);
  for (const auto& o : outs)
    std::printf("    %-14s in-service: first token %.1f ms, last %.1f ms, %d tokens\n", o.label.toStdString().c_str(),
                o.seconds_to_first_token * 1e3, o.seconds_total * 1e3, o.tokens);
}

}  // namespace

int main(int argc, char** argv) {
  QCoreApplication app(argc, argv);
  QTemporaryDir dir;
  const QString t1 = dir.filePath("tiny-a"), t2 = dir.filePath("tiny-b"), sm = dir.filePath("small");
  write_model(t1, "tiny", 1);
  write_model(t2, "tiny", 2);
  write_model(sm, "small", 3);
  ModelConfig small;
  small.preset = "small";
  std::printf("torch threads: %d; small preset: %lld parameters\n", at::get_num_threads(),
              static_cast<long long>(parameter_count(resolve_model_shape(small, 259))));
  std::mt19937_64 rng(5);
  const QString prompt = QString::fromStdString(lists::render_prompt(lists::random_spec(rng)));
  GenerationService service(nullptr, QStringLiteral("auto"));
  measure(service, {t1, t2}, prompt, "two tiny checkpoints", "cold");
  measure(service, {t1, t2}, prompt, "two tiny checkpoints", "warm");
  measure(service, {sm}, prompt, "small (~10M params)", "cold");
  measure(service, {sm}, prompt, "small (~10M params)", "warm");
  return 0;
}
