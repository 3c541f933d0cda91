// Trainer::State, evaluation: held-out pairs, live samples and their judge scores, and the
// stage's final report.

#include "core/train/trainer_state.h"

namespace ganpo {

void Trainer::State::evaluate(bool report) {
  verify_finite();
  std::optional<FailedRanks> failed;
  {
    const Doing doing(*this, kEvaluating);
    const int64_t bs = eval_batch_size(config.train);
    const Bf16Autocast autocast(bf16_autocast());  // held-out numbers at the training's precision (TRL's too)
    try {
      if (preference && dp)
        last_eval = sharded_preference_eval(bs);
      else if (preference)
        last_eval = preference_eval(policy, reference, eval_pairs, config.objective, tokenizer->pad_id(), bs,
                                    config.train.prefix_sharing, lanes(), eval_ref_logps.empty() ? nullptr : &eval_ref_logps);
      else if (!eval_sft.empty() && dp)
        last_eval = sharded_sft_eval(bs);
      else if (!eval_sft.empty())
        last_eval = sft_eval(policy, eval_sft, tokenizer->pad_id(), bs);
    } catch (FailedRanks& f) {
      failed = std::move(f);
    }
  }
  policy->train();
  if (failed) settle_failed_ranks(*failed, kEvaluating);  // (outside autocast: a checkpoint's merged weights in float32)
  last_eval_step = step;
  if (report && !last_eval.empty()) observer.on_eval(step, EvalReport::of(last_eval));
}

std::map<std::string, double> Trainer::State::sharded_preference_eval(int64_t bs) {
  static const char* const kMeans[] = {"eval_loss", "eval_rewards/chosen", "eval_rewards/rejected",
                                       "eval_rewards/accuracies", "eval_logps/chosen", "eval_logps/rejected"};
  // [kMeans..., pairs]: this rank's sums
  const std::vector<double> v = sum_shards(
      [&] {
        std::vector<TokenizedPair> mine;
        std::vector<int64_t> rows;
        for (size_t i = static_cast<size_t>(dp->rank()); i < eval_pairs.size(); i += static_cast<size_t>(world())) {
          mine.push_back(eval_pairs[i]);
          rows.push_back(static_cast<int64_t>(i));
        }
        const PairLogps ref = eval_ref_logps.empty() || rows.empty() ? PairLogps{} : eval_ref_logps.select(rows);
        const auto part = preference_eval(policy, reference, mine, config.objective, tokenizer->pad_id(), bs,
                                          config.train.prefix_sharing, lanes(), ref.empty() ? nullptr : &ref);
        const double n = part.empty() ? 0.0 : part.at("eval_pairs");
        std::vector<double> sums;
        for (const char* k : kMeans) sums.push_back(part.empty() ? 0.0 : part.at(k) * n);
        sums.push_back(n);
        return sums;
      },
      std::size(kMeans) + 1);
  const double total = v.back();
  if (total == 0) return {};
  std::map<std::string, double> out;
  for (size_t i = 0; i < std::size(kMeans); ++i) out[kMeans[i]] = v[i] / total;
  out["eval_rewards/margins"] = out["eval_rewards/chosen"] - out["eval_rewards/rejected"];
  out["eval_pairs"] = total;
  return out;
}

std::map<std::string, double> Trainer::State::sharded_sft_eval(int64_t bs) {
  // [loss x tokens, tokens]: this rank's sums
  const std::vector<double> v = sum_shards(
      [&] {
        std::vector<TokenizedSft> mine;
        for (size_t i = static_cast<size_t>(dp->rank()); i < eval_sft.size(); i += static_cast<size_t>(world()))
          mine.push_back(eval_sft[i]);
        const auto part = mine.empty() ? std::map<std::string, double>{} : sft_eval(policy, mine, tokenizer->pad_id(), bs);
        const double tokens = part.empty() ? 0.0 : part.at("eval_tokens");
        return std::vector<double>{part.empty() ? 0.0 : part.at("eval_loss") * tokens, tokens};
      },
      2);
  return {{"eval_loss", v[1] > 0 ? v[0] / v[1] : 0.0}, {"eval_tokens", v[1]}};
}

int Trainer::State::run_my_part(const std::function<void()>& part, FailedRanks& failed) {
  int how = 0;
  try {
    part();
  } catch (const c10::Error& e) {
    how = is_out_of_memory(e) ? 1 : 2;
    failed.mine = std::current_exception();
  } catch (const std::bad_alloc&) {
    how = 1;
    failed.mine = std::current_exception();
  } catch (const std::exception&) {
    how = 2;
    failed.mine = std::current_exception();
  }
  if (how == 1 && device.is_cuda()) release_cached_cuda_memory();  // (what follows needs some)
  return how;
}

std::vector<double> Trainer::State::sum_shards(const std::function<std::vector<double>()>& score, size_t values) {
  // [values..., how rank r failed: 0 not, 1 out of memory, 2 another error]
  std::vector<double> sums(values + static_cast<size_t>(world()), 0.0);
  FailedRanks failed;
  sums[values + static_cast<size_t>(dp->rank())] = run_my_part(
      [&] {
        const std::vector<double> mine = score();
        std::copy(mine.begin(), mine.end(), sums.begin());
      },
      failed);
  auto all = torch::tensor(sums, torch::TensorOptions().dtype(torch::kFloat64));
  dp->all_reduce_sum_(all);
  const auto v = all.accessor<double, 1>();
  for (int r = 0; r < world(); ++r) failed.note(r, static_cast<int>(v[static_cast<int64_t>(values) + r]));
  if (failed.any()) throw failed;
  std::vector<double> out(values);
  for (size_t i = 0; i < values; ++i) out[i] = v[static_cast<int64_t>(i)];
  return out;
}

void Trainer::State::settle_failed_ranks(const FailedRanks& failed, const Activity& where) {
  const Doing doing(*this, where);  // (kept where this ends in an error: the failure says where)
  const bool evaluating = where.use == MemoryUse::evaluation;
  // Every rank is here, between two steps: this step is saved first, its checkpoint saying what
  // of it is to come, and every rank waits for rank 0's write to end.
  std::string save_failure;
  if (step > 0 && last_checkpoint_step != step && !options.benchmark) {
    double failed_here = 0.0;
    const std::string checkpoint_before = last_checkpoint;
    const int64_t checkpoint_step_before = last_checkpoint_step;
    mark_step_pending();
    try {
      flush_metrics();
      save_checkpoint("checkpoint-" + std::to_string(step), true);
    } catch (const RelaunchRequested&) {
      throw;
    } catch (const std::exception& e) {
      save_failure = e.what();
      failed_here = 1.0;
      activity = where;  // (the save's own activity, which an error keeps)
    }
    evaluation_pending = samples_pending = -1;
    auto any = torch::tensor({failed_here}, torch::TensorOptions().dtype(torch::kFloat64));
    dp->all_reduce_sum_(any);
    if (any.item<double>() > 0) {
      if (save_failure.empty()) save_failure = "another rank could not take part";
      // (Ranks other than 0 took it as saved before rank 0 wrote it: nothing to resume from.)
      last_checkpoint = checkpoint_before;
      last_checkpoint_step = checkpoint_step_before;
    }
  }
  if (failed.mine) std::rethrow_exception(failed.mine);  // (out_of_memory() says it)

  auto ranks = [](const std::vector<int>& r) {
    std::string text = r.size() == 1 ? "rank " : "ranks ";
    for (size_t i = 0; i < r.size(); ++i) text += (i == 0 ? "" : i + 1 == r.size() ? " and " : ", ") + std::to_string(r[i]);
    return text;
  };
  const bool memory = failed.other.empty();
  const std::string after = step > 0 ? " after step " + std::to_string(step) : std::string();
  const std::string what = memory ? ranks(failed.out_of_memory) + " ran out of memory while " + where.what + after +
                                        " (" + (failed.out_of_memory.size() == 1 ? "its" : "their") + " own log says how far)"
                                  : ranks(failed.other) + " failed while " + where.what + after + " (" +
                                        (failed.other.size() == 1 ? "its" : "their") + " own log says why)";
  const std::string from = resume_point();
  // The rank that ran out asks its launcher to start every rank again where it can (as
  // out_of_memory() decides it): this one ends with it.
  const bool asks = memory && evaluating && config.train.auto_find_batch_size && !options.benchmark &&
                    !options.distributed->relaunch_dir.empty() && with_smaller_evaluation_batch(config);
  if (asks)
    throw RelaunchRequested(what + "; train.auto_find_batch_size: the rank that ran out asks the launcher to start the " +
                            std::to_string(world()) + " processes again with " +
                            with_smaller_evaluation_batch(config)->change + ", from " +
                            (from.empty() ? std::string("the start") : from));
  throw Error(what + (save_failure.empty() ? "" : " (saving step " + std::to_string(step) + " failed: " + save_failure + ")") +
              (memory ? ". To need less memory, " + ways_to_use_less_memory(on_device_config(), vocab_size(), where.use)
                      : std::string(". Mend that")) +
              (from.empty() ? std::string("; then start the run again")
                            : "; then resume from " + from +
                                  (last_checkpoint_step == step
                                       ? ", where step " + std::to_string(step) + " is saved (nothing trained is lost)"
                                       : std::string(", the newest checkpoint"))) +
              ".");
}

EvalReport Trainer::State::final_report() {
  EvalReport report = EvalReport::of(last_eval);
  const auto& e = config.eval;
  if (!preference || !e.judge_at_end || !judge || judge_prompts.empty()) return report;
  JudgeEvalOptions options;
  options.temperatures = parse_temperatures(e.temperatures);
  options.max_new_tokens = e.max_new_tokens > 0 ? e.max_new_tokens : config.sampling.max_new_tokens;
  options.top_p = config.sampling.top_p;
  options.top_k = config.sampling.top_k;
  options.seed = static_cast<uint64_t>(e.seed);
  options.bf16_autocast = bf16_autocast();
  options.cache_casts = !config.train.gradient_checkpointing;
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
    const Doing doing(*this, kJudging);
    auto evaluation = judge_eval(policy, reference, *tokenizer, judge_prompts, judge, options, source, judge_name, lanes());
    policy->train();
    if (!is_main()) return report;  // it sampled its share; rank 0 judges and reports
    report.judge = std::move(evaluation);
    for (const auto& r : report.judge->rows)
      if (r.bucket == "all")
        log("info", "judge at temperature " + format_number(r.temperature) + ": win rate " + format_number(r.win_rate) +
                        ", policy " + format_number(r.policy_score) + ", reference " + format_number(r.reference_score));
  } catch (const c10::Error& err) {
    activity = kTraining;  // (the judge's Doing kept its activity as the error left it)
    report.judge_error = is_out_of_memory(err) ? "out of memory; to need less, " + judge_memory_advice() + ". LibTorch: "
                                               : "LibTorch error: ";
    report.judge_error += err.what_without_backtrace();
  } catch (const std::exception& err) {
    report.judge_error = err.what();
  }
  if (!report.judge_error.empty())
    log("error", "judge evaluation failed, the run's weights and held-out numbers are kept: " + report.judge_error);
  policy->train();
  return report;
}

std::vector<std::string> Trainer::State::sample_texts(CausalLM& model) {
  std::vector<std::vector<int64_t>> prompts;
  SamplingOptions so{config.sampling.temperature, config.sampling.top_p, config.sampling.top_k,
                     config.sampling.max_new_tokens, static_cast<uint64_t>(config.seed)};
  for (size_t i = 0; i < sample_prompts.size(); ++i)
    if (my_sample_prompt(i)) {
      prompts.push_back(encode_prompt(*tokenizer, sample_prompts[i]));
      so.prompt_numbers.push_back(static_cast<int64_t>(i));  // (the same text on any number of ranks)
    }
  if (prompts.empty()) return {};
  so.bf16_autocast = bf16_autocast();  // at the training's precision, as the held-out numbers
  so.cache_casts = !config.train.gradient_checkpointing;
  fault_point("samples.batch");
  std::vector<std::string> out;
  const auto outputs = generate(model, prompts, so, tokenizer->eos_id(), tokenizer->pad_id());
  for (size_t i = 0; i < outputs.size(); ++i) out.push_back(continuation_text(*tokenizer, prompts[i], outputs[i]));
  return out;
}

std::vector<std::string> Trainer::State::in_prompt_order(const std::vector<std::vector<std::string>>& per_rank) const {
  std::vector<std::string> out(sample_prompts.size());
  std::vector<size_t> next(per_rank.size(), 0);
  for (size_t i = 0; i < out.size(); ++i) {
    const size_t r = i % per_rank.size();
    if (next[r] < per_rank[r].size()) out[i] = per_rank[r][next[r]++];
  }
  return out;
}

void Trainer::State::samples(bool on_schedule) {
  verify_finite();
  if (sample_prompts.empty()) return;
  // Taken at this step already (Sample now right after the schedule's, or twice while paused):
  // the same weights and seeds give the same texts, and a second set listed every prompt twice.
  if (step == last_sampled_step) {
    if (!on_schedule) log("info", "the samples of step " + std::to_string(step) + " are taken already");
    return;
  }
  last_sampled_step = step;
  sampling_on_schedule = on_schedule;
  std::optional<Doing> doing(std::in_place, *this, kSampling);
  CausalLM& ref_model = preference ? reference : policy;
  std::vector<std::string> policy_texts, reference_texts;
  const bool need_reference = reference_samples.empty();
  auto sample = [&] {
    if (preference && need_reference)
      run_lanes(
          lanes(), [&] { policy_texts = sample_texts(policy); }, [&] { reference_texts = sample_texts(ref_model); });
    else {
      if (need_reference) reference_texts = sample_texts(ref_model);
      policy_texts = sample_texts(policy);
    }
  };
  if (!dp) {
    sample();
    policy->train();
  } else {
    // Each rank samples its share; one gather of [how it went, its policy texts..., its
    // reference texts...] gives every rank the others' texts, or that one failed (out of
    // memory, say), so none waits on a rank that left.
    FailedRanks failed;
    const int how = run_my_part(sample, failed);
    policy->train();
    std::vector<std::string> packed{std::to_string(how)};
    if (!failed.mine) {
      packed.insert(packed.end(), policy_texts.begin(), policy_texts.end());
      packed.insert(packed.end(), reference_texts.begin(), reference_texts.end());
    }
    const auto per_rank = dp->all_gather_texts(packed);
    std::vector<std::vector<std::string>> policy_of(per_rank.size()), reference_of(per_rank.size());
    for (size_t r = 0; r < per_rank.size(); ++r) {
      const std::string first = per_rank[r].empty() ? "" : per_rank[r][0];
      const int rank_how = first == "0" ? 0 : first == "1" ? 1 : 2;
      failed.note(static_cast<int>(r), rank_how);
      if (rank_how != 0) continue;
      const auto texts = per_rank[r].begin() + 1;
      const auto n = static_cast<std::ptrdiff_t>((per_rank[r].size() - 1) / (need_reference ? 2 : 1));
      policy_of[r].assign(texts, texts + n);
      reference_of[r].assign(texts + n, per_rank[r].end());
    }
    if (failed.any()) {
      doing.reset();  // (settle_failed_ranks has its own)
      settle_failed_ranks(failed, kSampling);
    }
    policy_texts = in_prompt_order(policy_of);
    if (need_reference) reference_texts = in_prompt_order(reference_of);
  }
  if (need_reference) reference_samples = reference_texts;
  if (!is_main()) return;
  std::vector<SampleRecord> records;
  for (size_t i = 0; i < sample_prompts.size(); ++i) {
    // Scores stay kNoJudgeScore (NaN) unless score_samples fills them; -1 is an external judge's score.
    records.push_back({static_cast<int64_t>(i), sample_prompts[i], policy_texts[i], reference_samples[i]});
  }
  score_samples(records);
  observer.on_samples(step, records);
}

void Trainer::State::score_samples(std::vector<SampleRecord>& records) {
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

}  // namespace ganpo
