#include "core/tasks/task.h"

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/tasks/arithmetic_task.h"
#include "core/tasks/lists_task.h"
#include "core/tasks/task_random.h"

namespace ganpo {
namespace {

int random_fault_count(std::mt19937_64& rng, int most) { return 1 + static_cast<int>(tasks::uniform_index(rng, most)); }

class ListsTask final : public Task {
public:
  std::string name() const override { return "lists"; }
  std::string description() const override {
    return "Built-in task: word lists with count, order, separator and case constraints (exact judge)";
  }
  std::vector<SftExample> sft_corpus(int64_t n, double perfect_fraction, uint64_t seed) const override {
    return lists::make_sft_corpus(n, perfect_fraction, seed);
  }
  std::vector<PreferenceExample> preference_pairs(int64_t n, double label_noise, uint64_t seed) const override {
    return lists::make_preference_pairs(n, label_noise, seed);
  }
  std::vector<EvalPrompt> eval_prompts(int64_t n, uint64_t seed) const override {
    std::vector<EvalPrompt> out;
    for (auto& p : lists::make_eval_prompts(n, seed)) {
      const auto spec = lists::parse_prompt(p);
      out.push_back({std::move(p), "", lists::bucket_name(lists::bucket_of(*spec))});
    }
    return out;
  }
  std::optional<double> judge(const std::string& prompt, const std::string& response) const override {
    if (auto r = lists::judge_prompt(prompt, response)) return r->score;
    return std::nullopt;
  }
};

class ArithmeticTask final : public Task {
public:
  std::string name() const override { return "arithmetic"; }
  std::string description() const override {
    return "Built-in task: exact sums, differences and products, digit by digit (exact judge)";
  }
  std::vector<SftExample> sft_corpus(int64_t n, double perfect_fraction, uint64_t seed) const override {
    tasks::check_count(n, "arithmetic: number of SFT examples");
    tasks::check_fraction(perfect_fraction, "arithmetic: perfect_fraction");
    std::mt19937_64 rng(seed);
    std::vector<SftExample> out;
    out.reserve(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
      const auto p = arithmetic::random_problem(rng);
      out.emplace_back(arithmetic::render_prompt(p),
                       tasks::bernoulli(rng, perfect_fraction) ? arithmetic::perfect_answer(p)
                                                               : arithmetic::faulty_answer(p, random_fault_count(rng, 2), rng));
    }
    return out;
  }
  std::vector<PreferenceExample> preference_pairs(int64_t n, double label_noise, uint64_t seed) const override {
    tasks::check_count(n, "arithmetic: number of preference pairs");
    tasks::check_fraction(label_noise, "arithmetic: label_noise");
    std::mt19937_64 rng(seed);
    std::vector<PreferenceExample> out;
    out.reserve(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
      const auto p = arithmetic::random_problem(rng);
      // As in "lists": three pairs in four teach "right beats wrong", the rest "closer beats further".
      const bool with_right = tasks::bernoulli(rng, 0.75);
      std::string a, b;
      double score_a = 0, score_b = 0;
      for (int attempt = 0; attempt < 100 && score_a == score_b; ++attempt) {
        a = with_right ? arithmetic::perfect_answer(p) : arithmetic::faulty_answer(p, 1, rng);
        b = arithmetic::faulty_answer(p, random_fault_count(rng, 2), rng);
        score_a = arithmetic::judge(p, a).score;
        score_b = arithmetic::judge(p, b).score;
      }
      if (score_a == score_b) a = arithmetic::perfect_answer(p);  // a faulty answer never scores 1
      if (arithmetic::judge(p, a).score < score_b) std::swap(a, b);
      if (tasks::bernoulli(rng, label_noise)) std::swap(a, b);
      out.emplace_back(arithmetic::render_prompt(p), std::move(a), std::move(b));
    }
    return out;
  }
  std::vector<EvalPrompt> eval_prompts(int64_t n, uint64_t seed) const override {
    tasks::check_count(n, "arithmetic: number of evaluation prompts");
    std::mt19937_64 rng(seed);
    std::vector<EvalPrompt> out;
    std::set<std::string> seen;
    for (int64_t i = 0; i < n; ++i) {
      const int bucket = static_cast<int>(i % 3);
      // Draw until the answer falls in this prompt's bucket and, while possible, is new.
      std::string prompt;
      for (int attempt = 0; attempt < 1000; ++attempt) {
        const auto p = arithmetic::random_problem(rng);
        if (arithmetic::bucket_of(p) != bucket) continue;
        prompt = arithmetic::render_prompt(p);
        if (seen.insert(prompt).second) break;
      }
      out.push_back({prompt, "", length_bucket_name(bucket)});
    }
    return out;
  }
  std::optional<double> judge(const std::string& prompt, const std::string& response) const override {
    if (auto p = arithmetic::parse_prompt(prompt)) return arithmetic::judge(*p, response).score;
    return std::nullopt;
  }
};

// Half of each: every second example from each task, with seeds of their own.
class MixedTask final : public Task {
public:
  MixedTask(const Task& first, const Task& second) : first_(first), second_(second) {}
  std::string name() const override { return "mixed"; }
  std::string description() const override {
    return "Built-in tasks: lists and arithmetic, half of each (exact judges)";
  }
  std::vector<SftExample> sft_corpus(int64_t n, double perfect_fraction, uint64_t seed) const override {
    return interleave(first_.sft_corpus((n + 1) / 2, perfect_fraction, seed),
                      second_.sft_corpus(n / 2, perfect_fraction, seed ^ kSecondSeed));
  }
  std::vector<PreferenceExample> preference_pairs(int64_t n, double label_noise, uint64_t seed) const override {
    return interleave(first_.preference_pairs((n + 1) / 2, label_noise, seed),
                      second_.preference_pairs(n / 2, label_noise, seed ^ kSecondSeed));
  }
  // Both halves are balanced over the buckets, so the mix is too.
  std::vector<EvalPrompt> eval_prompts(int64_t n, uint64_t seed) const override {
    return interleave(first_.eval_prompts((n + 1) / 2, seed), second_.eval_prompts(n / 2, seed ^ kSecondSeed));
  }
  std::optional<double> judge(const std::string& prompt, const std::string& response) const override {
    if (auto s = first_.judge(prompt, response)) return s;
    return second_.judge(prompt, response);
  }

private:
  static constexpr uint64_t kSecondSeed = 0x5eed5eed5eedULL;
  template <typename T>
  static std::vector<T> interleave(std::vector<T> a, std::vector<T> b) {
    std::vector<T> out;
    out.reserve(a.size() + b.size());
    for (size_t i = 0; i < std::max(a.size(), b.size()); ++i) {
      if (i < a.size()) out.push_back(std::move(a[i]));
      if (i < b.size()) out.push_back(std::move(b[i]));
    }
    return out;
  }
  const Task& first_;
  const Task& second_;
};

}  // namespace

const std::vector<const Task*>& builtin_tasks() {
  static const ListsTask lists_task;
  static const ArithmeticTask arithmetic_task;
  static const MixedTask mixed_task(lists_task, arithmetic_task);
  static const std::vector<const Task*> all{&lists_task, &arithmetic_task, &mixed_task};
  return all;
}

const Task* find_builtin_task(const std::string& name) {
  for (const Task* t : builtin_tasks())
    if (t->name() == name) return t;
  return nullptr;
}

const Task& builtin_task(const std::string& name) {
  if (const Task* t = find_builtin_task(name)) return *t;
  std::string known;
  for (const Task* t : builtin_tasks()) known += (known.empty() ? "" : ", ") + t->name();
  throw ConfigError("unknown built-in task \"" + name + "\"; the built-in tasks are " + known);
}

std::optional<double> judge_builtin_prompt(const std::string& prompt, const std::string& response) {
  for (const Task* t : builtin_tasks())
    if (auto s = t->judge(prompt, response)) return s;
  return std::nullopt;
}

const char* length_bucket_name(int index) {
  static const char* const kNames[] = {"short", "medium", "long"};
  return index >= 0 && index < 3 ? kNames[index] : "unknown";
}

void write_eval_prompts(const std::string& path, const std::vector<EvalPrompt>& prompts) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::path(path).has_parent_path()) fs::create_directories(fs::path(path).parent_path(), ec);
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    for (const EvalPrompt& p : prompts)
      out << nlohmann::json{{"prompt", p.prompt}, {"judge_prompt", p.judge_prompt}, {"bucket", p.bucket}}.dump(
                 -1, ' ', false, nlohmann::json::error_handler_t::replace)
          << "\n";
    if (!out.flush()) throw Error("cannot write " + path + "; check free disk space and permissions");
  }
  fs::rename(tmp, path, ec);
  if (ec) throw Error("cannot write " + path + ": " + ec.message());
}

std::vector<EvalPrompt> read_eval_prompts(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw DataError("cannot read the prompts file " + path);
  std::stringstream text;
  text << in.rdbuf();
  return parse_eval_prompts(text.str(), path);
}

std::vector<EvalPrompt> parse_eval_prompts(const std::string& text, const std::string& path) {
  std::istringstream in(text);
  std::vector<EvalPrompt> prompts;
  std::string line;
  for (int64_t n = 1; std::getline(in, line); ++n) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    const auto text = [&](const char* key) -> std::string {
      if (!j.contains(key)) return "";
      if (!j[key].is_string()) throw DataError(path + " line " + std::to_string(n) + ": \"" + key + "\" must be a string");
      return j[key].get<std::string>();
    };
    if (!j.is_object() || !j.contains("prompt"))
      throw DataError(path + " line " + std::to_string(n) +
                      ": expected {\"prompt\": \"...\"} (with optional \"judge_prompt\" and \"bucket\")");
    prompts.push_back({text("prompt"), text("judge_prompt"), text("bucket")});
    if (prompts.back().prompt.empty()) throw DataError(path + " line " + std::to_string(n) + ": the prompt is empty");
  }
  if (prompts.empty()) throw DataError(path + " holds no prompts");
  return prompts;
}

}  // namespace ganpo
