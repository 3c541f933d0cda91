#include "core/eval/eval_report.h"

#include <charconv>
#include <cmath>
#include <cstdio>

#include <nlohmann/json.hpp>

namespace ganpo {
namespace {

const char* const kBuckets[] = {"short", "medium", "long"};

bool is_number(const nlohmann::json& j, const char* key) {
  return j.is_object() && j.contains(key) && j[key].is_number() && std::isfinite(j[key].get<double>());
}

double number_or(const nlohmann::json& j, const char* key, double fallback) {
  return is_number(j, key) ? j[key].get<double>() : fallback;
}

// Every entry a finite number, or nullopt (a list with one bad entry is not trusted at all).
std::optional<std::vector<double>> numbers(const nlohmann::json& j, const char* key) {
  std::vector<double> out;
  if (!j.is_object() || !j.contains(key) || !j[key].is_array()) return out;
  for (const auto& v : j[key]) {
    if (!v.is_number() || !std::isfinite(v.get<double>())) return std::nullopt;
    out.push_back(v.get<double>());
  }
  return out;
}

std::vector<int64_t> as_counts(const std::vector<double>& v) {
  std::vector<int64_t> out;
  for (double x : v) out.push_back(x >= 0 && x < 1e15 ? static_cast<int64_t>(x) : -1);
  return out;
}

// An integer field within [0, 2^53), else the fallback (no out-of-range conversion).
int64_t count_or(const nlohmann::json& j, const char* key, int64_t fallback) {
  const double v = number_or(j, key, -1);
  return v >= 0 && v < 9007199254740992.0 ? static_cast<int64_t>(v) : fallback;
}

std::string string_or(const nlohmann::json& j, const char* key) {
  return j.is_object() && j.contains(key) && j[key].is_string() ? j[key].get<std::string>() : std::string();
}

void take_preference(const nlohmann::json& obj, std::map<std::string, double>& out) {
  if (!obj.is_object()) return;
  for (auto it = obj.begin(); it != obj.end(); ++it)
    if (it.key().rfind("eval_", 0) == 0 && it.value().is_number() && std::isfinite(it.value().get<double>()))
      out[it.key()] = it.value().get<double>();
}

JudgeSummaryRow row_from_json(const nlohmann::json& r) {
  JudgeSummaryRow row;
  row.temperature = number_or(r, "temperature", 0.0);
  row.bucket = r.is_object() && r.contains("bucket") && r["bucket"].is_string() ? r["bucket"].get<std::string>() : "all";
  row.prompts = count_or(r, "prompts", 0);
  row.policy_score = number_or(r, "policy_score", NAN);
  row.reference_score = number_or(r, "reference_score", NAN);
  row.win_rate = number_or(r, "win_rate", NAN);
  row.policy_length = number_or(r, "policy_length", -1);
  row.reference_length = number_or(r, "reference_length", -1);
  return row;
}

std::vector<JudgeSummaryRow> rows_from_json(const nlohmann::json& rows) {
  std::vector<JudgeSummaryRow> out;
  for (const auto& r : rows)
    if (is_number(r, "win_rate")) out.push_back(row_from_json(r));
  return out;
}

}  // namespace

void JudgeEvaluation::summarize() {
  rows.clear();
  for (const JudgeSamples& s : samples) {
    const size_t n = s.policy_score.size();
    std::vector<std::string> names{"all"};
    for (const char* b : kBuckets) names.push_back(b);
    for (const std::string& bucket : names) {
      JudgeSummaryRow row;
      row.temperature = s.temperature;
      row.bucket = bucket;
      double pol_len = 0, ref_len = 0;
      for (size_t i = 0; i < n && i < s.reference_score.size(); ++i) {
        if (bucket != "all" && (i >= buckets.size() || buckets[i] != bucket)) continue;
        const double ps = s.policy_score[i], rs = s.reference_score[i];
        row.prompts += 1;
        row.policy_score += ps;
        row.reference_score += rs;
        row.win_rate += ps > rs ? 1.0 : ps == rs ? 0.5 : 0.0;
        if (i < s.policy_length.size()) pol_len += static_cast<double>(s.policy_length[i]);
        if (i < s.reference_length.size()) ref_len += static_cast<double>(s.reference_length[i]);
      }
      if (row.prompts == 0) continue;  // no prompt, no rate (not a rate of 0)
      {
        const double k = static_cast<double>(row.prompts);
        row.policy_score /= k, row.reference_score /= k, row.win_rate /= k;
        row.policy_length = s.policy_length.size() == n ? pol_len / k : -1;
        row.reference_length = s.reference_length.size() == n ? ref_len / k : -1;
      }
      rows.push_back(row);
    }
  }
}

const JudgeSamples* JudgeEvaluation::at(double temperature) const {
  for (const auto& s : samples)
    if (std::fabs(s.temperature - temperature) < 1e-9) return &s;
  return nullptr;
}

nlohmann::json to_json(const EvalReport& report) {
  nlohmann::json j = {{"preference", report.preference}, {"skipped_lines", report.skipped_lines}};
  if (report.judge) {
    const JudgeEvaluation& e = *report.judge;
    nlohmann::json judge = {{"task", e.task},
                            {"judge", e.judge},
                            {"prompts_digest", e.prompts_digest},
                            {"buckets", e.buckets},
                            {"max_new_tokens", e.max_new_tokens},
                            {"seed", e.seed},
                            {"samples", nlohmann::json::array()},
                            {"rows", nlohmann::json::array()}};
    if (e.top_p) judge["top_p"] = *e.top_p;
    if (e.top_k) judge["top_k"] = *e.top_k;
    for (const auto& s : e.samples)
      judge["samples"].push_back({{"temperature", s.temperature},
                                  {"policy_score", s.policy_score},
                                  {"reference_score", s.reference_score},
                                  {"policy_length", s.policy_length},
                                  {"reference_length", s.reference_length}});
    for (const auto& r : e.rows) {
      nlohmann::json row = {{"temperature", r.temperature}, {"bucket", r.bucket},
                            {"prompts", r.prompts},         {"policy_score", r.policy_score},
                            {"reference_score", r.reference_score}, {"win_rate", r.win_rate}};
      if (r.policy_length >= 0) row["policy_length"] = r.policy_length;
      if (r.reference_length >= 0) row["reference_length"] = r.reference_length;
      judge["rows"].push_back(row);
    }
    j["judge"] = judge;
  }
  if (!report.judge_error.empty()) j["judge_error"] = report.judge_error;
  return j;
}

EvalReport eval_report_from_json(const nlohmann::json& j) {
  EvalReport report;
  if (j.is_array()) {  // a bare list of judge rows
    if (auto rows = rows_from_json(j); !rows.empty()) report.judge = JudgeEvaluation{}, report.judge->rows = rows;
    return report;
  }
  if (!j.is_object()) return report;
  take_preference(j, report.preference);  // the trainer's older flat rows
  if (j.contains("preference")) take_preference(j["preference"], report.preference);
  report.skipped_lines = count_or(j, "skipped_lines", 0);
  report.judge_error = string_or(j, "judge_error");
  if (!j.contains("judge")) return report;
  const nlohmann::json& judge = j["judge"];
  if (judge.is_array()) {  // `ganpo eval` reports before per-prompt samples were kept
    if (auto rows = rows_from_json(judge); !rows.empty()) report.judge = JudgeEvaluation{}, report.judge->rows = rows;
    return report;
  }
  if (!judge.is_object()) return report;
  JudgeEvaluation e;
  e.task = string_or(judge, "task");
  e.judge = string_or(judge, "judge");
  e.prompts_digest = string_or(judge, "prompts_digest");
  if (judge.contains("buckets") && judge["buckets"].is_array())
    for (const auto& b : judge["buckets"]) e.buckets.push_back(b.is_string() ? b.get<std::string>() : "");
  e.max_new_tokens = count_or(judge, "max_new_tokens", 0);
  if (judge.contains("seed") && judge["seed"].is_number_unsigned()) e.seed = judge["seed"].get<uint64_t>();
  if (is_number(judge, "top_p")) e.top_p = judge["top_p"].get<double>();
  if (judge.contains("top_k") && judge["top_k"].is_number_integer()) e.top_k = judge["top_k"].get<int64_t>();
  if (judge.contains("samples") && judge["samples"].is_array())
    for (const auto& s : judge["samples"]) {
      if (!is_number(s, "temperature")) continue;
      JudgeSamples samples;
      samples.temperature = s["temperature"].get<double>();
      const auto policy = numbers(s, "policy_score"), reference = numbers(s, "reference_score");
      const auto policy_length = numbers(s, "policy_length"), reference_length = numbers(s, "reference_length");
      if (!policy || !reference || !policy_length || !reference_length) continue;
      samples.policy_score = *policy;
      samples.reference_score = *reference;
      samples.policy_length = as_counts(*policy_length);
      samples.reference_length = as_counts(*reference_length);
      // Scores must pair up with the prompts, or nothing of this temperature is trusted.
      if (samples.policy_score.size() != samples.reference_score.size() ||
          (!e.buckets.empty() && samples.policy_score.size() != e.buckets.size()))
        continue;
      e.samples.push_back(std::move(samples));
    }
  if (!e.samples.empty()) e.summarize();
  else if (judge.contains("rows") && judge["rows"].is_array()) e.rows = rows_from_json(judge["rows"]);
  if (!e.samples.empty() || !e.rows.empty()) report.judge = std::move(e);
  return report;
}

EvalReport eval_report_from_text(const std::string& json_text) {
  return eval_report_from_json(nlohmann::json::parse(json_text, nullptr, false));
}

std::string temperature_label(double temperature) {
  char buf[64];
  // to_chars: the shortest text that reads back, whatever the process's locale.
  const auto res = std::to_chars(buf, buf + sizeof buf, temperature);
  std::string s(buf, res.ptr);
  if (std::isfinite(temperature) && s.find_first_of(".e") == std::string::npos) s += ".0";
  return s;
}

std::optional<double> read_number(const std::string& text) {
  double v = 0;
  const char* end = text.data() + text.size();
  const auto res = std::from_chars(text.data(), end, v);
  if (text.empty() || res.ec != std::errc() || res.ptr != end) return std::nullopt;
  return v;
}

std::string to_json_text(const EvalReport& report, int indent) {
  return to_json(report).dump(indent, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::map<std::string, double> flatten(const EvalReport& report) {
  std::map<std::string, double> out = report.preference;
  if (!report.judge) return out;
  for (const JudgeSummaryRow& r : report.judge->rows) {
    const std::string t = "@" + temperature_label(r.temperature);
    if (r.bucket == "all") {
      out["judge/win_rate" + t] = r.win_rate;
      out["judge/policy_score" + t] = r.policy_score;
      out["judge/reference_score" + t] = r.reference_score;
      if (r.policy_length >= 0) out["judge/policy_length" + t] = r.policy_length;
      if (r.reference_length >= 0) out["judge/reference_length" + t] = r.reference_length;
    } else {
      out["judge/win_rate" + t + "/" + r.bucket] = r.win_rate;
      out["judge/policy_score" + t + "/" + r.bucket] = r.policy_score;
    }
  }
  return out;
}

std::optional<double> policy_win_rate(const JudgeEvaluation& a, const JudgeEvaluation& b, double temperature) {
  // Only completions drawn alike compare (an unrecorded filter, from an older report, is taken as
  // the same).
  const bool filters_differ = (a.top_p && b.top_p && *a.top_p != *b.top_p) || (a.top_k && b.top_k && *a.top_k != *b.top_k);
  if (a.prompts_digest.empty() || a.prompts_digest != b.prompts_digest || a.judge != b.judge ||
      a.max_new_tokens != b.max_new_tokens || a.seed != b.seed || filters_differ)
    return std::nullopt;
  const JudgeSamples* sa = a.at(temperature);
  const JudgeSamples* sb = b.at(temperature);
  if (!sa || !sb || sa->policy_score.size() != sb->policy_score.size() || sa->policy_score.empty()) return std::nullopt;
  double wins = 0;
  for (size_t i = 0; i < sa->policy_score.size(); ++i) {
    const double x = sa->policy_score[i], y = sb->policy_score[i];
    wins += x > y ? 1.0 : x == y ? 0.5 : 0.0;
  }
  return wins / static_cast<double>(sa->policy_score.size());
}

std::string digest_of_prompts(const std::vector<std::string>& prompts) {
  uint64_t h = 1469598103934665603ULL;
  for (const auto& p : prompts) {
    for (unsigned char c : p) h = (h ^ c) * 1099511628211ULL;
    h = (h ^ 0u) * 1099511628211ULL;
  }
  char buf[20];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

}  // namespace ganpo
