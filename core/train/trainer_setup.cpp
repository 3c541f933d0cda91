// Trainer::State, set-up: validation, devices and threads, the process group, the policy and the
// reference (LoRA included), the optimizers, and precomputed reference log-probs.

#include "core/train/trainer_state.h"

#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <torch/version.h>

#include <algorithm>
#include <limits>
#include <set>
#include <utility>

#include "core/config_fields.h"

namespace ganpo {
namespace {

// The bytes `tensors` hold, each storage once (a tied head shares the embedding's).
int64_t tensor_bytes(const std::vector<torch::Tensor>& tensors) {
  std::set<const void*> seen;
  int64_t bytes = 0;
  for (const auto& t : tensors)
    if (seen.insert(t.storage().data()).second) bytes += static_cast<int64_t>(t.storage().nbytes());
  return bytes;
}

}  // namespace

void Trainer::State::setup() {
  if (options.bf16_storage_on_cpu) {
    RunConfig twin = config;  // validated as its float32 twin: bf16 is refused on device "cpu"
    twin.train.precision = "fp32";
    validate_or_throw(twin);
  } else {
    validate_or_throw(config);
  }
  preference = config.stage == "preference";
  if (!asked_batches) asked_batches = batches_of(config.train);
  if (!options.resume_from.empty()) adopt_batches_found_before(options.resume_from);
  adopt_batches_from_launcher();
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
  if (config.train.precision == "bf16" && device.is_cpu() && !options.bf16_storage_on_cpu)
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

  // The batches asked for: a smaller micro-batch train.auto_find_batch_size found for them (the
  // same rows per step) could round the epochs' steps otherwise, and move the schedule.
  const int64_t B = asked_batches->train;
  const int64_t GA = asked_batches->accumulation;
  if (config.train.max_steps > 0) {
    total_steps = config.train.max_steps;
  } else {
    // One optimizer step takes B rows on each of the world's processes, GA times.
    const double batches_per_epoch = std::ceil(static_cast<double>(train_size()) / static_cast<double>(B * world()));
    const double steps = std::ceil(config.train.num_train_epochs * batches_per_epoch / static_cast<double>(GA));
    // (Past 2^53 a step count is no longer exact, and past 2^63 the conversion wraps.)
    if (!(steps <= 9007199254740992.0))
      throw ConfigError("train.num_train_epochs = " + config_detail::format_double(config.train.num_train_epochs) + " makes " +
                        config_detail::format_double(steps) + " optimizer steps; give fewer epochs, or train.max_steps");
    total_steps = std::max<int64_t>(1, static_cast<int64_t>(steps));
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

int64_t Trainer::State::bf16_values(CausalLM& model) {
  int64_t n = 0;
  for (const auto& p : model->parameters())
    if (p.scalar_type() == torch::kBFloat16) n += p.numel();
  return n;
}

std::string Trainer::State::bf16_saving(int64_t values) {
  return std::to_string(values) + " values, " + format_number(std::round(static_cast<double>(values) * 2 / (1 << 20))) +
         " MiB less";
}

void Trainer::State::log_frozen_base_storage() {
  const int64_t stored = bf16_values(policy), all = parameter_parts(policy->shape()).projections;
  if (2 * stored >= all)
    log("info", "the frozen base's projections are stored in bf16 (" + bf16_saving(stored) + "), as bf16 holds them exactly");
  else
    log("info", "the frozen base stays float32 (" + std::to_string(stored) + " of its " + std::to_string(all) +
                    " projection values are bf16 values; a model stored in bf16 would keep them in half the memory)");
}

void Trainer::State::join_process_group() {
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
  if (config.train.auto_find_batch_size && env.relaunch_dir.empty())
    throw ConfigError("train.auto_find_batch_size in a data-parallel run needs a launcher that starts every rank "
                      "again with the smaller batch, and this process is " + env.describe() +
                      ", started by one that does not (torchrun, Slurm, `ganpo launch` over several hosts or with a "
                      "workspace, or a pipeline's stage under `ganpo launch`). On one host, start it with `ganpo "
                      "train` (train.num_processes), as a workspace run or with `ganpo launch --nproc-per-node N "
                      "train --no-db`; elsewhere set train.auto_find_batch_size = false and choose "
                      "per_device_train_batch_size yourself");
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
  end_when_orphaned(timeout);
  log("info", "data parallel: " + env.describe() + ", " + dp->backend() + " process group; global batch " +
                  std::to_string(config.train.per_device_train_batch_size * env.world_size) + " (" +
                  std::to_string(config.train.per_device_train_batch_size) + " per process)");
}

void Trainer::State::start_data_parallel() {
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

void Trainer::State::use_deterministic_kernels() {
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

void Trainer::State::describe_gpu() {
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

void Trainer::State::setup_cpu_threads() {
  if (!device.is_cpu()) {
    if (config.train.num_threads > 0) torch::set_num_threads(static_cast<int>(config.train.num_threads));
    return;
  }
  cpu = std::make_unique<CpuJob>(config.train.num_threads);
  if (config.train.num_threads > cpu->available_cores())
    log("warning", "train.num_threads = " + std::to_string(config.train.num_threads) + " but this process may use " +
                       std::to_string(cpu->available_cores()) +
                       " core(s); more threads than cores make each step slower");
  // The processes of a data-parallel run on this host share its cores (said once, by its local rank 0).
  if (const auto& env = options.distributed;
      env && env->local_rank == 0 && env->local_world_size > cpu->available_cores())
    log("warning", std::to_string(env->local_world_size) + " processes of this data-parallel run share this host's " +
                       std::to_string(cpu->available_cores()) +
                       " CPU core(s): with more processes than cores each step is slower, not faster; lower "
                       "--nproc-per-node (or train.num_processes) to " + std::to_string(cpu->available_cores()) +
                       " or fewer");
  log("info", "CPU: " + cpu->describe());
  const std::string slow_blas = blas_kernel_warning();
  if (!slow_blas.empty()) log("warning", slow_blas);
}

void Trainer::State::refresh_cpu_share() {
  if (!cpu) return;
  if (const int jobs = cpu->refresh())
    log("notice", std::to_string(jobs) + " CPU job(s) on this machine; now " + cpu->describe());
}

void Trainer::State::warn_if_memory_short() {
  ModelShape shape;
  try {
    shape = config.model.checkpoint.empty()
                ? resolve_model_shape(config.model, ByteTokenizer().vocab_size())
                : read_model_config(config.model.checkpoint);
  } catch (const std::exception&) {
    return;  // not a folder with a config.json (a PEFT adapter folder): loading says what it is
  }
  RunConfig on_device = on_device_config();
  int64_t free_ram =
      options.free_ram_for_tests >= 0 ? options.free_ram_for_tests : system_memory_bytes("MemAvailable");
  // A reference kept from the stage before is in this memory already, and counted in the estimate.
  if (kept_reference && device.is_cpu() && free_ram > 0) free_ram += tensor_bytes(kept_reference->parameters());
  const int processes = options.distributed && dp ? options.distributed->local_world_size : 1;  // on this host
  // train.auto_find_batch_size on the CPU, where the system may stop a process that asks for more
  // than the machine has before any allocation fails: a run starts with batches its estimate says
  // fit, the processes on this host sharing its free memory. The ranks of a data-parallel run take
  // the least share any of them read, so that they choose the same batches.
  estimate = estimate_training_memory(on_device, shape);
  if (device.is_cpu() && config.train.auto_find_batch_size && !options.benchmark) {
    int64_t share = free_ram > 0 ? free_ram / processes : std::numeric_limits<int64_t>::max();
    if (dp) {  // (every rank, also one that could not read its free memory: a collective)
      for (const auto& other : dp->all_gather(torch::tensor({share}, torch::kInt64)))
        share = std::min(share, other.item<int64_t>());
    }
    const std::optional<SmallerBatch> fit = share < std::numeric_limits<int64_t>::max()
                                                ? batches_that_fit(on_device, shape, share * processes, processes)
                                                : std::nullopt;
    if (fit) {
      const std::string room = processes == 1 ? "this machine's free RAM (MemAvailable, " + format_gib(static_cast<double>(share)) + ")"
                                              : "each process's share of this machine's free RAM (MemAvailable over its " +
                                                    std::to_string(processes) + " processes, " +
                                                    format_gib(static_cast<double>(share)) + ")";
      log("warning", "train.auto_find_batch_size: the estimate for a step (" +
                         format_gib(static_cast<double>(estimate->step_total_bytes)) + ") or an evaluation (" +
                         format_gib(static_cast<double>(estimate->evaluation_total_bytes)) + ") is more than " + room +
                         ", and on the CPU the system may stop a process that asks for more than the machine has "
                         "before any allocation fails: the run starts with " + fit->change);
      config.train = fit->config.train;
      on_device = on_device_config();
      estimate = estimate_training_memory(on_device, shape);
    }
  }
  std::string warning;
  if (device.is_cuda()) {
    warning = memory_shortfall_warning(*estimate, 1, gpu_memory_bytes, device_label, on_device,
                                       shape.vocab_size);  // read by describe_gpu()
  } else {
    warning = memory_shortfall_warning(*estimate, processes, free_ram, "this machine's free RAM (MemAvailable)",
                                       on_device, shape.vocab_size);
  }
  if (!warning.empty() && config.train.auto_find_batch_size && !options.benchmark)
    warning += std::string(" train.auto_find_batch_size is on: the run lowers its batch where an allocation fails") +
               (device.is_cpu() ? " (on the CPU the system may stop the process first)." : ".");
  if (!warning.empty()) log("warning", warning);
}

void Trainer::State::build_models() {
  const Doing doing(*this, kLoadingModels);
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
  LoraSpec lora = lora_spec(config.model.lora);
  lora.dropout_off = applied_lora_dropout(config) != lora.dropout;  // (its adapter folders still record it)
  if (lora.r > 0 && lora.dropout_off)
    log("notice", "model.lora.dropout = " + format_number(config.model.lora.dropout) +
                      " is not applied in a preference stage: the policy runs without dropout (as TRL's DPOTrainer "
                      "with its default disable_dropout); it applies in SFT stages");
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
    if (kept_reference) {
      reference = std::exchange(kept_reference, CausalLM(nullptr));
      log("info", "reference model: the one of the stage before train.auto_find_batch_size started it again, not loaded again (" +
                      (ref_dir.empty() ? std::string("the policy's starting weights") : ref_dir) + ")");
    } else if (!ref_dir.empty()) {
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
  kept_reference = CausalLM(nullptr);  // (taken above, or not this stage's to take)
  policy->train();
  log_attention_kernels();
}

void Trainer::State::move_random_policy_to_device() {
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

void Trainer::State::log_attention_kernels() {
  const std::string policy_note = attention_kernel_note(policy->shape());
  std::string line = "attention: " + policy_note;
  if (reference && attention_kernel_note(reference->shape()) != policy_note)
    line += "; reference: " + attention_kernel_note(reference->shape());
  if (regularizer) line += "; critics: " + critic_attention_note(config.ganpo.critic_dropout, device);
  log("info", line);
}

void Trainer::State::precompute_reference_logps() {
  if (!config.train.precompute_ref_log_probs) return;
  if (!preference) {
    log("notice", "train.precompute_ref_log_probs has no effect on an SFT stage: it has no reference model");
    return;
  }
  const int64_t bs = eval_batch_size(config.train);
  pairs_hash = hash_of_pairs(train_pairs, eval_pairs);  // once: the pairs do not change in a stage
  if (!kept_precomputed) kept_precomputed = precomputed_kept_elsewhere();
  const auto kept = std::move(kept_precomputed);
  kept_precomputed.reset();
  const auto holds = [](const PairLogps& p, size_t pairs) {  // (a file damaged under intact metadata)
    return p.empty() ? pairs == 0
                     : p.chosen.scalar_type() == torch::kFloat32 && p.chosen.dim() == 1 &&
                           p.chosen.sizes() == p.rejected.sizes() && p.chosen.size(0) == static_cast<int64_t>(pairs);
  };
  bool keep = kept && kept->batch == bs && kept->prefix_sharing == config.train.prefix_sharing &&
              kept->world == world() && kept->pairs == pairs_hash && holds(kept->train, train_pairs.size()) &&
              holds(kept->eval, eval_pairs.size()) && first_batch_scores_the_same(*kept, bs);
  if (dp) {  // every rank keeps them, or every rank scores them (together: the pass has collectives)
    auto not_kept = torch::tensor({keep ? 0.0f : 1.0f});
    dp->all_reduce_sum_on_host_(not_kept);
    keep = not_kept.item<float>() == 0.0f;
  }
  if (keep) {
    train_ref_logps = kept->train;
    eval_ref_logps = kept->eval;
    log("info", "reference log-probs of " + std::to_string(train_pairs.size() + eval_pairs.size()) + " pairs kept from " +
                    kept->from + " (the same pairs in batches of " + std::to_string(bs) +
                    "; the reference scored the first batch again to the same bits)");
    return;
  }
  const Doing doing(*this, kPrecomputing);
  const auto t0 = Clock::now();
  const Bf16Autocast autocast(bf16_autocast());  // as the steps' policy passes compute
  // The training split as the steps' passes score it (prefix sharing or not), the held-out one
  // as evaluations do, so the policy's and the reference's numbers come from the same arithmetic.
  train_ref_logps = precompute_split(train_pairs, bs, config.train.prefix_sharing);
  eval_ref_logps = precompute_split(eval_pairs, bs, config.train.prefix_sharing);
  log("info", "reference log-probs of " + std::to_string(train_pairs.size() + eval_pairs.size()) +
                  " pairs precomputed in " + format_number(std::chrono::duration<double>(Clock::now() - t0).count()) +
                  " s, in batches of " + std::to_string(bs) + " (train.precompute_ref_log_probs, train.per_device_eval_batch_size); " +
                  (regularizer ? "the reference still runs each step for GANPO's latents, without its output head"
                               : "the reference does not run during training"));
  leave_precomputed_for_a_new_start();
}

void Trainer::State::leave_precomputed_for_a_new_start() {
  if (!dp || !dp->is_main() || options.distributed->relaunch_dir.empty()) return;
  const auto p = precomputed();
  if (!p) return;
  const std::string path = (std::filesystem::path(options.distributed->relaunch_dir) / kKeptPairLogpsFile).string();
  try {  // (save_safetensors writes it whole, then renames: a rank 0 that ends meanwhile leaves none)
    write_kept_pair_logps(path, *p);
  } catch (const std::exception& e) {
    log("notice", std::string("the precomputed reference log-probs could not be left for a new start of the ranks (they "
                              "would be computed again then): ") + e.what());
  }
}

void Trainer::State::write_precomputed_into(const std::string& trainer_state_dir) const {
  if (const auto p = precomputed())
    write_kept_pair_logps((std::filesystem::path(trainer_state_dir) / kKeptPairLogpsFile).string(), *p);
}

std::optional<KeptPairLogps> Trainer::State::precomputed_kept_elsewhere() const {
  // Ranks their launcher started again: rank 0's, left in the launcher's folder.
  if (dp && !options.distributed->relaunch_dir.empty() && !options.distributed->batches_found.empty())
    if (auto p = read_kept_pair_logps((std::filesystem::path(options.distributed->relaunch_dir) / kKeptPairLogpsFile).string(),
                                      device, "before the launcher started the ranks again"))
      return p;
  // A resume: the checkpoint's (none in checkpoints written before they were kept).
  if (!options.resume_from.empty())
    return read_kept_pair_logps((std::filesystem::path(options.resume_from) / "trainer_state" / kKeptPairLogpsFile).string(),
                                device, options.resume_from);
  return std::nullopt;
}

bool Trainer::State::first_batch_scores_the_same(const KeptPairLogps& kept, int64_t bs) {
  const Doing doing(*this, kPrecomputing);
  std::vector<TokenizedPair> first;  // this rank's first batch of the training split, as the pass took it
  std::vector<int64_t> at;
  for (size_t i = dp ? static_cast<size_t>(dp->rank()) : 0; i < train_pairs.size() && static_cast<int64_t>(first.size()) < bs;
       i += static_cast<size_t>(world())) {
    first.push_back(train_pairs[i]);
    at.push_back(static_cast<int64_t>(i));
  }
  if (first.empty()) return true;
  const Bf16Autocast autocast(bf16_autocast());
  const PairLogps now = precompute_pair_logps(reference, first, tokenizer->pad_id(), bs, config.train.prefix_sharing);
  const PairLogps then = kept.train.select(at);
  return torch::equal(now.chosen, then.chosen) && torch::equal(now.rejected, then.rejected);
}

std::optional<KeptPairLogps> Trainer::State::precomputed() const {
  if (train_ref_logps.empty() || (!eval_pairs.empty() && eval_ref_logps.empty())) return std::nullopt;
  return KeptPairLogps{train_ref_logps,
                     eval_ref_logps,
                     eval_batch_size(config.train),
                     config.train.prefix_sharing,
                     pairs_hash,
                     world(),
                     "before train.auto_find_batch_size started the stage again"};
}

PairLogps Trainer::State::precompute_split(const std::vector<TokenizedPair>& pairs, int64_t bs, bool share_prompts) {
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

}  // namespace ganpo
