// The Trainer: one stage of a run (SFT or preference optimization), start to finish.
//
// Builds the policy (fresh or from a checkpoint), the frozen reference, the data, the
// optimizers and, when GANPO is on, the two critics; then runs optimizer steps in the order
// of ../shared/GANPO.md section 2, with gradient accumulation, clipping, schedules, periodic
// evaluation, samples and checkpoints. Everything it measures goes to a RunObserver. It stops
// cleanly (checkpoint first) on request_stop(), a SIGINT/SIGTERM, or an observer's Stop
// command, and stops with a message naming the step and the term on a NaN/Inf loss.
// Its parts, one file per job, share Trainer::State (core/train/trainer_state.h).
#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "core/config.h"
#include "core/distributed_env.h"
#include "core/eval/eval_report.h"
#include "core/run_observer.h"

namespace ganpo {

struct TrainerOptions {
  std::string resume_from;  // a checkpoint folder with trainer_state/ to continue from
  int64_t stop_after_steps = -1;  // testing aid: behave as if stopped after this many steps
  bool benchmark = false;  // only optimizer steps: no evaluation, samples or checkpoints
  // This process's place in a data-parallel run (distributed_env.h); one process when absent
  // or of world size 1. Rank 0 alone reports to the observer's files and store and writes
  // checkpoints; the other ranks' observers should be quiet ones.
  std::optional<DistributedEnv> distributed;
  // Testing aid: read the steps' non-finite checks at the next log line, evaluation, sample or
  // checkpoint, as a CUDA run does, on any device (a CPU run reads each at once).
  bool defer_finite_checks = false;
  // Testing aid (CUDA): an optimizer step that makes the host wait for the device fails the run,
  // naming the call (core/host_sync_check.h). Steps only queue work; the host waits at log lines.
  bool forbid_host_sync_in_steps = false;
  // Testing aid: train.precision = "bf16" taken on the CPU, where nothing autocasts (Bf16Autocast
  // turns on CUDA's autocast only). What a bf16 run keeps in bf16 is kept so (a LoRA run's frozen
  // base, a reference of its own, random weights drawn as bf16 values) and every product computes
  // in float32: set-up, steps, evaluation, samples, checkpoints and resume take their bf16 paths
  // on a machine without a GPU, and a test can compare them number for number with a float32 run.
  // With Bf16OnCpuForTests alive (core/bf16_autocast.h) the products compute in bf16 too, under
  // the CPU's autocast, as a CUDA run's do.
  bool bf16_storage_on_cpu = false;
  // Testing aid: called as the stage starts each part that can run out of memory, with its name
  // as the failure message says it ("an optimizer step", "a held-out evaluation", ...) and the
  // optimizer steps done; a test throws LibTorch's out-of-memory error from it.
  std::function<void(const std::string& activity, int64_t step)> on_activity_for_tests;
  // Testing aid: the free RAM a CPU run sees, in bytes, instead of /proc/meminfo's MemAvailable
  // (-1: read it), for the memory warnings and train.auto_find_batch_size's batches that fit.
  int64_t free_ram_for_tests = -1;
  // Testing aid: false leaves out the micro-batch of the longest rows a stage tries after its
  // first step (Trainer::State::try_longest_rows), so a test can compare the steps without it.
  bool try_longest_rows = true;
};

struct TrainResult {
  // "completed" | "stopped" | "failed" | "relaunch" (a data-parallel rank whose launcher starts
  // every rank again with a smaller batch: train.auto_find_batch_size, core/relaunch_request.h)
  std::string status;
  std::string message;  // reason when failed
  int64_t steps = 0;
  std::string final_dir;                     // model folder of the final policy
  std::map<std::string, double> final_eval;  // last held-out evaluation
  std::optional<JudgeEvaluation> final_judge;  // the judge evaluation the stage ended with, if any
};

class Trainer {
public:
  Trainer(RunConfig config, RunObserver& observer, TrainerOptions options = {});
  ~Trainer();
  // Never throws for expected failures (bad data, NaN loss, LibTorch errors): they become
  // status "failed" with the message. Config errors are reported before any work starts.
  TrainResult run();

private:
  struct State;
  std::unique_ptr<State> state_;
};

// Asks every running Trainer in this process to save a checkpoint and stop (signal-safe).
void request_stop_all();
bool stop_requested();
// Installs SIGINT/SIGTERM handlers that call request_stop_all().
void install_stop_signal_handlers();

// "cpu", "cuda", "cuda:1"; "auto" picks CUDA when available. Throws ConfigError if unavailable.
std::string resolve_device(const std::string& device);
// CUDA devices this process sees (0 on a CPU build or machine).
int cuda_device_count();

}  // namespace ganpo
