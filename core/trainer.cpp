#include "core/trainer.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/autocast_mode.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <torch/version.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <set>
#include <thread>

#include "core/batching.h"
#include "core/bf16_autocast.h"
#include "core/checkpoint.h"
#include "core/cpu_job.h"
#include "core/cpu_tensor_memory.h"
#include "core/critic.h"
#include "core/cuda_memory.h"
#include "core/data_parallel.h"
#include "core/dataset_files.h"
#include "core/error.h"
#include "core/eval/evaluation.h"
#include "core/fault_points.h"
#include "core/fused_adamw.h"
#include "core/generate.h"
#include "core/gpu_monitor.h"
#include "core/grad_clip.h"
#include "core/host_sync_check.h"
#include "core/memory_estimate.h"
#include "core/eval/external_judge.h"
#include "core/tasks/task.h"
#include "core/tasks/task_random.h"
#include "core/lr_schedule.h"
#include "core/model/architectures.h"
#include "core/model/causal_lm.h"
#include "core/model/hf_weights.h"
#include "core/model/lora_adapter.h"
#include "core/model/lora_targets.h"
#include "core/model/safetensors.h"
#include "core/model_flops.h"
#include "core/opo_losses.h"
#include "core/reference_logps.h"
#include "core/run_files.h"
#include "core/sequence_scoring.h"
#include "core/text/chat_template.h"
#include "core/tokenizer.h"

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace ganpo {
namespace {

std::atomic<bool> g_stop_requested{false};

void on_signal(int) { g_stop_requested.store(true); }

// The SFT corpus mixes perfect answers with faulty ones so the reference is decent but
// imperfect, leaving room for preference optimization to improve it.
constexpr double kSftPerfectFraction = 0.5;

// A non-finite loss term, named, at a step.
class NonFiniteLoss : public Error {
public:
  using Error::Error;
};

// 0.2, not 0.200000.
std::string format_number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

double rss_megabytes() {
  std::ifstream statm("/proc/self/statm");
  long pages_total = 0, pages_resident = 0;
  statm >> pages_total >> pages_resident;
  return static_cast<double>(pages_resident) * 4096.0 / (1024.0 * 1024.0);
}

void set_lr(torch::optim::Optimizer& opt, double lr) {
  for (auto& group : opt.param_groups())
    static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr);
}

// Visits both critics with the name prefix their tensors carry in a checkpoint.
template <typename Fn>
void for_each_critic(GanpoRegularizer& reg, Fn&& fn) {
  fn(std::string("critic_w."), reg.critic_w());
  fn(std::string("critic_l."), reg.critic_l());
}

std::vector<std::pair<std::string, torch::Tensor>> critic_state(GanpoRegularizer& reg) {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for_each_critic(reg, [&](const std::string& prefix, LatentCritic& critic) {
    for (const auto& p : critic->named_parameters()) out.emplace_back(prefix + p.key(), p.value().detach());
    for (const auto& b : critic->named_buffers()) out.emplace_back(prefix + b.key(), b.value());
  });
  return out;
}

// Critic gradients accumulated toward a critic step not taken yet (critic_update_every > 1).
std::vector<std::pair<std::string, torch::Tensor>> pending_critic_grads(GanpoRegularizer& reg) {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for_each_critic(reg, [&](const std::string& prefix, LatentCritic& critic) {
    for (const auto& p : critic->named_parameters())
      if (p.value().grad().defined()) out.emplace_back(prefix + p.key(), p.value().grad());
  });
  return out;
}

void load_pending_critic_grads(GanpoRegularizer& reg, const std::map<std::string, torch::Tensor>& tensors) {
  for_each_critic(reg, [&](const std::string& prefix, LatentCritic& critic) {
    for (auto& p : critic->named_parameters()) {
      auto it = tensors.find(prefix + p.key());
      if (it != tensors.end() && it->second.sizes() == p.value().sizes())
        p.value().mutable_grad() = it->second.to(p.value().options());
    }
  });
}

void load_critic_state(GanpoRegularizer& reg, const std::map<std::string, torch::Tensor>& tensors,
                       const std::string& source) {
  torch::NoGradGuard guard;
  for_each_critic(reg, [&](const std::string& prefix, LatentCritic& critic) {
    auto copy = [&](const std::string& name, torch::Tensor& dst) {
      auto it = tensors.find(prefix + name);
      if (it == tensors.end() || it->second.sizes() != dst.sizes())
        throw ModelFileError(source + ": critic tensor " + prefix + name +
                             " is missing or mis-shaped; the checkpoint does not match the ganpo "
                             "settings (critic_hidden, critic_layers, critic_heads)");
      dst.copy_(it->second);
    };
    for (auto& p : critic->named_parameters()) copy(p.key(), p.value());
    for (auto& b : critic->named_buffers()) copy(b.key(), b.value());
  });
}

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

struct Trainer::State {
  ~State() {
    if (!deterministic_before) return;
    auto& context = at::globalContext();
    context.setDeterministicAlgorithms(deterministic_before->algorithms, deterministic_before->warn_only);
    context.setDeterministicCuDNN(deterministic_before->cudnn);
    context.setBenchmarkCuDNN(deterministic_before->benchmark);
  }

  RunConfig config;
  RunObserver& observer;
  TrainerOptions options;

  torch::Device device{torch::kCPU};
  std::unique_ptr<Tokenizer> tokenizer;
  CausalLM policy{nullptr};
  CausalLM reference{nullptr};
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

  // The rows of an epoch in the order the steps take them: shuffled from the seed, or grouped by
  // length for `group_rows` rows a step (train.group_by_length; 0: not grouped).
  std::vector<int64_t> epoch_rows(int64_t e, int64_t group_rows) const {
    const auto seed = static_cast<uint64_t>(config.seed);
    if (group_rows <= 0) return epoch_order(train_size(), seed, e);
    std::vector<int64_t> lengths;
    if (preference)
      for (const auto& p : train_pairs) lengths.push_back(row_length(p));
    else
      for (const auto& r : train_sft) lengths.push_back(row_length(r));
    return length_grouped_order(lengths, group_rows, seed, e);
  }
  // The rows an optimizer step takes (batch x processes x accumulation) where this run's config
  // groups by length, else 0.
  int64_t configured_group_rows() const {
    if (!config.train.group_by_length) return 0;
    return config.train.per_device_train_batch_size * world() * config.train.gradient_accumulation_steps;
  }
  int64_t train_size() const {
    return static_cast<int64_t>(preference ? train_pairs.size() : train_sft.size());
  }

  void log(const std::string& level, const std::string& text) { observer.on_log(level, text); }
  std::function<void(const std::string&)> warn_sink() {
    return [this](const std::string& text) { log("warning", text); };
  }

  // ---- setup ---------------------------------------------------------------------------------
  void setup() {
    validate_or_throw(config);
    preference = config.stage == "preference";
    if (config.train.deterministic) use_deterministic_kernels();
    device = torch::Device(resolve_device(config.device));
    join_process_group();
    defer_checks = device.is_cuda() || options.defer_finite_checks;
    // The process's current CUDA device too (torch.cuda.set_device): what runs on the current
    // device rather than a tensor's (NCCL's communicators, library handles) uses this run's GPU.
    if (device.is_cuda() && device.has_index()) c10::impl::getDeviceGuardImpl(c10::DeviceType::CUDA)->setDevice(device);
    // The first log line's peak is this run's (a process may have run another before: ganpo bench).
    if (device.is_cuda()) reset_cuda_peak(device.has_index() ? device.index() : 0);
    if (device.is_cpu()) reset_cpu_tensor_peak();
    if (config.train.precision == "bf16" && device.is_cpu())
      throw ConfigError("train.precision = \"bf16\" needs a CUDA device and this run resolved device \"" +
                        config.device + "\" to the CPU, where this build computes in float32: set "
                        "train.precision = \"fp32\" or run on a CUDA machine");
    setup_cpu_threads();
    if (device.is_cuda()) describe_gpu();
    torch::manual_seed(static_cast<uint64_t>(config.seed));

    warn_if_memory_short();
    build_models();
    load_data();
    precompute_reference_logps();

    const int64_t B = config.train.per_device_train_batch_size;
    const int64_t GA = config.train.gradient_accumulation_steps;
    if (config.train.max_steps > 0) {
      total_steps = config.train.max_steps;
    } else {
      // One optimizer step takes B rows on each of the world's processes.
      const double batches_per_epoch = std::ceil(static_cast<double>(train_size()) / static_cast<double>(B * world()));
      total_steps = std::max<int64_t>(
          1, static_cast<int64_t>(std::ceil(config.train.num_train_epochs * batches_per_epoch / static_cast<double>(GA))));
    }
    warmup = warmup_steps(config.train.warmup_ratio, total_steps);

    auto adamw_options = [&](double lr, double weight_decay) {
      return torch::optim::AdamWOptions(lr)
          .betas({config.train.adam_beta1, config.train.adam_beta2})
          .eps(config.train.adam_epsilon)
          .weight_decay(weight_decay);
    };
    auto adamw = [&](std::vector<torch::Tensor> params, double lr) {
      return std::make_unique<FusedAdamW>(std::move(params), adamw_options(lr, config.train.weight_decay));
    };
    // Every weight, or with LoRA only the adapters (the rest is frozen). Weight decay spares the
    // biases and the norms' weights, as transformers' Trainer does (one group when there is none).
    std::vector<torch::Tensor> decayed, spared;
    for (const auto& p : policy->named_parameters()) {
      if (!p.value().requires_grad()) continue;
      trainable.push_back(p.value());
      (is_weight_decayed(p.key()) ? decayed : spared).push_back(p.value());
    }
    if (config.train.weight_decay > 0 && !spared.empty()) {
      std::vector<torch::optim::OptimizerParamGroup> groups;
      if (!decayed.empty()) groups.emplace_back(decayed);
      groups.emplace_back(spared, std::make_unique<torch::optim::AdamWOptions>(adamw_options(config.train.learning_rate, 0.0)));
      optimizer = std::make_unique<FusedAdamW>(std::move(groups),
                                               adamw_options(config.train.learning_rate, config.train.weight_decay));
      log("info", "weight decay " + format_number(config.train.weight_decay) + " on " + std::to_string(decayed.size()) +
                      " tensors; none on the " + std::to_string(spared.size()) + " biases and norm weights, as "
                      "transformers' Trainer");
    } else {
      optimizer = adamw(trainable, config.train.learning_rate);
    }
    if (regularizer)
      critic_optimizer = adamw(regularizer->critic_parameters(),
                               config.train.learning_rate * config.ganpo.critic_lr_ratio);
    order_group_rows = configured_group_rows();
    order = epoch_rows(epoch, order_group_rows);
    if (!options.resume_from.empty()) resume(options.resume_from);
    if (dp) start_data_parallel();
  }

  // Values a model holds in bf16 (CausalLMImpl::store_projections_in_bf16, done as it was loaded
  // or drawn), and the words the run log says them in.
  static int64_t bf16_values(CausalLM& model) {
    int64_t n = 0;
    for (const auto& p : model->parameters())
      if (p.scalar_type() == torch::kBFloat16) n += p.numel();
    return n;
  }
  static std::string bf16_saving(int64_t values) {
    return std::to_string(values) + " values, " + format_number(std::round(static_cast<double>(values) * 2 / (1 << 20))) +
           " MiB less";
  }

  // A LoRA run under bf16: where its frozen base's projections are kept (bf16 where that changes
  // no value, from the load on).
  void log_frozen_base_storage() {
    const int64_t stored = bf16_values(policy), all = parameter_parts(policy->shape()).projections;
    if (2 * stored >= all)
      log("info", "the frozen base's projections are stored in bf16 (" + bf16_saving(stored) + "), as bf16 holds them exactly");
    else
      log("info", "the frozen base stays float32 (" + std::to_string(stored) + " of its " + std::to_string(all) +
                      " projection values are bf16 values; a model stored in bf16 would keep them in half the memory)");
  }

  // ---- data parallelism (data_parallel.h) ------------------------------------------------------
  void join_process_group() {
    if (!options.distributed || !options.distributed->distributed()) {
      if (options.distributed && !options.distributed->note.empty()) log("warning", options.distributed->note);
      if (config.train.num_processes > 1)
        log("warning", "train.num_processes = " + std::to_string(config.train.num_processes) +
                           " but this process was started alone (`ganpo train`, workspace runs and `ganpo launch` start "
                           "the processes; `ganpo bench` does not), so it trains as one process with batch " +
                           std::to_string(config.train.per_device_train_batch_size));
      return;
    }
    const DistributedEnv& env = *options.distributed;
    if (config.train.num_processes > 1 && config.train.num_processes != env.world_size)
      log("warning", "train.num_processes = " + std::to_string(config.train.num_processes) + " but the launcher started " +
                         std::to_string(env.world_size) + " processes (" + env.source + "); training with " +
                         std::to_string(env.world_size) + ", global batch " +
                         std::to_string(config.train.per_device_train_batch_size * env.world_size));
    // One GPU per process on its host: cuda:<local rank>.
    if (device.is_cuda()) {
      if (device.has_index() && device.index() != env.local_rank && config.device != "auto" && config.device != "cuda")
        log("warning", "device = \"" + config.device + "\" gives way to cuda:" + std::to_string(env.local_rank) +
                           " in a data-parallel run (one GPU per process, by local rank); choose the GPUs with "
                           "CUDA_VISIBLE_DEVICES");
      const auto gpus = static_cast<int>(torch::cuda::device_count());
      if (env.local_rank >= gpus)
        throw ConfigError("this host has " + std::to_string(gpus) + " GPU" + (gpus == 1 ? "" : "s") + " in view but " +
                          std::to_string(env.local_world_size) + " processes of a data-parallel run on it (one GPU each); "
                          "lower train.num_processes (or --nproc-per-node) to " + std::to_string(gpus) +
                          ", or set device = \"cpu\"");
      device = torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(env.local_rank));
    }
    const auto timeout = std::chrono::milliseconds(static_cast<int64_t>(config.train.dist_timeout_s * 1000.0));
    dp = std::make_unique<DataParallel>(env, device, timeout);
    log("info", "data parallel: " + env.describe() + ", " + dp->backend() + " process group; global batch " +
                    std::to_string(config.train.per_device_train_batch_size * env.world_size) + " (" +
                    std::to_string(config.train.per_device_train_batch_size) + " per process)");
  }

  // Every rank starts from rank 0's weights (they agree already when built from the same seed
  // and files; this makes it so whatever happened), and the critics' EMA means follow the
  // global batch.
  void start_data_parallel() {
    std::vector<torch::Tensor> weights;
    for (auto& p : policy->parameters()) weights.push_back(p.detach());
    if (regularizer) {
      for (auto& p : regularizer->critic_parameters()) weights.push_back(p.detach());
      regularizer->set_batch_mean_reducer([this](torch::Tensor& mean) { dp->all_reduce_mean_(mean); });
    }
    torch::NoGradGuard guard;
    dp->broadcast_(weights, 0);
    dp->watch_gradients(trainable);
  }

  // train.deterministic: before anything touches CUDA (cuBLAS reads its workspace setting once,
  // so in a process that used CUDA before, the environment variable comes too late). The
  // switches are process-wide: the previous ones come back when the trainer goes.
  void use_deterministic_kernels() {
    ::setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8", /*overwrite=*/0);
    auto& context = at::globalContext();
    deterministic_before = DeterministicSwitches{context.deterministicAlgorithms(),
                                                 context.deterministicAlgorithmsWarnOnly(),
                                                 context.deterministicCuDNN(), context.benchmarkCuDNN()};
    context.setDeterministicAlgorithms(true, /*warn_only=*/false);
    context.setDeterministicCuDNN(true);
    context.setBenchmarkCuDNN(false);
    log("info", "deterministic kernels only (train.deterministic): an operation without a deterministic kernel "
                "fails the run with its name");
  }

  // The GPU's name and memory for the run's device field, and its peak for MFU.
  void describe_gpu() {
    const auto gpu = read_gpu(device.has_index() ? device.index() : 0);
    if (!gpu) {
      log("notice", "no GPU reading: NVIDIA's management library (libnvidia-ml.so.1) was not found, so the "
                    "dashboard shows no GPU utilisation and no MFU");
      return;
    }
    device_label = device.str() + " (" + gpu->name + ", " + format_number(std::round(gpu->memory_total_mb / 1024.0)) + " GiB)";
    gpu_memory_bytes = static_cast<int64_t>(gpu->memory_total_mb * 1024.0 * 1024.0);
    const bool bf16 = config.train.precision == "bf16";
    peak_flops = peak_flops_per_second(gpu->name, bf16);
    log("info", "GPU: " + device_label +
                    (peak_flops > 0 ? "; MFU against its " + format_number(peak_flops / 1e12) + " TFLOP/s " +
                                          (bf16 ? "bf16" : "fp32") + " peak"
                                    : "; its peak FLOP/s is not in the table of core/model_flops.cpp, so the dashboard "
                                      "shows model TFLOP/s without MFU"));
  }

  // ---- CPU threads (cpu_job.h) ---------------------------------------------------------------
  void setup_cpu_threads() {
    if (!device.is_cpu()) {
      if (config.train.num_threads > 0) torch::set_num_threads(static_cast<int>(config.train.num_threads));
      return;
    }
    cpu = std::make_unique<CpuJob>(config.train.num_threads);
    if (config.train.num_threads > cpu->available_cores())
      log("warning", "train.num_threads = " + std::to_string(config.train.num_threads) + " but this process may use " +
                         std::to_string(cpu->available_cores()) +
                         " core(s); more threads than cores make each step slower");
    log("info", "CPU: " + cpu->describe());
    const std::string slow_blas = blas_kernel_warning();
    if (!slow_blas.empty()) log("warning", slow_blas);
  }

  // A run on the default (num_threads = 0) follows the number of CPU jobs on the machine.
  void refresh_cpu_share() {
    if (!cpu) return;
    if (const int jobs = cpu->refresh())
      log("notice", std::to_string(jobs) + " CPU job(s) on this machine; now " + cpu->describe());
  }

  // Before anything is allocated: the memory estimate (core/memory_estimate.h) against the GPU's
  // memory, or the RAM free now for this host's processes, so a run that cannot fit says so
  // instead of being killed by the system without a word.
  void warn_if_memory_short() {
    ModelShape shape;
    try {
      shape = config.model.checkpoint.empty()
                  ? resolve_model_shape(config.model, ByteTokenizer().vocab_size())
                  : read_model_config(config.model.checkpoint);
    } catch (const std::exception&) {
      return;  // not a folder with a config.json (a PEFT adapter folder): loading says what it is
    }
    RunConfig on_device = config;
    on_device.device = device.str();  // "auto" resolved
    const MemoryEstimate estimate = estimate_training_memory(on_device, shape);
    std::string warning;
    if (device.is_cuda()) {
      warning = memory_shortfall_warning(estimate, 1, gpu_memory_bytes, device_label);  // read by describe_gpu()
    } else {
      const int processes = options.distributed ? options.distributed->local_world_size : 1;
      warning = memory_shortfall_warning(estimate, processes, system_memory_bytes("MemAvailable"),
                                         "this machine's free RAM (MemAvailable)");
    }
    if (!warning.empty()) log("warning", warning);
  }

  void build_models() {
    if (!config.model.checkpoint.empty() && config.model.random_weights) {
      // transformers' from_config: the folder's architecture, fresh weights from the run's seed.
      const std::string& dir = config.model.checkpoint;
      const bool folder_tokenizer = has_tokenizer_files(dir);
      tokenizer = folder_tokenizer ? load_tokenizer(dir) : std::make_unique<ByteTokenizer>();
      ModelShape shape = read_model_config(dir);
      if (!folder_tokenizer) {
        // Its checkpoints' config.json names the byte tokenizer's ids, not the source config's.
        auto hf = nlohmann::json::parse(shape.hf_config);
        hf["bos_token_id"] = tokenizer->bos_id();
        hf["eos_token_id"] = tokenizer->eos_id();
        hf["pad_token_id"] = tokenizer->pad_id();
        shape.hf_config = hf.dump();
        shape.padding_idx = hf_padding_idx(shape, hf);
      }
      policy = CausalLM(shape);
      if (tokenizer->vocab_size() > policy->shape().vocab_size)
        throw ConfigError("model.checkpoint " + dir + ": the tokenizer has " + std::to_string(tokenizer->vocab_size()) +
                          " tokens but config.json's vocab_size is " + std::to_string(policy->shape().vocab_size));
      move_random_policy_to_device();
      log("info", "model: " + policy->shape().arch + " of " + dir + "/config.json with random weights (model.random_weights)" +
                      (folder_tokenizer ? std::string() : "; the folder has no tokenizer, so the byte tokenizer is used"));
    } else if (!config.model.checkpoint.empty()) {
      // (A bf16 LoRA run's frozen base comes to the device in bf16 where the folder holds bf16.)
      auto loaded = load_model_folder(config.model.checkpoint, device, warn_sink(),
                                      config.model.lora.r > 0 && bf16_autocast() ? FrozenProjections::bf16_where_exact
                                                                                 : FrozenProjections::float32);
      policy = loaded.model;
      tokenizer = std::move(loaded.tokenizer);
      if (policy->lora().r > 0)
        throw ConfigError("model.checkpoint " + config.model.checkpoint +
                          " is a PEFT adapter folder; start from a full model folder (a LoRA run's checkpoints hold "
                          "the merged model, with the adapter in their adapter/ folder)");
    } else {
      tokenizer = std::make_unique<ByteTokenizer>();
      policy = CausalLM(resolve_model_shape(config.model, tokenizer->vocab_size()));
      move_random_policy_to_device();
    }
    if (config.data.max_length > policy->shape().max_seq_len)
      throw ConfigError("data.max_length = " + std::to_string(config.data.max_length) +
                        " exceeds the model's max_seq_len " + std::to_string(policy->shape().max_seq_len) +
                        "; lower data.max_length or raise model.max_seq_len");
    policy->set_gradient_checkpointing(config.train.gradient_checkpointing);
    const LoraSpec lora = lora_spec(config.model.lora);
    if (lora.r > 0) {
      policy->add_lora(lora);  // A from the run's seed; B = 0, so the run starts at the base model
      int64_t adapters = 0, all = 0;
      std::set<const void*> frozen;  // (an untied head's weight is the embedding's: counted once)
      for (const auto& p : policy->parameters())
        if (p.requires_grad())
          adapters += p.numel();
        else if (frozen.insert(p.data_ptr()).second)
          all += p.numel();
      log("info", std::string(lora.dora ? "DoRA" : "LoRA") + " r " + std::to_string(lora.r) + ", alpha " + format_number(lora.alpha) +
                      (lora.rslora ? " (rsLoRA: scale alpha / sqrt(r) = " : " (scale alpha / r = ") +
                      format_number(lora.scale()) + ")" + (lora.init == "default" ? "" : ", init_lora_weights " + lora.init) + " on " +
                      lora_targets_text(policy->shape(), policy->lora_targets()) + ": " +
                      std::to_string(adapters) + " trainable parameters, " +
                      std::to_string(all) + " frozen");
      if (bf16_autocast()) log_frozen_base_storage();
      // GANPO's critics read the final hidden states: with nothing trained below the head they
      // never move, and the adversarial term gives the policy no gradient.
      const LoraTargets& targets = policy->lora_targets();
      if (preference && config.ganpo.enabled &&
          targets.first_trained_layer(policy->shape().n_layers) >= policy->shape().n_layers &&
          std::find(targets.trained.begin(), targets.trained.end(), "norm") == targets.trained.end() &&
          std::find(targets.biases.begin(), targets.biases.end(), "norm") == targets.biases.end())
        log("warning", "ganpo.enabled with only the output head trained: GANPO's critics read the hidden states below "
                       "the head, which nothing trained moves, so its adversarial term cannot change the policy; adapt "
                       "some projections too (model.lora.target_modules) or turn ganpo off");
      if (lora.bias != "none" && targets.biases.empty())
        log("warning", "model.lora.bias = \"" + lora.bias + "\" trains no bias: " +
                           (lora.bias == "all" ? std::string("this model has none beside the modules trained whole")
                                               : std::string("none of the adapted modules has one")) +
                           " (" + architecture(policy->shape().arch).hf_class + ")");
      else if (preference && !targets.biases.empty() && config.model.reference.empty())
        log("info", "the reference is the model before training, its biases included (with PEFT's disable_adapter it "
                    "would use the trained biases)");
    }
    if (preference && lora.r > 0 && config.model.reference.empty()) {
      // The reference is the policy with its adapters off: the same weights, no second copy.
      // Its hidden states are GANPO's reference latents.
      reference = without_adapters(policy);
      if (config.ganpo.enabled)
        regularizer = std::make_unique<GanpoRegularizer>(config.ganpo, policy->shape().d_model, device);
    } else if (preference) {
      const std::string ref_dir = !config.model.reference.empty() ? config.model.reference
                                  : config.model.random_weights ? std::string()
                                                                : config.model.checkpoint;
      if (!ref_dir.empty()) {
        // (Under bf16 it comes to the device with its projections in bf16.)
        reference = load_model_folder(ref_dir, device, warn_sink(),
                                      bf16_autocast() ? FrozenProjections::bf16 : FrozenProjections::float32)
                        .model;
      } else {
        // A fresh policy's reference is a frozen copy of its starting weights.
        reference = CausalLM(policy->shape(), /*init=*/false);
        torch::NoGradGuard guard;
        auto src = policy->parameters();
        auto dst = reference->parameters();
        for (size_t i = 0; i < src.size(); ++i) dst[i].copy_(src[i]);
        for (auto& p : reference->parameters()) p.requires_grad_(false);
        if (bf16_autocast()) reference->store_projections_in_bf16(/*exact_only=*/false);  // (before the move)
        reference->to(device);
      }
      reference->eval();
      for (auto& p : reference->parameters()) p.requires_grad_(false);
      // Under bf16 its projections came to the device in bf16: autocast rounds every product's
      // weight to bf16 anyway, so the same numbers in half the memory (a PEFT adapter folder's
      // where exactly, as its adapters are on).
      if (bf16_autocast())
        log("info", "the reference's projections are stored in bf16 (" + bf16_saving(bf16_values(reference)) +
                        "); its embeddings and norms stay float32");
      if (reference->shape().vocab_size != policy->shape().vocab_size)
        throw ConfigError("model.reference has vocab_size " + std::to_string(reference->shape().vocab_size) +
                          " but the policy has " + std::to_string(policy->shape().vocab_size) +
                          "; policy and reference must share a tokenizer");
      if (config.ganpo.enabled)
        regularizer = std::make_unique<GanpoRegularizer>(config.ganpo, policy->shape().d_model, device);
    }
    // Both models score through the chunked head, or neither (the same numbers up to rounding).
    const bool chunked = uses_chunked_logps(config.train, policy->shape().vocab_size);
    policy->set_chunked_logps(chunked);
    if (reference) reference->set_chunked_logps(chunked);
    if (chunked)
      log("info", "response log-probs through the chunked output head (train.chunked_logps = \"" +
                      config.train.chunked_logps + "\"): no [tokens, " + std::to_string(policy->shape().vocab_size) +
                      "] logits are kept");
    policy->train();
    log_attention_kernels();
  }

  // A policy of random weights (drawn on the CPU) to the device. Under bf16 they are bf16 values,
  // as a folder stored in bf16 holds its weights, and a LoRA run's frozen base keeps its
  // projections in bf16 before the move, as it would from such a folder (so a benchmark of a
  // shape measures the memory of real use).
  void move_random_policy_to_device() {
    if (bf16_autocast()) {
      torch::NoGradGuard guard;
      for (auto& p : policy->parameters()) p.copy_(p.to(torch::kBFloat16));
      log("info", "the random weights are drawn as bf16 values (train.precision = \"bf16\")");
      if (config.model.lora.r > 0) {
        for (auto& p : policy->parameters()) p.requires_grad_(false);  // (add_lora freezes the base anyway)
        policy->store_projections_in_bf16(/*exact_only=*/true);
      }
    }
    policy->to(device);
  }

  // Said once per run: which attention computation the models and the critics use.
  void log_attention_kernels() {
    const std::string policy_note = attention_kernel_note(policy->shape());
    std::string line = "attention: " + policy_note;
    if (reference && attention_kernel_note(reference->shape()) != policy_note)
      line += "; reference: " + attention_kernel_note(reference->shape());
    if (regularizer) line += "; critics: " + critic_attention_note(config.ganpo.critic_dropout, device);
    log("info", line);
  }

  // train.precision = "bf16": training passes, evaluations and precomputed reference log-probs
  // autocast to bf16 (CUDA; run() refuses it on a CPU device). Samples and judged generations
  // decode in float32.
  bool bf16_autocast() const { return config.train.precision == "bf16" && device.is_cuda(); }

  // train.precompute_ref_log_probs: one pass of the reference over both splits before the first
  // step (again on resume: the numbers are a function of the frozen reference and the data).
  void precompute_reference_logps() {
    if (!config.train.precompute_ref_log_probs) return;
    if (!preference) {
      log("notice", "train.precompute_ref_log_probs has no effect on an SFT stage: it has no reference model");
      return;
    }
    const auto t0 = Clock::now();
    const int64_t bs = std::max<int64_t>(8, config.train.per_device_train_batch_size);
    const Bf16Autocast autocast(bf16_autocast());  // as the steps' policy passes compute
    // The training split as the steps' passes score it (prefix sharing or not), the held-out one
    // as evaluations do, so the policy's and the reference's numbers come from the same arithmetic.
    train_ref_logps = precompute_split(train_pairs, bs, config.train.prefix_sharing);
    eval_ref_logps = precompute_split(eval_pairs, bs, config.train.prefix_sharing);
    log("info", "reference log-probs of " + std::to_string(train_pairs.size() + eval_pairs.size()) +
                    " pairs precomputed in " + format_number(std::chrono::duration<double>(Clock::now() - t0).count()) +
                    " s (train.precompute_ref_log_probs); " +
                    (regularizer ? "the reference still runs each step for GANPO's latents, without its output head"
                                 : "the reference does not run during training"));
  }

  // One split's reference log-probs. Data parallelism: each rank scores every world-th pair and a
  // sum over the ranks (zeros elsewhere) gives every rank the whole split.
  PairLogps precompute_split(const std::vector<TokenizedPair>& pairs, int64_t bs, bool share_prompts) {
    if (!dp || pairs.empty()) return precompute_pair_logps(reference, pairs, tokenizer->pad_id(), bs, share_prompts);
    std::vector<TokenizedPair> mine;
    std::vector<int64_t> at;
    for (size_t i = static_cast<size_t>(dp->rank()); i < pairs.size(); i += static_cast<size_t>(world())) {
      mine.push_back(pairs[i]);
      at.push_back(static_cast<int64_t>(i));
    }
    const auto part = precompute_pair_logps(reference, mine, tokenizer->pad_id(), bs, share_prompts);
    const auto options = torch::TensorOptions().dtype(torch::kFloat32).device(device);
    PairLogps all{torch::zeros({static_cast<int64_t>(pairs.size())}, options),
                  torch::zeros({static_cast<int64_t>(pairs.size())}, options)};
    if (!at.empty()) {
      const auto index = torch::tensor(at, torch::kLong).to(device);
      all.chosen.index_copy_(0, index, part.chosen);
      all.rejected.index_copy_(0, index, part.rejected);
    }
    dp->all_reduce_sum_(all.chosen);
    dp->all_reduce_sum_(all.rejected);
    return all;
  }

  // Conversational rows in the model's chat template (TRL's apply_chat_template); the byte
  // tokenizer has none and keeps the plain role rendering of dataset_files.h.
  template <typename Row>
  void render_conversations(std::vector<Row>& train, std::vector<Row>& eval) {
    const auto conversational = [](const Row& r) { return r.conversational(); };
    if (std::none_of(train.begin(), train.end(), conversational) &&
        std::none_of(eval.begin(), eval.end(), conversational))
      return;
    if (!tokenizer->uses_chat_template()) {
      log("info", "conversational rows use the plain <|role|> rendering: the byte tokenizer has no chat template");
      return;
    }
    const ChatTemplate tmpl = ChatTemplate::from_model_folder(config.model.checkpoint, config.data.chat_template);
    log("notice", "chat template: " + tmpl.variant() +
                    (config.data.chat_template.empty() ? " (recognised in the model's tokenizer_config.json)"
                                                       : " (data.chat_template = \"" + config.data.chat_template + "\")"));
    apply_chat_template(train, tmpl, config.data.train + " (training split)");
    apply_chat_template(eval, tmpl, (config.data.eval.empty() ? config.data.train : config.data.eval) + " (held-out split)");
  }

  void load_data() {
    const auto& d = config.data;
    const uint64_t seed = static_cast<uint64_t>(config.seed);
    if (uses_builtin_task(d)) task = &builtin_task(builtin_task_name(d));
    if (preference) {
      std::vector<PreferenceExample> train, eval;
      if (task) {
        train = task->preference_pairs(d.builtin_train_size, d.label_noise, seed);
        eval = task->preference_pairs(d.builtin_eval_size, 0.0, seed + 7919);
      } else {
        load_files(load_preference_file, train, eval);
        add_label_noise(train);
        const auto plain = eval;  // the judge reads prompts without the chat template
        render_conversations(train, eval);
        pick_held_out_prompts(plain, eval, [](const PreferenceExample& ex) { return ex.chosen.size(); });
        pick_sample_prompts(plain, eval);
        // The same prompts for evaluations of its checkpoints later (`ganpo eval --prompts`).
        if (!judge_prompts.empty())
          write_eval_prompts((std::filesystem::path(config.output_dir) / kJudgePromptsFile).string(), judge_prompts);
      }
      for (const auto& ex : train) train_pairs.push_back(tokenize_pair(*tokenizer, ex, d.max_length, d.max_prompt_length));
      for (const auto& ex : eval) eval_pairs.push_back(tokenize_pair(*tokenizer, ex, d.max_length, d.max_prompt_length));
    } else {
      std::vector<SftExample> train, eval;
      if (task) {
        train = task->sft_corpus(d.builtin_train_size, kSftPerfectFraction, seed);
        eval = task->sft_corpus(d.builtin_eval_size, 1.0, seed + 7919);
      } else {
        load_files(load_sft_file, train, eval);
        const auto plain = eval;
        render_conversations(train, eval);
        pick_sample_prompts(plain, eval);
      }
      for (const auto& ex : train) train_sft.push_back(tokenize_sft(*tokenizer, ex, d.max_length, d.max_prompt_length));
      for (const auto& ex : eval) eval_sft.push_back(tokenize_sft(*tokenizer, ex, d.max_length, d.max_prompt_length));
    }
    if (task) {
      for (auto& p : task->eval_prompts(config.sampling.num_prompts, seed + 17)) sample_prompts.push_back(std::move(p.prompt));
      judge_prompts = task->eval_prompts(config.eval.num_prompts, static_cast<uint64_t>(config.eval.seed));
      train_data = "built-in " + task->name() + " task, " + std::to_string(train_size()) + " generated examples" +
                   (preference && d.label_noise > 0 ? " (label noise " + format_number(d.label_noise) + ")" : "");
      eval_data = "built-in " + task->name() + " task, " +
                  std::to_string(preference ? eval_pairs.size() : eval_sft.size()) + " generated examples";
    }
    set_up_judge();
    log("info", "training data: " + train_data + "; held-out data: " + eval_data);
    if (train_size() == 0) throw DataError("the training set is empty; check data.train or data.builtin_train_size");
  }

  // data.label_noise on a data file: that fraction of training pairs swapped, seeded by the run.
  void add_label_noise(std::vector<PreferenceExample>& train) {
    const double p = config.data.label_noise;
    if (p <= 0) return;
    std::mt19937_64 rng(static_cast<uint64_t>(config.seed) ^ 0x9e3779b97f4a7c15ULL);
    int64_t swapped = 0;
    for (auto& ex : train)
      if (tasks::bernoulli(rng, p)) {
        std::swap(ex.chosen, ex.rejected);
        std::swap(ex.chosen_messages, ex.rejected_messages);
        ++swapped;
      }
    train_data += " (label noise " + format_number(p) + ": " + std::to_string(swapped) + " pairs swapped)";
  }

  // A data file's judge prompts: the first eval.num_prompts distinct held-out prompts, bucketed
  // by the length of their reference answer (terciles).
  template <typename Example, typename AnswerLength>
  void pick_held_out_prompts(const std::vector<Example>& plain, const std::vector<Example>& rendered,
                             AnswerLength answer_length) {
    std::set<std::string> seen;
    std::vector<size_t> lengths;
    for (size_t i = 0; i < rendered.size() && static_cast<int64_t>(judge_prompts.size()) < config.eval.num_prompts; ++i) {
      if (rendered[i].prompt.empty() || !seen.insert(rendered[i].prompt).second) continue;
      judge_prompts.push_back({rendered[i].prompt, plain[i].prompt, ""});
      lengths.push_back(answer_length(plain[i]));
    }
    std::vector<size_t> sorted = lengths;
    std::sort(sorted.begin(), sorted.end());
    for (size_t i = 0; i < judge_prompts.size(); ++i) {
      const size_t rank = static_cast<size_t>(std::lower_bound(sorted.begin(), sorted.end(), lengths[i]) - sorted.begin());
      judge_prompts[i].bucket = length_bucket_name(static_cast<int>(std::min<size_t>(2, 3 * rank / sorted.size())));
    }
  }

  // The task's own judge, or eval.judge_command in its place (the only judge of a data file).
  void set_up_judge() {
    const auto& e = config.eval;
    if (!e.judge_command.empty()) {
      const std::string command = e.judge_command;
      const double timeout = e.judge_timeout_s;
      judge = [command, timeout](const std::vector<JudgeRow>& rows) { return run_judge_command(command, rows, timeout); };
      judge_name = command;
    } else if (task) {
      judge = task_judge(*task);
      judge_name = "built-in";
    }
  }

  // data.train (and data.eval, or a split of data.train) through one of the file readers.
  template <typename Example>
  void load_files(LoadResult<Example> (*load)(const std::string&, const std::string&),
                  std::vector<Example>& train, std::vector<Example>& eval) {
    const auto& d = config.data;
    auto rows_of = [](size_t used, size_t skipped) {
      return std::to_string(used) + " rows used, " + std::to_string(skipped) + " skipped";
    };
    auto loaded = load(d.train, d.on_bad_line);
    report_skipped(d.train, loaded.bad_lines);
    const size_t train_skipped = loaded.bad_lines.size();
    if (d.eval.empty()) {
      shuffle_split(std::move(loaded.rows), d.eval_fraction, static_cast<uint64_t>(config.seed), train, eval);
      eval_data = d.train + ": " + std::to_string(eval.size()) + " rows held out (data.eval_fraction " +
                  format_number(d.eval_fraction) + ")";
    } else {
      train = std::move(loaded.rows);
      auto held_out = load(d.eval, d.on_bad_line);
      report_skipped(d.eval, held_out.bad_lines);
      eval = std::move(held_out.rows);
      eval_data = d.eval + ": " + rows_of(eval.size(), held_out.bad_lines.size());
    }
    train_data = d.train + ": " + rows_of(train.size(), train_skipped);
  }

  // The first num_prompts non-empty held-out prompts are the fixed sample prompts: as the model
  // gets them (rendered) and as a judge gets them (plain, as the final judge evaluation sends them).
  template <typename Example>
  void pick_sample_prompts(const std::vector<Example>& plain, const std::vector<Example>& rendered) {
    for (size_t i = 0; i < rendered.size(); ++i) {
      if (static_cast<int64_t>(sample_prompts.size()) >= config.sampling.num_prompts) break;
      if (rendered[i].prompt.empty()) continue;
      sample_prompts.push_back(rendered[i].prompt);
      sample_judge_prompts.push_back(plain[i].prompt);
    }
  }

  void report_skipped(const std::string& file, const std::vector<BadLine>& bad) {
    if (bad.empty()) return;
    log("warning", "skipped " + std::to_string(bad.size()) + " bad line(s) in " + file +
                       " (first: line " + std::to_string(bad.front().line) + ": " + bad.front().reason + ")");
  }

  // ---- data cursor ---------------------------------------------------------------------------
  // This rank's rows of the next global batch: every rank walks the same order and takes the
  // rank-th slice of world x B rows, so one process with batch world x B takes them all.
  std::vector<int64_t> next_indices() {
    std::vector<int64_t> idx;
    const int64_t B = config.train.per_device_train_batch_size;
    const int64_t first = (dp ? dp->rank() : 0) * B;
    for (int64_t i = 0; i < B * world(); ++i) {
      if (cursor >= static_cast<int64_t>(order.size())) {
        ++epoch;
        cursor = 0;
        order_group_rows = configured_group_rows();
        order = epoch_rows(epoch, order_group_rows);
      }
      const int64_t row = order[static_cast<size_t>(cursor++)];
      if (i >= first && i < first + B) idx.push_back(row);
    }
    return idx;
  }

  // ---- metrics -------------------------------------------------------------------------------
  static void accumulate(torch::Tensor& slot, const torch::Tensor& v) { slot = slot.defined() ? slot + v : v; }
  void add(const std::string& key, const torch::Tensor& value) {
    accumulate(window_sums[key], value.detach().to(torch::kFloat32));
  }

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
                    const char* advice = kLossAdvice) {
    PendingCheck check{{}, {}, step + 1, advice};
    std::vector<torch::Tensor> values;
    for (const auto& t : terms) {
      check.names.emplace_back(t.first);
      values.push_back(t.second.detach().to(torch::kFloat32).reshape({1}));
    }
    check.values = torch::cat(values);
    if (dp && reduce) dp->all_reduce_sum_(check.values);
    pending_checks.push_back(std::move(check));
    if (!defer_checks) verify_finite();
  }

  // The pending checks' values in order, float64, for one transfer with other numbers.
  torch::Tensor pending_check_values() const {
    std::vector<torch::Tensor> values;
    for (const auto& c : pending_checks) values.push_back(c.values.to(torch::kFloat64));
    return torch::cat(values);
  }

  // Throws for the first non-finite value (values: pending_check_values() on the host).
  void check_pending(const double* values) {
    const auto checks = std::move(pending_checks);
    pending_checks.clear();
    int64_t i = 0;
    for (const auto& c : checks)
      for (const auto& name : c.names) {
        const float v = static_cast<float>(values[i++]);
        if (!std::isfinite(v))
          throw NonFiniteLoss(name + " is " + std::to_string(v) + " at step " + std::to_string(c.step) + "; " + c.advice);
      }
  }

  // Also what waits for the device before an evaluation, samples or a checkpoint (drain_device).
  void verify_finite() {
    drain_device();
    if (pending_checks.empty()) return;
    const auto values = pending_check_values().cpu();
    check_pending(values.data_ptr<double>());
  }

  // CUDA: wait for the steps queued on the device, their time counted as theirs (a step's own
  // time is measured on the host, which runs ahead of the device). Called before anything that
  // waits for the device or takes time of its own between steps: a log line, an evaluation,
  // samples, a checkpoint, a pause.
  void drain_device() {
    if (!undrained) return;
    torch::cuda::synchronize(device.has_index() ? device.index() : -1);
    window_seconds += std::chrono::duration<double>(Clock::now() - last_step_end).count();
    undrained = false;
  }

  // ---- one micro-batch -----------------------------------------------------------------------
  void sft_micro_step(const std::vector<int64_t>& idx, double scale) {
    std::vector<const TokenizedSft*> rows;
    for (auto i : idx) rows.push_back(&train_sft[static_cast<size_t>(i)]);
    auto b = collate_sft(rows, tokenizer->pad_id(), device);
    auto lp = score_sequences(policy, b).logps;
    // The mean over every rank's tokens: each rank divides by the ranks' mean token count, so
    // the averaged gradients are those of the global batch's token mean.
    auto count = lp.count.sum();
    if (dp) dp->all_reduce_mean_(count);
    auto loss = -lp.sum.sum() / count.clamp_min(1.0);
    check_finite({{"loss", loss}});
    (loss * scale).backward();
    add("loss", loss);
    count_work(b, micro_batch_work(b, 0));
  }

  void preference_micro_step(const std::vector<int64_t>& idx, double scale, bool last_micro) {
    std::vector<const TokenizedPair*> rows;
    for (auto i : idx) rows.push_back(&train_pairs[static_cast<size_t>(i)]);
    auto batch = collate_pairs(rows, tokenizer->pad_id(), device);
    const auto& s = batch.sequences;
    const int64_t B = batch.pairs;

    // 1-2. One policy forward and one reference forward over [chosen; rejected], on two lanes.
    // With precomputed reference log-probs the reference runs only for GANPO's latents, and
    // stops before its output head. With prefix sharing each pass runs the prompts once.
    const bool ref_logps_ready = !train_ref_logps.empty();
    const bool run_reference = !ref_logps_ready || regularizer;
    const auto sharing = prefix_sharing_for(rows);
    ScoredSequences policy_scores, reference_scores;
    run_lanes(
        run_reference ? lanes() : nullptr,
        [&] {
          policy_scores = sharing.policy ? score_pairs_sharing_prompts(policy, sharing.batch, true, regularizer != nullptr)
                                         : score_sequences(policy, s);
        },
        [&] {
          if (!run_reference) return;
          torch::NoGradGuard guard;
          if (sharing.reference)
            reference_scores = score_pairs_sharing_prompts(reference, sharing.batch, !ref_logps_ready, regularizer != nullptr);
          else if (ref_logps_ready)
            reference_scores.out = reference->forward_from(s.input_ids, s.input_ids.size(1));  // hidden [2B, T, d]
          else
            reference_scores = score_sequences(reference, s);
        });
    if (ref_logps_ready) reference_scores.logps.sum = train_ref_logps.rows(idx);  // [2B]
    const LMOutput& out = policy_scores.out;
    const LMOutput& ref_out = reference_scores.out;
    const ResponseLogps& pol = policy_scores.logps;
    const ResponseLogps& ref = reference_scores.logps;
    OpoInputs in{pol.sum.slice(0, 0, B), pol.sum.slice(0, B), ref.sum.slice(0, 0, B),
                 ref.sum.slice(0, B), pol.count.slice(0, 0, B), pol.count.slice(0, B)};
    const double beta = effective_beta(config.objective);
    auto opo = opo_loss(config.objective.loss_type, beta, config.objective.simpo_gamma, in);
    torch::Tensor loss = opo.loss;
    std::vector<std::pair<const char*, torch::Tensor>> terms{{"opo_loss", opo.loss}};
    if (config.objective.rpo_alpha > 0) {
      // RPO (TRL's rpo_alpha): mean NLL per chosen-response token keeps the chosen likely; over
      // every rank's tokens, as in the SFT loss (each rank divides by the ranks' mean count).
      auto chosen_tokens = in.chosen_length.sum();
      if (dp) dp->all_reduce_mean_(chosen_tokens);
      auto nll = -in.policy_chosen.sum() / chosen_tokens.clamp_min(1.0);
      loss = loss + config.objective.rpo_alpha * nll;
      add("nll_loss", nll);
    }

    if (regularizer) {
      LatentSets sets;
      sets.ref_chosen = ref_out.hidden.slice(0, 0, B);
      sets.ref_rejected = ref_out.hidden.slice(0, B);
      sets.policy_chosen = out.hidden.slice(0, 0, B);
      sets.policy_rejected = out.hidden.slice(0, B);
      auto masks = critic_masks(config.ganpo.critic_mask, s, B);
      sets.chosen_mask = masks.chosen;
      sets.rejected_mask = masks.rejected;
      // 3. Critic phase on detached latents, with its backward: D_w and D_l on two lanes.
      const double critic_scale = scale / static_cast<double>(config.ganpo.critic_update_every);
      auto critic = regularizer->critic_phase_backward(sets, critic_scale, lanes());
      // 4. Critic step on its cadence, before the policy phase of the last micro-batch.
      if (last_micro && step % config.ganpo.critic_update_every == 0) {
        set_lr(*critic_optimizer, current_lr() * config.ganpo.critic_lr_ratio);
        if (dp) average_gradients(regularizer->critic_parameters());
        critic_optimizer->step();
        critic_optimizer->zero_grad();
      }
      // 5. Policy phase: critics frozen, gradients into the policy latents.
      auto adv = regularizer->adversarial_term(sets);
      loss = loss + config.ganpo.adv_weight * adv.loss;
      add("adv/loss", adv.loss);
      add("adv/g_chosen", adv.g_chosen);
      add("adv/g_rejected", adv.g_rejected);
      add("critic/loss_chosen", critic.loss_chosen);
      add("critic/loss_rejected", critic.loss_rejected);
      add("critic/acc_chosen", critic.acc_chosen);
      add("critic/acc_rejected", critic.acc_rejected);
      for (const auto& [k, v] : regularizer->ema_metrics()) add(k, v);
      terms.insert(terms.end(), {{"critic/loss_chosen", critic.loss_chosen},
                                 {"critic/loss_rejected", critic.loss_rejected},
                                 {"adv/loss", adv.loss}});
    }
    // Every term checked (read at once on the CPU, at the next log line on CUDA: check_finite).
    // A non-finite critic loss may already have reached the critics, but a failed run saves no
    // checkpoint after it, so nothing corrupt is kept.
    terms.emplace_back("loss", loss);
    check_finite(terms);
    (loss * scale).backward();

    add("loss", loss);
    add("opo_loss", opo.loss);
    add("rewards/chosen", opo.chosen_rewards.mean());
    add("rewards/rejected", opo.rejected_rewards.mean());
    add("rewards/margins", (opo.chosen_rewards - opo.rejected_rewards).mean());
    add("rewards/accuracies", (opo.chosen_rewards > opo.rejected_rewards).to(torch::kFloat32).mean());
    add("logps/chosen", in.policy_chosen.detach().mean());
    add("logps/rejected", in.policy_rejected.detach().mean());
    MicroBatchWork work = micro_batch_work(s, B, run_reference, !ref_logps_ready);
    const int64_t prompts = sharing.prompt_tokens(rows);
    if (sharing.policy) work.policy_shared_prompt_tokens = prompts;
    if (sharing.reference && run_reference) work.reference_shared_prompt_tokens = prompts;
    count_work(s, work);
  }

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
  PrefixSharing prefix_sharing_for(const std::vector<const TokenizedPair*>& rows) {
    PrefixSharing out;
    if (!config.train.prefix_sharing || (regularizer && config.ganpo.critic_mask == "none")) return out;
    const bool policy_may = !config.train.gradient_checkpointing;
    const bool reference_runs = train_ref_logps.empty() || regularizer;
    if (!policy_may && !reference_runs) return out;
    out.batch = collate_shared_prompts(rows, tokenizer->pad_id(), device);
    out.policy = policy_may && can_share_prompts(out.batch, policy);
    out.reference = reference_runs && can_share_prompts(out.batch, reference);  // its own max_seq_len
    return out;
  }

  void finish_gradients() {
    const auto t0 = Clock::now();
    if (!overlap_gradients) {
      dp->average_gradients(trainable);
    } else if (!dp->finish_gradients()) {
      overlap_gradients = false;
      log("warning", "a gradient arrived twice in one backward pass, so the gradient all-reduce no longer overlaps "
                     "the backward pass (the averages are exact either way)");
    }
    window_allreduce_seconds += std::chrono::duration<double>(Clock::now() - t0).count();
  }

  void average_gradients(const std::vector<torch::Tensor>& params) {
    const auto t0 = Clock::now();
    dp->average_gradients(params);
    window_allreduce_seconds += std::chrono::duration<double>(Clock::now() - t0).count();
  }

  // The work of a micro-batch of `pairs` pairs (0: SFT) for the model FLOPs.
  MicroBatchWork micro_batch_work(const SequenceBatch& b, int64_t pairs, bool reference_ran = false,
                                 bool reference_head = false) const {
    MicroBatchWork work;
    work.tokens = b.tokens;
    work.length = b.input_ids.size(1);
    work.pairs = pairs;
    work.lora = policy->lora().r > 0;
    work.reference = reference_ran;
    work.reference_head = reference_head;
    work.critics = regularizer != nullptr;
    return work;
  }
  // Tokens and model FLOPs of a micro-batch, for the throughput charts.
  void count_work(const SequenceBatch& b, const MicroBatchWork& work) {
    window_flops += micro_batch_flops(config, policy->shape(), work);
    window_tokens += b.tokens;
    tokens_seen += b.tokens;
  }

  // Policy learning rate of optimizer step `at` (0-based).
  double lr_at(int64_t at) const {
    return config.train.learning_rate * lr_multiplier(config.train.lr_scheduler_type, at, total_steps, warmup);
  }
  double current_lr() const { return lr_at(step); }

  // ---- one optimizer step --------------------------------------------------------------------
  void optimizer_step() {
    if (dp) dp->note_progress(3 * (step + 1), "in step " + std::to_string(step + 1));
    refresh_cpu_share();
    const auto t0 = Clock::now();
    const int64_t GA = config.train.gradient_accumulation_steps;
    set_lr(*optimizer, current_lr());
    optimizer->zero_grad();
    for (int64_t micro = 0; micro < GA; ++micro) {
      auto idx = next_indices();
      Bf16Autocast autocast(bf16_autocast());
      // The last micro-batch's backward pass starts the gradient all-reduce as buckets fill.
      if (dp && overlap_gradients && micro == GA - 1) dp->arm_gradients();
      if (preference)
        preference_micro_step(idx, 1.0 / static_cast<double>(GA), micro == GA - 1);
      else
        sft_micro_step(idx, 1.0 / static_cast<double>(GA));
      ++window_micro;
    }
    // 6. Average the gradients over the ranks (finish what the backward pass started), then
    // clip and step at the accumulation boundary.
    if (dp) finish_gradients();
    const double max_norm = config.train.max_grad_norm > 0 ? config.train.max_grad_norm
                                                           : std::numeric_limits<double>::infinity();
    const torch::Tensor grad_norm = clip_grad_norm_on_device(trainable, max_norm);  // [], on the device
    check_finite({{"grad_norm", grad_norm}}, /*reduce=*/false, kGradNormAdvice);
    optimizer->step();
    ++step;
    if (dp) dp->note_progress(3 * step + 1, "finished step " + std::to_string(step));
    ++window_steps;
    accumulate(window_grad_norm, grad_norm.to(torch::kFloat64));
    last_step_end = Clock::now();
    window_seconds += std::chrono::duration<double>(last_step_end - t0).count();
    undrained = device.is_cuda();
  }

  void flush_metrics() {
    if (window_steps == 0) return;
    if (dp) dp->note_progress(3 * step + 2, "logging step " + std::to_string(step));
    drain_device();  // the steps' time ends when the device is done with them
    std::vector<std::string> keys;
    std::vector<torch::Tensor> values;
    for (auto& [k, v] : window_sums) keys.push_back(k), values.push_back(v.reshape({1}).to(torch::kFloat64));
    std::map<std::string, double> m;
    {
      // The window's sums (means over every rank's global batches), then the grad norms' sum
      // (the same on every rank) and the pending non-finite checks: one transfer per log line,
      // the checks read before anything is reported.
      auto sums = torch::cat(values);
      if (dp) dp->all_reduce_mean_(sums);
      std::vector<torch::Tensor> parts{sums, window_grad_norm.reshape({1})};
      const bool checks = !pending_checks.empty();
      if (checks) parts.push_back(pending_check_values());
      const auto all = torch::cat(parts).cpu();
      const double* v = all.data_ptr<double>();
      if (checks) check_pending(v + keys.size() + 1);
      for (size_t i = 0; i < keys.size(); ++i) m[keys[i]] = v[i] / static_cast<double>(window_micro);
      m["grad_norm"] = v[keys.size()] / static_cast<double>(window_steps);
    }
    m["learning_rate"] = lr_at(step - 1);  // the rate the last step used
    if (regularizer) m["critic/learning_rate"] = m["learning_rate"] * config.ganpo.critic_lr_ratio;
    m["step_time_s"] = window_seconds / static_cast<double>(window_steps);
    m["tokens_seen"] = static_cast<double>(tokens_seen);
    if (dp) add_rank_throughput(m);  // and the window's tokens and FLOPs (and tokens_seen) become the world's
    m["tokens_per_s"] = window_seconds > 0 ? static_cast<double>(window_tokens) / window_seconds : 0.0;
    const double flops_per_s = window_seconds > 0 ? window_flops / window_seconds : 0.0;
    m["model_tflops"] = flops_per_s / 1e12;
    if (peak_flops > 0) m["mfu"] = flops_per_s / peak_flops;
    m["epoch"] = static_cast<double>(epoch) + static_cast<double>(cursor) / std::max<double>(1.0, static_cast<double>(order.size()));
    m["memory/rss_mb"] = rss_megabytes();
    if (device.is_cuda()) add_gpu_metrics(m);
    if (device.is_cpu() && counting_cpu_tensor_memory()) add_cpu_tensor_metrics(m);
    if (cpu) m["cpu/cores"] = cpu->plan().cores;
    observer.on_metrics(step, m);
    window_sums.clear();
    window_micro = window_steps = window_tokens = 0;
    window_seconds = window_flops = 0;
    window_grad_norm = torch::Tensor();
  }

  // Each rank's tokens/s ("ranks/tokens_per_s/<rank>"); the window's tokens and model FLOPs
  // summed over the ranks, so tokens_per_s and MFU speak of the whole run (MFU per device: the
  // world's FLOPs against the world's peak).
  void add_rank_throughput(std::map<std::string, double>& m) {
    auto mine = torch::tensor({static_cast<double>(window_tokens), window_flops, window_seconds,
                               static_cast<double>(tokens_seen)},
                              torch::TensorOptions().dtype(torch::kFloat64));
    const auto all = dp->all_gather(mine);
    window_tokens = 0;
    window_flops = 0;
    double seen = 0;
    for (size_t r = 0; r < all.size(); ++r) {
      const auto v = all[r].accessor<double, 1>();
      window_tokens += static_cast<int64_t>(v[0]);
      window_flops += v[1];
      seen += v[3];
      m["ranks/tokens_per_s/" + std::to_string(r)] = v[2] > 0 ? v[0] / v[2] : 0.0;
    }
    m["tokens_seen"] = seen;
    m["ranks/world_size"] = static_cast<double>(world());
    m["ranks/allreduce_s"] = window_steps > 0 ? window_allreduce_seconds / static_cast<double>(window_steps) : 0.0;
    window_allreduce_seconds = 0;
    if (peak_flops > 0) window_flops /= static_cast<double>(world());
  }

  // The device's utilisation and memory (NVML) and this process's allocator view of it; the
  // peak since the last log line.
  void add_gpu_metrics(std::map<std::string, double>& m) {
    const int index = device.has_index() ? device.index() : 0;
    if (const auto gpu = read_gpu(index)) {
      m["gpu/utilization_pct"] = gpu->utilization_percent;
      m["memory/gpu_used_mb"] = gpu->memory_used_mb;
    }
    if (const auto mem = cuda_memory(index)) {
      m["memory/cuda_allocated_mb"] = mem->allocated_mb;
      m["memory/cuda_reserved_mb"] = mem->reserved_mb;
      m["memory/cuda_peak_mb"] = mem->peak_allocated_mb;
      reset_cuda_peak(index);
    }
  }

  // The CPU tensors' bytes where the process counts them (core/cpu_tensor_memory.h): the CPU's
  // counterpart of the allocator's view above.
  void add_cpu_tensor_metrics(std::map<std::string, double>& m) {
    constexpr double mb = 1024.0 * 1024.0;
    const CpuTensorMemory mem = cpu_tensor_memory();
    m["memory/cpu_tensor_allocated_mb"] = static_cast<double>(mem.allocated_bytes) / mb;
    m["memory/cpu_tensor_peak_mb"] = static_cast<double>(mem.peak_bytes) / mb;
    reset_cpu_tensor_peak();
  }

  // ---- evaluation, samples, checkpoints ------------------------------------------------------
  // Held-out pairs (or SFT loss); reported at once unless the stage's last evaluation still has
  // its judge part to come.
  void evaluate(bool report = true) {
    verify_finite();
    const int64_t bs = std::max<int64_t>(8, config.train.per_device_train_batch_size);
    const Bf16Autocast autocast(bf16_autocast());  // held-out numbers at the training's precision (TRL's too)
    if (preference && dp)
      last_eval = sharded_preference_eval(bs);
    else if (preference)
      last_eval = preference_eval(policy, reference, eval_pairs, config.objective, tokenizer->pad_id(), bs,
                                  config.train.prefix_sharing, lanes(), eval_ref_logps.empty() ? nullptr : &eval_ref_logps);
    else if (!eval_sft.empty() && dp)
      last_eval = sharded_sft_eval(bs);
    else if (!eval_sft.empty())
      last_eval = sft_eval(policy, eval_sft, tokenizer->pad_id(), bs);
    policy->train();
    if (report && !last_eval.empty()) observer.on_eval(step, EvalReport::of(last_eval));
  }

  // Data parallelism: each rank scores every world-th held-out pair; the means are combined,
  // weighted by pairs, into what one process scoring them all reports.
  std::map<std::string, double> sharded_preference_eval(int64_t bs) {
    std::vector<TokenizedPair> mine;
    std::vector<int64_t> rows;
    for (size_t i = static_cast<size_t>(dp->rank()); i < eval_pairs.size(); i += static_cast<size_t>(world())) {
      mine.push_back(eval_pairs[i]);
      rows.push_back(static_cast<int64_t>(i));
    }
    const PairLogps ref = eval_ref_logps.empty() || rows.empty() ? PairLogps{} : eval_ref_logps.select(rows);
    const auto part = preference_eval(policy, reference, mine, config.objective, tokenizer->pad_id(), bs,
                                      config.train.prefix_sharing, lanes(), ref.empty() ? nullptr : &ref);
    static const char* const kMeans[] = {"eval_loss", "eval_rewards/chosen", "eval_rewards/rejected",
                                         "eval_rewards/accuracies", "eval_logps/chosen", "eval_logps/rejected"};
    const double n = part.empty() ? 0.0 : part.at("eval_pairs");
    std::vector<double> sums;
    for (const char* k : kMeans) sums.push_back(part.empty() ? 0.0 : part.at(k) * n);
    sums.push_back(n);
    auto all = torch::tensor(sums, torch::TensorOptions().dtype(torch::kFloat64));
    dp->all_reduce_sum_(all);
    const auto v = all.accessor<double, 1>();
    const double total = v[static_cast<int64_t>(sums.size()) - 1];
    if (total == 0) return {};
    std::map<std::string, double> out;
    for (size_t i = 0; i < std::size(kMeans); ++i) out[kMeans[i]] = v[static_cast<int64_t>(i)] / total;
    out["eval_rewards/margins"] = out["eval_rewards/chosen"] - out["eval_rewards/rejected"];
    out["eval_pairs"] = total;
    return out;
  }

  // Data parallelism, SFT: each rank scores every world-th held-out row; the token-weighted mean
  // of the ranks' losses is what one process scoring them all reports.
  std::map<std::string, double> sharded_sft_eval(int64_t bs) {
    std::vector<TokenizedSft> mine;
    for (size_t i = static_cast<size_t>(dp->rank()); i < eval_sft.size(); i += static_cast<size_t>(world()))
      mine.push_back(eval_sft[i]);
    const auto part = mine.empty() ? std::map<std::string, double>{} : sft_eval(policy, mine, tokenizer->pad_id(), bs);
    const double tokens = part.empty() ? 0.0 : part.at("eval_tokens");
    auto all = torch::tensor({part.empty() ? 0.0 : part.at("eval_loss") * tokens, tokens},
                             torch::TensorOptions().dtype(torch::kFloat64));
    dp->all_reduce_sum_(all);
    const auto v = all.accessor<double, 1>();
    return {{"eval_loss", v[1] > 0 ? v[0] / v[1] : 0.0}, {"eval_tokens", v[1]}};
  }

  // The stage's last evaluation: the held-out numbers and, for a preference stage whose task has a
  // judge, policy and reference sampled and judged at eval.temperatures. A judge that fails
  // leaves its message in the report; the trained weights are saved before this runs.
  EvalReport final_report() {
    EvalReport report = EvalReport::of(last_eval);
    const auto& e = config.eval;
    if (!preference || !e.judge_at_end || !judge || judge_prompts.empty()) return report;
    JudgeEvalOptions options;
    options.temperatures = parse_temperatures(e.temperatures);
    options.max_new_tokens = e.max_new_tokens > 0 ? e.max_new_tokens : config.sampling.max_new_tokens;
    options.top_p = config.sampling.top_p;
    options.seed = static_cast<uint64_t>(e.seed);
    // The weights are saved by now: a stop (signal or the run's control field) ends the judging.
    options.stop = [this] {
      const bool mine = stop_requested() || (is_main() && observer.poll_control() == ControlCommand::Stop);
      if (!dp) return mine;
      auto any = torch::tensor({mine ? 1.0 : 0.0}, torch::TensorOptions().dtype(torch::kFloat64));
      dp->all_reduce_sum_(any);  // one answer on every rank
      return any.item<double>() > 0;
    };
    if (dp) {
      // Data parallelism: the sampling jobs are dealt out over the ranks; rank 0 judges.
      options.rank = dp->rank();
      options.world = world();
      options.gather_texts = [this](const std::vector<std::string>& texts) { return dp->all_gather_texts(texts); };
    }
    log("notice", "judge evaluation: policy and reference on " + std::to_string(judge_prompts.size()) +
                      " prompts at temperatures " + e.temperatures + " (judge: " + judge_name + ")");
    const std::string source = task ? task->name() : (config.data.eval.empty() ? config.data.train : config.data.eval);
    try {
      auto evaluation = judge_eval(policy, reference, *tokenizer, judge_prompts, judge, options, source, judge_name, lanes());
      policy->train();
      if (!is_main()) return report;  // it sampled its share; rank 0 judges and reports
      report.judge = std::move(evaluation);
      for (const auto& r : report.judge->rows)
        if (r.bucket == "all")
          log("info", "judge at temperature " + format_number(r.temperature) + ": win rate " + format_number(r.win_rate) +
                          ", policy " + format_number(r.policy_score) + ", reference " + format_number(r.reference_score));
    } catch (const c10::Error& err) {  // e.g. out of memory while sampling
      report.judge_error = std::string("LibTorch error: ") + err.what_without_backtrace();
    } catch (const std::exception& err) {
      report.judge_error = err.what();
    }
    if (!report.judge_error.empty())
      log("error", "judge evaluation failed, the run's weights and held-out numbers are kept: " + report.judge_error);
    policy->train();
    return report;
  }

  // This rank's sample prompts: every world-th one, from its rank on.
  bool my_sample_prompt(size_t i) const { return !dp || static_cast<int64_t>(i) % world() == dp->rank(); }

  std::vector<std::string> sample_texts(CausalLM& model) {
    std::vector<std::vector<int64_t>> prompts;
    for (size_t i = 0; i < sample_prompts.size(); ++i)
      if (my_sample_prompt(i)) prompts.push_back(encode_prompt(*tokenizer, sample_prompts[i]));
    if (prompts.empty()) return {};
    SamplingOptions so{config.sampling.temperature, config.sampling.top_p, config.sampling.top_k,
                       config.sampling.max_new_tokens, static_cast<uint64_t>(config.seed)};
    std::vector<std::string> out;
    for (auto& ids : generate(model, prompts, so, tokenizer->eos_id(), tokenizer->pad_id()))
      out.push_back(tokenizer->decode(ids));
    return out;
  }

  // Data parallelism: each rank samples its share of the prompts; rank 0 puts them back in order.
  std::vector<std::string> gathered_in_prompt_order(const std::vector<std::string>& mine) {
    if (!dp) return mine;
    const auto per_rank = dp->all_gather_texts(mine);
    std::vector<std::string> out(sample_prompts.size());
    std::vector<size_t> next(per_rank.size(), 0);
    for (size_t i = 0; i < out.size(); ++i) {
      const size_t r = i % per_rank.size();
      if (next[r] < per_rank[r].size()) out[i] = per_rank[r][next[r]++];
    }
    return out;
  }

  void samples() {
    verify_finite();
    if (sample_prompts.empty()) return;
    CausalLM& ref_model = preference ? reference : policy;
    std::vector<std::string> policy_texts, reference_texts;
    const bool need_reference = reference_samples.empty();
    if (preference && need_reference)
      run_lanes(
          lanes(), [&] { policy_texts = sample_texts(policy); }, [&] { reference_texts = sample_texts(ref_model); });
    else {
      if (need_reference) reference_texts = sample_texts(ref_model);
      policy_texts = sample_texts(policy);
    }
    policy->train();
    policy_texts = gathered_in_prompt_order(policy_texts);
    if (need_reference) reference_samples = gathered_in_prompt_order(reference_texts);
    if (!is_main()) return;
    std::vector<SampleRecord> records;
    for (size_t i = 0; i < sample_prompts.size(); ++i) {
      records.push_back({static_cast<int64_t>(i), sample_prompts[i], policy_texts[i], reference_samples[i], -1, -1});
    }
    score_samples(records);
    observer.on_samples(step, records);
  }

  // Judge scores for the live samples; a judge command that fails here warns once and the
  // samples go without scores.
  void score_samples(std::vector<SampleRecord>& records) {
    if (!judge || judge_failed_once) return;
    std::vector<JudgeRow> rows;
    auto judge_prompt = [&](size_t i) {
      return i < sample_judge_prompts.size() ? sample_judge_prompts[i] : records[i].prompt;
    };
    for (size_t i = 0; i < records.size(); ++i) rows.push_back({judge_prompt(i), records[i].policy});
    for (size_t i = 0; i < records.size(); ++i) rows.push_back({judge_prompt(i), records[i].reference});
    try {
      const auto scores = judge(rows);
      if (scores.size() != rows.size()) throw Error("the judge returned " + std::to_string(scores.size()) + " scores");
      for (size_t i = 0; i < records.size(); ++i) {
        records[i].policy_score = scores[i];
        records[i].reference_score = scores[records.size() + i];
      }
    } catch (const Error& err) {
      judge_failed_once = true;
      log("warning", std::string("samples are shown without judge scores: ") + err.what());
    }
  }

  nlohmann::json meta_json() const {
    nlohmann::json metrics = last_eval;
    return {{"format", kCheckpointFormat}, {"step", step}, {"stage", config.stage}, {"run_name", config.name},
            {"total_steps", total_steps}, {"eval", metrics}};
  }

  // This process's random generators: the CPU's, the GPU's (dropout on the GPU draws from it) and
  // the critics' dropout generators, so a resumed run draws what an uninterrupted one would.
  std::vector<std::pair<std::string, torch::Tensor>> rng_tensors() {
    auto gen = at::detail::getDefaultCPUGenerator();
    torch::Tensor rng;
    {
      std::lock_guard<std::mutex> lock(gen.mutex());
      rng = gen.get_state();
    }
    std::vector<std::pair<std::string, torch::Tensor>> out{{"cpu", rng}};
    if (device.is_cuda()) {
      auto cuda = at::globalContext().defaultGenerator(device);
      std::lock_guard<std::mutex> lock(cuda.mutex());
      out.emplace_back("cuda", cuda.get_state());
    }
    if (regularizer)
      for (auto& entry : regularizer->rng_state()) out.push_back(std::move(entry));
    return out;
  }

  // Every rank's generators, for rank 0 to save: rank r's under "rank<r>/<name>" (a collective:
  // every rank calls it at the same checkpoint).
  std::vector<std::pair<std::string, torch::Tensor>> world_rng_tensors() {
    auto mine = rng_tensors();
    if (!dp) return mine;
    std::vector<std::pair<std::string, torch::Tensor>> out = mine;
    for (const auto& [name, tensor] : mine) {
      const auto all = dp->all_gather(tensor);
      for (size_t r = 1; r < all.size(); ++r) out.emplace_back("rank" + std::to_string(r) + "/" + name, all[r].cpu());
    }
    return out;
  }

  // The world's state for rank 0 to write, gathered at a checkpoint (collectives: every rank
  // calls it at the same one): every rank's generators, the tokens all ranks trained on, and the
  // critics' gradients waiting for their step averaged over the ranks (the step averages them
  // anyway, and a mean is linear), so rank 0's copy is every rank's and a resume goes on exactly.
  struct WorldState {
    std::vector<std::pair<std::string, torch::Tensor>> rng;
    int64_t tokens_seen = 0;
  };
  WorldState gather_world_state() {
    WorldState out;
    out.rng = world_rng_tensors();
    out.tokens_seen = tokens_seen;
    if (!dp) return out;
    auto seen = torch::tensor({static_cast<double>(tokens_seen)}, torch::TensorOptions().dtype(torch::kFloat64));
    dp->all_reduce_sum_(seen);
    out.tokens_seen = static_cast<int64_t>(seen.item<double>());
    if (regularizer && config.ganpo.critic_update_every > 1) dp->average_gradients(regularizer->critic_parameters());
    return out;
  }

  void write_trainer_state(const std::string& dir, const WorldState& world_state) {
    const fs::path ts = fs::path(dir) / "trainer_state";
    fs::create_directories(ts);
    torch::save(*optimizer, (ts / "optimizer.pt").string());
    nlohmann::json state = {{"step", step}, {"epoch", epoch}, {"cursor", cursor}, {"order_group_rows", order_group_rows},
                            {"tokens_seen", world_state.tokens_seen}, {"total_steps", total_steps}, {"world_size", world()}};
    if (regularizer) {
      torch::save(*critic_optimizer, (ts / "critic_optimizer.pt").string());
      save_safetensors((ts / "critics.safetensors").string(), critic_state(*regularizer));
      // Only a cadence above 1 lets gradients wait across optimizer steps.
      if (config.ganpo.critic_update_every > 1) {
        auto grads = pending_critic_grads(*regularizer);
        if (!grads.empty()) save_safetensors((ts / "critic_grads.safetensors").string(), grads);
      }
      const auto& e = regularizer->ema();
      if (e.initialized)
        state["ema"] = {e.w_a.item<double>(), e.w_b.item<double>(), e.w_p.item<double>(),
                        e.l_a.item<double>(), e.l_b.item<double>(), e.l_p.item<double>()};
    }
    save_safetensors((ts / "rng.safetensors").string(), world_state.rng);
    if (policy->lora().r > 0) save_safetensors((ts / "lora.safetensors").string(), policy->adapter_parameters());
    write_json_file((ts / "state.json").string(), state);
  }

  // A LoRA checkpoint holds the merged model (above) and, in adapter/, the adapters alone as a
  // PEFT adapter folder over the base model folder, where the family allows one.
  void write_adapter_folder(const std::string& dir) {
    const std::string why = config.model.random_weights
                                ? "the base model's weights are random (model.random_weights), so an adapter over "
                                  "model.checkpoint would not reproduce this model; the checkpoint holds it merged"
                                : peft_adapter_unsupported(policy);
    if (!why.empty()) {
      if (!adapter_refusal_logged) log("notice", "no adapter/ folder in checkpoints: " + why);
      adapter_refusal_logged = true;
      return;
    }
    const fs::path adapter = fs::path(dir) / "adapter";
    fs::create_directories(adapter);
    save_peft_adapter(adapter.string(), policy, fs::absolute(config.model.checkpoint).lexically_normal().string());
  }
  bool adapter_refusal_logged = false;

  std::string save_checkpoint(const std::string& name, bool with_state) {
    verify_finite();  // nothing from weights a non-finite step reached
    const std::string dir = (fs::path(config.output_dir) / name).string();
    const WorldState world_state = with_state ? gather_world_state() : WorldState{};
    if (!is_main()) return dir;  // rank 0 writes the run's files
    write_folder_atomically(dir, [&](const std::string& tmp) {
      save_model_files(tmp, policy, *tokenizer,
                       {config.model.save_dtype, static_cast<uint64_t>(config.model.max_shard_mb) * 1'000'000ULL});
      write_json_file((fs::path(tmp) / "meta.json").string(), meta_json());
      write_text_file((fs::path(tmp) / "run_config.toml").string(), config_to_toml(config));
      if (policy->lora().r > 0) write_adapter_folder(tmp);
      if (with_state) write_trainer_state(tmp, world_state);
    });
    fault_point("checkpoint.renamed");
    observer.on_checkpoint(step, dir, last_eval);
    return dir;
  }

  void load_lora_state(const std::string& dir) {
    const fs::path file = fs::path(dir) / "trainer_state" / "lora.safetensors";
    if (!fs::exists(file))
      throw ModelFileError(dir + " has no trainer_state/lora.safetensors, so it is not a checkpoint of a LoRA run; resume "
                           "it with model.lora.r = 0, as it was trained");
    const auto saved = load_safetensors(file.string()).tensors;
    torch::NoGradGuard guard;
    const auto params = policy->adapter_parameters();
    for (const auto& [name, tensor] : params) {
      auto it = saved.find(name);
      if (it == saved.end() || it->second.sizes() != tensor.sizes())
        throw ModelFileError(file.string() + " has no adapter " + name + " of shape " + c10::str(tensor.sizes()) +
                             "; resume with the model.lora settings the run was trained with");
      tensor.copy_(it->second);
    }
    if (saved.size() != params.size()) {
      std::string extra;  // one the file has and this model.lora does not make
      for (const auto& entry : saved)
        if (std::none_of(params.begin(), params.end(), [&](const auto& p) { return p.first == entry.first; }))
          extra = entry.first;
      throw ModelFileError(file.string() + " holds " + std::to_string(saved.size()) + " adapter tensors (" + extra +
                           " among them) but model.lora makes " + std::to_string(params.size()) +
                           "; resume with the model.lora settings the run was trained with");
    }
  }

  void resume(const std::string& dir) {
    const fs::path ts = fs::path(dir) / "trainer_state";
    if (!fs::is_directory(ts))
      throw ModelFileError(dir + " has no trainer_state/ folder; resume needs a checkpoint-<step> folder");
    require_complete_checkpoint(dir, "resume from an earlier checkpoint-<step> folder of the run");
    if (policy->lora().r > 0) {
      // The base weights are model.checkpoint's, already loaded (or, with model.random_weights,
      // drawn again from the run's seed); the checkpoint's own weights are merged with the
      // adapters, so only the adapters are read back.
      load_lora_state(dir);
    } else {
      if (fs::exists(ts / "lora.safetensors"))
        throw ModelFileError(dir + " is a checkpoint of a LoRA run (it has trainer_state/lora.safetensors); resume it "
                             "with the model.lora settings it was trained with");
      policy->set_stored_dtype(load_model_weights(policy, dir, warn_sink()));
    }
    auto state = read_json_file((ts / "state.json").string());
    try {
      torch::load(*optimizer, (ts / "optimizer.pt").string());
      if (regularizer) {
        torch::load(*critic_optimizer, (ts / "critic_optimizer.pt").string());
        load_critic_state(*regularizer, load_safetensors((ts / "critics.safetensors").string()).tensors, dir);
        if (fs::exists(ts / "critic_grads.safetensors"))
          load_pending_critic_grads(*regularizer, load_safetensors((ts / "critic_grads.safetensors").string()).tensors);
        if (state.contains("ema")) {
          EmaMeans e;
          auto t = [&](int i) { return torch::tensor(state["ema"][i].get<double>(), torch::TensorOptions().device(device)); };
          e.w_a = t(0), e.w_b = t(1), e.w_p = t(2), e.l_a = t(3), e.l_b = t(4), e.l_p = t(5);
          e.initialized = true;
          regularizer->set_ema(e);
        }
      }
    } catch (const c10::Error& e) {
      throw ModelFileError(dir + ": optimizer state cannot be read (" + std::string(e.what_without_backtrace()) +
                           "); the checkpoint is corrupt or from other settings");
    }
    step = state.value("step", int64_t{0});
    epoch = state.value("epoch", int64_t{0});
    cursor = state.value("cursor", int64_t{0});
    tokens_seen = is_main() ? state.value("tokens_seen", int64_t{0}) : 0;  // the world's count, held once
    const int64_t saved_world = state.value("world_size", int64_t{1});
    if (saved_world != world())
      log("warning", "the checkpoint was trained by " + std::to_string(saved_world) + " process(es) and continues with " +
                         std::to_string(world()) + ": the global batch changes from " +
                         std::to_string(saved_world * config.train.per_device_train_batch_size) + " to " +
                         std::to_string(world() * config.train.per_device_train_batch_size) +
                         " rows per step from here on (the data order is kept)" +
                         (world() > saved_world ? ", and ranks " + std::to_string(saved_world) + " and up start from rank 0's "
                                                  "saved random generators (dropout draws repeat across ranks)"
                                                : std::string()) +
                         ", so the run is no longer the one an uninterrupted run would give; resume with "
                         "train.num_processes = " + std::to_string(saved_world) + " for that");
    // The rest of the epoch in the order it was started in (grouped for the checkpoint's batch, or
    // shuffled: checkpoints from before train.group_by_length say nothing, and were shuffled), so
    // no row is taken twice or skipped; the next epoch follows this run's config.
    order_group_rows = state.value("order_group_rows", int64_t{0});
    order = epoch_rows(epoch, order_group_rows);
    auto grouping = [](int64_t rows) {
      return rows > 0 ? "grouped by length for " + std::to_string(rows) + (rows == 1 ? " row" : " rows") + " a step"
                      : std::string("shuffled");
    };
    if (order_group_rows != configured_group_rows())
      log("info", "epoch " + std::to_string(epoch + 1) + " continues in the checkpoint's row order (" +
                      grouping(order_group_rows) + "); the next epoch's rows are " + grouping(configured_group_rows()));
    auto rng = load_safetensors((ts / "rng.safetensors").string()).tensors;
    if (dp && dp->rank() > 0) {
      // This rank's own generators, where the checkpoint has them (a run of as many ranks).
      const std::string prefix = "rank" + std::to_string(dp->rank()) + "/";
      for (const auto& [name, tensor] : std::map<std::string, torch::Tensor>(rng))
        if (name.rfind(prefix, 0) == 0) rng[name.substr(prefix.size())] = tensor;
    }
    if (rng.count("cpu")) {
      auto gen = at::detail::getDefaultCPUGenerator();
      std::lock_guard<std::mutex> lock(gen.mutex());
      gen.set_state(rng.at("cpu"));
    }
    if (rng.count("cuda") && device.is_cuda()) {
      auto cuda = at::globalContext().defaultGenerator(device);
      std::lock_guard<std::mutex> lock(cuda.mutex());
      cuda.set_state(rng.at("cuda"));
    }
    if (regularizer) regularizer->set_rng_state(rng);
    log("info", "resumed from " + dir + " at step " + std::to_string(step));
  }

  // ---- control -------------------------------------------------------------------------------
  // Returns true when the run must stop now. With data parallelism every rank acts on rank 0's
  // command (only rank 0 reads the run's control field) and on a stop signal that any rank
  // received, so all of them take the same path.
  bool handle_control() {
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
        case ControlCommand::Sample: samples(); break;
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

  // ---- the whole stage -----------------------------------------------------------------------
  TrainResult run() {
    TrainResult result;
    try {
      setup();
      const int64_t params = parameter_count(policy->shape());
      observer.on_start(total_steps, step,
                        {{"device", device_label.empty() ? device.str() : device_label},
                         {"parameters", std::to_string(params)},
                         {"train_examples", std::to_string(train_size())},
                         {"eval_examples", std::to_string(preference ? eval_pairs.size() : eval_sft.size())},
                         {"cpu_threads", cpu ? cpu->describe() : std::string()},
                         {"train_data", train_data},
                         {"eval_data", eval_data},
                         {"stage", config.stage}});
      observer.on_status("running", "");
      log("info", config.stage + " stage: " + std::to_string(total_steps) + " steps, " +
                      std::to_string(params) + " parameters, device " + device.str());
      if (step == 0 && !options.benchmark) samples();
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
        if (options.benchmark) continue;
        if (config.train.eval_steps > 0 && step % config.train.eval_steps == 0 && step != total_steps) evaluate();
        if (config.sampling.every_steps > 0 && step % config.sampling.every_steps == 0 && step != total_steps)
          samples();
        if (config.train.save_steps > 0 && step % config.train.save_steps == 0 && step != total_steps)
          save_checkpoint("checkpoint-" + std::to_string(step), true);
      }
      if (!options.benchmark) {
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
    } catch (const Error& e) {
      fail(result, e.what());
    } catch (const c10::Error& e) {
      fail(result, std::string("LibTorch error: ") + e.what_without_backtrace());
    } catch (const std::exception& e) {
      fail(result, e.what());
    }
    return result;
  }

  void fail(TrainResult& result, const std::string& message) {
    result.status = "failed";
    result.message = message;
    result.steps = step;
    log("error", message);
    observer.on_status("failed", message);
  }
};

Trainer::Trainer(RunConfig config, RunObserver& observer, TrainerOptions options)
    : state_(std::make_unique<State>(std::move(config), observer, std::move(options))) {}
Trainer::~Trainer() = default;
TrainResult Trainer::run() { return state_->run(); }

}  // namespace ganpo
