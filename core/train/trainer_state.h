// What the Trainer's parts share: Trainer::State, one stage of a run in progress (its models,
// data, optimizers, step counters and metric window), and the helpers its parts use. Private to
// core/train: the trainer's public face is trainer.h.
//
// The definitions are split by job, in the order a stage runs:
//   trainer_setup.cpp       validation, devices and threads, the process group, the models
//                           (policy, reference, LoRA), optimizers, precomputed reference log-probs
//   trainer_data.cpp        the task or data files, chat templates, label noise, the judge and its
//                           prompts, the sample prompts, and the rows each step takes
//   trainer_step.cpp        one micro-batch (SFT or preference, GANPO's critics), one optimizer
//                           step, non-finite checks, and the metric window and its log line
//   trainer_evaluation.cpp  held-out evaluation, live samples, the stage's final judged report
//   trainer_checkpoint.cpp  checkpoint folders (policy, critics, optimizers, RNG, LoRA) and resume
//   trainer.cpp             control (stop, pause, sample now) and the stage from start to end
#pragma once

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "core/batching.h"
#include "core/bf16_autocast.h"
#include "core/checkpoint.h"
#include "core/cpu_job.h"
#include "core/cpu_tensor_memory.h"
#include "core/cuda_memory.h"
#include "core/data_parallel.h"
#include "core/dataset_files.h"
#include "core/error.h"
#include "core/eval/evaluation.h"
#include "core/eval/external_judge.h"
#include "core/fault_points.h"
#include "core/generate.h"
#include "core/gpu_monitor.h"
#include "core/host_sync_check.h"
#include "core/memory_estimate.h"
#include "core/model/architectures.h"
#include "core/model/causal_lm.h"
#include "core/model/hf_weights.h"
#include "core/model/lora_adapter.h"
#include "core/model/lora_targets.h"
#include "core/model/safetensors.h"
#include "core/model_flops.h"
#include "core/out_of_memory.h"
#include "core/relaunch_request.h"
#include "core/run_files.h"
#include "core/sequence_scoring.h"
#include "core/tasks/task.h"
#include "core/train/auto_batch_size.h"
#include "core/tasks/task_random.h"
#include "core/text/chat_template.h"
#include "core/tokenizer.h"
#include "core/train/critic.h"
#include "core/train/fused_adamw.h"
#include "core/train/grad_clip.h"
#include "core/train/lr_schedule.h"
#include "core/train/opo_losses.h"
#include "core/train/reference_logps.h"
#include "core/train/trainer.h"

namespace ganpo {

struct Trainer::State {
  using Clock = std::chrono::steady_clock;

  // 0.2, not 0.200000.
  static std::string format_number(double v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%g", v);
    return buf;
  }

  ~State();  // gives back the process-wide switches train.deterministic set

  RunConfig config;
  RunObserver& observer;
  TrainerOptions options;

  torch::Device device{torch::kCPU};
  std::unique_ptr<Tokenizer> tokenizer;
  CausalLM policy{nullptr};
  CausalLM reference{nullptr};
  // A reference model of its own (not the policy with its adapters off) is frozen: a retry of
  // train.auto_find_batch_size takes the stage before's instead of loading it again (for an 8B
  // model, 16 GB read and moved to the device). Only the batches differ between the two stages.
  CausalLM keepable_reference() const;  // null where it is the policy's weights
  CausalLM kept_reference{nullptr};     // the stage before's, for this one
  std::unique_ptr<GanpoRegularizer> regularizer;
  std::unique_ptr<FusedAdamW> optimizer;
  std::vector<torch::Tensor> trainable;  // what the optimizer updates: every policy weight, or the LoRA adapters
  struct DeterministicSwitches {
    bool algorithms, warn_only, cudnn, benchmark;
  };
  std::optional<DeterministicSwitches> deterministic_before;  // set by train.deterministic
  std::unique_ptr<FusedAdamW> critic_optimizer;

  // Data parallelism: the process group (null for one process); rank 0 reports and writes.
  std::unique_ptr<DataParallel> dp;
  bool overlap_gradients = true;  // the policy's all-reduce overlaps its backward pass
  bool is_main() const { return !dp || dp->is_main(); }
  int64_t world() const { return dp ? dp->world_size() : 1; }

  // CPU runs: this process's share of the machine and the two lanes of a step (null on CUDA).
  std::unique_ptr<CpuJob> cpu;
  ParallelLanes* lanes() { return cpu ? cpu->lanes() : nullptr; }

  bool preference = true;
  std::vector<TokenizedPair> train_pairs, eval_pairs;
  PairLogps train_ref_logps, eval_ref_logps;  // train.precompute_ref_log_probs: the reference's, per pair
  std::vector<TokenizedSft> train_sft, eval_sft;
  std::vector<std::string> sample_prompts;
  std::vector<std::string> sample_judge_prompts;  // data files: the same prompts without the chat template
  std::vector<std::string> reference_samples;
  // The task the data comes from (null for data files), the judge of its outputs (empty when
  // there is none), and the prompts the final judge evaluation samples.
  const Task* task = nullptr;
  JudgeFunction judge;
  std::string judge_name;
  std::vector<EvalPrompt> judge_prompts;
  bool judge_failed_once = false;
  std::string train_data, eval_data;  // which data this stage uses, for the log and the run's events

  int64_t total_steps = 0;
  int64_t warmup = 0;
  int64_t step = 0;  // optimizer steps done
  int64_t epoch = 0;
  int64_t cursor = 0;  // position in the epoch's order
  int64_t tokens_seen = 0;  // by this process (a resumed count is rank 0's); the run's is the sum over ranks
  std::vector<int64_t> order;
  int64_t order_group_rows = 0;  // what `order` is grouped by length for (epoch_rows), 0: shuffled
  std::map<std::string, double> last_eval;
  int64_t last_eval_step = -1;  // the step last_eval is of (-1: none in this process yet)

  // Metric window since the last log line: sums of 0-dim tensors (no device sync per step).
  std::map<std::string, torch::Tensor> window_sums;
  int64_t window_micro = 0;
  int64_t window_steps = 0;
  double window_seconds = 0;
  int64_t window_tokens = 0;
  double window_flops = 0;  // model FLOPs (model_flops.h)
  double window_allreduce_seconds = 0;  // spent averaging gradients over the ranks
  torch::Tensor window_grad_norm;  // sum of the window's steps' norms, on the device
  Clock::time_point last_step_end;
  bool undrained = false;  // CUDA: steps queued on the device since the last wait for it
  double peak_flops = 0;    // of this device in this precision, for MFU (0 = unknown, as on CPUs)
  std::string device_label;  // "cuda:0 (NVIDIA H200, 140 GiB)"; empty = device.str()
  int64_t gpu_memory_bytes = -1;  // the GPU's total memory (NVML); -1 = no reading

  State(RunConfig c, RunObserver& o, TrainerOptions opt)
      : config(std::move(c)), observer(o), options(std::move(opt)) {}

  // The rows an optimizer step takes (batch x processes x accumulation) where this run's config
  // groups by length, else 0.
  int64_t configured_group_rows() const {
    if (!config.train.group_by_length) return 0;
    return config.train.per_device_train_batch_size * world() * config.train.gradient_accumulation_steps;
  }
  int64_t train_size() const {
    return static_cast<int64_t>(preference ? train_pairs.size() : train_sft.size());
  }
  // The lengths a training batch pads row i to (batching.h).
  PaddedExtent train_row_extent(int64_t i) const;

  void log(const std::string& level, const std::string& text) { observer.on_log(level, text); }
  std::function<void(const std::string&)> warn_sink() {
    return [this](const std::string& text) { log("warning", text); };
  }

  // ---- set-up (trainer_setup.cpp) ------------------------------------------------------------
  // Everything before the first step, in order: devices and threads, the process group, the
  // models, the data, precomputed reference log-probs, the step count and the optimizers, then a
  // resume where one is asked for.
  void setup();

  // Values a model holds in bf16 (CausalLMImpl::store_projections_in_bf16, done as it was loaded
  // or drawn), and the words the run log says them in.
  static int64_t bf16_values(CausalLM& model);
  static std::string bf16_saving(int64_t values);

  // A LoRA run under bf16: where its frozen base's projections are kept (bf16 where that changes
  // no value, from the load on).
  void log_frozen_base_storage();

  // ---- data parallelism (data_parallel.h) ----------------------------------------------------
  void join_process_group();

  // Every rank starts from rank 0's weights (they agree already when built from the same seed
  // and files; this makes it so whatever happened), and the critics' EMA means follow the
  // global batch.
  void start_data_parallel();

  // train.deterministic: before anything touches CUDA (cuBLAS reads its workspace setting once,
  // so in a process that used CUDA before, the environment variable comes too late). The
  // switches are process-wide: the previous ones come back when the trainer goes.
  void use_deterministic_kernels();

  // The GPU's name and memory for the run's device field, and its peak for MFU.
  void describe_gpu();

  // ---- CPU threads (cpu_job.h) ---------------------------------------------------------------
  void setup_cpu_threads();

  // A run on the default (num_threads = 0) follows the number of CPU jobs on the machine.
  void refresh_cpu_share();

  // Before anything is allocated: the memory estimate (core/memory_estimate.h) against the GPU's
  // memory, or the RAM free now for this host's processes, so a run that cannot fit says so
  // instead of being killed by the system without a word.
  void warn_if_memory_short();

  // The policy (a preset, a folder, random weights; LoRA adapters on a frozen base), the frozen
  // reference where the run needs one of its own (LoRA runs use the policy with adapters off),
  // and GANPO's critics.
  void build_models();

  // A policy of random weights (drawn on the CPU) to the device. Under bf16 they are bf16 values,
  // as a folder stored in bf16 holds its weights, and a LoRA run's frozen base keeps its
  // projections in bf16 before the move, as it would from such a folder (so a benchmark of a
  // shape measures the memory of real use).
  void move_random_policy_to_device();

  // Said once per run: which attention computation the models and the critics use.
  void log_attention_kernels();

  // train.precision = "bf16": training passes, evaluations, precomputed reference log-probs,
  // samples and judged generations autocast to bf16 (CUDA; setup() refuses it on a CPU device
  // but for the testing aid bf16_storage_on_cpu, under which the frozen weights' storage is a
  // bf16 run's and nothing autocasts unless Bf16OnCpuForTests lives).
  bool bf16_autocast() const {
    return config.train.precision == "bf16" && (device.is_cuda() || options.bf16_storage_on_cpu);
  }

  // train.precompute_ref_log_probs: one pass of the reference over both splits before the first
  // step (again on resume: the numbers are a function of the frozen reference and the data).
  void precompute_reference_logps();
  // What the pass computed, kept across a retry of train.auto_find_batch_size (as TRL keeps them
  // on its trainer): the stage started again takes them where it would compute the same numbers
  // (the same pairs, scored the same way in batches of the same size: a batch's shape moves their
  // last bits, and a resume computes them again in the batches its config says), rather than run
  // the reference over the data again. So a retry of a step keeps them unless its evaluation
  // batch follows the training batch (train.per_device_eval_batch_size = 0 above 8 rows).
  // Data-parallel ranks their launcher starts again are new processes: rank 0 leaves them in the
  // launcher's folder (GANPO_RELAUNCH_DIR), and the ranks started again read them there.
  // Checkpoints hold them too (trainer_state/precomputed_ref_logps.safetensors, two floats a
  // pair), so a resume under the same terms does not run the reference over the data again.
  // (KeptPairLogps, core/train/reference_logps.h.)
  std::optional<KeptPairLogps> precomputed() const;  // none where the pass did not complete
  std::optional<KeptPairLogps> kept_precomputed;     // the stage before's, for this one
  uint64_t pairs_hash = 0;                           // hash_of_pairs of both splits, set by the pass
  void leave_precomputed_for_a_new_start();
  void write_precomputed_into(const std::string& trainer_state_dir) const;
  std::optional<KeptPairLogps> precomputed_kept_elsewhere() const;  // a new start's or a resume's
  // The reference scores this rank's first batch of the training split again: kept numbers are
  // taken only where it gives them bit for bit (another reference model, precision, device or
  // kernel would move them, and the token ids' hash cannot see those).
  bool first_batch_scores_the_same(const KeptPairLogps& kept, int64_t bs);

  // One split's reference log-probs. Data parallelism: each rank scores every world-th pair and a
  // sum over the ranks (zeros elsewhere) gives every rank the whole split.
  PairLogps precompute_split(const std::vector<TokenizedPair>& pairs, int64_t bs, bool share_prompts);

  // ---- data (trainer_data.cpp) ---------------------------------------------------------------
  // Conversational rows in the model's chat template (TRL's apply_chat_template); the byte
  // tokenizer has none and keeps the plain role rendering of dataset_files.h.
  template <typename Row>
  void render_conversations(std::vector<Row>& train, std::vector<Row>& eval);

  // The stage's rows from the task or the data files, tokenized and split, with the judge and
  // the sample prompts.
  void load_data();

  // data.label_noise on a data file: that fraction of training pairs swapped, seeded by the run.
  void add_label_noise(std::vector<PreferenceExample>& train);
  // A warning where data.max_length cut training rows: how many, where, and what keeps them whole.
  void log_row_cuts(const RowCuts& cuts);

  // A data file's judge prompts: the first eval.num_prompts distinct held-out prompts, bucketed
  // by the length of their reference answer (terciles).
  template <typename Example, typename AnswerLength>
  void pick_held_out_prompts(const std::vector<Example>& plain, const std::vector<Example>& rendered,
                             AnswerLength answer_length);

  // The task's own judge, or eval.judge_command in its place (the only judge of a data file).
  void set_up_judge();

  // data.train (and data.eval, or a split of data.train) through one of the file readers.
  template <typename Example>
  void load_files(LoadResult<Example> (*load)(const std::string&, const std::string&),
                  std::vector<Example>& train, std::vector<Example>& eval);

  // The first num_prompts non-empty held-out prompts are the fixed sample prompts: as the model
  // gets them (rendered) and as a judge gets them (plain, as the final judge evaluation sends them).
  template <typename Example>
  void pick_sample_prompts(const std::vector<Example>& plain, const std::vector<Example>& rendered);

  void report_skipped(const std::string& file, const std::vector<BadLine>& bad);

  // ---- data cursor ---------------------------------------------------------------------------
  // The rows of an epoch in the order the steps take them: shuffled from the seed, or grouped by
  // length for `group_rows` rows a step (train.group_by_length; 0: not grouped).
  std::vector<int64_t> epoch_rows(int64_t e, int64_t group_rows) const;

  // This rank's rows of the next global batch: every rank walks the same order and takes the
  // rank-th slice of world x B rows, so one process with batch world x B takes them all.
  std::vector<int64_t> next_indices();

  // ---- metrics and non-finite checks (trainer_step.cpp) --------------------------------------
  static void accumulate(torch::Tensor& slot, const torch::Tensor& v) { slot = slot.defined() ? slot + v : v; }
  void add(const std::string& key, const torch::Tensor& value);

  // Non-finite checks of the step's terms (the losses before the backward pass, the gradient
  // norm before the optimizer step). Reading a value on the host waits for the device, so on
  // CUDA the values wait here, still on the device, and are read at the next log line,
  // evaluation, sample or checkpoint, in one transfer (the step then runs without a host sync);
  // the first non-finite one fails the run with its term and step as a check at once would, and
  // nothing from the weights it reached is saved or reported (the policy, optimizer state,
  // critics and EMA means may have run on for a few steps past it). On the CPU, where reading
  // costs nothing, each is read at once.
  struct PendingCheck {
    std::vector<std::string> names;
    torch::Tensor values;  // [names], float32
    int64_t step;
    const char* advice;
  };
  std::vector<PendingCheck> pending_checks;
  bool defer_checks = false;  // setup(): on CUDA
  static constexpr const char* kLossAdvice = "lower train.learning_rate or ganpo.adv_weight, or enable train.max_grad_norm";
  static constexpr const char* kGradNormAdvice = "lower train.learning_rate or enable train.max_grad_norm";

  // reduce: sum over the ranks first, so a non-finite term on any rank stops every rank at the
  // same point (not needed for the gradient norm, the same on every rank after the all-reduce).
  void check_finite(const std::vector<std::pair<const char*, torch::Tensor>>& terms, bool reduce = true,
                    const char* advice = kLossAdvice);

  // The pending checks' values in order, float64, for one transfer with other numbers.
  torch::Tensor pending_check_values() const;

  // Throws for the first non-finite value (values: pending_check_values() on the host).
  void check_pending(const double* values);

  // Also what waits for the device before an evaluation, samples or a checkpoint (drain_device).
  void verify_finite();

  // CUDA: wait for the steps queued on the device, their time counted as theirs (a step's own
  // time is measured on the host, which runs ahead of the device). Called before anything that
  // waits for the device or takes time of its own between steps: a log line, an evaluation,
  // samples, a checkpoint, a pause.
  void drain_device();

  // ---- one micro-batch -----------------------------------------------------------------------
  // One micro-batch's forward and backward pass, its loss scaled by 1 / accumulation steps; the
  // numbers for the log go into the window. The numbered steps are ../shared/GANPO.md section 2.
  // A token mean (the SFT loss, RPO's NLL term) divides the micro-batch's sum by `tokens`, the
  // step's tokens per micro-batch (tokens_per_micro_batch).
  void sft_micro_step(const std::vector<int64_t>& idx, double scale, const torch::Tensor& tokens);
  void preference_micro_step(const std::vector<int64_t>& idx, double scale, bool last_micro, const torch::Tensor& tokens);
  // The response tokens a step's token means average over (an SFT row's, a pair's chosen ones
  // for RPO's NLL term), per micro-batch and averaged over the ranks: [] on the device, from
  // counts on the host. Divided by it, each micro-batch's sum scaled by 1 / accumulation steps
  // and averaged over the ranks adds up to the mean over every token of the step, as transformers'
  // Trainer takes it (num_items_in_batch), however the rows are split into micro-batches and
  // ranks; an undefined tensor where the step has no token mean (a preference stage without RPO).
  torch::Tensor tokens_per_micro_batch(const std::vector<std::vector<int64_t>>& micro_batches);

  // train.prefix_sharing for one batch: which passes run each prompt once (sequence_scoring.h).
  // Not where GANPO's critics read padded positions (critic_mask "none"), where a prompt is empty
  // (nothing would predict the first response token), where the longest prompt plus the longest
  // response exceeds a model's positions, or where the shared layout would be the larger one
  // (can_share_prompts); the policy keeps its plain pass under gradient checkpointing (the
  // cached pass is not checkpointed). Held-out evaluations share batch by batch the same way
  // (score_pair_logps).
  struct PrefixSharing {
    SharedPromptBatch batch;
    bool policy = false, reference = false;
    // The batch's prompt tokens: a pass that shared ran each of them once instead of twice.
    static int64_t prompt_tokens(const std::vector<const TokenizedPair*>& rows) {
      int64_t n = 0;
      for (const auto* r : rows) n += static_cast<int64_t>(r->prompt.size());
      return n;
    }
  };
  PrefixSharing prefix_sharing_for(const std::vector<const TokenizedPair*>& rows);

  // Data parallelism: the policy's gradients averaged over the ranks (finishing the all-reduce
  // the last backward pass started), or a list of tensors' (the critics').
  void finish_gradients();
  void average_gradients(const std::vector<torch::Tensor>& params);

  // The work of a micro-batch of `pairs` pairs (0: SFT) for the model FLOPs.
  MicroBatchWork micro_batch_work(const SequenceBatch& b, int64_t pairs, bool reference_ran = false,
                                 bool reference_head = false) const;
  // Tokens and model FLOPs of a micro-batch, for the throughput charts.
  void count_work(const SequenceBatch& b, const MicroBatchWork& work);

  // Policy learning rate of optimizer step `at` (0-based).
  double lr_at(int64_t at) const;
  double current_lr() const { return lr_at(step); }

  // ---- one optimizer step --------------------------------------------------------------------
  // Accumulation over the micro-batches, the ranks' average, clipping and the AdamW step.
  void optimizer_step();
  std::vector<PaddedExtent> stepped_extents;  // of the first step's micro-batches (on this rank)

  // After the stage's first step: where the rows the steps left will take hold some longer than
  // any micro-batch of that step padded to (on any rank), a micro-batch of the longest (the
  // longest row, the shortest prompt, the longest response and prompt, then the next longest
  // rows; a few micro-batches where one has fewer than four rows) runs forward and backward as
  // a step's would, with the gradients a step's micro-batch meets, and
  // everything it did is discarded (gradients, metrics, checks, generators, the critics' EMA
  // means and spectral norms as they were), so that most memory a later batch would run out of
  // runs out a step into the run rather than hours in (train.group_by_length puts an epoch's
  // longest row first for that reason; shuffled rows bring it up anywhere). Out of memory there
  // is a step's: the run fails saying so, or train.auto_find_batch_size goes on with a smaller
  // batch. Any other failure there says it came from this try.
  void try_longest_rows();
  // The micro-batches of `count` rows it tries: the rows that pad a batch furthest, in one where
  // it has room for them all (else in as many as they need), with the longest rows besides.
  std::vector<std::vector<int64_t>> longest_batches(int64_t count) const;
  // The rows the steps left take (every rank's), each once, in the order they come.
  std::vector<int64_t> rows_ahead() const;
  // The steps' memory peak (MiB) before the try of the longest rows, which reset it: the next log
  // line reports at least this (0: nothing held back).
  double window_peak_floor_mb = 0;
  bool longest_rows_tried = false;

  // The window's means to the observer in one transfer from the device (with the non-finite
  // checks), then throughput, memory and the system readings.
  void flush_metrics();

  // Each rank's tokens/s ("ranks/tokens_per_s/<rank>"); the window's tokens and model FLOPs
  // summed over the ranks, so tokens_per_s and MFU speak of the whole run (MFU per device: the
  // world's FLOPs against the world's peak).
  void add_rank_throughput(std::map<std::string, double>& m);

  // The device's utilisation and memory (NVML) and this process's allocator view of it; the
  // peak since the last log line.
  void add_gpu_metrics(std::map<std::string, double>& m);

  // The CPU tensors' bytes where the process counts them (core/cpu_tensor_memory.h): the CPU's
  // counterpart of the allocator's view above.
  void add_cpu_tensor_metrics(std::map<std::string, double>& m);

  // ---- evaluation and samples (trainer_evaluation.cpp) ---------------------------------------
  // Held-out pairs (or SFT loss); reported at once unless the stage's last evaluation still has
  // its judge part to come.
  void evaluate(bool report = true);

  // Data parallelism: each rank scores every world-th held-out pair; the means are combined,
  // weighted by pairs, into what one process scoring them all reports.
  std::map<std::string, double> sharded_preference_eval(int64_t bs);

  // Data parallelism, SFT: each rank scores every world-th held-out row; the token-weighted mean
  // of the ranks' losses is what one process scoring them all reports.
  std::map<std::string, double> sharded_sft_eval(int64_t bs);

  // Data parallelism: a rank whose memory runs out (or that fails otherwise) scoring its shard
  // (`score`, `values` sums) says so in the sum of the shards, one more value a rank, so every
  // rank learns it in the same collective, between two steps, where the state is a whole step's
  // on each: they all throw FailedRanks. Else the summed values.
  std::vector<double> sum_shards(const std::function<std::vector<double>()>& score, size_t values);
  struct FailedRanks {
    std::vector<int> out_of_memory, other;  // the ranks that failed, by how
    std::exception_ptr mine;                // this rank's error, if it failed
    bool any() const { return !out_of_memory.empty() || !other.empty(); }
    // Rank `rank`'s part went as run_my_part says it (`how`).
    void note(int rank, int how) {
      if (how == 1) out_of_memory.push_back(rank);
      if (how == 2) other.push_back(rank);
    }
  };
  // How this rank's part of a collective piece of work ran, for its peers: 0 it did, 1 its memory
  // ran out (the GPU's cache is given back for what follows), 2 another error, kept in `failed`.
  int run_my_part(const std::function<void()>& part, FailedRanks& failed);
  // Between two steps, where a rank's part (`where`: a held-out evaluation, the live samples)
  // failed and every rank knows it: the ranks save this step together, outside the evaluation's
  // autocast (unless a checkpoint of it exists: nothing trained is lost; its meta.json says what
  // of the step is to come, which a resume does first), and wait for rank 0's write; then they
  // end: a rank that failed with its own error (out of memory: out_of_memory(), which asks the
  // launcher to start every rank again with half the evaluation batch under
  // train.auto_find_batch_size), the others asking to be started again with it, or failing with
  // the ranks' place, the checkpoint and what would need less.
  struct Activity;  // (below, with running out of memory)
  [[noreturn]] void settle_failed_ranks(const FailedRanks& failed, const Activity& where);
  // The step whose checkpoint is being saved before its held-out evaluation, or its live samples
  // (-1: none), for meta.json.
  int64_t evaluation_pending = -1, samples_pending = -1;
  // Marks the step as saved before what `activity` was doing of it (a held-out evaluation, or the
  // samples on schedule), for the checkpoint about to be written; the marks last until it is.
  void mark_step_pending();

  // The stage's last evaluation: the held-out numbers and, for a preference stage whose task has a
  // judge, policy and reference sampled and judged at eval.temperatures. A judge that fails
  // leaves its message in the report; the trained weights are saved before this runs.
  EvalReport final_report();

  // This rank's sample prompts: every world-th one, from its rank on.
  bool my_sample_prompt(size_t i) const { return !dp || static_cast<int64_t>(i) % world() == dp->rank(); }

  std::vector<std::string> sample_texts(CausalLM& model);

  // Data parallelism: the ranks' texts (each its share of the prompts, in order), put back in
  // the prompts' order.
  std::vector<std::string> in_prompt_order(const std::vector<std::vector<std::string>>& per_rank) const;

  // Policy (and once, the reference) sampled on the fixed prompts, judged where a judge is;
  // `on_schedule` false for those the run's control asked for (which a resume does not make again).
  void samples(bool on_schedule = true);
  bool sampling_on_schedule = false;  // samples()' on_schedule while it runs
  int64_t last_sampled_step = -1;     // the step samples() last sampled in this process

  // Judge scores for the live samples; a judge command that fails here warns once and the
  // samples go without scores.
  void score_samples(std::vector<SampleRecord>& records);

  // ---- checkpoints (trainer_checkpoint.cpp) --------------------------------------------------
  nlohmann::json meta_json() const;

  // This process's random generators: the CPU's, the GPU's (dropout on the GPU draws from it) and
  // the critics' dropout generators, so a resumed run draws what an uninterrupted one would.
  std::vector<std::pair<std::string, torch::Tensor>> rng_tensors();
  // Sets them from rng_tensors()'s names ("cpu", "cuda", the critics'); a name absent is left as it is.
  void set_rng_tensors(const std::map<std::string, torch::Tensor>& rng);

  // Every rank's generators, for rank 0 to save: rank r's under "rank<r>/<name>" (a collective:
  // every rank calls it at the same checkpoint).
  std::vector<std::pair<std::string, torch::Tensor>> world_rng_tensors();

  // The world's state for rank 0 to write, gathered at a checkpoint (collectives: every rank
  // calls it at the same one): every rank's generators, the tokens all ranks trained on, and the
  // critics' gradients waiting for their step averaged over the ranks (the step averages them
  // anyway, and a mean is linear), so rank 0's copy is every rank's and a resume goes on exactly.
  struct WorldState {
    std::vector<std::pair<std::string, torch::Tensor>> rng;
    int64_t tokens_seen = 0;
  };
  WorldState gather_world_state();

  void write_trainer_state(const std::string& dir, const WorldState& world_state);

  // Full fine-tuning whose checkpoints store the policy rounded (model.safetensors in bf16 or
  // fp16: model.save_dtype, or the dtype of a folder stored so, as Llama 3 and Gemma 2 ship):
  // trainer_state/master_weights.safetensors keeps the float32 weights the optimizer updates, as
  // DeepSpeed keeps its fp32 master copy, so a resume goes on from them, not from their rounding
  // (an update below bf16's resolution would otherwise be lost at each resume).
  bool checkpoints_round_policy() const;
  std::vector<std::pair<std::string, torch::Tensor>> trained_weights();
  void load_master_weights(const std::string& dir, const std::string& stored_dtype);

  // A LoRA checkpoint holds the merged model (save_checkpoint) and, in adapter/, the adapters
  // alone as a PEFT adapter folder over the base model folder, where the family allows one.
  void write_adapter_folder(const std::string& dir);
  bool adapter_refusal_logged = false;

  // A checkpoint folder, written atomically by rank 0: the policy as an HF folder, meta.json, the
  // run's config, a LoRA run's adapter folder and, with_state, trainer_state/ to resume from.
  std::string save_checkpoint(const std::string& name, bool with_state);

  void load_lora_state(const std::string& dir);

  // Continues from a checkpoint folder's trainer_state/: weights (or a LoRA run's adapters),
  // optimizers, critics, EMA means, generators and the data cursor, exactly where it stopped.
  void resume(const std::string& dir);

  // ---- running out of memory (trainer.cpp) ---------------------------------------------------
  // What the stage is doing, as a message names it, and which settings would make it need less.
  struct Activity {
    const char* what;
    MemoryUse use;
    bool between_steps;  // the run's state is a whole step's: a checkpoint written now is exact
  };
  // (Each "what" follows "ran out of memory while" in the message.)
  static constexpr const char* kOptimizerStep = "taking an optimizer step";
  static constexpr Activity kLoadingModels{"loading the models", MemoryUse::models, false};
  static constexpr Activity kResuming{"resuming from a checkpoint", MemoryUse::models, false};
  static constexpr Activity kPrecomputing{"precomputing the reference's log-probs", MemoryUse::evaluation, false};
  static constexpr Activity kStepping{kOptimizerStep, MemoryUse::training, false};
  static constexpr Activity kTryingLongestRows{"running a micro-batch of the longest training rows", MemoryUse::training,
                                               false};
  static constexpr Activity kEvaluating{"running a held-out evaluation", MemoryUse::evaluation, true};
  static constexpr Activity kSampling{"generating the live samples", MemoryUse::sampling, true};
  static constexpr Activity kJudging{"generating for the judge's evaluation", MemoryUse::judging, true};
  static constexpr Activity kSaving{"saving a checkpoint", MemoryUse::models, false};
  // Between the parts above (a log line, the run's control): what the stage is doing after set-up.
  static constexpr Activity kTraining{"training", MemoryUse::training, false};
  Activity activity{"setting up the run", MemoryUse::models, false};
  // The activity for the life of a scope. An exception leaving the scope keeps it, so the failure
  // it becomes can say where it happened; otherwise the one before comes back.
  class Doing {
  public:
    Doing(State& s, Activity a) : s_(s), before_(s.activity), exceptions_(std::uncaught_exceptions()) {
      s.activity = a;
      if (s.options.on_activity_for_tests) s.options.on_activity_for_tests(a.what, s.step);
    }
    ~Doing() {
      if (std::uncaught_exceptions() == exceptions_) s_.activity = before_;
    }
    Doing(const Doing&) = delete;
    Doing& operator=(const Doing&) = delete;

  private:
    State& s_;
    Activity before_;
    int exceptions_;
  };
  std::optional<MemoryEstimate> estimate;  // warn_if_memory_short()'s, for the failure message
  std::string last_checkpoint;             // the newest checkpoint-<step> folder to resume from
  int64_t last_checkpoint_step = -1;

  // The run's failure when memory ran out (LibTorch's `detail`): where, the estimate against the
  // device, what to change, and where to resume from. Where it ran out between two steps (an
  // evaluation, samples) of a single process, the state is still a whole step's: a checkpoint
  // of that step is written first (unless there is one), so no training since the last one is
  // lost.
  // `host`: a C++ allocation refused (std::bad_alloc), always in the machine's RAM.
  std::string out_of_memory(const std::string& detail, bool host = false);

  // Where a checkpoint of the step just taken is written, its folder; else empty, with why
  // saving it failed in `failure` if it did. Only where the state is a whole step's (between
  // steps, one process) and no checkpoint of that step exists yet.
  std::string rescue_checkpoint(std::string& failure);
  // The checkpoint a new attempt of this stage would resume from: the newest one written or
  // resumed from, else the one it was asked to resume from (empty: the start).
  std::string resume_point() const;

  // train.auto_find_batch_size: where memory ran out in a step (or an evaluation, or the
  // precompute) and a smaller batch keeps the run's rows per optimizer step, the stage ends
  // with `retry` set instead of failing; Trainer::run starts it again from `from` with `config`.
  struct Retry {
    RunConfig config;
    std::string from;
    bool evaluate_first = false;  // the held-out evaluation that ran out (and what followed it) done at `from`
  };
  std::optional<Retry> retry;
  // The same in a data-parallel run: this rank asked its launcher to start every rank again with
  // the smaller batch (core/relaunch_request.h), or another rank did; the stage ends "relaunch".
  bool relaunch = false;
  // The batches the launcher started this rank with after such a request (GANPO_BATCHES_FOUND).
  void adopt_batches_from_launcher();
  std::string ask_launcher_to_start_again(const SmallerBatch& smaller, const std::string& what, const std::string& why);
  // This rank's request to go on with `smaller` from the newest checkpoint, `reason` for the others.
  RelaunchRequest relaunch_request(const SmallerBatch& smaller, const std::string& reason) const;
  bool evaluate_first = false;  // Retry::evaluate_first, for the stage that retries
  bool samples_first = false;   // a resumed checkpoint was saved before its step's live samples
  // The batches the person asked for (train batch, accumulation, evaluation batch), kept across
  // retries and in checkpoints, so a resume knows a smaller batch there was found, not chosen.
  struct Batches {
    int64_t train = 0, accumulation = 0, eval = 0;
    bool operator==(const Batches& o) const {
      return train == o.train && accumulation == o.accumulation && eval == o.eval;
    }
  };
  static Batches batches_of(const TrainConfig& t) {
    return {t.per_device_train_batch_size, t.gradient_accumulation_steps, eval_batch_size(t)};
  }
  std::optional<Batches> asked_batches;  // set at set-up, or by Trainer::run for a retry
  // A resumed stage with train.auto_find_batch_size takes the batches its checkpoint was trained
  // with where an earlier attempt found them for the batches this config asks for.
  void adopt_batches_found_before(const std::string& dir);

  RunConfig on_device_config() const;  // the config with its device resolved ("auto": what it is here)
  int64_t vocab_size() const;           // the policy's (0 before it is built)

  // What makes the judge's evaluation need less memory (its failure is the report's, not the run's).
  std::string judge_memory_advice() const;

  // ---- control and the whole stage (trainer.cpp) ---------------------------------------------
  // Returns true when the run must stop now. With data parallelism every rank acts on rank 0's
  // command (only rank 0 reads the run's control field) and on a stop signal that any rank
  // received, so all of them take the same path.
  bool handle_control();

  // The stage from set-up to the final report; every failure becomes status "failed".
  TrainResult run();
  // What follows an optimizer step where it is due: a held-out evaluation (unless `evaluation` is
  // false: a resume whose checkpoint has it), the samples, a checkpoint.
  void after_step(bool evaluation = true);
  bool eval_due() const { return config.train.eval_steps > 0 && step % config.train.eval_steps == 0; }
  bool samples_due() const { return config.sampling.every_steps > 0 && step % config.sampling.every_steps == 0; }
  // "4 rows a micro-batch x 2 accumulation steps = 8 rows per optimizer step; evaluations in ..."
  std::string batch_description() const;

  void fail(TrainResult& result, const std::string& message);
};

}  // namespace ganpo
