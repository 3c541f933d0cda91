// The built-in task "arithmetic": exact answers to small sums, differences and products.
//
// A prompt such as "Compute 348 + 27. Answer with the number only." asks for one number; unlike
// "lists" (format constraints over remembered words), every answer is a computation the model
// must get right digit by digit, with carries. The judge gives a score in [0, 1] as the mean of
// four checks: the response is the number alone, it has the right number of digits, it is the
// right value, and the fraction of its digits (aligned from the right) that are correct. So a
// carry slip scores above a wrong length, which scores above no number at all. Faulty answers
// (a digit off by one, a dropped, repeated or swapped digit, words around the number) make the
// SFT corpus and the preference pairs; length buckets follow the answer's digits (1-2 / 3 / 4-5).
// No torch here.
#pragma once

#include <cstdint>
#include <optional>
#include <random>
#include <string>

namespace ganpo::arithmetic {

enum class Op { Add, Subtract, Multiply };

struct Problem {
  int64_t a = 0, b = 0;
  Op op = Op::Add;
  int64_t answer() const;
};

Problem random_problem(std::mt19937_64& rng);
std::string render_prompt(const Problem& p);
// The problem of a prompt made by render_prompt; nullopt for any other text.
std::optional<Problem> parse_prompt(const std::string& prompt);

std::string perfect_answer(const Problem& p);
// An answer with `n_faults` (1-2) distinct faults, never equal to the right one.
std::string faulty_answer(const Problem& p, int n_faults, std::mt19937_64& rng);

struct JudgeResult {
  double score = 0.0;             // mean of the four checks, in [0, 1]
  bool number_only = false;
  bool right_length = false;
  bool right_value = false;
  double digits_right = 0.0;      // fraction, aligned from the right
};
JudgeResult judge(const Problem& p, const std::string& response);

int bucket_of(const Problem& p);  // 0 short (1-2 answer digits), 1 medium (3), 2 long (4-5)

}  // namespace ganpo::arithmetic
