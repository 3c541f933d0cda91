#include "ui/generation_service.h"

#include <QFileInfo>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <functional>
#include <iterator>
#include <list>
#include <mutex>
#include <optional>
#include <thread>

#include "core/batching.h"
#include "core/bf16_autocast.h"
#include "core/checkpoint.h"
#include "core/cpu_job.h"
#include "core/eval/external_judge.h"
#include "core/generate.h"
#include "core/model/hf_weights.h"
#include "core/out_of_memory.h"
#include "core/tasks/task.h"
#include "core/train/opo_losses.h"
#include "core/sequence_scoring.h"
#include "core/text/chat_template.h"
#include "core/train/trainer.h"
#include "ui/thread_inbox.h"

namespace ganpo::ui {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Identifies one version of a folder's weights, so a folder rewritten in place is reloaded.
struct FolderStamp {
  qint64 size = -1;
  qint64 mtime_ms = -1;
  bool operator==(const FolderStamp& o) const { return size == o.size && mtime_ms == o.mtime_ms; }
};

FolderStamp stamp_of(const QString& dir) {
  // A PEFT adapter folder's weights are its adapters (its base is read through its config).
  QFileInfo fi(dir + QStringLiteral("/model.safetensors"));
  if (!fi.exists()) fi.setFile(dir + QStringLiteral("/adapter_model.safetensors"));
  if (!fi.exists()) return {};
  return {fi.size(), fi.lastModified().toMSecsSinceEpoch()};
}

struct CacheEntry {
  QString key;
  FolderStamp stamp;
  std::shared_ptr<LoadedModel> model;
};

struct Cancelled {};

// The chat template a model's prompts go through: the folder's recognised one when the request
// asks for it and the tokenizer uses templates; nullopt means the plain prompt. Read once per
// model and request, not per prompt.
std::optional<ChatTemplate> prompt_template(const LoadedModel& lm, const QString& dir, bool use_template) {
  if (!use_template || !lm.tokenizer->uses_chat_template()) return std::nullopt;
  try {
    return ChatTemplate::from_model_folder(dir.toStdString(), "");
  } catch (const std::exception&) {
    return std::nullopt;  // no template, or one this build does not know: the plain prompt
  }
}

// The text a model is given for a prompt: one user turn in its template, else the prompt.
std::string model_prompt(const std::optional<ChatTemplate>& tmpl, const QString& prompt) {
  return tmpl ? tmpl->user_turn(prompt.toStdString()) : prompt.toStdString();
}

// A prompt's ids as the model samples after them: at most max_seq_len - 1, a longer prompt
// keeping its first id (BOS) and its end. Scoring reads the same ids.
std::vector<int64_t> sampled_prompt_ids(const Tokenizer& tok, const std::string& text, int64_t max_seq_len) {
  auto ids = encode_prompt(tok, text);
  const int64_t max_prompt = std::max<int64_t>(2, max_seq_len - 1);
  if (static_cast<int64_t>(ids.size()) > max_prompt)
    ids.erase(ids.begin() + 1, ids.begin() + 1 + (static_cast<int64_t>(ids.size()) - max_prompt));
  return ids;
}

}  // namespace

struct GenerationService::Impl {
  GenerationService* self = nullptr;
  std::string device_name;
  int capacity = 4;
  // One long-lived worker thread: LibTorch's per-thread set-up (thread pools, allocator caches)
  // is paid once, not on every Generate.
  std::thread thread;
  std::mutex job_mutex;
  std::condition_variable job_cv;
  std::optional<GenerationRequest> job;
  bool quit = false;
  std::atomic<bool> busy{false};
  std::atomic<bool> cancel{false};
  std::atomic<int> loads{0};
  std::mutex cache_mutex;
  std::list<CacheEntry> cache;  // most recently used first
  std::function<void(const QString&, int, bool)> before_turn_for_tests;

  // Drops every cached model but `keep`'s (a folder path; "" keeps none); true when any went.
  bool drop_cached_models_except(const QString& keep) {
    const QString key = keep.isEmpty() ? QString() : QFileInfo(keep).absoluteFilePath();
    std::list<CacheEntry> dropped;  // freed after the lock is released
    {
      std::lock_guard<std::mutex> lock(cache_mutex);
      for (auto it = cache.begin(); it != cache.end();) {
        auto next = std::next(it);
        if (it->key != key) dropped.splice(dropped.end(), cache, it);
        it = next;
      }
    }
    return !dropped.empty();
  }

  int cached_models() {
    std::lock_guard<std::mutex> lock(cache_mutex);
    return static_cast<int>(cache.size());
  }

  // A model's turn (load, then sample or score) that may not fit beside the models cached for
  // the next prompts: when the device runs out of memory, every other cached model is dropped
  // and the turn runs once more; out of memory again, or with nothing to drop, the request fails
  // saying so. (The caching allocator gives freed blocks back to the driver itself before it
  // reports out of memory.) False when the request was cancelled meanwhile: the turn is not
  // run again and the cache is kept.
  template <class Turn>
  bool with_room(const QString& dir, const torch::Device& device, const Turn& turn) {
    auto failure = [&](std::string what, bool host) {  // host: C++'s allocator, the machine's RAM
      what = what.substr(0, what.find('\n'));
      return std::runtime_error((device.is_cuda() && !host ? "The device " + device.str() : std::string("This machine's RAM")) +
                                " ran out of memory for " + dir.toStdString() +
                                " with no other model loaded (" + what +
                                "). Free memory on it (a training run or another program may hold it), or ask for "
                                "fewer prompts or new tokens");
    };
    for (bool retried = false;; retried = true) {
      try {
        turn();
        return true;
      } catch (const c10::Error& e) {
        if (!is_out_of_memory(e)) throw;
        if (cancel.load()) return false;
        if (retried || !drop_cached_models_except(dir)) throw failure(e.what_without_backtrace(), false);
      } catch (const std::bad_alloc& e) {  // an allocation outside LibTorch's allocators
        if (cancel.load()) return false;
        if (retried || !drop_cached_models_except(dir)) throw failure(e.what(), true);
      }
    }
  }

  void before_turn(const QString& dir, bool loading) {
    if (before_turn_for_tests) before_turn_for_tests(dir, cached_models(), loading);
  }

  std::shared_ptr<LoadedModel> load(const QString& dir, const torch::Device& device) {
    const QString key = QFileInfo(dir).absoluteFilePath();
    const FolderStamp stamp = stamp_of(key);
    {
      std::lock_guard<std::mutex> lock(cache_mutex);
      for (auto it = cache.begin(); it != cache.end(); ++it) {
        if (it->key != key) continue;
        if (it->stamp == stamp) {
          cache.splice(cache.begin(), cache, it);
          return cache.front().model;
        }
        cache.erase(it);
        break;
      }
    }
    std::shared_ptr<LoadedModel> model;
    try {
      // As `ganpo generate` loads by default: a folder stored in bf16 stays so on a GPU.
      model = std::make_shared<LoadedModel>(load_model_for_inference(dir.toStdString(), device, "auto"));
      before_turn(dir, /*loading=*/true);
    } catch (const c10::Error& e) {
      if (is_out_of_memory(e)) throw;  // with_room makes room and loads it again
      throw std::runtime_error("Cannot load the model folder " + dir.toStdString() + ": " + e.what_without_backtrace());
    } catch (const std::bad_alloc&) {
      throw;  // as LibTorch's out of memory
    } catch (const LoadCancelled&) {
      throw;
    } catch (const std::exception& e) {
      throw std::runtime_error("Cannot load the model folder " + dir.toStdString() + ": " + e.what());
    }
    loads.fetch_add(1);
    std::lock_guard<std::mutex> lock(cache_mutex);
    cache.push_front({key, stamp, model});
    while (static_cast<int>(cache.size()) > std::max(1, capacity)) cache.pop_back();
    return model;
  }

  void loop() {
    for (;;) {
      GenerationRequest req;
      {
        std::unique_lock<std::mutex> lock(job_mutex);
        job_cv.wait(lock, [this] { return quit || job.has_value(); });
        if (quit) return;
        req = std::move(*job);
        job.reset();
      }
      run(std::move(req));
    }
  }

  // Results and progress go back to the service's thread through this inbox (see thread_inbox.h).
  ThreadInbox inbox;

  void post(std::function<void()> f) { inbox.post(std::move(f)); }

  void run(GenerationRequest req) {
    QVector<GenerationOutput> outputs;
    try {
      outputs = work(req);
    } catch (const std::exception& e) {
      finish_failed(QString::fromStdString(e.what()));
      return;
    } catch (...) {
      finish_failed(QStringLiteral("Generation failed with an unknown error"));
      return;
    }
    GenerationService* s = self;
    busy.store(false);
    post([s, outputs]() { Q_EMIT s->finished(outputs); });
  }

  void finish_failed(const QString& message) {
    GenerationService* s = self;
    busy.store(false);
    post([s, message]() { Q_EMIT s->failed(message); });
  }

  // What one model sampled for a request: its outputs in prompt order, the stop id that ended
  // each (-1: none did), the text's bytes as the tokenizer decoded them, and whether a cancel cut
  // it short. (GenerationOutput::text is a QString: a byte-level model's bytes that are no valid
  // UTF-8 read as U+FFFD there, three other bytes, so scoring and judging read `bytes`.)
  struct Sampled {
    QVector<GenerationOutput> outputs;
    std::vector<int64_t> stopped_by;
    std::vector<std::string> bytes;
    bool cancelled = false;
  };

  // Model m's sampling turn: every prompt in its chat template, sampled with the request's
  // settings, the text streamed as it comes (textStreamed) and progress counted on from `base`.
  Sampled sample_with(LoadedModel& model, const GenerationRequest& req, int m, Clock::time_point t0,
                      std::atomic<int>& done, int base, const std::function<void(bool)>& report) {
    const QString dir = req.model_dirs[m];
    const QString label = m < req.labels.size() && !req.labels[m].isEmpty() ? req.labels[m] : QFileInfo(dir).fileName();
    const int n_prompts = static_cast<int>(req.prompts.size());
    const int max_new = std::max(1, req.max_new_tokens);
    Sampled out;
    const Tokenizer& tok = *model.tokenizer;
    std::vector<std::vector<int64_t>> prompts;
    QStringList given;  // what the model is given for each prompt
    const std::optional<ChatTemplate> tmpl = prompt_template(model, dir, req.chat_template);
    const QString variant = tmpl ? QString::fromStdString(tmpl->variant()) : QString();
    for (const QString& p : req.prompts) {
      given << QString::fromStdString(model_prompt(tmpl, p));
      prompts.push_back(sampled_prompt_ids(tok, given.back().toStdString(), model.shape.max_seq_len));
    }
    SamplingOptions so;
    so.temperature = req.temperature;
    so.top_p = req.top_p;
    so.max_new_tokens = max_new;
    so.seed = req.seed;
    if (req.prompt_numbers.size() == req.prompts.size())
      for (qint64 n : req.prompt_numbers) so.prompt_numbers.push_back(static_cast<int64_t>(n));
    so.bf16_autocast = model.bf16_autocast;
    double first_token = -1;
    std::vector<std::unique_ptr<TextStream>> streams;
    std::vector<std::string> streamed(prompts.size());
    for (size_t p = 0; p < prompts.size(); ++p) streams.push_back(tok.text_stream());
    Clock::time_point last_stream = Clock::now();
    auto send_text = [&] {
      QStringList texts;
      for (const auto& t : streamed) texts << QString::fromStdString(t);
      GenerationService* s = self;
      post([s, m, texts]() { Q_EMIT s->textStreamed(m, texts); });
      last_stream = Clock::now();
    };
    auto on_tokens = [&](int64_t step, const std::vector<int64_t>& appended) {
      if (first_token < 0) first_token = seconds_since(t0);
      for (size_t p = 0; p < appended.size(); ++p)
        if (appended[p] >= 0) streamed[p] += streams[p]->push(appended[p]);
      if (step == 1 || Clock::now() - last_stream >= std::chrono::milliseconds(50)) send_text();
      done.store(base + static_cast<int>(std::min<int64_t>(step, max_new)));
      report(step == 1);  // the first token always, so time to first token is visible
    };
    std::vector<int64_t> stopped_by;
    auto rows = ganpo::generate(model.model, prompts, so, tok.eos_id(), tok.pad_id(), &cancel, on_tokens, &stopped_by);
    for (size_t p = 0; p < streams.size(); ++p) streamed[p] += streams[p]->finish();
    send_text();
    const double total_s = seconds_since(t0);
    out.cancelled = cancel.load();
    for (int p = 0; p < n_prompts; ++p) {
      GenerationOutput o;
      o.label = label;
      o.model_dir = dir;
      o.model_index = m;
      o.prompt_index = p;
      o.prompt = req.prompts[p];
      o.model_prompt = given[p];
      o.chat_template = variant;
      const auto& ids = rows[static_cast<size_t>(p)];
      // (as it reads after the prompt, so the log-probs below score the tokens sampled)
      std::string text = continuation_text(tok, prompts[static_cast<size_t>(p)], ids);
      o.text = QString::fromStdString(text);
      o.tokens = static_cast<int>(ids.size());
      o.precision = model.bf16_autocast ? QStringLiteral("bf16") : QStringLiteral("float32");
      o.seconds_to_first_token = first_token < 0 ? total_s : first_token;
      o.seconds_total = total_s;
      o.cancelled = out.cancelled;
      out.stopped_by.push_back(stopped_by[static_cast<size_t>(p)]);
      if (req.judge_command.isEmpty())
        if (auto j = judge_builtin_prompt(o.prompt.toStdString(), text)) o.judge_score = *j;
      out.outputs.push_back(std::move(o));
      out.bytes.push_back(std::move(text));
    }
    return out;
  }

  QVector<GenerationOutput> work(const GenerationRequest& req) {
    const torch::Device device(resolve_device(device_name));
    // The same CPU defaults as a training run, and a share of the machine while this runs, so
    // generating beside running workers does not oversubscribe the cores.
    std::unique_ptr<CpuJob> cpu;
    if (device.is_cpu()) cpu = std::make_unique<CpuJob>();
    const int n_models = static_cast<int>(req.model_dirs.size());
    const int max_new = std::max(1, req.max_new_tokens);
    // Progress units: one per sampled token step per model, plus one per model scored.
    const int total = n_models * max_new + n_models;
    std::atomic<int> done{0};
    Clock::time_point last_report = Clock::now() - std::chrono::seconds(1);
    auto report = [&](bool force) {
      if (!force && Clock::now() - last_report < std::chrono::milliseconds(40)) return;
      last_report = Clock::now();
      GenerationService* s = self;
      const int d = done.load();
      post([s, d, total]() { Q_EMIT s->progress(d, total); });
    };
    report(true);

    QVector<GenerationOutput> outputs;
    std::vector<int64_t> stopped_by;  // parallel to outputs
    std::vector<std::string> bytes;   // idem: each output's text as sampled
    bool was_cancelled = false;
    for (int m = 0; m < n_models && !was_cancelled; ++m) {
      const QString dir = req.model_dirs[m];
      const auto t0 = Clock::now();
      Sampled sampled;
      bool cancelled_before = false;
      const int base = done.load();
      const bool ran = with_room(dir, device, [&] {
        std::shared_ptr<LoadedModel> model;
        try {
          const LoadCancelGuard give_up_on(&cancel);  // Cancel, or the tab closing, ends a long load
          model = load(dir, device);
        } catch (const LoadCancelled&) {
          cancelled_before = true;
          return;
        }
        cancelled_before = cancel.load();
        if (cancelled_before) return;
        before_turn(dir, /*loading=*/false);
        sampled = sample_with(*model, req, m, t0, done, base, report);
      });
      if (!ran || cancelled_before) {
        was_cancelled = true;
        break;
      }
      was_cancelled = sampled.cancelled;
      outputs += sampled.outputs;
      stopped_by.insert(stopped_by.end(), sampled.stopped_by.begin(), sampled.stopped_by.end());
      bytes.insert(bytes.end(), sampled.bytes.begin(), sampled.bytes.end());
      done.store(base + max_new);
      report(true);
      GenerationService* s = self;
      post([s, m]() { Q_EMIT s->modelSampled(m); });  // its turn ended, cut or complete: show it
    }
    // Cancelled at any point (in a model, between two, or while scoring): the request is cut
    // short, every output says so and none keeps a score.
    auto cut_short = [&outputs] {
      for (auto& o : outputs) {
        o.logprob_under_each_model.clear();
        o.judge_score = std::numeric_limits<double>::quiet_NaN();
        o.cancelled = true;
      }
      return outputs;
    };
    if (was_cancelled) return cut_short();
    if (outputs.isEmpty()) return outputs;

    // Scoring in reverse order finds the most recently sampled models still in the cache.
    for (auto& o : outputs) o.logprob_under_each_model.assign(static_cast<size_t>(n_models), std::nan(""));
    for (int m = n_models - 1; m >= 0; --m) {
      if (cancel.load()) return cut_short();
      const bool ran = with_room(req.model_dirs[m], device, [&] {
        auto model = load(req.model_dirs[m], device);
        before_turn(req.model_dirs[m], /*loading=*/false);
        score(*model, req.model_dirs[m], req.chat_template, outputs, bytes, stopped_by, m, device);
      });
      if (!ran) return cut_short();
      done.fetch_add(1);
      report(true);
    }
    if (!req.judge_command.isEmpty()) judge_with_command(req, outputs, bytes, &cancel);
    if (cancel.load()) return cut_short();  // (Cancel, or the tab closing, while the judge ran)
    return outputs;
  }

  // The run's judge command scores every output in one call, as the trainer's live samples are
  // scored (Trainer::State::score_samples): the prompt as given, the completion as sampled. A
  // judge that fails leaves every score NaN and says why; the outputs are kept.
  static void judge_with_command(const GenerationRequest& req, QVector<GenerationOutput>& outputs,
                                 const std::vector<std::string>& bytes, const std::atomic<bool>* cancel) {
    std::vector<JudgeRow> rows;
    for (int i = 0; i < outputs.size(); ++i) rows.push_back({outputs[i].prompt.toStdString(), bytes[static_cast<size_t>(i)]});
    try {
      const std::vector<double> scores = run_judge_command(req.judge_command.toStdString(), rows, req.judge_timeout_s, cancel);
      for (int i = 0; i < outputs.size(); ++i) outputs[i].judge_score = scores[static_cast<size_t>(i)];
    } catch (const Error& err) {
      for (auto& o : outputs) o.judge_error = QString::fromStdString(err.what());
    }
  }

  // Sum of response log-probs of every output under one model, in small batches.
  void score(LoadedModel& lm, const QString& dir, bool use_template, QVector<GenerationOutput>& outputs,
             const std::vector<std::string>& bytes, const std::vector<int64_t>& stopped_by, int m,
             const torch::Device& device) {
    torch::NoGradGuard no_grad;
    const Bf16Autocast autocast(lm.bf16_autocast);  // as it sampled
    lm.model->eval();
    const Tokenizer& tok = *lm.tokenizer;
    const std::optional<ChatTemplate> tmpl = prompt_template(lm, dir, use_template);
    const int64_t max_len = lm.shape.max_seq_len;
    const std::vector<int64_t> stops = generation_stop_ids(lm.shape, tok.eos_id());
    std::vector<TokenizedSft> rows;
    rows.reserve(static_cast<size_t>(outputs.size()));
    for (int i = 0; i < outputs.size(); ++i) {
      // The prompt as this model would be given it (its own chat template), cut as its sampling
      // cuts it; the response cut to the room after it.
      const std::string prompt = model_prompt(tmpl, outputs[i].prompt);
      TokenizedSft row{sampled_prompt_ids(tok, prompt, max_len), encode_response(tok, prompt, bytes[static_cast<size_t>(i)])};
      cut_to_fit(row, max_len, max_len);
      // The row ends with this model's EOS. A response cut at max_new_tokens produced no stop id,
      // so none is part of what it said; one that stopped at another of this model's stop ids
      // (Gemma 2 IT's <end_of_turn>) is scored with that id.
      const int64_t stop = stopped_by[static_cast<size_t>(i)];
      if (!row.completion.empty() && row.completion.back() == tok.eos_id()) {
        if (stop < 0)
          row.completion.pop_back();
        else if (std::find(stops.begin(), stops.end(), stop) != stops.end())
          row.completion.back() = stop;
      }
      rows.push_back(std::move(row));
    }
    constexpr size_t kBatch = 16;
    for (size_t start = 0; start < rows.size(); start += kBatch) {
      std::vector<const TokenizedSft*> batch;
      for (size_t i = start; i < std::min(rows.size(), start + kBatch); ++i) batch.push_back(&rows[i]);
      auto seq = collate_sft(batch, tok.pad_id(), device);
      auto sums = score_sequences(lm.model, seq).logps.sum.to(torch::kFloat64).cpu();
      auto acc = sums.accessor<double, 1>();
      for (size_t i = 0; i < batch.size(); ++i)
        outputs[static_cast<int>(start + i)].logprob_under_each_model[static_cast<size_t>(m)] =
            acc[static_cast<int64_t>(i)];
    }
  }
};

GenerationService::GenerationService(QObject* parent, QString device, int cache_capacity)
    : QObject(parent), impl_(std::make_unique<Impl>()) {
  qRegisterMetaType<ganpo::ui::GenerationOutput>();
  qRegisterMetaType<QVector<ganpo::ui::GenerationOutput>>();
  impl_->self = this;
  impl_->device_name = device.toStdString();
  impl_->capacity = std::max(1, cache_capacity);
}

GenerationService::~GenerationService() {
  impl_->cancel.store(true);
  {
    std::lock_guard<std::mutex> lock(impl_->job_mutex);
    impl_->quit = true;
  }
  impl_->job_cv.notify_all();
  if (impl_->thread.joinable()) impl_->thread.join();
}

bool GenerationService::generate(const GenerationRequest& request) {
  if (impl_->busy.exchange(true)) return false;
  impl_->cancel.store(false);
  if (request.model_dirs.isEmpty() || request.prompts.isEmpty()) {
    impl_->finish_failed(request.model_dirs.isEmpty() ? QStringLiteral("Pick at least one model to generate with")
                                                      : QStringLiteral("Type or choose a prompt first"));
    return true;
  }
  {
    std::lock_guard<std::mutex> lock(impl_->job_mutex);
    impl_->job = request;
  }
  if (!impl_->thread.joinable()) impl_->thread = std::thread([impl = impl_.get()]() { impl->loop(); });
  impl_->job_cv.notify_one();
  return true;
}

void GenerationService::cancel() { impl_->cancel.store(true); }

bool GenerationService::isBusy() const { return impl_->busy.load(); }

int GenerationService::loadCount() const { return impl_->loads.load(); }

int GenerationService::cacheCapacity() const { return impl_->capacity; }

void GenerationService::clearCache() {
  std::lock_guard<std::mutex> lock(impl_->cache_mutex);
  impl_->cache.clear();
}

void GenerationService::setBeforeModelTurnForTests(std::function<void(const QString&, int, bool)> hook) {
  impl_->before_turn_for_tests = std::move(hook);
}

}  // namespace ganpo::ui
