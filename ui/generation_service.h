// GenerationService: interactive sampling for the Checkpoints tab, in the GUI process but never
// on the UI thread. A request names model folders (checkpoints, the reference) and prompts; a
// worker thread loads each folder (through a small LRU cache keyed by folder, so the next prompt
// does not reload), samples every prompt with the same seed for every model, then scores each
// output's response log-probability under every selected model and its judge score: by the run's
// judge command when the request names one (as the trainer judges its live samples), else, for
// prompts a built-in task made, by that task's judge. Results and progress come back as signals on the thread that owns
// the service. Cancel stops after the current token and still delivers what was generated.
// A missing or corrupt folder fails the request with the loader's message, naming the folder.
// A model that does not fit on the device beside the cached ones gets the device to itself: on
// out of memory the other cached models are dropped and its turn runs again (once).
// Each model gets the prompt in its own chat template when its folder has a recognised one (a
// typed prompt becomes one user turn; a prompt already rendered in that template is kept), and
// the text streams back as it is sampled (textStreamed, never half a UTF-8 character).
// No LibTorch in this header (pimpl).
#pragma once

#include <QMetaType>
#include <QObject>
#include <QString>
#include <QStringList>
#include <QVector>

#include <functional>
#include <limits>
#include <memory>
#include <vector>

namespace ganpo::ui {

struct GenerationRequest {
  QStringList model_dirs;  // model folders, one output column each
  QStringList labels;      // display names, parallel to model_dirs (defaults to the folder name)
  QStringList prompts;     // every prompt is sampled under every model
  double temperature = 0.7;  // 0 = greedy
  double top_p = 1.0;
  int max_new_tokens = 64;
  quint64 seed = 0;
  // Each prompt's number for its draws (core/generate.h's prompt_numbers: a prompt's text
  // depends on the seed and its number), parallel to prompts; empty = 0, 1, 2, ... A prompt of
  // the run's sample set sampled alone keeps its number in that set, so it reads as in grid mode.
  QVector<qint64> prompt_numbers;
  bool chat_template = true;  // render prompts in each model's chat template when it has one
  // The run's eval.judge_command (a data file's judge, or a built-in task's replaced): every
  // output, once scored, goes to it as {"prompt", "completion"} (core/eval/external_judge.h's
  // run_judge_command, as the trainer's live samples do), within judge_timeout_s; Cancel stops
  // it. The prompt is the one given here: a run's stored sample prompt is the text its chat
  // template rendered, where the trainer gave its judge the plain prompt. Empty: a built-in
  // task's judge scores the prompts it made (core/tasks/task.h's judge_builtin_prompt).
  QString judge_command;
  double judge_timeout_s = 600;
};

struct GenerationOutput {
  QString label, model_dir, prompt, text;
  QString model_prompt;   // the text the model was given: the prompt in its chat template
  QString chat_template;  // that template's variant ("llama3.1", ...); empty = the plain prompt
  int model_index = 0, prompt_index = 0;
  int tokens = 0;                       // new tokens (EOS excluded)
  // "bf16" where the model ran under bf16 autocast (a folder stored in bf16, on a GPU), else
  // "float32": core/checkpoint.h's load_model_for_inference, precision "auto".
  QString precision;
  double seconds_to_first_token = 0;    // from the start of this model's turn (load included)
  double seconds_total = 0;             // idem, to the last token of its batch
  // Sum of log pi(response | prompt) under each requested model, in model_dirs order; empty when
  // cancelled before scoring. The response ends with EOS when the model stopped by itself.
  std::vector<double> logprob_under_each_model;
  // The judge's score: a built-in task's in [0,1], a judge command's any finite number; NaN when
  // nothing judged it (no task made the prompt and no command, the judge failed, or cancelled).
  double judge_score = std::numeric_limits<double>::quiet_NaN();
  QString judge_error;      // the judge command failed (every output says why); empty otherwise
  bool cancelled = false;   // the request was cut short by cancel(): nothing scored, this text maybe cut
  QString error;
};

class GenerationService : public QObject {
  Q_OBJECT
public:
  // device: "auto" (CUDA when available, else CPU), "cpu" or "cuda[:N]".
  explicit GenerationService(QObject* parent = nullptr, QString device = QStringLiteral("auto"),
                             int cache_capacity = 4);
  ~GenerationService() override;  // cancels and joins the worker

  // Starts a request; returns false (and emits nothing) while another one is running.
  bool generate(const GenerationRequest& request);
  // Stops the running request after its current token; finished() still comes with the partial
  // outputs (cancelled = true).
  void cancel();
  bool isBusy() const;

  // Model folders loaded from disk so far (cache misses); tests and diagnostics.
  int loadCount() const;
  int cacheCapacity() const;
  void clearCache();
  // Testing aid (set it while no request runs): called on the worker thread once a folder is
  // read from disk, before it is cached (loading = true, cached_models the others), and as each
  // model's sampling or scoring turn starts (loading = false, cached_models with it). A test
  // throws LibTorch's out-of-memory error from it to stand for a GPU that cannot hold them all.
  void setBeforeModelTurnForTests(std::function<void(const QString& dir, int cached_models, bool loading)> hook);

Q_SIGNALS:
  void progress(int done, int total);
  // One model's outputs are sampled (before scoring), so columns can fill in as they come.
  void modelSampled(int model_index);
  // While a model samples: its text so far for every prompt (in request order), at most every
  // 50 ms and once more when its sampling ends.
  void textStreamed(int model_index, QStringList texts);
  void finished(QVector<ganpo::ui::GenerationOutput> outputs);
  void failed(QString message);

private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ganpo::ui

Q_DECLARE_METATYPE(ganpo::ui::GenerationOutput)
