#include "db/study_report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <optional>

#include "core/error.h"
#include "core/eval/eval_report.h"
#include "core/study_spec.h"
#include "db/study_queue.h"

namespace ganpo {
namespace {

// The median of a run's finite values of key (one per logging window); none when it has none.
std::optional<double> median_of_run(RunStore& store, int64_t run_id, const std::string& key) {
  std::vector<double> v;
  for (const SeriesPoint& p : store.series(run_id, key))
    if (std::isfinite(p.value)) v.push_back(p.value);
  if (v.empty()) return std::nullopt;
  std::sort(v.begin(), v.end());
  const size_t h = v.size() / 2;
  return v.size() % 2 ? v[h] : (v[h - 1] + v[h]) / 2;
}

// The value a run's stored config holds for "section.key", as the override text the grid uses.
std::string config_value(const nlohmann::json& config, const std::string& key) {
  // "model.lora.r" -> /model/lora/r (sections nest; keys never hold a dot)
  std::string pointer = "/" + key;
  std::replace(pointer.begin(), pointer.end(), '.', '/');
  const nlohmann::json::json_pointer at(pointer);
  if (!config.contains(at)) return "";
  const nlohmann::json& v = config.at(at);
  if (v.is_string()) return v.get<std::string>();
  if (v.is_boolean()) return v.get<bool>() ? "true" : "false";
  return v.dump();
}

bool values_equal(const std::string& a, const std::string& b) {
  if (a == b) return true;
  // 0 and 0.0, 0.2 and 0.20000000000000001
  const auto da = read_number(a), db = read_number(b);
  return da && db && *da == *db;
}

// A share (a preference accuracy, a judge's win rate) lies in [0, 1]; its t interval from few seeds
// can reach past that ("0.625 [-0.963, 2.213]" from two), and a difference of shares past [-1, 1].
// Cut to those bounds: the mean certainly lies within them, so the interval keeps its level, and
// whether it excludes 0 (or 0.5) does not change.
bool is_share(const std::string& key) {
  return key.find("accuracies") != std::string::npos || key.rfind("judge/win_rate", 0) == 0;
}

Interval within(Interval i, double low, double high) {
  i.low = std::clamp(i.low, low, high);
  i.high = std::clamp(i.high, low, high);
  return i;
}

struct ArmRuns {
  std::vector<std::string> values;  // per grid key
  ArmResult result;
  std::map<int64_t, std::map<std::string, double>> by_seed;  // seed -> eval metrics
  std::map<int64_t, JudgeEvaluation> judged_by_seed;         // seed -> its newest judge evaluation
};

}  // namespace

StudyReport study_report(RunStore& store, int64_t study_id) {
  const std::optional<StudyRow> study = find_study(store, study_id);
  if (!study) throw ConfigError("there is no study " + std::to_string(study_id));
  const StudySpec spec = study_from_toml(study->spec_toml, ".", "study " + std::to_string(study_id), false);
  StudyReport report;
  report.study_id = study_id;
  report.name = study->name;
  report.state = to_string(study->state);

  std::vector<ArmRuns> arms;
  const std::vector<int64_t> blocked = blocked_study_runs(store, study_id);  // sorted by id
  const std::vector<int64_t> ids = study_run_ids(store, study_id);
  double first_start = 0, last_finish = 0;
  for (int64_t id : ids)
    if (const auto run = store.run(id)) {
      ++report.runs;
      if (run->status == RunStatus::completed) ++report.completed;
      if (run->started_at && (first_start == 0 || *run->started_at < first_start)) first_start = *run->started_at;
      if (run->finished_at && *run->finished_at > last_finish) last_finish = *run->finished_at;
    }
  if (first_start > 0 && last_finish > first_start) report.wall_seconds = last_finish - first_start;
  for (size_t i = spec.stages.size(); i < ids.size(); ++i) {  // the shared stages come first
    const std::optional<RunRow> run = store.run(ids[i]);
    if (!run) continue;
    const nlohmann::json config = nlohmann::json::parse(run->config_json, nullptr, false);
    std::vector<std::string> values;  // as the grid spells them (0.2, not the stored 0.2000...)
    for (const auto& [key, grid_values] : spec.grid) {
      std::string v = config_value(config, key);
      for (const auto& g : grid_values)
        if (values_equal(g, v)) v = g;
      values.push_back(v);
    }
    auto it = std::find_if(arms.begin(), arms.end(), [&](const ArmRuns& a) {
      for (size_t k = 0; k < values.size(); ++k)
        if (!values_equal(a.values[k], values[k])) return false;
      return true;
    });
    if (it == arms.end()) {
      ArmRuns a;
      a.values = values;
      std::vector<std::string> parts;
      for (size_t k = 0; k < values.size(); ++k) {
        parts.push_back(spec.grid[k].first + "=" + values[k]);
        a.result.values.emplace_back(spec.grid[k].first, values[k]);
      }
      for (const auto& p : parts) a.result.arm += (a.result.arm.empty() ? "" : ", ") + p;
      if (a.result.arm.empty()) a.result.arm = "base";
      arms.push_back(std::move(a));
      it = arms.end() - 1;
    }
    if (run->status != RunStatus::completed) {
      ++it->result.unfinished;
      if (worker_attached(*run)) ++it->result.running;
      if (std::binary_search(blocked.begin(), blocked.end(), run->id)) ++it->result.blocked;
      // Ended: stopped, or failed with no attempt left (a failed run with one left is retried).
      if (run->status == RunStatus::stopped) ++it->result.failed;
      if (run->status == RunStatus::failed) {
        sql::Statement attempts(store.database(), "SELECT attempts FROM runs WHERE id = ?");
        attempts.bind(1, run->id);
        if (attempts.step() && attempts.col_int(0) >= kStudyMaxAttempts) ++it->result.failed;
      }
      continue;
    }
    const int64_t seed = config.is_object() && config.contains("seed") && config["seed"].is_number_integer()
                             ? config["seed"].get<int64_t>()
                             : 0;
    std::map<std::string, double>& metrics = it->by_seed[seed];
    // Held-out numbers: every numeric field of the run's newest evaluation, and the training
    // throughput the overhead is read from. Only the newest: a number its final evaluation lacks
    // (not finite: the run diverged) is missing for this seed, not an earlier checkpoint's value
    // (each number's interval says over how many seeds it is).
    std::vector<EvalRow> evals = store.evals(run->id);
    // The trainer's own evaluations only (stored without params): evaluations run later from the
    // Checkpoints tab may use other prompts, seeds or budgets, and would mix settings.
    evals.erase(std::remove_if(evals.begin(), evals.end(), [](const EvalRow& e) { return e.params_json != "{}"; }),
                evals.end());
    const auto newest = std::max_element(evals.begin(), evals.end(), [](const EvalRow& a, const EvalRow& b) {
      return a.checkpoint_step != b.checkpoint_step ? a.checkpoint_step < b.checkpoint_step : a.id < b.id;
    });
    if (newest != evals.end()) {
      const EvalReport evaluation = eval_report_from_text(newest->result_json);
      for (const auto& [key, value] : flatten(evaluation))
        if (std::isfinite(value)) metrics[key] = value;
      if (evaluation.judge && !evaluation.judge->samples.empty()) it->judged_by_seed[seed] = *evaluation.judge;
    }
    for (const MetricRow& m : store.latest_metrics(run->id))
      if (m.key.rfind("eval_", 0) == 0 && std::isfinite(m.value)) metrics[m.key] = m.value;
    // Throughput over the whole run: the median of its logging windows, so neither the first
    // (warm-up) window nor the last (often a few steps) stands for it.
    for (const char* key : {"step_time_s", "tokens_per_s"})
      if (const auto median = median_of_run(store, run->id, key)) metrics[key] = *median;
    it->result.completed_run_ids.push_back(run->id);
    it->result.seeds.push_back(seed);
  }

  for (ArmRuns& a : arms) {
    std::map<std::string, std::vector<double>> values;
    for (const auto& [seed, metrics] : a.by_seed)
      for (const auto& [key, v] : metrics) values[key].push_back(v);
    for (const auto& [key, v] : values)
      a.result.metrics[key] = is_share(key) ? within(mean_interval(v), 0, 1) : mean_interval(v);
  }

  // GANPO on against the arm that differs only in ganpo.enabled, paired by seed.
  const auto ganpo_key = std::find_if(spec.grid.begin(), spec.grid.end(),
                                      [](const auto& g) { return g.first == "ganpo.enabled"; });
  if (ganpo_key != spec.grid.end()) {
    const size_t g = static_cast<size_t>(ganpo_key - spec.grid.begin());
    for (const ArmRuns& on : arms) {
      if (on.values[g] != "true") continue;
      for (const ArmRuns& off : arms) {
        if (off.values[g] != "false") continue;
        bool matched = true;
        for (size_t k = 0; k < on.values.size(); ++k)
          if (k != g && !values_equal(on.values[k], off.values[k])) matched = false;
        if (!matched) continue;
        PairedResult p;
        p.arm = on.result.arm;
        p.baseline = off.result.arm;
        std::map<std::string, std::pair<std::vector<double>, std::vector<double>>> pairs;
        for (const auto& [seed, metrics] : on.by_seed) {
          auto other = off.by_seed.find(seed);
          if (other == off.by_seed.end()) continue;
          p.seeds.push_back(seed);
          for (const auto& [key, v] : metrics)
            if (auto b = other->second.find(key); b != other->second.end()) {
              pairs[key].first.push_back(v);
              pairs[key].second.push_back(b->second);
            }
        }
        for (const auto& [key, xy] : pairs) {
          const Interval d = paired_difference(xy.first, xy.second);
          p.differences[key] = is_share(key) ? within(d, -1, 1) : d;
        }
        // Head to head: the GANPO policy's judge score against the matched policy's, prompt by
        // prompt on the same prompts, per seed; 0.5 is a draw.
        std::map<double, std::vector<double>> head_to_head;
        for (const auto& [seed, judged_on] : on.judged_by_seed) {
          auto other = off.judged_by_seed.find(seed);
          if (other == off.judged_by_seed.end()) continue;
          for (const JudgeSamples& s : judged_on.samples)
            if (auto rate = policy_win_rate(judged_on, other->second, s.temperature))
              head_to_head[s.temperature].push_back(*rate);
        }
        for (const auto& [t, rates] : head_to_head)
          p.win_rate_vs_baseline["judge/win_rate_vs_base@" + temperature_label(t)] = within(mean_interval(rates), 0, 1);
        report.ganpo_vs_base.push_back(std::move(p));
      }
    }
  }
  for (ArmRuns& a : arms) report.arms.push_back(std::move(a.result));
  return report;
}

nlohmann::json report_to_json(const StudyReport& report) {
  auto interval = [](const Interval& i) {
    return nlohmann::json{{"mean", i.mean}, {"low", i.low}, {"high", i.high}, {"n", i.n}};
  };
  nlohmann::json j = {{"study", report.study_id}, {"name", report.name}, {"state", report.state}, {"runs", report.runs},
                      {"completed", report.completed}, {"wall_seconds", report.wall_seconds},
                      {"arms", nlohmann::json::array()}, {"ganpo_vs_base", nlohmann::json::array()}};
  for (const auto& a : report.arms) {
    nlohmann::json values = nlohmann::json::object();
    for (const auto& [key, value] : a.values) values[key] = value;
    nlohmann::json arm = {{"arm", a.arm}, {"values", values}, {"runs", a.completed_run_ids}, {"seeds", a.seeds}, {"unfinished", a.unfinished}, {"failed", a.failed}, {"running", a.running}, {"blocked", a.blocked},
                          {"metrics", nlohmann::json::object()}};
    for (const auto& [key, i] : a.metrics) arm["metrics"][key] = interval(i);
    j["arms"].push_back(arm);
  }
  for (const auto& p : report.ganpo_vs_base) {
    nlohmann::json d = {{"arm", p.arm}, {"baseline", p.baseline}, {"seeds", p.seeds}, {"differences", nlohmann::json::object()}};
    for (const auto& [key, i] : p.differences) {
      d["differences"][key] = interval(i);
      d["differences"][key]["called"] = i.excludes_zero();
    }
    d["win_rate_vs_baseline"] = nlohmann::json::object();
    for (const auto& [key, i] : p.win_rate_vs_baseline) {
      d["win_rate_vs_baseline"][key] = interval(i);
      d["win_rate_vs_baseline"][key]["called"] = i.excludes(0.5);
    }
    j["ganpo_vs_base"].push_back(d);
  }
  return j;
}

std::string arm_seeds_text(const ArmResult& arm, const std::string& study_state) {
  std::vector<std::string> parts;
  const int64_t queued = arm.unfinished - arm.failed - arm.running - arm.blocked;
  if (arm.running > 0) parts.push_back(std::to_string(arm.running) + " running");
  if (queued > 0)
    parts.push_back(std::to_string(queued) + (study_state == "cancelled" ? " not run: study cancelled"
                                              : study_state == "paused"  ? " queued: study paused"
                                                                         : " queued"));
  if (arm.blocked > 0) parts.push_back(std::to_string(arm.blocked) + " blocked by a failed or stopped stage");
  if (arm.failed > 0) parts.push_back(std::to_string(arm.failed) + " failed or stopped");
  std::string text = std::to_string(arm.seeds.size());
  for (size_t i = 0; i < parts.size(); ++i) text += (i == 0 ? " (" : ", ") + parts[i];
  return parts.empty() ? text : text + ")";
}

bool is_headline_metric(const std::string& key) {
  const bool all_buckets = key.find('/', 6) == std::string::npos;  // not judge/win_rate@1.0/short
  return key == "eval_rewards/accuracies" || key == "eval_rewards/margins" || key == "step_time_s" ||
         (key.rfind("judge/win_rate@", 0) == 0 && all_buckets) || (key.rfind("judge/policy_length@", 0) == 0 && all_buckets);
}

VerdictCount count_verdicts(const StudyReport& report, bool headline_only) {
  VerdictCount count;
  const auto add = [&](const Interval& i, bool head_to_head) {
    if (i.n < 2) return;  // one seed: never called, so not a test
    // The same in both arms at every seed (the shared reference's own scores and lengths, the
    // number of evaluation pairs; every head-to-head prompt a tie): nothing varied, so nothing was
    // tested, and counting it would raise the calls expected by chance.
    if (i.low == i.high && i.mean == (head_to_head ? 0.5 : 0.0)) return;
    ++count.tested;
    if (verdict_called(i, head_to_head)) ++count.called;
  };
  // Throughput is left out: the critics cost time by design, so its calls are no chance findings.
  const auto throughput = [](const std::string& key) { return key == "step_time_s" || key == "tokens_per_s"; };
  for (const PairedResult& p : report.ganpo_vs_base) {
    for (const auto& [key, i] : p.differences)
      if ((!headline_only || is_headline_metric(key)) && !throughput(key)) add(i, false);
    for (const auto& [key, i] : p.win_rate_vs_baseline) add(i, true);
  }
  return count;
}

std::string multiplicity_note(const VerdictCount& count) {
  if (count.tested == 0) return "";
  char chance[32];
  std::snprintf(chance, sizeof chance, "%.1f", count.by_chance());
  return std::to_string(count.tested) + " numbers are tested at 95 % each, " + std::to_string(count.called) +
         " called: where GANPO changes nothing, about " + chance +
         " of them would be called by chance alone, so a single call among many is weak evidence; a difference "
         "called in several pairs or at several temperatures is stronger.";
}

bool verdict_called(const Interval& i, bool head_to_head) { return i.excludes(head_to_head ? 0.5 : 0.0); }

std::string verdict_text(const Interval& i, bool head_to_head) {
  const double null_value = head_to_head ? 0.5 : 0.0;
  // One seed has no interval: "contains 0" would be said of the printed "x [x, x]", which does not.
  if (i.n < 2) return "no verdict from one seed (no interval)";
  if (!verdict_called(i, head_to_head))
    return head_to_head ? "no difference shown (interval contains 0.5)" : "no difference shown (interval contains 0)";
  const bool up = i.mean > null_value;
  if (head_to_head) return up ? "GANPO judged better" : "GANPO judged worse";
  return up ? "higher with GANPO" : "lower with GANPO";
}

}  // namespace ganpo
