#include "core/eval/evaluation.h"

#include <cstdio>
#include <exception>
#include <optional>
#include <sstream>

#include "core/generate.h"
#include "core/error.h"
#include "core/fault_points.h"
#include "core/train/opo_losses.h"
#include "core/sequence_scoring.h"

namespace ganpo {
namespace {

torch::Device device_of(CausalLM& m) { return m->parameters().front().device(); }

}  // namespace

std::map<std::string, double> preference_eval(CausalLM& policy, CausalLM& reference,
                                              const std::vector<TokenizedPair>& pairs,
                                              const ObjectiveConfig& objective, int64_t pad_id,
                                              int64_t batch_size, bool share_prompts, ParallelLanes* lanes,
                                              const PairLogps* reference_logps) {
  torch::NoGradGuard guard;
  if (policy.get() == reference.get()) lanes = nullptr;  // one module cannot run on two threads
  policy->eval();
  reference->eval();
  const auto device = device_of(policy);
  const double beta = effective_beta(objective);
  // Sums stay on the device; one copy to the host at the end instead of a sync per batch.
  auto sums = torch::zeros({6}, torch::TensorOptions().dtype(torch::kFloat64).device(device));
  int64_t n = 0;
  for (size_t start = 0; start < pairs.size(); start += static_cast<size_t>(batch_size)) {
    fault_point("evaluation.batch");
    std::vector<const TokenizedPair*> chunk;
    std::vector<int64_t> rows;
    for (size_t i = start; i < std::min(pairs.size(), start + static_cast<size_t>(batch_size)); ++i) {
      chunk.push_back(&pairs[i]);
      rows.push_back(static_cast<int64_t>(i));
    }
    const auto B = static_cast<int64_t>(chunk.size());
    // Collated once for both models; each takes the shared layout where it can (its own positions).
    const auto plain = collate_pairs(chunk, pad_id, device).sequences;
    const auto shared = share_prompts ? std::optional(collate_shared_prompts(chunk, pad_id, device)) : std::nullopt;
    const SharedPromptBatch* sp = shared ? &*shared : nullptr;
    ResponseLogps pol, ref;
    if (reference_logps) {
      pol = score_pair_logps(policy, plain, sp);
      ref.sum = reference_logps->rows(rows);
    } else {
      run_lanes(
          lanes, [&] { pol = score_pair_logps(policy, plain, sp); },
          [&] {
            torch::NoGradGuard lane_guard;  // grad mode is per thread
            ref = score_pair_logps(reference, plain, sp);
          });
    }
    OpoInputs in{pol.sum.slice(0, 0, B), pol.sum.slice(0, B), ref.sum.slice(0, 0, B),
                 ref.sum.slice(0, B), pol.count.slice(0, 0, B), pol.count.slice(0, B)};
    auto terms = opo_loss(objective.loss_type, beta, objective.simpo_gamma, in);
    sums += torch::stack({terms.loss * static_cast<double>(B), terms.chosen_rewards.sum(),
                          terms.rejected_rewards.sum(),
                          (terms.chosen_rewards > terms.rejected_rewards).to(torch::kFloat32).sum(),
                          in.policy_chosen.sum(), in.policy_rejected.sum()})
                .to(torch::kFloat64);
    n += B;
  }
  if (n == 0) return {};
  auto host = (sums / static_cast<double>(n)).cpu();
  auto v = host.accessor<double, 1>();
  return {{"eval_loss", v[0]},
          {"eval_rewards/chosen", v[1]},
          {"eval_rewards/rejected", v[2]},
          {"eval_rewards/margins", v[1] - v[2]},
          {"eval_rewards/accuracies", v[3]},
          {"eval_logps/chosen", v[4]},
          {"eval_logps/rejected", v[5]},
          {"eval_pairs", static_cast<double>(n)}};
}

std::map<std::string, double> sft_eval(CausalLM& model, const std::vector<TokenizedSft>& rows,
                                       int64_t pad_id, int64_t batch_size) {
  torch::NoGradGuard guard;
  model->eval();
  const auto device = device_of(model);
  double nll = 0, tokens = 0;
  for (size_t start = 0; start < rows.size(); start += static_cast<size_t>(batch_size)) {
    fault_point("evaluation.batch");
    std::vector<const TokenizedSft*> chunk;
    for (size_t i = start; i < std::min(rows.size(), start + static_cast<size_t>(batch_size)); ++i)
      chunk.push_back(&rows[i]);
    auto b = collate_sft(chunk, pad_id, device);
    auto lp = score_sequences(model, b).logps;
    nll -= lp.sum.sum().item<double>();
    tokens += lp.count.sum().item<double>();
  }
  return {{"eval_loss", tokens > 0 ? nll / tokens : 0.0}, {"eval_tokens", tokens}};
}

JudgeFunction task_judge(const Task& task) {
  return [&task](const std::vector<JudgeRow>& rows) {
    std::vector<double> scores;
    scores.reserve(rows.size());
    for (const auto& r : rows) scores.push_back(task.judge(r.prompt, r.completion).value_or(0.0));
    return scores;
  };
}

namespace {

// One model's completions of every prompt at one temperature.
struct Completions {
  std::vector<std::string> text;
  std::vector<int64_t> length;  // tokens, EOS excluded
};

// Data parallelism (JudgeEvalOptions::world > 1): job j samples temperature j / 2 with the policy
// (j even) or the reference (j odd) on rank j % world, in rounds of `world` jobs with `stop`
// asked before each; after each round's gather every rank holds that round's completions. A rank
// whose job fails (out of memory, say) still takes part in the gather, with its reason in place
// of its completions (one text: theirs are pairs), so that no rank waits on it: it throws its
// own error and the others one that names it.
void sample_jobs_across_ranks(const JudgeEvalOptions& o, size_t temps, std::vector<Completions>& pol,
                              std::vector<Completions>& ref, const std::function<void(size_t)>& stop_after,
                              const std::function<Completions(size_t, bool)>& sample) {
  GANPO_ASSERT(o.gather_texts, "a data-parallel judge evaluation needs gather_texts");
  const size_t jobs = 2 * temps, world = static_cast<size_t>(o.world);
  for (size_t first = 0; first < jobs; first += world) {
    stop_after(first / 2);  // temperatures whose two jobs are done
    const size_t mine = first + static_cast<size_t>(o.rank);
    std::vector<std::string> packed;  // the texts, then their lengths; or why the job failed
    std::exception_ptr failed;
    if (mine < jobs) {
      try {
        Completions c = sample(mine / 2, mine % 2 == 0);
        packed = std::move(c.text);
        for (int64_t n : c.length) packed.push_back(std::to_string(n));
      } catch (const c10::Error& e) {
        failed = std::current_exception();
        packed = {e.what_without_backtrace()};
      } catch (const std::exception& e) {
        failed = std::current_exception();
        packed = {e.what()};
      }
    }
    const auto per_rank = o.gather_texts(packed);
    if (failed) std::rethrow_exception(failed);
    for (size_t r = 0; r < per_rank.size(); ++r)
      if (per_rank[r].size() % 2 == 1)
        throw Error("rank " + std::to_string(r) + " could not sample its part of the judge evaluation: " + per_rank[r][0]);
    for (size_t r = 0; r < per_rank.size() && first + r < jobs; ++r) {
      const size_t job = first + r;
      const auto& p = per_rank[r];
      const auto n = static_cast<std::ptrdiff_t>(p.size() / 2);
      Completions c;
      c.text.assign(p.begin(), p.begin() + n);
      for (auto it = p.begin() + n; it != p.end(); ++it) c.length.push_back(std::stoll(*it));
      (job % 2 == 0 ? pol : ref)[job / 2] = std::move(c);
    }
  }
}

}  // namespace

JudgeEvaluation judge_eval(CausalLM& policy, CausalLM& reference, const Tokenizer& tok,
                           const std::vector<EvalPrompt>& prompts, const JudgeFunction& judge,
                           const JudgeEvalOptions& options, const std::string& task, const std::string& judge_name,
                           ParallelLanes* lanes) {
  torch::NoGradGuard guard;
  if (policy.get() == reference.get()) lanes = nullptr;  // one module cannot run on two threads
  policy->eval();
  reference->eval();
  JudgeEvaluation out;
  out.task = task;
  out.judge = judge_name;
  out.max_new_tokens = options.max_new_tokens;
  out.seed = options.seed;
  out.top_p = options.top_p;
  out.top_k = options.top_k;
  std::vector<std::string> texts;
  std::vector<std::vector<int64_t>> encoded;
  for (const auto& p : prompts) {
    texts.push_back(p.prompt);
    out.buckets.push_back(p.bucket);
    encoded.push_back(encode_prompt(tok, p.prompt));
  }
  out.prompts_digest = digest_of_prompts(texts);

  auto sample_all = [&](CausalLM& model, double temperature, uint64_t seed) {
    Completions c;
    const auto bs = static_cast<size_t>(std::max<int64_t>(1, options.batch_size));
    for (size_t start = 0; start < encoded.size(); start += bs) {
      std::vector<std::vector<int64_t>> chunk(encoded.begin() + static_cast<std::ptrdiff_t>(start),
                                              encoded.begin() + static_cast<std::ptrdiff_t>(std::min(encoded.size(), start + bs)));
      fault_point("judge.batch");
      SamplingOptions so{temperature, options.top_p, options.top_k, options.max_new_tokens, seed};
      for (size_t k = start; k < start + chunk.size(); ++k) so.prompt_numbers.push_back(static_cast<int64_t>(k));
      so.bf16_autocast = options.bf16_autocast;
      so.cache_casts = options.cache_casts;
      const auto outputs = generate(model, chunk, so, tok.eos_id(), tok.pad_id());
      for (size_t i = 0; i < outputs.size(); ++i) {
        c.length.push_back(static_cast<int64_t>(outputs[i].size()));
        c.text.push_back(continuation_text(tok, chunk[i], outputs[i]));
      }
    }
    return c;
  };

  // Every temperature's completions of both models, then one judge call per temperature (an
  // external judge starts once for policy and reference).
  const size_t temps = options.temperatures.size();
  std::vector<Completions> pol(temps), ref(temps);
  auto stop_after = [&](size_t done) {
    if (options.stop && options.stop())
      throw Error("stopped on request after " + std::to_string(done) + " of " + std::to_string(temps) + " temperatures");
  };
  if (options.world <= 1) {
    for (size_t i = 0; i < temps; ++i) {
      stop_after(i);
      const double t = options.temperatures[i];
      run_lanes(
          lanes, [&] { pol[i] = sample_all(policy, t, options.seed); },
          [&] { ref[i] = sample_all(reference, t, options.seed + 1000003); });
    }
  } else {
    sample_jobs_across_ranks(options, temps, pol, ref, stop_after, [&](size_t i, bool policy_job) {
      const double t = options.temperatures[i];
      return policy_job ? sample_all(policy, t, options.seed) : sample_all(reference, t, options.seed + 1000003);
    });
    if (options.rank != 0) return out;
  }
  for (size_t i = 0; i < temps; ++i) {
    std::vector<JudgeRow> rows;
    for (size_t k = 0; k < prompts.size(); ++k) rows.push_back({prompts[k].for_judge(), pol[i].text[k]});
    for (size_t k = 0; k < prompts.size(); ++k) rows.push_back({prompts[k].for_judge(), ref[i].text[k]});
    const std::vector<double> scores = rows.empty() ? std::vector<double>{} : judge(rows);
    if (scores.size() != rows.size())
      throw Error("the judge returned " + std::to_string(scores.size()) + " scores for " + std::to_string(rows.size()) +
                  " completions");
    JudgeSamples s;
    s.temperature = options.temperatures[i];
    s.policy_score.assign(scores.begin(), scores.begin() + static_cast<std::ptrdiff_t>(prompts.size()));
    s.reference_score.assign(scores.begin() + static_cast<std::ptrdiff_t>(prompts.size()), scores.end());
    s.policy_length = std::move(pol[i].length);
    s.reference_length = std::move(ref[i].length);
    out.samples.push_back(std::move(s));
  }
  out.summarize();
  return out;
}

std::string format_judge_table(const JudgeEvaluation& evaluation) {
  std::ostringstream os;
  char line[200];
  std::snprintf(line, sizeof line, "%-6s %-7s %7s %13s %16s %9s %11s %14s\n", "temp", "bucket", "prompts",
                "policy_judge", "reference_judge", "win_rate", "policy_len", "reference_len");
  os << line;
  for (const auto& r : evaluation.rows) {
    std::snprintf(line, sizeof line, "%-6.2f %-7s %7lld %13.3f %16.3f %9.3f %11.1f %14.1f\n", r.temperature,
                  r.bucket.c_str(), static_cast<long long>(r.prompts), r.policy_score, r.reference_score, r.win_rate,
                  r.policy_length, r.reference_length);
    os << line;
  }
  return os.str();
}

}  // namespace ganpo
