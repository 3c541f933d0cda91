// Data parallelism over PyTorch's c10d: one process per device, all holding the same weights,
// each training on its own shard of every global batch; gradients are averaged across the
// processes before each optimizer step, so N ranks with batch b update the weights exactly as one
// process with batch N x b would.
//
// Rendezvous is a c10d TCPStore served by rank 0 at MASTER_ADDR:MASTER_PORT; the process group
// is Gloo on the CPU (NCCL on CUDA where LibTorch has it), plus a small Gloo group on the host
// for the per-step control agreement. Every collective has the run's timeout: a rank that dies
// makes the others' next collective fail at once (the connection closes), a rank that hangs makes
// it fail after the timeout, and the error names the rank.
// Collectives must be issued in the same order on every rank, so callers issue them from one
// thread (the trainer's main thread), never from its two lanes.
//
// Where sharding (FSDP-style) plugs in, when it comes: the trainer touches replication at four
// places, all through this class, and a sharded engine replaces each with its counterpart.
//  1. Start (Trainer::start_data_parallel): broadcast_ of rank 0's weights -> each rank keeps
//     its 1/N slice of every flattened parameter group; the full weights of one layer are
//     all-gathered just before its forward and its backward and freed after (a hook per block of
//     core/model's layer table, the same blocks gradient checkpointing wraps).
//  2. Gradients (watch_gradients / arm_gradients / finish_gradients): the bucketed all-reduce
//     becomes a reduce-scatter into the rank's gradient slice; the buckets and hooks stay.
//  3. Optimizer: AdamW steps only the rank's slices (its moments are 1/N of today's); the
//     clip-norm's squared sum is all-reduced first.
//  4. Checkpoints (Trainer::gather_world_state, write_trainer_state, the HF export): either
//     rank 0 gathers the full weights (HF export, as today) or every rank writes its slice of
//     the optimizer state under trainer_state/rank<r>/ (resume with the same world size only).
// The critics are small next to the policy and can stay replicated.
#pragma once

#include <torch/torch.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "core/distributed_env.h"
#include "core/error.h"
#include "core/relaunch_watch.h"

namespace ganpo {

// How a rank's progress note says it is trying its longest training rows ahead (after a stage's
// first step; core/train/trainer_state.h), the point where a run's memory runs out if it will.
inline constexpr const char* kTryingLongestRowsProgress = "trying its longest training rows ahead";

// A collective failed because another rank went away or hung without saying why. Where a rank
// that went away was trying its longest training rows ahead (its progress note), the message says
// that memory most likely ran out there, the system's out-of-memory killer having ended it without
// a word, and on the CPU `memory_suspect` is true: the trainer adds what would need less.
class RankWentAway : public Error {
public:
  RankWentAway(const std::string& message, bool memory_suspect) : Error(message), memory_suspect_(memory_suspect) {}
  bool memory_suspect() const { return memory_suspect_; }

private:
  bool memory_suspect_;
};

// A rank whose launcher is killed gets SIGTERM (PR_SET_PDEATHSIG), which stops it at its next
// step boundary, checkpoint first; a rank hung in a collective or a kernel never gets there and
// would outlive its launcher for good, holding its memory (a GPU's). This starts a thread that
// ends the process (status 143, as SIGTERM's) `after` its parent is gone. Once per process.
void end_when_orphaned(std::chrono::milliseconds after);

class DataParallel {
public:
  // Joins the process group (blocks until every rank has joined, or throws after `timeout`).
  DataParallel(const DistributedEnv& env, const torch::Device& device, std::chrono::milliseconds timeout);
  ~DataParallel();

  int rank() const { return env_.rank; }
  int world_size() const { return env_.world_size; }
  bool is_main() const { return env_.rank == 0; }
  const DistributedEnv& env() const { return env_; }
  std::string backend() const;  // "gloo" or "nccl"

  // Replaces each tensor's gradient by its mean over the ranks (a missing gradient counts as
  // zero and becomes defined). Gradients go in buckets of about 25 MB, all reduced at once.
  void average_gradients(const std::vector<torch::Tensor>& params);

  // The same overlapped with the backward pass, as DDP does: watch_gradients() puts hooks on
  // the tensors and lays them out in 25 MB buckets (in reverse order, about the order the
  // backward pass produces their gradients). After arm_gradients(), each gradient the backward
  // pass delivers is copied into its bucket (with what earlier micro-batches accumulated), and a
  // full bucket's all-reduce starts at once while the backward pass goes on (buckets strictly in
  // order, so every rank issues the same collectives). finish_gradients() starts what is left
  // (tensors without a gradient count as zero), waits, and writes the means into the gradients.
  // Should a tensor's gradient arrive twice in one backward pass, the overlap could miss part of
  // it: finish_gradients() then averages the accumulated gradients again without overlap and
  // returns false (every rank alike; the caller stops arming).
  void watch_gradients(const std::vector<torch::Tensor>& params);
  void arm_gradients();
  bool finish_gradients();
  // In place: the sum (or mean) of `t` over the ranks.
  void all_reduce_sum_(torch::Tensor& t);
  void all_reduce_mean_(torch::Tensor& t);
  // In place: the sum of host tensor `t` over the ranks, through a Gloo group of its own that
  // never touches a device, so it waits for the other ranks' hosts and not for any GPU (the
  // per-step control agreement). Issued from the same thread as the other collectives.
  void all_reduce_sum_on_host_(torch::Tensor& t);
  // In place: every rank gets rank `root`'s values.
  void broadcast_(std::vector<torch::Tensor>& tensors, int root = 0);
  // Every rank's `t` (same shape on all ranks), in rank order.
  std::vector<torch::Tensor> all_gather(const torch::Tensor& t);
  // Every rank's texts (any number, any length), in rank order.
  std::vector<std::vector<std::string>> all_gather_texts(const std::vector<std::string>& texts);
  void barrier();

  // Records in the rendezvous store how far this rank got: `position` grows along the run and
  // `where` says it in words ("in step 3"). When a collective fails, the error names the ranks
  // that fell behind (hung or died) by where they were (RankWentAway).
  void note_progress(int64_t position, const std::string& where);
  // Records why this rank fails, as it fails, so that another rank's failed collective can say it
  // ("rank 1 failed: ... ran out of memory ...") rather than only that this rank went away.
  void note_failure(const std::string& message);

private:
  [[noreturn]] void rethrow_collective_error(const std::string& what) const;
  struct RanksProgress {
    std::string text;            // "rank 0: logging step 2; rank 1: finished step 2 (behind: it hung or died)"
    bool other_trying = false;   // another rank's last note: trying its longest training rows
  };
  RanksProgress progress_of_ranks() const;
  std::string failures_of_other_ranks() const;
  bool store_answers() const;  // false once rank 0, which serves the rendezvous store, is gone
  torch::Tensor on_backend(const torch::Tensor& t) const;
  struct Group;
  struct Overlap;
  // Under a launcher that starts the ranks again (env.relaunch_dir): ends this process where it
  // has not ended soon after a rank asked for that. Declared first, so it is destroyed last and
  // also ends a process group's teardown that hangs.
  std::unique_ptr<RelaunchWatch> relaunch_watch_;
  std::shared_ptr<Overlap> overlap_;  // shared with the hooks, which may outlive this object
  DistributedEnv env_;
  torch::Device device_;
  std::unique_ptr<Group> group_;
};

}  // namespace ganpo
