// Reading preference and SFT datasets from files in TRL's formats.
//
// JSONL (one object per line) or JSON (an array of objects). Preference rows are standard
// ({"prompt": str, "chosen": str, "rejected": str}) or conversational (message lists
// [{"role": ..., "content": ...}]). Without "prompt", chosen and rejected hold the whole
// conversation and what they share is the prompt (trl.extract_prompt): the leading messages of
// two lists, the leading text of two strings (Anthropic's HH-RLHF rows). SFT rows are
// {"prompt", "completion"} (strings or message lists) or {"text"}. Messages are flattened with
// a fixed plain-text template (render_messages). A bad line is reported with its 1-based line
// number and the reason; on_bad_line "error" throws DataError, "skip" collects the problems.
// Splitting and shuffling are deterministic given the seed. No torch here.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "core/text_examples.h"

namespace ganpo {

struct BadLine {
  int64_t line = 0;     // 1-based line number (JSONL) or element index + 1 (JSON array)
  std::string reason;   // e.g. "missing key \"rejected\"", "invalid JSON: ..."
};

template <typename T>
struct LoadResult {
  std::vector<T> rows;
  std::vector<BadLine> bad_lines;  // only filled when skipping
  bool json_array = false;         // a JSON array: BadLine::line is the element's index + 1
};

// on_bad_line: "error" (throw DataError naming file, line and reason) or "skip".
LoadResult<PreferenceExample> load_preference_file(const std::string& path,
                                                   const std::string& on_bad_line);
LoadResult<SftExample> load_sft_file(const std::string& path, const std::string& on_bad_line);

// Parses one row; throws DataError with the reason (without line number) when it cannot.
PreferenceExample preference_from_json(const nlohmann::json& row);
SftExample sft_from_json(const nlohmann::json& row);

// "<|role|>\ncontent\n" per message; with add_generation_prompt a trailing "<|assistant|>\n".
std::string render_messages(const nlohmann::json& messages, bool add_generation_prompt);

// Deterministic shuffle (std::mt19937_64 seeded with `seed`) then split off the last
// round(eval_fraction * n) rows (at least 1 when eval_fraction > 0 and n >= 2) as eval.
template <typename T>
void shuffle_split(std::vector<T> all, double eval_fraction, uint64_t seed, std::vector<T>& train,
                   std::vector<T>& eval) {
  std::mt19937_64 rng(seed);
  // Fisher-Yates with our own index draws so the order does not depend on the standard library.
  for (size_t i = all.size(); i > 1; --i) std::swap(all[i - 1], all[rng() % i]);
  size_t n_eval = 0;
  if (eval_fraction > 0 && all.size() >= 2) {
    n_eval = static_cast<size_t>(std::lround(eval_fraction * static_cast<double>(all.size())));
    n_eval = std::min(std::max<size_t>(n_eval, 1), all.size() - 1);
  }
  eval.assign(all.end() - static_cast<std::ptrdiff_t>(n_eval), all.end());
  all.resize(all.size() - n_eval);
  train = std::move(all);
}

// Renders conversational rows with the model's chat template, as TRL's apply_chat_template:
// the prompt with the generation prompt, each completion as what the full conversation adds to
// it. Standard rows are left as they are. Errors name `source` and the row (1-based).
void apply_chat_template(std::vector<PreferenceExample>& rows, const ChatTemplate& tmpl, const std::string& source);
void apply_chat_template(std::vector<SftExample>& rows, const ChatTemplate& tmpl, const std::string& source);


// Writes rows as JSONL (used by the demo and tests to make files in TRL format).
void write_preference_jsonl(const std::vector<PreferenceExample>& rows, const std::string& path);

}  // namespace ganpo

