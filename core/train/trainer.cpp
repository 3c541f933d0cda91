// Trainer: stop requests and signals, devices, and one stage from start to end (run) with its
// control between steps. The parts of a stage are in the other trainer_*.cpp (trainer_state.h).

#include "core/train/trainer_state.h"

#include <atomic>
#include <csignal>
#include <thread>

namespace ganpo {
namespace {

std::atomic<bool> g_stop_requested{false};

void on_signal(int) { g_stop_requested.store(true); }

}  // namespace

void request_stop_all() { g_stop_requested.store(true); }
bool stop_requested() { return g_stop_requested.load(); }
void install_stop_signal_handlers() {
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
}

int cuda_device_count() { return torch::cuda::is_available() ? static_cast<int>(torch::cuda::device_count()) : 0; }

std::string resolve_device(const std::string& device) {
  if (device == "auto") return torch::cuda::is_available() ? "cuda" : "cpu";
  if (device.rfind("cuda", 0) == 0 && !torch::cuda::is_available())
    throw ConfigError("device = \"" + device +
                      "\" but this build of LibTorch sees no CUDA device; use device = \"cpu\" or \"auto\"");
  return device;
}

Trainer::State::~State() {
  if (!deterministic_before) return;
  auto& context = at::globalContext();
  context.setDeterministicAlgorithms(deterministic_before->algorithms, deterministic_before->warn_only);
  context.setDeterministicCuDNN(deterministic_before->cudnn);
  context.setBenchmarkCuDNN(deterministic_before->benchmark);
}

bool Trainer::State::handle_control() {
  auto poll = [&] {
    if (!is_main()) return ControlCommand::None;
    if (std::string failure = observer.storage_failure(); !failure.empty()) throw Error(failure);
    return observer.poll_control();
  };
  auto agree = [&](ControlCommand mine) {
    if (!dp) return std::make_pair(g_stop_requested.load(), mine);
    auto t = torch::tensor({g_stop_requested.load() ? 1.0 : 0.0, static_cast<double>(static_cast<int>(mine))},
                           torch::TensorOptions().dtype(torch::kFloat64));
    dp->all_reduce_sum_on_host_(t);  // rank 0 alone contributes a command; no wait for the GPU
    const auto v = t.accessor<double, 1>();
    return std::make_pair(v[0] > 0, static_cast<ControlCommand>(static_cast<int>(v[1])));
  };
  for (;;) {
    const auto [stop, command] = agree(poll());
    if (stop) return true;
    switch (command) {
      case ControlCommand::Stop: return true;
      case ControlCommand::Sample: samples(/*on_schedule=*/false); break;
      case ControlCommand::Checkpoint: save_checkpoint("checkpoint-" + std::to_string(step), true); break;
      case ControlCommand::Pause: {
        drain_device();  // the pause is no step's time
        observer.on_status("paused", "");
        for (;;) {
          std::this_thread::sleep_for(std::chrono::milliseconds(200));
          const auto [stop_now, c] = agree(poll());
          if (stop_now || c == ControlCommand::Stop) return true;
          if (c == ControlCommand::Resume) break;
        }
        observer.on_status("running", "");
        break;
      }
      case ControlCommand::Resume:
      case ControlCommand::None: return false;
    }
  }
}

TrainResult Trainer::State::run() {
  TrainResult result;
  try {
    setup();
    activity = kTraining;
    const int64_t params = parameter_count(policy->shape());
    observer.on_start(total_steps, step,
                      {{"device", device_label.empty() ? device.str() : device_label},
                       {"parameters", std::to_string(params)},
                       {"train_examples", std::to_string(train_size())},
                       {"eval_examples", std::to_string(preference ? eval_pairs.size() : eval_sft.size())},
                       {"cpu_threads", cpu ? cpu->describe() : std::string()},
                       {"train_data", train_data},
                       {"eval_data", eval_data},
                       {"stage", config.stage},
                       {"batch", batch_description()}});
    observer.on_status("running", "");
    log("info", config.stage + " stage: " + std::to_string(total_steps) + " steps, " +
                    std::to_string(params) + " parameters, device " + device.str());
    if (step == 0 && !options.benchmark) samples();
    const int64_t first_step = step;
    if ((evaluate_first || samples_first) && step < total_steps) {
      // (What an earlier attempt from the same checkpoint recorded of them goes first.)
      observer.on_redo(step, evaluate_first && eval_due(), samples_due());
      after_step(/*evaluation=*/evaluate_first);
      // The checkpoint resumed from was saved before the evaluation done again: its record
      // takes that evaluation's numbers, as a checkpoint saved after it would have.
      if (evaluate_first && !last_eval.empty()) observer.on_checkpoint(step, last_checkpoint, last_eval);
    }
    while (step < total_steps) {
      if (handle_control() || (options.stop_after_steps >= 0 && step >= options.stop_after_steps)) {
        flush_metrics();
        result.final_dir = save_checkpoint("checkpoint-" + std::to_string(step), true);
        result.status = "stopped";
        result.steps = step;
        observer.on_status("stopped", "stopped at step " + std::to_string(step));
        return result;
      }
      if (options.forbid_host_sync_in_steps && device.is_cuda())
        run_without_host_sync([this] { optimizer_step(); });
      else
        optimizer_step();
      fault_point("step.done");
      if (step % config.train.logging_steps == 0 || step == total_steps) flush_metrics();
      if (!longest_rows_tried) try_longest_rows();
      if (!options.benchmark) after_step();
    }
    if (!options.benchmark) {
      // (Resumed from the stage's last checkpoint, its end is done again: what an earlier
      // attempt recorded of it goes first.)
      if (step == first_step && step > 0) observer.on_redo(step, true, true);
      evaluate(false);
      samples();
      save_checkpoint("checkpoint-" + std::to_string(step), true);
      result.final_dir = save_checkpoint("final", false);
      EvalReport report = final_report();
      if (!report.empty()) observer.on_eval(step, report);
      result.final_judge = std::move(report.judge);
    }
    result.status = "completed";
    result.steps = step;
    result.final_eval = last_eval;
    observer.on_status("completed", "");
  } catch (const RelaunchRequested& e) {
    relaunch = true;  // another rank's request: this one ends with it
    log("warning", e.what());
  } catch (const RankWentAway& e) {
    // (a rank the system most likely ended for its memory: what would need less)
    fail(result, e.memory_suspect() ? std::string(e.what()) + ". To need less memory, " +
                                          ways_to_use_less_memory(on_device_config(), vocab_size(), MemoryUse::training)
                                    : std::string(e.what()));
  } catch (const Error& e) {
    fail(result, e.what());
  } catch (const c10::Error& e) {
    if (!is_out_of_memory(e)) fail(result, std::string("LibTorch error: ") + e.what_without_backtrace());
    else if (std::string m = out_of_memory(e.what_without_backtrace()); !retry && !relaunch) fail(result, m);
  } catch (const std::bad_alloc& e) {
    if (std::string m = out_of_memory(e.what(), /*host=*/true); !retry && !relaunch) fail(result, m);
  } catch (const std::exception& e) {
    fail(result, e.what());
  }
  if (relaunch) {
    result.status = "relaunch";
    result.message = "the launcher starts the ranks again with a smaller batch (train.auto_find_batch_size)";
    result.steps = step;
  }
  return result;
}

std::string Trainer::State::batch_description() const {
  const TrainConfig& t = config.train;
  const int64_t rows = t.per_device_train_batch_size * t.gradient_accumulation_steps * world();
  return std::to_string(t.per_device_train_batch_size) + (t.per_device_train_batch_size == 1 ? " row" : " rows") +
         " a micro-batch x " + std::to_string(t.gradient_accumulation_steps) + " accumulation step" +
         (t.gradient_accumulation_steps == 1 ? "" : "s") + (world() > 1 ? " x " + std::to_string(world()) + " processes" : "") +
         " = " + std::to_string(rows) + " rows per optimizer step; evaluations in batches of " +
         std::to_string(eval_batch_size(t));
}

void Trainer::State::after_step(bool evaluation) {
  if (step == total_steps) return;  // the stage's end has its own
  if (evaluation && eval_due()) evaluate();
  if (samples_due()) samples();
  if (config.train.save_steps > 0 && step % config.train.save_steps == 0 && last_checkpoint_step != step)
    save_checkpoint("checkpoint-" + std::to_string(step), true);
}

RunConfig Trainer::State::on_device_config() const {
  RunConfig c = config;
  c.device = device.str();  // "auto" resolved
  // The processes on this host (`ganpo launch` sets them apart from the config; one where this
  // process trains alone).
  c.train.num_processes = dp ? dp->env().local_world_size : 1;
  return c;
}

CausalLM Trainer::State::keepable_reference() const {
  const bool shares_policy_weights = config.model.lora.r > 0 && config.model.reference.empty();
  // (A PEFT adapter folder's reference draws its adapters' first values from the run's seeded
  // generator as it loads, before the folder's replace them: the critics drawn after would start
  // elsewhere without those draws.)
  const bool drew_from_the_seed = reference && reference->lora().r > 0;
  return reference && !shares_policy_weights && !drew_from_the_seed ? reference : CausalLM(nullptr);
}

int64_t Trainer::State::vocab_size() const { return policy ? policy->shape().vocab_size : 0; }

std::string Trainer::State::judge_memory_advice() const {
  return ways_to_use_less_memory(on_device_config(), vocab_size(), MemoryUse::judging);
}

std::string Trainer::State::out_of_memory(const std::string& detail, bool host) {
  const Activity where = activity;  // (a checkpoint saved below has an activity of its own)
  // Where it ran out, and when.
  const bool gpu = device.is_cuda() && !host;  // (a C++ allocation refused is the machine's RAM)
  const std::string source = host ? " C++: " : " LibTorch: ";  // who refused the allocation
  std::string text = gpu ? (device_label.empty() ? device.str() : device_label) : "This machine's RAM";
  if (std::string(where.what) == kOptimizerStep)
    text += " ran out of memory while taking optimizer step " + std::to_string(step + 1) + " of " +
            std::to_string(total_steps);
  else
    text += std::string(" ran out of memory while ") + where.what + (step > 0 ? " after step " + std::to_string(step) : "");
  text += ".";
  // What the run was expected to need, against what the device has.
  const int64_t capacity = gpu ? gpu_memory_bytes : system_memory_bytes("MemTotal");
  const int64_t here = device.is_cpu() && options.distributed ? options.distributed->local_world_size : 1;
  if (estimate && gpu == device.is_cuda()) {  // (a GPU run's estimate is of the GPU's memory)
    // The estimate of what ran out: an evaluation's, a step's, or the run's peak.
    const bool evaluating = where.use == MemoryUse::evaluation, stepping = where.use == MemoryUse::training;
    const int64_t bytes = evaluating ? estimate->evaluation_total_bytes
                          : stepping ? estimate->step_total_bytes
                                     : estimate->total_bytes;
    text += std::string(evaluating ? " Its estimate for an evaluation was "
                        : stepping ? " Its estimate for a step was "
                                   : " Its training estimate was ") +
            format_gib(static_cast<double>(bytes)) +
            (here > 1 ? " per process, " + format_gib(static_cast<double>(bytes * here)) + " for the " +
                            std::to_string(here) + " processes on this machine,"
                      : std::string()) +
            (capacity > 0 ? " of " + format_gib(static_cast<double>(capacity)) : std::string()) + ".";
  }
  if (gpu)
    if (const auto held = cuda_memory(device.has_index() ? device.index() : 0))
      text += " Its tensors reached " + format_gib(held->peak_allocated_mb * 1024 * 1024) +
              " since the last log line (LibTorch's allocator reserved " + format_gib(held->reserved_mb * 1024 * 1024) +
              ").";
  // Nothing trained is lost where the state is still a whole step's: that step is saved first.
  std::string save_failure;
  const std::string saved = rescue_checkpoint(save_failure);
  const std::string saving_failed =
      save_failure.empty() ? "" : " (saving step " + std::to_string(step) + " failed too: " + save_failure + ")";
  // train.auto_find_batch_size: the stage starts again with a smaller batch, where there is one.
  std::string no_smaller;
  if (config.train.auto_find_batch_size && !options.benchmark &&
      (where.use == MemoryUse::training || where.use == MemoryUse::evaluation)) {
    const bool training = where.use == MemoryUse::training;
    auto smaller = training ? with_smaller_training_batch(config, world()) : with_smaller_evaluation_batch(config);
    std::string not_asked;
    if (smaller && dp && (not_asked = ask_launcher_to_start_again(*smaller, text + " ", source + detail)).empty())
      return {};
    if (smaller && !dp) {
      // An evaluation between steps is done again where the stage resumes, at the same step.
      const bool same_step = saved.empty() ? last_checkpoint_step == step : true;
      retry = Retry{std::move(smaller->config), saved.empty() ? resume_point() : saved,
                    std::string(where.what) == kEvaluating.what && where.between_steps && same_step};
      const std::string again =
          retry->from.empty() ? "from the start" : "from " + retry->from + (saved.empty() ? "" : " (saved just now)");
      log("warning", text + " train.auto_find_batch_size: the stage goes on with " + smaller->change + ", " + again +
                         saving_failed + "." + source + detail);
      return {};
    }
    no_smaller = !not_asked.empty() ? " (train.auto_find_batch_size could not ask the launcher to start the ranks again: " +
                                  not_asked + ")"
                 : training ? " (train.auto_find_batch_size has no smaller batch to try: 1 row a micro-batch ran out)"
                            : " (train.auto_find_batch_size has no smaller batch to try: evaluation batches of 1 ran out)";
  }
  text += no_smaller + " To need less memory, " + ways_to_use_less_memory(on_device_config(), vocab_size(), where.use);
  const std::string from = resume_point();
  // (A data-parallel rank's step is saved by the ranks together where they can: settle_failed_ranks.)
  const std::string step_saved = !saved.empty() ? saved
                                 : where.between_steps && step > 0 && last_checkpoint_step == step ? from
                                                                                                  : std::string();
  if (!step_saved.empty())
    text += "; then resume from " + step_saved + ", where step " + std::to_string(step) +
            " is saved (nothing trained is lost).";
  else
    text += (from.empty() ? "; then start the run again"
                          : "; then resume from " + from + ", the newest checkpoint" +
                                (from == last_checkpoint ? " (step " + std::to_string(last_checkpoint_step) + ")" : "")) +
            saving_failed + ".";
  return text + source + detail;
}

// A data-parallel rank's part of train.auto_find_batch_size: the request its launcher starts every
// rank again with (core/relaunch_request.h). "" where asked, else why it could not be written (the
// run then fails, saying so).
std::string Trainer::State::ask_launcher_to_start_again(const SmallerBatch& smaller, const std::string& what,
                                                         const std::string& why) {
  // (`what` ends, and `why` starts, with a space)
  const RelaunchRequest request = relaunch_request(smaller, what + (why.rfind(' ', 0) == 0 ? why.substr(1) : why));
  try {
    write_relaunch_request(options.distributed->relaunch_dir, request);
  } catch (const std::exception& e) {
    return e.what();
  }
  relaunch = true;
  const std::string from = request.resume_from.empty() ? "the start" : request.resume_from;
  log("warning", what + "train.auto_find_batch_size: the launcher starts the " + std::to_string(world()) +
                     " processes again with " + smaller.change + ", from " + from + "." + why);
  return {};
}

RelaunchRequest Trainer::State::relaunch_request(const SmallerBatch& smaller, const std::string& reason) const {
  const TrainConfig& t = smaller.config.train;
  return {dp->rank(), {t.per_device_train_batch_size, t.gradient_accumulation_steps, eval_batch_size(t)}, resume_point(),
          smaller.change, reason};
}

std::string Trainer::State::rescue_checkpoint(std::string& failure) {
  if (!activity.between_steps || world() != 1 || options.benchmark || step == 0 || last_checkpoint_step == step)
    return {};
  mark_step_pending();  // (saved before an evaluation or samples that ran out: meta.json says so)
  try {
    flush_metrics();
    std::string dir = save_checkpoint("checkpoint-" + std::to_string(step), true);
    evaluation_pending = samples_pending = -1;
    return dir;
  } catch (const std::exception& e) {
    evaluation_pending = samples_pending = -1;
    failure = e.what();
    return {};
  }
}

void Trainer::State::mark_step_pending() {
  if (std::string(activity.what) == kEvaluating.what) evaluation_pending = step;
  if (std::string(activity.what) == kSampling.what && sampling_on_schedule) samples_pending = step;
}

std::string Trainer::State::resume_point() const {
  return last_checkpoint.empty() ? options.resume_from : last_checkpoint;
}

void Trainer::State::fail(TrainResult& result, const std::string& message) {
  if (dp) dp->note_failure(message);  // before this process leaves the group, so its peers can say why
  result.status = "failed";
  result.message = message;
  result.steps = step;
  log("error", message);
  observer.on_status("failed", message);
}

Trainer::Trainer(RunConfig config, RunObserver& observer, TrainerOptions options)
    : state_(std::make_unique<State>(std::move(config), observer, std::move(options))) {}
Trainer::~Trainer() = default;

TrainResult Trainer::run() {
  for (;;) {
    TrainResult result = state_->run();
    if (!state_->retry) return result;
    // train.auto_find_batch_size: the same stage with a smaller batch, from the checkpoint the
    // retry names. The stage that ran out goes first, and its memory with it.
    State::Retry retry = std::move(*state_->retry);
    RunObserver& observer = state_->observer;
    TrainerOptions options = std::move(state_->options);
    options.resume_from = std::move(retry.from);
    const State::Batches asked = *state_->asked_batches;
    std::optional<KeptPairLogps> precomputed = state_->precomputed();
    CausalLM reference = state_->keepable_reference();
    const bool on_gpu = state_->device.is_cuda();
    state_.reset();
    if (on_gpu) release_cached_cuda_memory();
    state_ = std::make_unique<State>(std::move(retry.config), observer, std::move(options));
    state_->evaluate_first = retry.evaluate_first;
    state_->asked_batches = asked;
    state_->kept_precomputed = std::move(precomputed);
    state_->kept_reference = std::move(reference);
  }
}

}  // namespace ganpo

