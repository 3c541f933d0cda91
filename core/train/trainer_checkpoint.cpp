// Trainer::State, checkpoints: the policy folder, trainer_state/ (optimizers, critics, EMA means,
// RNG, LoRA adapters), the PEFT adapter folder, and resume.

#include "core/train/trainer_state.h"

#include <ATen/CPUGeneratorImpl.h>
#include <filesystem>

namespace fs = std::filesystem;

namespace ganpo {
namespace {

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

// A trainer_state file's tensors into `params` by name: each must be there with its shape, and
// the file must hold no other (all checked on the header before any is copied). Read one tensor
// at a time, so the host never holds the file whole (a GPU policy's float32 weights). `what`
// names one ("adapter", "weight"), `settings` the config section a resume must keep.
void copy_saved_tensors(const fs::path& file, const std::vector<std::pair<std::string, torch::Tensor>>& params,
                        const std::string& what, const std::string& settings) {
  SafetensorsReader saved(file.string());
  const std::string advice = "; resume with the " + settings + " settings the run was trained with";
  for (const auto& [name, tensor] : params) {
    const SafetensorsInfo* info = saved.find(name);
    if (info == nullptr || info->shape != tensor.sizes().vec())
      throw ModelFileError(file.string() + " has no " + what + " " + name + " of shape " + c10::str(tensor.sizes()) +
                           advice);
  }
  if (saved.names().size() != params.size()) {
    std::string extra;  // one the file has and these settings do not make
    for (const auto& entry : saved.names())
      if (std::none_of(params.begin(), params.end(), [&](const auto& p) { return p.first == entry; })) extra = entry;
    throw ModelFileError(file.string() + " holds " + std::to_string(saved.names().size()) + " " + what + " tensors (" +
                         extra + " among them) but " + settings + " makes " + std::to_string(params.size()) + advice);
  }
  torch::NoGradGuard guard;
  torch::Tensor staging;
  for (const auto& [name, tensor] : params) tensor.copy_(saved.read(name, staging));
}

}  // namespace

// "eval" holds the newest held-out evaluation at save time and "eval_step" the step it was of:
// an earlier step's where train.eval_steps and train.save_steps differ, null where none was run
// (a checkpoint saved before an evaluation that ran out of memory, say).
nlohmann::json Trainer::State::meta_json() const {
  nlohmann::json metrics = last_eval;
  return {{"format", kCheckpointFormat},
          {"step", step},
          {"stage", config.stage},
          {"run_name", config.name},
          {"total_steps", total_steps},
          {"eval", metrics},
          {"eval_step", last_eval_step >= 0 && !last_eval.empty() ? nlohmann::json(last_eval_step) : nlohmann::json()},
          // (saved before this step's held-out evaluation, or its live samples, which ran out of
          // memory: a resume does them first)
          {"evaluation_pending", evaluation_pending == step},
          {"samples_pending", samples_pending == step}};
}

std::vector<std::pair<std::string, torch::Tensor>> Trainer::State::rng_tensors() {
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

std::vector<std::pair<std::string, torch::Tensor>> Trainer::State::world_rng_tensors() {
  auto mine = rng_tensors();
  if (!dp) return mine;
  std::vector<std::pair<std::string, torch::Tensor>> out = mine;
  for (const auto& [name, tensor] : mine) {
    const auto all = dp->all_gather(tensor);
    for (size_t r = 1; r < all.size(); ++r) out.emplace_back("rank" + std::to_string(r) + "/" + name, all[r].cpu());
  }
  return out;
}

Trainer::State::WorldState Trainer::State::gather_world_state() {
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

void Trainer::State::write_trainer_state(const std::string& dir, const WorldState& world_state) {
  const fs::path ts = fs::path(dir) / "trainer_state";
  fs::create_directories(ts);
  torch::save(*optimizer, (ts / "optimizer.pt").string());
  nlohmann::json state = {{"step", step}, {"epoch", epoch}, {"cursor", cursor}, {"order_group_rows", order_group_rows},
                          {"tokens_seen", world_state.tokens_seen}, {"total_steps", total_steps}, {"world_size", world()},
                          // The batches it was trained with, and those asked for (train.auto_find_batch_size
                          // may have found the first for the second).
                          {"per_device_train_batch_size", config.train.per_device_train_batch_size},
                          {"gradient_accumulation_steps", config.train.gradient_accumulation_steps},
                          {"per_device_eval_batch_size", eval_batch_size(config.train)}};
  if (asked_batches)
    state["batches_asked"] = {asked_batches->train, asked_batches->accumulation, asked_batches->eval};
  if (regularizer) {
    torch::save(*critic_optimizer, (ts / "critic_optimizer.pt").string());
    save_safetensors((ts / "critics.safetensors").string(), critic_state(*regularizer));
    // Only a cadence above 1 lets gradients wait across optimizer steps. (The critics step after
    // each k optimizer steps: a checkpoint without this key stepped them before.)
    state["critics_step_after_k_steps"] = true;
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
  if (checkpoints_round_policy()) save_safetensors((ts / "master_weights.safetensors").string(), trained_weights());
  write_precomputed_into(ts.string());
  write_json_file((ts / "state.json").string(), state);
}

bool Trainer::State::checkpoints_round_policy() const {
  return policy->lora().r == 0 && saved_dtype(policy->shape(), {config.model.save_dtype}) != "float32";
}

std::vector<std::pair<std::string, torch::Tensor>> Trainer::State::trained_weights() {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& p : policy->named_parameters())
    if (p.value().requires_grad()) out.emplace_back(p.key(), p.value());
  return out;
}

void Trainer::State::load_master_weights(const std::string& dir, const std::string& stored_dtype) {
  const fs::path file = fs::path(dir) / "trainer_state" / "master_weights.safetensors";
  if (!fs::exists(file)) {
    if (stored_dtype != "float32")
      log("warning", dir + " holds the policy in " + stored_dtype + " only (no trainer_state/master_weights.safetensors: "
                         "a checkpoint from before they were kept), so the run goes on from its weights rounded to " +
                         stored_dtype + ", near where it stopped but not exactly there");
    return;
  }
  copy_saved_tensors(file, trained_weights(), "weight", "model");
}

void Trainer::State::write_adapter_folder(const std::string& dir) {
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

std::string Trainer::State::save_checkpoint(const std::string& name, bool with_state) {
  verify_finite();  // nothing from weights a non-finite step reached
  const Doing doing(*this, kSaving);
  const std::string dir = (fs::path(config.output_dir) / name).string();
  const WorldState world_state = with_state ? gather_world_state() : WorldState{};
  const auto remember = [&] {
    if (with_state) last_checkpoint = dir, last_checkpoint_step = step;  // to resume from, as a failure says
  };
  if (!is_main()) return remember(), dir;  // rank 0 writes the run's files
  // Another rank may already name this checkpoint in a request to be started again: the
  // RelaunchWatch lets rank 0 finish it (nothing below waits on another rank).
  const RelaunchWatch::NotNow finishing;
  write_folder_atomically(dir, [&](const std::string& tmp) {
    save_model_files(tmp, policy, *tokenizer,
                     {config.model.save_dtype, static_cast<uint64_t>(config.model.max_shard_mb) * 1'000'000ULL});
    write_json_file((fs::path(tmp) / "meta.json").string(), meta_json());
    write_text_file((fs::path(tmp) / "run_config.toml").string(), config_to_toml(config));
    if (policy->lora().r > 0) write_adapter_folder(tmp);
    if (with_state) write_trainer_state(tmp, world_state);
  });
  fault_point("checkpoint.renamed");
  remember();
  observer.on_checkpoint(step, dir, last_eval);
  return dir;
}

void Trainer::State::load_lora_state(const std::string& dir) {
  const fs::path file = fs::path(dir) / "trainer_state" / "lora.safetensors";
  if (!fs::exists(file))
    throw ModelFileError(dir + " has no trainer_state/lora.safetensors, so it is not a checkpoint of a LoRA run; resume "
                         "it with model.lora.r = 0, as it was trained");
  copy_saved_tensors(file, policy->adapter_parameters(), "adapter", "model.lora");
}

void Trainer::State::adopt_batches_found_before(const std::string& dir) {
  if (!config.train.auto_find_batch_size) return;
  const fs::path file = fs::path(dir) / "trainer_state" / "state.json";
  if (!fs::exists(file)) return;  // resume() says what is missing
  const auto state = read_json_file(file.string());
  const auto asked = state.value("batches_asked", std::vector<int64_t>{});
  // Only batches found for what this config asks: not a batch a person chose for another run.
  if (asked.size() != 3 || !(Batches{asked[0], asked[1], asked[2]} == batches_of(config.train))) return;
  const Batches found{state.value("per_device_train_batch_size", int64_t{0}),
                      state.value("gradient_accumulation_steps", int64_t{0}),
                      state.value("per_device_eval_batch_size", int64_t{0})};
  TrainConfig& t = config.train;
  if (found.train > 0 && found.train < t.per_device_train_batch_size &&
      found.train * found.accumulation == t.per_device_train_batch_size * t.gradient_accumulation_steps) {
    log("info", "train.auto_find_batch_size: " + dir + " was trained with " + std::to_string(found.train) +
                    (found.train == 1 ? " row" : " rows") + " a micro-batch x " + std::to_string(found.accumulation) +
                    " accumulation steps, which an earlier attempt of this run found to fit; the stage goes on with "
                    "them (" + std::to_string(found.train * found.accumulation) + " rows per optimizer step)");
    t.per_device_train_batch_size = found.train, t.gradient_accumulation_steps = found.accumulation;
  }
  if (found.eval > 0 && found.eval < eval_batch_size(t)) {
    log("info", "train.auto_find_batch_size: " + dir + " was evaluated in batches of " + std::to_string(found.eval) +
                    ", which an earlier attempt of this run found to fit; the stage goes on with them");
    t.per_device_eval_batch_size = found.eval;
  }
}

void Trainer::State::adopt_batches_from_launcher() {
  if (!options.distributed || options.distributed->batches_found.empty()) return;
  if (!config.train.auto_find_batch_size)
    throw ConfigError(std::string(kBatchesFoundVariable) + " is set (by a launcher that started the ranks again with "
                      "the batch train.auto_find_batch_size found) but this run has train.auto_find_batch_size = "
                      "false: unset it, or turn the setting on");
  const auto& found = options.distributed->batches_found;  // train, accumulation, eval
  TrainConfig& t = config.train;
  if (found[0] * found[1] != t.per_device_train_batch_size * t.gradient_accumulation_steps)
    throw ConfigError(std::string(kBatchesFoundVariable) + " = " + format_batches(found) + " has " +
                      std::to_string(found[0] * found[1]) + " rows per optimizer step but the run asks for " +
                      std::to_string(t.per_device_train_batch_size * t.gradient_accumulation_steps) +
                      " (per_device_train_batch_size x gradient_accumulation_steps): unset it");
  t.per_device_train_batch_size = found[0], t.gradient_accumulation_steps = found[1], t.per_device_eval_batch_size = found[2];
  // (Where rank 0 was the one the system ended, this is the run's only word of why.)
  const std::string& why = options.distributed->relaunch_reason;
  log("warning", "train.auto_find_batch_size: the launcher started the ranks again with " + std::to_string(found[0]) +
                     (found[0] == 1 ? " row" : " rows") + " a micro-batch x " + std::to_string(found[1]) +
                     " accumulation steps and evaluation batches of " + std::to_string(found[2]) +
                     (why.empty() ? ", as a rank asked" : " after " + why));
}

void Trainer::State::resume(const std::string& dir) {
  const Doing doing(*this, kResuming);
  const fs::path ts = fs::path(dir) / "trainer_state";
  if (!fs::is_directory(ts))
    throw ModelFileError(dir + " has no trainer_state/ folder; resume needs a checkpoint-<step> folder");
  require_complete_checkpoint(dir, "resume from an earlier checkpoint-<step> folder of the run");
  // A checkpoint of another stage, or past this run's last step, is not this run's to go on from
  // (it would train nothing and write its weights as this run's final/).
  const fs::path meta_file = fs::path(dir) / "meta.json";
  const nlohmann::json meta = fs::exists(meta_file) ? read_json_file(meta_file.string()) : nlohmann::json::object();
  const nlohmann::json stage_field = meta.is_object() ? meta.value("stage", nlohmann::json()) : nlohmann::json();
  if (const std::string saved_stage = stage_field.is_string() ? stage_field.get<std::string>() : config.stage;
      saved_stage != config.stage)
    throw ConfigError(dir + " is a checkpoint of a " + saved_stage + " stage and this config trains the " + config.stage +
                      " stage: resume it with the config it was trained with, or start this stage from its weights "
                      "with model.checkpoint = " + dir);
  const int64_t saved_step = read_json_file((ts / "state.json").string()).value("step", int64_t{0});
  if (saved_step > total_steps)
    throw ConfigError(dir + " is at step " + std::to_string(saved_step) + ", past this run's " + std::to_string(total_steps) +
                      " steps: raise train.max_steps (or num_train_epochs) to go on, or start a new run from its "
                      "weights with model.checkpoint = " + dir);
  if (policy->lora().r > 0) {
    // The base weights are model.checkpoint's, already loaded (or, with model.random_weights,
    // drawn again from the run's seed); the checkpoint's own weights are merged with the
    // adapters, so only the adapters are read back.
    load_lora_state(dir);
  } else {
    if (fs::exists(ts / "lora.safetensors"))
      throw ModelFileError(dir + " is a checkpoint of a LoRA run (it has trainer_state/lora.safetensors); resume it "
                           "with the model.lora settings it was trained with");
    // Where the float32 master weights are every weight of the policy (full fine-tuning trains
    // them all), model.safetensors, their rounding, is not read as well.
    const bool master_is_whole = fs::exists(ts / "master_weights.safetensors") &&
                                 trained_weights().size() == policy->parameters().size();
    const std::string stored = master_is_whole ? read_model_config(dir).dtype : load_model_weights(policy, dir, warn_sink());
    policy->set_stored_dtype(stored);
    load_master_weights(dir, stored);
  }
  auto state = read_json_file((ts / "state.json").string());
  try {
    torch::load(*optimizer, (ts / "optimizer.pt").string());
    if (regularizer) {
      torch::load(*critic_optimizer, (ts / "critic_optimizer.pt").string());
      load_critic_state(*regularizer, load_safetensors((ts / "critics.safetensors").string()).tensors, dir);
      if (fs::exists(ts / "critic_grads.safetensors"))
        load_pending_critic_grads(*regularizer, load_safetensors((ts / "critic_grads.safetensors").string()).tensors);
      if (config.ganpo.critic_update_every > 1 && !state.contains("critics_step_after_k_steps"))
        log("warning", "this checkpoint was written by a version whose critics stepped at the first of each " +
                           std::to_string(config.ganpo.critic_update_every) +
                           " optimizer steps (ganpo.critic_update_every); they now step after the last, so their "
                           "next step holds another number of steps' gradients, once");
      if (state.contains("ema")) {
        EmaMeans e;
        auto t = [&](int i) { return torch::tensor(state["ema"][i].get<double>(), torch::TensorOptions().device(device)); };
        e.w_a = t(0), e.w_b = t(1), e.w_p = t(2), e.l_a = t(3), e.l_b = t(4), e.l_p = t(5);
        e.initialized = true;
        regularizer->set_ema(e);
      }
    }
  } catch (const c10::Error& e) {
    if (is_out_of_memory(e)) throw;  // the moments are the largest thing a resume allocates
    throw ModelFileError(dir + ": optimizer state cannot be read (" + std::string(e.what_without_backtrace()) +
                         "); the checkpoint is corrupt or from other settings");
  }
  step = state.value("step", int64_t{0});
  last_checkpoint = dir, last_checkpoint_step = step;
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
  set_rng_tensors(rng);
  log("info", "resumed from " + dir + " at step " + std::to_string(step));
  // A checkpoint saved before its step's held-out evaluation, or its live samples, which ran out
  // of memory (settle_failed_ranks, rescue_checkpoint), says so: they are done first, with what
  // followed them.
  if (!meta.is_object()) return;
  if (meta.value("evaluation_pending", false)) {
    evaluate_first = true;
    log("info", "the held-out evaluation of step " + std::to_string(step) + " is not in " + dir +
                    " (saved before it): it is done first");
  } else if (meta.value("samples_pending", false)) {
    samples_first = true;
    log("info", "the live samples of step " + std::to_string(step) + " are not in " + dir +
                    " (saved before them): they are done first");
  }
}

void Trainer::State::set_rng_tensors(const std::map<std::string, torch::Tensor>& rng) {
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
}

}  // namespace ganpo
