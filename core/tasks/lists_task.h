// The built-in task "lists": prompts that ask for a constrained list, and an exact judge.
//
// A prompt such as "List 4 fruits in alphabetical order, separated by commas." varies count
// (2-8), category (word lists in resources/lists/), order (alphabetical / reverse / any),
// separator and letter case. The judge scores a response in [0,1] as the fraction of
// constraints met (count, category membership, no duplicates, order, separator, case, clean
// ending). Generators (all seeded) make an SFT corpus mixing perfect answers with answers that
// carry 1-3 random faults, preference pairs (chosen = higher judge score) with optional label
// noise, and fixed evaluation prompts in short / medium / long answer-length buckets.
// No torch here.
#pragma once

#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "core/text_examples.h"

namespace ganpo::lists {

enum class Order { Alphabetical, Reverse, Any };
enum class LetterCase { Lower, Upper, Capitalized };
enum class Separator { Comma, Semicolon, Newline, Pipe };

struct ListSpec {
  int count = 4;                 // 2..8
  std::string category;          // e.g. "fruits"
  Order order = Order::Any;
  Separator separator = Separator::Comma;
  LetterCase letter_case = LetterCase::Lower;
};

// Categories and their words as shipped in resources/lists/<category>.txt (embedded at build).
const std::vector<std::string>& categories();
const std::vector<std::string>& words(const std::string& category);  // lower case, sorted

ListSpec random_spec(std::mt19937_64& rng, int min_count = 2, int max_count = 8);
std::string render_prompt(const ListSpec& spec);
// Recovers the spec from a prompt made by render_prompt; nullopt for any other text.
std::optional<ListSpec> parse_prompt(const std::string& prompt);

std::string perfect_answer(const ListSpec& spec, std::mt19937_64& rng);
// An answer with `n_faults` (1-3) distinct random faults: wrong count, a word from another
// category, a duplicate, wrong order, wrong separator, wrong case, trailing junk.
std::string faulty_answer(const ListSpec& spec, int n_faults, std::mt19937_64& rng);

struct JudgeResult {
  double score = 0.0;                 // met / total, in [0, 1]
  int met = 0;
  int total = 0;
  std::vector<std::string> failed;    // names of the constraints not met, e.g. "order"
};
JudgeResult judge(const ListSpec& spec, const std::string& response);
// Judges against the prompt's spec; nullopt when the prompt is not a lists prompt.
std::optional<JudgeResult> judge_prompt(const std::string& prompt, const std::string& response);

enum class LengthBucket { Short, Medium, Long };  // count 2-3 / 4-5 / 6-8
LengthBucket bucket_of(const ListSpec& spec);
const char* bucket_name(LengthBucket bucket);  // "short" | "medium" | "long"

// SFT corpus: `perfect_fraction` of answers perfect, the rest with 1-3 faults.
std::vector<SftExample> make_sft_corpus(int64_t n, double perfect_fraction, uint64_t seed);
// Preference pairs: two different answers of different judge score, chosen = the higher one;
// with probability `label_noise` chosen and rejected are swapped.
std::vector<PreferenceExample> make_preference_pairs(int64_t n, double label_noise, uint64_t seed);
// Fixed evaluation prompts, balanced across the three length buckets.
std::vector<std::string> make_eval_prompts(int64_t n, uint64_t seed);

}  // namespace ganpo::lists
