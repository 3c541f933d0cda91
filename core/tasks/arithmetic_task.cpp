#include "core/tasks/arithmetic_task.h"

#include <algorithm>
#include <string_view>

#include "core/tasks/task_random.h"

namespace ganpo::arithmetic {
namespace {

using tasks::bernoulli;
using tasks::uniform_index;
using tasks::uniform_int;

constexpr std::string_view kHead = "Compute ";
constexpr std::string_view kTail = ". Answer with the number only.";

const char* op_symbol(Op op) { return op == Op::Add ? "+" : op == Op::Subtract ? "-" : "*"; }

bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f'; }

std::string_view trim(std::string_view s) {
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  return s;
}

int64_t power_of_ten(int digits) {
  int64_t p = 1;
  for (int i = 0; i < digits; ++i) p *= 10;
  return p;
}

// A number with exactly `digits` digits (a one-digit number may be 0).
int64_t random_number(std::mt19937_64& rng, int digits) {
  return digits == 1 ? uniform_int(rng, 0, 9) : uniform_int(rng, power_of_ten(digits - 1), power_of_ten(digits) - 1);
}

// Reads an unsigned decimal of at most 6 digits without leading zeros (but "0").
std::optional<int64_t> parse_number(std::string_view s) {
  if (s.empty() || s.size() > 6 || (s.size() > 1 && s[0] == '0')) return std::nullopt;
  int64_t v = 0;
  for (char c : s) {
    if (!is_digit(c)) return std::nullopt;
    v = v * 10 + (c - '0');
  }
  return v;
}

// The faults an answer can carry. Each changes the digits or the words around them.
enum class Fault { DigitOff, DropDigit, RepeatDigit, SwapDigits, Words };

std::string apply_digit_fault(std::string digits, Fault fault, std::mt19937_64& rng) {
  const size_t n = digits.size();
  switch (fault) {
    case Fault::DigitOff: {
      const size_t i = uniform_index(rng, n);
      const int d = digits[i] - '0';
      int changed = bernoulli(rng, 0.5) ? d + 1 : d - 1;
      if (changed < 0 || changed > 9) changed = d == 0 ? 1 : d - 1;
      if (i == 0 && n > 1 && changed == 0) changed = d + 1 <= 9 ? d + 1 : d - 1;
      digits[i] = static_cast<char>('0' + changed);
      return digits;
    }
    case Fault::DropDigit:
      if (n < 2) return digits + digits;  // nothing to drop from one digit: repeat it instead
      digits.erase(1 + uniform_index(rng, n - 1), 1);
      return digits;
    case Fault::RepeatDigit: {
      const size_t i = uniform_index(rng, n);
      digits.insert(i, 1, digits[i]);
      return digits;
    }
    case Fault::SwapDigits: {
      for (size_t i = 0; i + 1 < n; ++i)
        if (digits[i] != digits[i + 1] && !(i == 0 && digits[1] == '0')) {
          std::swap(digits[i], digits[i + 1]);
          return digits;
        }
      return apply_digit_fault(digits, Fault::DigitOff, rng);  // all digits alike
    }
    case Fault::Words:
      return digits;
  }
  return digits;
}

std::string with_words(const std::string& number, std::mt19937_64& rng) {
  static const char* const kWrappers[][2] = {
      {"The answer is ", "."}, {"", " is the answer."}, {"= ", ""}, {"Answer: ", ""}, {"", " (I think)"}};
  const auto& w = kWrappers[uniform_index(rng, std::size(kWrappers))];
  return std::string(w[0]) + number + w[1];
}

}  // namespace

int64_t Problem::answer() const {
  switch (op) {
    case Op::Add: return a + b;
    case Op::Subtract: return a - b;
    case Op::Multiply: return a * b;
  }
  return 0;
}

Problem random_problem(std::mt19937_64& rng) {
  Problem p;
  p.op = static_cast<Op>(uniform_index(rng, 3));
  if (p.op == Op::Multiply) {
    p.a = random_number(rng, static_cast<int>(uniform_int(rng, 1, 3)));
    p.b = uniform_int(rng, 2, 9);
  } else {
    p.a = random_number(rng, static_cast<int>(uniform_int(rng, 1, 4)));
    p.b = random_number(rng, static_cast<int>(uniform_int(rng, 1, 4)));
    if (p.op == Op::Subtract && p.a < p.b) std::swap(p.a, p.b);  // answers stay non-negative
  }
  return p;
}

std::string render_prompt(const Problem& p) {
  return std::string(kHead) + std::to_string(p.a) + " " + op_symbol(p.op) + " " + std::to_string(p.b) +
         std::string(kTail);
}

std::optional<Problem> parse_prompt(const std::string& prompt) {
  std::string_view s = trim(prompt);
  if (s.substr(0, kHead.size()) != kHead || s.size() < kHead.size() + kTail.size()) return std::nullopt;
  if (s.substr(s.size() - kTail.size()) != kTail) return std::nullopt;
  s = s.substr(kHead.size(), s.size() - kHead.size() - kTail.size());  // "348 + 27"
  const size_t first_space = s.find(' ');
  if (first_space == std::string_view::npos || s.size() < first_space + 3 || s[first_space + 2] != ' ')
    return std::nullopt;
  Problem p;
  const char sym = s[first_space + 1];
  if (sym == '+') p.op = Op::Add;
  else if (sym == '-') p.op = Op::Subtract;
  else if (sym == '*') p.op = Op::Multiply;
  else return std::nullopt;
  auto a = parse_number(s.substr(0, first_space)), b = parse_number(s.substr(first_space + 3));
  if (!a || !b || *a > 9999 || *b > 9999 || (p.op == Op::Subtract && *a < *b)) return std::nullopt;
  p.a = *a, p.b = *b;
  if (render_prompt(p) != trim(prompt)) return std::nullopt;  // the exact inverse, nothing looser
  return p;
}

std::string perfect_answer(const Problem& p) { return std::to_string(p.answer()); }

std::string faulty_answer(const Problem& p, int n_faults, std::mt19937_64& rng) {
  const std::string right = perfect_answer(p);
  static const Fault kDigitFaults[] = {Fault::DigitOff, Fault::DropDigit, Fault::RepeatDigit, Fault::SwapDigits};
  n_faults = std::clamp(n_faults, 1, 2);
  for (int attempt = 0; attempt < 32; ++attempt) {
    std::string digits = right;
    bool words = false;
    // The first fault is always in the digits, so the value is wrong; a second may be words.
    digits = apply_digit_fault(digits, kDigitFaults[uniform_index(rng, std::size(kDigitFaults))], rng);
    if (n_faults == 2) {
      if (bernoulli(rng, 0.5)) words = true;
      else digits = apply_digit_fault(digits, kDigitFaults[uniform_index(rng, std::size(kDigitFaults))], rng);
    }
    if (digits != right) return words ? with_words(digits, rng) : digits;
  }
  return right + "0";  // not reached with the faults above; still a wrong answer
}

JudgeResult judge(const Problem& p, const std::string& response) {
  JudgeResult r;
  const std::string right = perfect_answer(p);
  const std::string_view text = trim(response);
  // The answer is the first run of digits; anything else in the response breaks "number only".
  size_t begin = 0;
  while (begin < text.size() && !is_digit(text[begin])) ++begin;
  size_t end = begin;
  while (end < text.size() && is_digit(text[end])) ++end;
  if (begin == end) return r;
  const std::string_view got = text.substr(begin, end - begin);
  r.number_only = begin == 0 && end == text.size();
  r.right_length = got.size() == right.size();
  r.right_value = got == right;
  size_t same = 0;
  for (size_t i = 0; i < std::min(got.size(), right.size()); ++i)
    same += got[got.size() - 1 - i] == right[right.size() - 1 - i];
  r.digits_right = static_cast<double>(same) / static_cast<double>(std::max(got.size(), right.size()));
  r.score = (r.number_only + r.right_length + r.right_value + r.digits_right) / 4.0;
  return r;
}

int bucket_of(const Problem& p) {
  const size_t digits = perfect_answer(p).size();
  return digits <= 2 ? 0 : digits == 3 ? 1 : 2;
}

}  // namespace ganpo::arithmetic
