// Trainer::State, one optimizer step: its micro-batches (SFT, or preference with GANPO's critics),
// gradient averaging and clipping, non-finite checks, and the metric window with its log line.

#include "core/train/trainer_state.h"

#include <fstream>
#include <numeric>
#include <tuple>
#include <utility>

namespace ganpo {
namespace {

// A non-finite loss term, named, at a step.
class NonFiniteLoss : public Error {
public:
  using Error::Error;
};

double rss_megabytes() {
  std::ifstream statm("/proc/self/statm");
  long pages_total = 0, pages_resident = 0;
  statm >> pages_total >> pages_resident;
  return static_cast<double>(pages_resident) * 4096.0 / (1024.0 * 1024.0);
}

// A rank's standing request (core/relaunch_request.h), removed as its try of the longest rows
// ends, however it ends; only the system's ending the process there leaves it, for the launcher.
struct StandingRequestRemoval {
  std::string dir;
  int rank = 0;
  StandingRequestRemoval() = default;
  StandingRequestRemoval(const StandingRequestRemoval&) = delete;
  StandingRequestRemoval& operator=(const StandingRequestRemoval&) = delete;
  ~StandingRequestRemoval() {
    try {
      if (!dir.empty()) remove_standing_request(dir, rank);
    } catch (...) {  // (unwinding from an out of memory, say: the launcher clears it before a new start)
    }
  }
};

void set_lr(torch::optim::Optimizer& opt, double lr) {
  for (auto& group : opt.param_groups())
    static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr);
}

}  // namespace

void Trainer::State::add(const std::string& key, const torch::Tensor& value) {
  accumulate(window_sums[key], value.detach().to(torch::kFloat32));
}

void Trainer::State::check_finite(const std::vector<std::pair<const char*, torch::Tensor>>& terms,
                                  bool reduce, const char* advice) {
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

torch::Tensor Trainer::State::pending_check_values() const {
  std::vector<torch::Tensor> values;
  for (const auto& c : pending_checks) values.push_back(c.values.to(torch::kFloat64));
  return torch::cat(values);
}

void Trainer::State::check_pending(const double* values) {
  const auto checks = std::move(pending_checks);
  pending_checks.clear();
  int64_t i = 0;
  for (const auto& c : checks) {
    std::map<std::string, double> non_finite;
    std::string first;  // in the order the step checks them
    for (const auto& name : c.names) {
      const float v = static_cast<float>(values[i++]);
      if (std::isfinite(v)) continue;
      non_finite.emplace(name, v);
      if (first.empty()) first = name;
    }
    if (non_finite.empty()) continue;
    // Recorded before the run fails, so its charts mark the step and the health line says it.
    observer.on_metrics(c.step, non_finite);
    throw NonFiniteLoss(first + " is " + std::to_string(non_finite[first]) + " at step " + std::to_string(c.step) +
                        "; " + c.advice);
  }
}

void Trainer::State::verify_finite() {
  drain_device();
  if (pending_checks.empty()) return;
  const auto values = pending_check_values().cpu();
  check_pending(values.data_ptr<double>());
}

void Trainer::State::drain_device() {
  if (!undrained) return;
  torch::cuda::synchronize(device.has_index() ? device.index() : -1);
  window_seconds += std::chrono::duration<double>(Clock::now() - last_step_end).count();
  undrained = false;
}

torch::Tensor Trainer::State::tokens_per_micro_batch(const std::vector<std::vector<int64_t>>& micro_batches) {
  if (preference && config.objective.rpo_alpha <= 0) return {};
  int64_t tokens = 0;
  for (const auto& idx : micro_batches)
    for (auto i : idx) {
      const auto at = static_cast<size_t>(i);
      tokens += preference ? scored_response_tokens(train_pairs[at].prompt, train_pairs[at].chosen)
                           : scored_response_tokens(train_sft[at].prompt, train_sft[at].completion);
    }
  auto out = torch::full({}, static_cast<double>(tokens) / static_cast<double>(micro_batches.size()),
                         torch::TensorOptions().dtype(torch::kFloat32).device(device));
  if (dp) dp->all_reduce_mean_(out);  // (every rank divides by the same count)
  return out;
}

void Trainer::State::sft_micro_step(const std::vector<int64_t>& idx, double scale, const torch::Tensor& tokens) {
  std::vector<const TokenizedSft*> rows;
  for (auto i : idx) rows.push_back(&train_sft[static_cast<size_t>(i)]);
  auto b = collate_sft(rows, tokenizer->pad_id(), device);
  auto lp = score_sequences(policy, b).logps;
  // This micro-batch's part of the step's token mean (scaled by 1 / accumulation steps below),
  // each micro-batch's loss the mean it would be with the step's tokens per micro-batch.
  auto loss = -lp.sum.sum() / tokens.clamp_min(1.0);
  check_finite({{"loss", loss}});
  (loss * scale).backward();
  add("loss", loss);
  count_work(b, micro_batch_work(b, 0));
}

void Trainer::State::preference_micro_step(const std::vector<int64_t>& idx, double scale, bool last_micro,
                                           const torch::Tensor& tokens) {
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
    // every token of the step, as the SFT loss (tokens_per_micro_batch).
    auto nll = -in.policy_chosen.sum() / tokens.clamp_min(1.0);
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
    // 4. Critic step on its cadence, before the policy phase of the last micro-batch: after every
    // critic_update_every optimizer steps' gradients (step indices k-1, 2k-1, ...; the first one too
    // holds k steps' gradients, each scaled by 1/k).
    if (last_micro && (step + 1) % config.ganpo.critic_update_every == 0) {
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

Trainer::State::PrefixSharing Trainer::State::prefix_sharing_for(const std::vector<const TokenizedPair*>& rows) {
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

void Trainer::State::finish_gradients() {
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

void Trainer::State::average_gradients(const std::vector<torch::Tensor>& params) {
  const auto t0 = Clock::now();
  dp->average_gradients(params);
  window_allreduce_seconds += std::chrono::duration<double>(Clock::now() - t0).count();
}

MicroBatchWork Trainer::State::micro_batch_work(const SequenceBatch& b, int64_t pairs, bool reference_ran,
                                                 bool reference_head) const {
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

void Trainer::State::count_work(const SequenceBatch& b, const MicroBatchWork& work) {
  window_flops += micro_batch_flops(config, policy->shape(), work);
  window_tokens += b.tokens;
  tokens_seen += b.tokens;
}

double Trainer::State::lr_at(int64_t at) const {
  return config.train.learning_rate * lr_multiplier(config.train.lr_scheduler_type, at, total_steps, warmup);
}

void Trainer::State::optimizer_step() {
  const Doing doing(*this, kStepping);
  if (dp) dp->note_progress(3 * (step + 1), "in step " + std::to_string(step + 1));
  refresh_cpu_share();
  const auto t0 = Clock::now();
  const int64_t GA = config.train.gradient_accumulation_steps;
  set_lr(*optimizer, current_lr());
  optimizer->zero_grad();
  std::vector<std::vector<int64_t>> micro_batches(static_cast<size_t>(GA));
  for (auto& idx : micro_batches) idx = next_indices();
  const torch::Tensor tokens = tokens_per_micro_batch(micro_batches);
  for (int64_t micro = 0; micro < GA; ++micro) {
    const auto& idx = micro_batches[static_cast<size_t>(micro)];
    if (!longest_rows_tried) {  // (the first step's, which try_longest_rows compares with)
      PaddedExtent extent;
      for (auto i : idx) extent.include(train_row_extent(i));
      stepped_extents.push_back(extent);
    }
    Bf16Autocast autocast(bf16_autocast());
    // The last micro-batch's backward pass starts the gradient all-reduce as buckets fill.
    if (dp && overlap_gradients && micro == GA - 1) dp->arm_gradients();
    if (preference)
      preference_micro_step(idx, 1.0 / static_cast<double>(GA), micro == GA - 1, tokens);
    else
      sft_micro_step(idx, 1.0 / static_cast<double>(GA), tokens);
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

PaddedExtent Trainer::State::train_row_extent(int64_t i) const {
  const auto at = static_cast<size_t>(i);
  return preference ? padded_extent(train_pairs[at]) : padded_extent(train_sft[at]);
}

std::vector<int64_t> Trainer::State::rows_ahead() const {
  // Every rank's rows of the steps left, as next_indices walks the epochs' orders.
  const int64_t n = train_size();
  int64_t left = (total_steps - step) * config.train.gradient_accumulation_steps * world() *
                 config.train.per_device_train_batch_size;
  std::vector<char> taken(static_cast<size_t>(n), 0);
  std::vector<int64_t> rows;
  std::vector<int64_t> rows_of_epoch = order;
  for (int64_t at = cursor, e = epoch; left > 0 && static_cast<int64_t>(rows.size()) < n; --left, ++at) {
    if (at >= static_cast<int64_t>(rows_of_epoch.size())) {
      rows_of_epoch = epoch_rows(++e, configured_group_rows());
      at = 0;
    }
    const int64_t row = rows_of_epoch[static_cast<size_t>(at)];
    if (!taken[static_cast<size_t>(row)]) taken[static_cast<size_t>(row)] = 1, rows.push_back(row);
  }
  return rows;
}

std::vector<std::vector<int64_t>> Trainer::State::longest_batches(int64_t count) const {
  std::vector<int64_t> ahead = rows_ahead();
  if (ahead.empty() || count <= 0) return {};
  std::vector<PaddedExtent> extent(ahead.size());
  for (size_t k = 0; k < ahead.size(); ++k) extent[k] = train_row_extent(ahead[k]);
  // Positions in `ahead`: the row that is longest by `longer` (the first of equals).
  const auto longest_by = [&](auto longer) {
    size_t best = 0;
    for (size_t k = 1; k < ahead.size(); ++k)
      if (longer(extent[k], extent[best])) best = k;
    return best;
  };
  const auto by = [](int64_t PaddedExtent::*length, int sign) {
    return [length, sign](const PaddedExtent& a, const PaddedExtent& b) {
      return a.*length != b.*length ? sign * (a.*length - b.*length) > 0 : a.row > b.row;
    };
  };
  // The rows that pad a batch furthest, in pairs that go together where a batch holds two: the
  // longest row with the shortest prompt (the plain layout's T and the head's span from that
  // prompt's end), the longest response with the longest prompt (the shared layout's R and P).
  std::vector<size_t> extremes;
  for (size_t k : {longest_by(by(&PaddedExtent::row, 1)), longest_by(by(&PaddedExtent::shortest_prompt, -1)),
                   longest_by(by(&PaddedExtent::response, 1)), longest_by(by(&PaddedExtent::prompt, 1))})
    if (std::find(extremes.begin(), extremes.end(), k) == extremes.end()) extremes.push_back(k);
  // The rest by row length, as many as a batch could want.
  std::vector<size_t> rest;
  for (size_t k = 0; k < ahead.size(); ++k)
    if (std::find(extremes.begin(), extremes.end(), k) == extremes.end()) rest.push_back(k);
  const size_t more = std::min(rest.size(), static_cast<size_t>(count));
  std::partial_sort(rest.begin(), rest.begin() + static_cast<std::ptrdiff_t>(more), rest.end(),
                    [&](size_t a, size_t b) { return extent[a].row != extent[b].row ? extent[a].row > extent[b].row : a < b; });
  rest.resize(more);
  // Micro-batches of `count` rows holding every extreme row: one where it has room for them
  // all, else as many as they need (a batch of 1 tries each alone); each filled with the longest
  // rows, and with its own rows again where the data holds fewer (as next_indices repeats them).
  std::vector<std::vector<int64_t>> batches;
  for (size_t first = 0; first < extremes.size(); first += static_cast<size_t>(count)) {
    std::vector<size_t> rows(extremes.begin() + static_cast<std::ptrdiff_t>(first),
                             extremes.begin() + static_cast<std::ptrdiff_t>(std::min(extremes.size(), first + static_cast<size_t>(count))));
    for (size_t k : rest)
      if (static_cast<int64_t>(rows.size()) < count) rows.push_back(k);
    std::vector<int64_t> batch;
    for (int64_t r = 0; r < count; ++r) batch.push_back(ahead[rows[static_cast<size_t>(r) % rows.size()]]);
    batches.push_back(std::move(batch));
  }
  return batches;
}

void Trainer::State::try_longest_rows() {
  longest_rows_tried = true;
  if (options.benchmark || !options.try_longest_rows || step >= total_steps || train_size() == 0) return;
  // Where a micro-batch of the first step padded as far on any rank (ranks are alike), it
  // answers for all. The try's passes have collectives, so every rank runs the same ones.
  std::vector<std::vector<int64_t>> batches = longest_batches(config.train.per_device_train_batch_size);
  std::vector<PaddedExtent> extents;
  auto needed = torch::zeros({static_cast<int64_t>(batches.size())});  // [batches] 1: not covered on this rank
  for (size_t b = 0; b < batches.size(); ++b) {
    PaddedExtent e;
    for (auto i : batches[b]) e.include(train_row_extent(i));
    extents.push_back(e);
    if (std::none_of(stepped_extents.begin(), stepped_extents.end(), [&](const PaddedExtent& s) { return e.within(s); }))
      needed[static_cast<int64_t>(b)] = 1.0f;
  }
  if (dp && !batches.empty()) dp->all_reduce_sum_on_host_(needed);
  const int64_t ranks = world();
  std::vector<std::vector<int64_t>> tries;
  PaddedExtent tried;
  for (size_t b = 0; b < batches.size(); ++b)
    if (needed[static_cast<int64_t>(b)].item<float>() == static_cast<float>(ranks)) {
      tries.push_back(std::move(batches[b]));
      tried.include(extents[b]);
    }
  if (tries.empty()) return;

  PaddedExtent stepped;
  for (const auto& e : stepped_extents) stepped.include(e);
  const auto lengths = [](const PaddedExtent& e) {
    return std::to_string(e.prompt) + "-token prompts, " + std::to_string(e.response) + "-token responses, " +
           std::to_string(e.row) + "-token rows, " + std::to_string(e.head()) + " positions through the output head";
  };
  drain_device();  // (the first step's time is the step's)
  // (Said first: should the system end the process for its memory, this is the run's last line,
  // and the other ranks' failure says where this one was.)
  if (dp) dp->note_progress(3 * step + 2, std::string(kTryingLongestRowsProgress) + " after step " + std::to_string(step));
  const std::string rows = std::to_string(config.train.per_device_train_batch_size);
  log("info", std::string(kTryingLongestRowsLog) + " " +
                  (tries.size() == 1 ? "a micro-batch of the " + rows
                                     : std::to_string(tries.size()) + " micro-batches of " + rows + " of the") +
                  " longest training rows ahead (up to " + lengths(tried) + "; step " + std::to_string(step) +
                  "'s up to " + lengths(stepped) +
                  "), forward and backward, then discarded: memory they would run out of runs out now rather than "
                  "when they come up");
  observer.flush();
  // CPU ranks under train.auto_find_batch_size: the system's out-of-memory killer would end this
  // one without a word, so it says now what it would ask.
  StandingRequestRemoval standing;
  if (dp && device.is_cpu() && config.train.auto_find_batch_size && !options.distributed->relaunch_dir.empty())
    if (const auto smaller = with_smaller_training_batch(config, world())) try {
        write_standing_request(options.distributed->relaunch_dir,
                               relaunch_request(*smaller, "it was ended without a word while trying its longest training "
                                                          "rows ahead after step " + std::to_string(step) +
                                                          ": most likely by the system's out-of-memory killer"));
        standing.dir = options.distributed->relaunch_dir;  // (not a temporary: its end would remove it)
        standing.rank = dp->rank();
      } catch (const std::exception& e) {
        log("warning", std::string("train.auto_find_batch_size: should the system end this rank for its memory in the "
                                   "try that follows, its launcher cannot start the ranks again: ") + e.what());
      }
  fault_point("step.longest_rows");
  const int index = device.has_index() ? device.index() : 0;
  // The window's memory peak so far is the steps': its log line reports that, and the try's
  // peak is the try's own.
  const auto peak_mb = [&]() -> std::optional<double> {
    if (device.is_cuda()) {
      if (const auto mem = cuda_memory(index)) return mem->peak_allocated_mb;
    } else if (counting_cpu_tensor_memory()) {
      return static_cast<double>(cpu_tensor_memory().peak_bytes) / (1024.0 * 1024.0);
    }
    return std::nullopt;
  };
  const auto reset_peak = [&] { device.is_cuda() ? reset_cuda_peak(index) : reset_cpu_tensor_peak(); };
  const std::optional<double> steps_peak = peak_mb();
  reset_peak();

  // What a micro-batch touches besides the memory it needs, kept aside and put back after.
  const auto generators = rng_tensors();
  std::optional<GanpoRegularizer::PhaseState> critics;
  if (regularizer) critics = regularizer->set_aside();
  auto sums = std::move(window_sums);
  window_sums.clear();
  auto checks = std::move(pending_checks);
  pending_checks.clear();
  const bool defer = std::exchange(defer_checks, true);  // a non-finite loss here is the next steps' to find
  const auto counts = std::make_tuple(window_micro, window_tokens, window_flops, tokens_seen);

  const std::string context = "after step " + std::to_string(step) +
                              ", a micro-batch of the longest training rows (tried so that memory they would run "
                              "out of shows now): ";
  for (const auto& idx : tries) {
    // The gradients a micro-batch of a step meets: none at its start, the step's so far in a
    // later one (where it accumulates; the first step's are still there, zeroed here).
    if (config.train.gradient_accumulation_steps > 1) {
      torch::NoGradGuard guard;
      for (auto& p : trainable)
        if (p.grad().defined()) p.mutable_grad().zero_();
    } else {
      optimizer->zero_grad();
    }
    try {
      const Doing doing(*this, kTryingLongestRows);  // (kept where memory runs out: the failure says where)
      Bf16Autocast autocast(bf16_autocast());
      // (not the last micro-batch: no gradient all-reduce, no critic step)
      const torch::Tensor tokens = tokens_per_micro_batch({idx});
      if (preference)
        preference_micro_step(idx, 1.0, false, tokens);
      else
        sft_micro_step(idx, 1.0, tokens);
    } catch (const RelaunchRequested&) {
      throw;
    } catch (const RankWentAway& e) {
      throw RankWentAway(context + e.what(), e.memory_suspect());
    } catch (const Error& e) {
      throw Error(context + e.what());
    } catch (const c10::Error& e) {
      if (is_out_of_memory(e)) throw;
      throw Error(context + "LibTorch error: " + e.what_without_backtrace());
    }
  }
  if (device.is_cuda()) torch::cuda::synchronize(device.has_index() ? device.index() : -1);
  const std::optional<double> try_peak = peak_mb();
  reset_peak();
  window_peak_floor_mb = steps_peak.value_or(0.0);

  optimizer->zero_grad();
  if (regularizer) regularizer->put_back(std::move(*critics));
  set_rng_tensors(std::map<std::string, torch::Tensor>(generators.begin(), generators.end()));
  window_sums = std::move(sums);
  pending_checks = std::move(checks);
  defer_checks = defer;
  std::tie(window_micro, window_tokens, window_flops, tokens_seen) = counts;

  std::string peak;
  if (try_peak)
    peak = std::string(" (") + (device.is_cuda() ? "the GPU's" : "CPU") + " tensors peaked at " +
           format_gib(*try_peak * 1024 * 1024) +
           (device.is_cuda() && gpu_memory_bytes > 0 ? " of " + format_gib(static_cast<double>(gpu_memory_bytes)) : "") +
           "; step " + std::to_string(step) + ": " + format_gib(steps_peak.value_or(0.0) * 1024 * 1024) + ")";
  log("info", "memory: the longest training rows ahead fit" + peak + ", so a batch of them should too when they come up");
  // (A rank that goes away from here on was not trying them: RankWentAway.)
  if (dp) dp->note_progress(3 * step + 2, "tried its longest training rows ahead after step " + std::to_string(step));
}

void Trainer::State::flush_metrics() {
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

void Trainer::State::add_rank_throughput(std::map<std::string, double>& m) {
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

void Trainer::State::add_gpu_metrics(std::map<std::string, double>& m) {
  const int index = device.has_index() ? device.index() : 0;
  if (const auto gpu = read_gpu(index)) {
    m["gpu/utilization_pct"] = gpu->utilization_percent;
    m["memory/gpu_used_mb"] = gpu->memory_used_mb;
  }
  if (const auto mem = cuda_memory(index)) {
    m["memory/cuda_allocated_mb"] = mem->allocated_mb;
    m["memory/cuda_reserved_mb"] = mem->reserved_mb;
    m["memory/cuda_peak_mb"] = std::max(mem->peak_allocated_mb, window_peak_floor_mb);
    reset_cuda_peak(index);
    window_peak_floor_mb = 0;
  }
}

void Trainer::State::add_cpu_tensor_metrics(std::map<std::string, double>& m) {
  constexpr double mb = 1024.0 * 1024.0;
  const CpuTensorMemory mem = cpu_tensor_memory();
  m["memory/cpu_tensor_allocated_mb"] = static_cast<double>(mem.allocated_bytes) / mb;
  m["memory/cpu_tensor_peak_mb"] = std::max(static_cast<double>(mem.peak_bytes) / mb, window_peak_floor_mb);
  reset_cpu_tensor_peak();
  window_peak_floor_mb = 0;
}

}  // namespace ganpo
