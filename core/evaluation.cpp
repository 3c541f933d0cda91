#include "core/evaluation.h"

#include <cstdio>
#include <sstream>

#include "core/generate.h"
#include "core/lists_task.h"
#include "core/opo_losses.h"
#include "core/sequence_scoring.h"

namespace ganpo {
namespace {

torch::Device device_of(CausalLM& m) { return m->parameters().front().device(); }

}  // namespace

std::map<std::string, double> preference_eval(CausalLM& policy, CausalLM& reference,
                                              const std::vector<TokenizedPair>& pairs,
                                              const ObjectiveConfig& objective, int64_t pad_id,
                                              int64_t batch_size, ParallelLanes* lanes) {
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
    std::vector<const TokenizedPair*> chunk;
    for (size_t i = start; i < std::min(pairs.size(), start + static_cast<size_t>(batch_size)); ++i)
      chunk.push_back(&pairs[i]);
    auto batch = collate_pairs(chunk, pad_id, device);
    const auto& s = batch.sequences;
    const int64_t B = batch.pairs;
    ResponseLogps pol, ref;
    run_lanes(
        lanes, [&] { pol = score_sequences(policy, s).logps; },
        [&] {
          torch::NoGradGuard lane_guard;  // grad mode is per thread
          ref = score_sequences(reference, s).logps;
        });
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
    std::vector<const TokenizedSft*> chunk;
    for (size_t i = start; i < std::min(rows.size(), start + static_cast<size_t>(batch_size)); ++i)
      chunk.push_back(&rows[i]);
    auto b = collate_sft(chunk, pad_id, device);
    auto lp = score_sequences(model, b).logps;
    nll -= lp.sum.sum().item<double>();
    tokens += lp.count.sum().item<double>();
  }
  return {{"eval_loss", tokens > 0 ? nll / tokens : 0.0}};
}

std::vector<WinRateRow> judge_eval(CausalLM& policy, CausalLM& reference, const Tokenizer& tok,
                                   const std::vector<std::string>& prompts_in,
                                   const JudgeEvalOptions& options, ParallelLanes* lanes) {
  if (policy.get() == reference.get()) lanes = nullptr;  // one module cannot run on two threads
  std::vector<std::string> prompts;
  std::vector<lists::ListSpec> specs;
  for (const auto& p : prompts_in)
    if (auto spec = lists::parse_prompt(p)) prompts.push_back(p), specs.push_back(*spec);
  std::vector<std::vector<int64_t>> encoded;
  for (const auto& p : prompts) encoded.push_back(encode_prompt(tok, p));

  auto sample_all = [&](CausalLM& model, double temperature, uint64_t seed) {
    std::vector<std::string> texts;
    for (size_t start = 0; start < encoded.size(); start += static_cast<size_t>(options.batch_size)) {
      std::vector<std::vector<int64_t>> chunk(
          encoded.begin() + static_cast<std::ptrdiff_t>(start),
          encoded.begin() + static_cast<std::ptrdiff_t>(std::min(encoded.size(), start + static_cast<size_t>(options.batch_size))));
      SamplingOptions so{temperature, options.top_p, 0, options.max_new_tokens, seed + start};
      for (auto& ids : generate(model, chunk, so, tok.eos_id(), tok.pad_id())) texts.push_back(tok.decode(ids));
    }
    return texts;
  };

  std::vector<WinRateRow> rows;
  const char* buckets[] = {"all", "short", "medium", "long"};
  for (double t : options.temperatures) {
    std::vector<std::string> pol, ref;
    run_lanes(
        lanes, [&] { pol = sample_all(policy, t, options.seed); },
        [&] { ref = sample_all(reference, t, options.seed + 1000003); });
    for (const char* bucket : buckets) {
      WinRateRow row{t, bucket, 0, 0, 0, 0};
      for (size_t i = 0; i < prompts.size(); ++i) {
        if (std::string(bucket) != "all" && bucket != std::string(lists::bucket_name(lists::bucket_of(specs[i]))))
          continue;
        const double ps = lists::judge(specs[i], pol[i]).score;
        const double rs = lists::judge(specs[i], ref[i]).score;
        row.prompts += 1;
        row.policy_score += ps;
        row.reference_score += rs;
        row.win_rate += ps > rs ? 1.0 : (ps == rs ? 0.5 : 0.0);
      }
      if (row.prompts > 0) {
        const double n = static_cast<double>(row.prompts);
        row.policy_score /= n, row.reference_score /= n, row.win_rate /= n;
      }
      rows.push_back(row);
    }
  }
  return rows;
}

std::string format_win_rate_table(const std::vector<WinRateRow>& rows) {
  std::ostringstream os;
  char line[160];
  std::snprintf(line, sizeof line, "%-6s %-7s %7s %13s %16s %9s\n", "temp", "bucket", "prompts",
                "policy_judge", "reference_judge", "win_rate");
  os << line;
  for (const auto& r : rows) {
    std::snprintf(line, sizeof line, "%-6.2f %-7s %7lld %13.3f %16.3f %9.3f\n", r.temperature,
                  r.bucket.c_str(), static_cast<long long>(r.prompts), r.policy_score,
                  r.reference_score, r.win_rate);
    os << line;
  }
  return os.str();
}

}  // namespace ganpo

namespace ganpo {

nlohmann::json win_rates_to_json(const std::vector<WinRateRow>& rows) {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& r : rows)
    out.push_back({{"temperature", r.temperature}, {"bucket", r.bucket}, {"prompts", r.prompts},
                   {"policy_score", r.policy_score}, {"reference_score", r.reference_score},
                   {"win_rate", r.win_rate}});
  return out;
}

}  // namespace ganpo
