#include "core/tasks/lists_task.h"

#include <algorithm>
#include <array>
#include <map>
#include <set>
#include <string_view>
#include <unordered_map>
#include <utility>

#include "core/error.h"
#include "core/tasks/task_random.h"

namespace ganpo {
// Defined in the file generated from resources/lists/*.txt (resources/embed_word_lists.cmake).
const std::vector<std::pair<std::string, std::string>>& embedded_word_lists();
}  // namespace ganpo

namespace ganpo::lists {
namespace {

// ---------------------------------------------------------------------------------------------
// Small helpers. ASCII only and locale free: responses can hold any bytes, and <cctype> is
// undefined for negative chars.

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f'; }
bool is_lower(char c) { return c >= 'a' && c <= 'z'; }
bool is_upper(char c) { return c >= 'A' && c <= 'Z'; }
bool is_letter(char c) { return is_lower(c) || is_upper(c); }
char to_lower(char c) { return is_upper(c) ? static_cast<char>(c - 'A' + 'a') : c; }
char to_upper(char c) { return is_lower(c) ? static_cast<char>(c - 'a' + 'A') : c; }

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = to_lower(c);
  return out;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  return s;
}

using tasks::bernoulli;
using tasks::shuffle;
using tasks::uniform_index;

// ---------------------------------------------------------------------------------------------
// Word lists.

struct Catalog {
  std::vector<std::string> names;                            // sorted
  std::map<std::string, std::vector<std::string>> words;     // category -> sorted words
  std::unordered_map<std::string, std::string> category_of;  // word -> category
};

Catalog load_catalog() {
  // A broken list is a build defect, but the message still says which file and line to fix.
  Catalog catalog;
  for (const auto& [name, content] : embedded_word_lists()) {
    auto& list = catalog.words[name];
    size_t line_no = 0;
    size_t pos = 0;
    while (pos <= content.size()) {
      size_t end = content.find('\n', pos);
      if (end == std::string::npos) end = content.size();
      ++line_no;
      std::string_view word = trim(std::string_view(content).substr(pos, end - pos));
      pos = end + 1;
      if (word.empty()) continue;
      if (!std::all_of(word.begin(), word.end(), is_lower))
        throw Error("resources/lists/" + name + ".txt line " + std::to_string(line_no) + ": '" +
                    std::string(word) + "' is not a single lower-case ascii word; fix the list");
      auto [it, inserted] = catalog.category_of.emplace(std::string(word), name);
      if (!inserted)
        throw Error("resources/lists/" + name + ".txt line " + std::to_string(line_no) + ": '" +
                    std::string(word) + "' is already in " + it->second +
                    ".txt; a word may belong to one category only");
      list.emplace_back(word);
    }
    if (list.size() < 9)
      throw Error("resources/lists/" + name + ".txt has " + std::to_string(list.size()) +
                  " words; a category needs at least 9 (8 items plus one for faults)");
    std::sort(list.begin(), list.end());
    catalog.names.push_back(name);
  }
  if (catalog.names.size() < 2)
    throw Error("the built-in lists task needs at least two word lists in resources/lists/");
  std::sort(catalog.names.begin(), catalog.names.end());
  return catalog;
}

const Catalog& catalog() {
  static const Catalog c = load_catalog();
  return c;
}

// nullptr for an unknown category, so the judge can score any spec without throwing.
const std::vector<std::string>* find_words(const std::string& category) {
  const auto& w = catalog().words;
  auto it = w.find(category);
  return it == w.end() ? nullptr : &it->second;
}

// ---------------------------------------------------------------------------------------------
// Prompt phrases. Index = enum value.

constexpr std::array<const char*, 3> kOrderPhrase = {"alphabetical order", "reverse alphabetical order",
                                                     "any order"};
constexpr std::array<const char*, 4> kSeparatorPhrase = {"separated by commas", "separated by semicolons",
                                                         "one per line", "separated by pipes"};
constexpr std::array<const char*, 3> kCasePhrase = {"in lower case", "in upper case", "capitalized"};
constexpr std::array<const char*, 4> kSeparatorText = {", ", "; ", "\n", " | "};
constexpr std::array<char, 4> kSeparatorChar = {',', ';', '\n', '|'};

constexpr std::array<Order, 3> kOrders = {Order::Alphabetical, Order::Reverse, Order::Any};
constexpr std::array<Separator, 4> kSeparators = {Separator::Comma, Separator::Semicolon, Separator::Newline,
                                                  Separator::Pipe};
constexpr std::array<LetterCase, 3> kCases = {LetterCase::Lower, LetterCase::Upper, LetterCase::Capitalized};

constexpr int kMinCount = 2;
constexpr int kMaxCount = 8;

int separator_index(char c) {
  for (size_t i = 0; i < kSeparatorChar.size(); ++i)
    if (kSeparatorChar[i] == c) return static_cast<int>(i);
  return -1;
}

std::string apply_case(std::string word, LetterCase letter_case) {
  for (size_t i = 0; i < word.size(); ++i) {
    bool up = letter_case == LetterCase::Upper || (letter_case == LetterCase::Capitalized && i == 0);
    word[i] = up ? to_upper(word[i]) : to_lower(word[i]);
  }
  return word;
}

bool has_case(std::string_view item, LetterCase letter_case) {
  if (item.empty()) return false;
  for (size_t i = 0; i < item.size(); ++i) {
    bool want_up = letter_case == LetterCase::Upper || (letter_case == LetterCase::Capitalized && i == 0);
    if (want_up ? is_lower(item[i]) : is_upper(item[i])) return false;
  }
  // A capitalized word must start with a capital, not merely lack lower-case letters there.
  return letter_case != LetterCase::Capitalized || is_upper(item[0]);
}

// Whether `a` may come right before `b` in the requested order. Non-strict so that a duplicate
// is charged to "no_duplicates" alone and not also to "order".
bool in_order(const std::string& a, const std::string& b, Order order) {
  switch (order) {
    case Order::Alphabetical:
      return a <= b;
    case Order::Reverse:
      return a >= b;
    case Order::Any:
      return true;
  }
  return true;
}

std::string join(const std::vector<std::string>& items, Separator separator) {
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) {
    if (i > 0) out += kSeparatorText[static_cast<size_t>(separator)];
    out += items[i];
  }
  return out;
}

// `count` distinct words of the category in the requested order, lower case.
std::vector<std::string> sample_items(const ListSpec& spec, std::mt19937_64& rng) {
  const auto* pool = find_words(spec.category);
  if (pool == nullptr) throw Error("lists: unknown category '" + spec.category + "'");
  if (spec.count < 1 || static_cast<size_t>(spec.count) >= pool->size())
    throw Error("lists: count " + std::to_string(spec.count) + " is out of range for category '" +
                spec.category + "'");
  std::vector<std::string> shuffled = *pool;
  shuffle(shuffled, rng);
  std::vector<std::string> items(shuffled.begin(), shuffled.begin() + spec.count);
  if (spec.order == Order::Alphabetical) std::sort(items.begin(), items.end());
  if (spec.order == Order::Reverse) std::sort(items.rbegin(), items.rend());
  return items;
}

// ---------------------------------------------------------------------------------------------
// Faults. Each one is built to break exactly one judge constraint, so an answer with k faults
// scores exactly (7-k)/7 and preference pairs of different fault counts always differ.

enum class Fault { Count, Foreign, Duplicate, WrongOrder, WrongSeparator, WrongCase, Junk };
constexpr std::array<Fault, 7> kAllFaults = {Fault::Count,      Fault::Foreign,        Fault::Duplicate,
                                             Fault::WrongOrder, Fault::WrongSeparator, Fault::WrongCase,
                                             Fault::Junk};
// No separator characters in here: junk must not split off as an extra item.
constexpr std::array<const char*, 5> kJunk = {" and more", " etc.", "...", ".", " and so on"};

bool contains(const std::vector<Fault>& faults, Fault f) {
  return std::find(faults.begin(), faults.end(), f) != faults.end();
}

void add_or_drop_item(std::vector<std::string>& items, const ListSpec& spec, bool add, std::mt19937_64& rng) {
  if (!add) {
    items.erase(items.begin() + static_cast<std::ptrdiff_t>(uniform_index(rng, items.size())));
    return;
  }
  std::vector<std::string> unused;
  for (const auto& w : *find_words(spec.category))
    if (std::find(items.begin(), items.end(), w) == items.end()) unused.push_back(w);
  std::string extra = unused[uniform_index(rng, unused.size())];
  // Insert where the order still holds, so only the count is wrong.
  size_t pos = uniform_index(rng, items.size() + 1);
  if (spec.order != Order::Any) {
    pos = 0;
    while (pos < items.size() && in_order(items[pos], extra, spec.order)) ++pos;
  }
  items.insert(items.begin() + static_cast<std::ptrdiff_t>(pos), extra);
}

// Replaces one item by a word of another category; returns its index.
size_t put_foreign_word(std::vector<std::string>& items, const ListSpec& spec, std::mt19937_64& rng) {
  // Prefer a (position, word) that keeps the order, so only "category" fails.
  std::vector<std::pair<size_t, const std::string*>> fitting;
  std::vector<const std::string*> foreign;
  for (const auto& [name, list] : catalog().words) {
    if (name == spec.category) continue;
    for (const auto& w : list) foreign.push_back(&w);
  }
  for (size_t pos = 0; pos < items.size(); ++pos)
    for (const std::string* w : foreign) {
      bool fits = (pos == 0 || in_order(items[pos - 1], *w, spec.order)) &&
                  (pos + 1 == items.size() || in_order(*w, items[pos + 1], spec.order));
      if (fits) fitting.emplace_back(pos, w);
    }
  if (fitting.empty()) {  // not seen with the shipped lists; the order then fails as well
    size_t pos = uniform_index(rng, items.size());
    items[pos] = *foreign[uniform_index(rng, foreign.size())];
    return pos;
  }
  auto [pos, w] = fitting[uniform_index(rng, fitting.size())];
  items[pos] = *w;
  return pos;
}

// Overwrites one item (not `keep`) with a copy of a neighbour; copying a neighbour keeps a
// sorted list sorted.
void put_duplicate(std::vector<std::string>& items, size_t keep, std::mt19937_64& rng) {
  std::vector<size_t> targets;
  for (size_t i = 0; i < items.size(); ++i)
    if (i != keep) targets.push_back(i);
  size_t k = targets[uniform_index(rng, targets.size())];
  size_t from = k == 0 ? 1 : k + 1 == items.size() ? k - 1 : (bernoulli(rng, 0.5) ? k - 1 : k + 1);
  items[k] = items[from];
}

// Swaps one strictly ordered adjacent pair: the multiset is unchanged, the order is broken.
// Feasibility (such a pair exists) is ensured by choose_faults.
void break_order(std::vector<std::string>& items, std::mt19937_64& rng) {
  std::vector<size_t> strict;
  for (size_t i = 0; i + 1 < items.size(); ++i)
    if (items[i] != items[i + 1]) strict.push_back(i);
  if (strict.empty()) return;
  size_t i = strict[uniform_index(rng, strict.size())];
  std::swap(items[i], items[i + 1]);
}

template <typename T, size_t N>
T other_than(const std::array<T, N>& all, T current, std::mt19937_64& rng) {
  std::vector<T> others;
  for (T v : all)
    if (v != current) others.push_back(v);
  return others[uniform_index(rng, others.size())];
}

struct FaultPlan {
  std::vector<Fault> faults;
  bool add_item = false;  // for Fault::Count
};

FaultPlan choose_faults(const ListSpec& spec, int n_faults, std::mt19937_64& rng) {
  std::vector<Fault> available;
  for (Fault f : kAllFaults)
    if (f != Fault::WrongOrder || spec.order != Order::Any) available.push_back(f);
  if (n_faults < 1 || static_cast<size_t>(n_faults) > available.size())
    throw Error("lists: n_faults must be in [1, " + std::to_string(available.size()) + "], got " +
                std::to_string(n_faults));
  // Two items that are duplicates of each other are always in order, so "duplicate" together
  // with "wrong order" needs at least three items; redraw the few plans where that fails.
  for (int attempt = 0; attempt < 1000; ++attempt) {
    FaultPlan plan;
    std::vector<Fault> pool = available;
    shuffle(pool, rng);
    plan.faults.assign(pool.begin(), pool.begin() + n_faults);
    // Dropping from a minimal list would leave a single item and no separator to judge.
    plan.add_item = spec.count <= kMinCount || bernoulli(rng, 0.5);
    int final_count = spec.count + (contains(plan.faults, Fault::Count) ? (plan.add_item ? 1 : -1) : 0);
    bool feasible = !(contains(plan.faults, Fault::Duplicate) && contains(plan.faults, Fault::WrongOrder) &&
                      final_count < 3);
    if (feasible) return plan;
  }
  throw Error("lists: found no feasible combination of " + std::to_string(n_faults) + " faults");
}

// ---------------------------------------------------------------------------------------------
// Judge.

struct ParsedResponse {
  std::vector<std::string> items;  // as written, trimmed
  std::set<int> separators_used;   // indices into kSeparatorChar
  bool clean_ending = true;
};

ParsedResponse parse_response(std::string_view response) {
  ParsedResponse parsed;
  std::string_view s = trim(response);
  size_t start = 0;
  for (size_t i = 0; i <= s.size(); ++i) {
    int sep = i < s.size() ? separator_index(s[i]) : -1;
    if (i < s.size() && sep < 0) continue;
    parsed.items.emplace_back(trim(s.substr(start, i - start)));
    if (sep >= 0) parsed.separators_used.insert(sep);
    start = i + 1;
  }
  // Whatever follows the last word ("etc.", "...", a final period or separator) is not an item
  // but a dirty ending; splitting it off keeps count and category judged on the words alone.
  auto& items = parsed.items;
  if (items.size() > 1 && items.back().empty()) {
    items.pop_back();
    parsed.clean_ending = false;
  }
  std::string& last = items.back();
  size_t word_len = 0;
  while (word_len < last.size() && is_letter(last[word_len])) ++word_len;
  if (word_len < last.size()) {
    parsed.clean_ending = false;
    if (word_len > 0)
      last.resize(word_len);
    else if (items.size() > 1)
      items.pop_back();
  }
  return parsed;
}

}  // namespace

// -------------------------------------------------------------------------------------------------

const std::vector<std::string>& categories() { return catalog().names; }

const std::vector<std::string>& words(const std::string& category) {
  const auto* list = find_words(category);
  if (list == nullptr) {
    std::string known;
    for (const auto& name : categories()) known += (known.empty() ? "" : ", ") + name;
    throw Error("lists: unknown category '" + category + "'; known: " + known);
  }
  return *list;
}

ListSpec random_spec(std::mt19937_64& rng, int min_count, int max_count) {
  if (min_count < kMinCount || max_count > kMaxCount || min_count > max_count)
    throw Error("lists: count range must lie within [2, 8], got [" + std::to_string(min_count) + ", " +
                std::to_string(max_count) + "]");
  ListSpec spec;
  spec.count =
      min_count + static_cast<int>(uniform_index(rng, static_cast<size_t>(max_count - min_count + 1)));
  spec.category = categories()[uniform_index(rng, categories().size())];
  spec.order = kOrders[uniform_index(rng, kOrders.size())];
  spec.separator = kSeparators[uniform_index(rng, kSeparators.size())];
  spec.letter_case = kCases[uniform_index(rng, kCases.size())];
  return spec;
}

std::string render_prompt(const ListSpec& spec) {
  return "List " + std::to_string(spec.count) + " " + spec.category + " in " +
         kOrderPhrase[static_cast<size_t>(spec.order)] + ", " +
         kSeparatorPhrase[static_cast<size_t>(spec.separator)] + ", " +
         kCasePhrase[static_cast<size_t>(spec.letter_case)] + ".";
}

std::optional<ListSpec> parse_prompt(const std::string& prompt) {
  const std::string_view whole = trim(prompt);
  std::string_view s = whole;
  constexpr std::string_view kHead = "List ";
  if (s.substr(0, kHead.size()) != kHead) return std::nullopt;
  s.remove_prefix(kHead.size());
  if (s.size() < 2 || s[0] < '0' || s[0] > '9' || s[1] != ' ') return std::nullopt;
  ListSpec spec;
  spec.count = s[0] - '0';
  if (spec.count < kMinCount || spec.count > kMaxCount) return std::nullopt;
  s.remove_prefix(2);
  size_t space = s.find(' ');
  if (space == std::string_view::npos) return std::nullopt;
  spec.category = std::string(s.substr(0, space));
  if (find_words(spec.category) == nullptr) return std::nullopt;
  // Matching the whole rendered prompt, rather than phrase by phrase, makes this the exact
  // inverse of render_prompt by construction.
  for (Order order : kOrders)
    for (Separator separator : kSeparators)
      for (LetterCase letter_case : kCases) {
        spec.order = order;
        spec.separator = separator;
        spec.letter_case = letter_case;
        if (render_prompt(spec) == whole) return spec;
      }
  return std::nullopt;
}

namespace {

std::string perfect_from_items(const ListSpec& spec, std::vector<std::string> items) {
  for (auto& item : items) item = apply_case(item, spec.letter_case);
  return join(items, spec.separator);
}

std::string faulty_from_items(const ListSpec& spec, std::vector<std::string> items, int n_faults,
                              std::mt19937_64& rng) {
  FaultPlan plan = choose_faults(spec, n_faults, rng);
  const auto has = [&](Fault f) { return contains(plan.faults, f); };

  // Item-level faults first, in an order where none undoes another.
  if (has(Fault::Count)) add_or_drop_item(items, spec, plan.add_item, rng);
  size_t foreign_index = items.size();  // none
  if (has(Fault::Foreign)) foreign_index = put_foreign_word(items, spec, rng);
  if (has(Fault::Duplicate)) put_duplicate(items, foreign_index, rng);
  if (has(Fault::WrongOrder)) break_order(items, rng);

  for (auto& item : items) item = apply_case(item, spec.letter_case);
  if (has(Fault::WrongCase)) {
    LetterCase wrong = other_than(kCases, spec.letter_case, rng);
    if (bernoulli(rng, 0.5)) {
      for (auto& item : items) item = apply_case(item, wrong);
    } else {
      auto& item = items[uniform_index(rng, items.size())];
      item = apply_case(item, wrong);
    }
  }
  Separator separator =
      has(Fault::WrongSeparator) ? other_than(kSeparators, spec.separator, rng) : spec.separator;
  std::string answer = join(items, separator);
  if (has(Fault::Junk)) answer += kJunk[uniform_index(rng, kJunk.size())];
  return answer;
}

}  // namespace

std::string perfect_answer(const ListSpec& spec, std::mt19937_64& rng) {
  return perfect_from_items(spec, sample_items(spec, rng));
}

std::string faulty_answer(const ListSpec& spec, int n_faults, std::mt19937_64& rng) {
  return faulty_from_items(spec, sample_items(spec, rng), n_faults, rng);
}

JudgeResult judge(const ListSpec& spec, const std::string& response) {
  JudgeResult result;
  const auto check = [&](const char* name, bool met) {
    ++result.total;
    if (met)
      ++result.met;
    else
      result.failed.emplace_back(name);
  };
  ParsedResponse parsed;
  bool empty = trim(response).empty();
  if (!empty) parsed = parse_response(response);
  const auto& items = parsed.items;

  std::vector<std::string> lowered;
  for (const auto& item : items) lowered.push_back(lower(item));
  const auto* pool = find_words(spec.category);

  // An empty response meets nothing, rather than vacuously meeting the per-item constraints.
  check("count", !empty && items.size() == static_cast<size_t>(std::max(spec.count, 0)));
  check("category",
        !empty && pool != nullptr && std::all_of(lowered.begin(), lowered.end(), [&](const std::string& w) {
          return std::binary_search(pool->begin(), pool->end(), w);
        }));
  check("no_duplicates",
        !empty && std::set<std::string>(lowered.begin(), lowered.end()).size() == lowered.size());
  bool ordered = true;
  for (size_t i = 0; i + 1 < lowered.size(); ++i)
    ordered = ordered && in_order(lowered[i], lowered[i + 1], spec.order);
  check("order", !empty && ordered);
  int expected_separator = static_cast<int>(spec.separator);
  check("separator", !empty && parsed.separators_used == std::set<int>{expected_separator});
  check("case", !empty && std::all_of(items.begin(), items.end(), [&](const std::string& item) {
          return has_case(item, spec.letter_case);
        }));
  check("clean_ending", !empty && parsed.clean_ending);

  result.score = static_cast<double>(result.met) / static_cast<double>(result.total);
  return result;
}

std::optional<JudgeResult> judge_prompt(const std::string& prompt, const std::string& response) {
  std::optional<ListSpec> spec = parse_prompt(prompt);
  if (!spec) return std::nullopt;
  return judge(*spec, response);
}

LengthBucket bucket_of(const ListSpec& spec) {
  if (spec.count <= 3) return LengthBucket::Short;
  if (spec.count <= 5) return LengthBucket::Medium;
  return LengthBucket::Long;
}

const char* bucket_name(LengthBucket bucket) {
  switch (bucket) {
    case LengthBucket::Short:
      return "short";
    case LengthBucket::Medium:
      return "medium";
    case LengthBucket::Long:
      return "long";
  }
  return "unknown";
}

namespace {

int random_fault_count(std::mt19937_64& rng) { return 1 + static_cast<int>(uniform_index(rng, 3)); }

}  // namespace

std::vector<SftExample> make_sft_corpus(int64_t n, double perfect_fraction, uint64_t seed) {
  tasks::check_count(n, "lists: number of SFT examples");
  tasks::check_fraction(perfect_fraction, "lists: perfect_fraction");
  std::mt19937_64 rng(seed);
  std::vector<SftExample> corpus;
  corpus.reserve(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    ListSpec spec = random_spec(rng);
    std::string completion = bernoulli(rng, perfect_fraction)
                                 ? perfect_answer(spec, rng)
                                 : faulty_answer(spec, random_fault_count(rng), rng);
    corpus.push_back({render_prompt(spec), std::move(completion)});
  }
  return corpus;
}

std::vector<PreferenceExample> make_preference_pairs(int64_t n, double label_noise, uint64_t seed) {
  tasks::check_count(n, "lists: number of preference pairs");
  tasks::check_fraction(label_noise, "lists: label_noise");
  std::mt19937_64 rng(seed);
  std::vector<PreferenceExample> pairs;
  pairs.reserve(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    ListSpec spec = random_spec(rng);
    // Three pairs in four teach "perfect beats flawed", the rest "fewer flaws beat more flaws".
    bool with_perfect = bernoulli(rng, 0.75);
    std::string a, b;
    double score_a = 0.0, score_b = 0.0;
    // Both answers list the same words: a minimal pair that differs only in its faults, so the
    // preference signal is the faults and not the luck of the word draw.
    const std::vector<std::string> items = sample_items(spec, rng);
    for (int attempt = 0; attempt < 100 && score_a == score_b; ++attempt) {
      a = with_perfect ? perfect_from_items(spec, items)
                       : faulty_from_items(spec, items, random_fault_count(rng), rng);
      b = faulty_from_items(spec, items, random_fault_count(rng), rng);
      score_a = judge(spec, a).score;
      score_b = judge(spec, b).score;
    }
    if (score_a == score_b) {  // cannot happen while faults break one constraint each
      a = perfect_answer(spec, rng);
      score_a = 1.0;
    }
    if (score_a < score_b) std::swap(a, b);
    if (bernoulli(rng, label_noise)) std::swap(a, b);
    pairs.push_back({render_prompt(spec), std::move(a), std::move(b)});
  }
  return pairs;
}

std::vector<std::string> make_eval_prompts(int64_t n, uint64_t seed) {
  tasks::check_count(n, "lists: number of evaluation prompts");
  constexpr std::array<std::pair<int, int>, 3> kBucketCounts = {{{2, 3}, {4, 5}, {6, 8}}};
  std::mt19937_64 rng(seed);
  std::vector<std::string> prompts;
  prompts.reserve(static_cast<size_t>(n));
  std::set<std::string> seen;
  for (int64_t i = 0; i < n; ++i) {
    auto [lo, hi] = kBucketCounts[static_cast<size_t>(i % 3)];
    // Distinct prompts while the bucket has unused ones; repeats only once it is exhausted.
    std::string prompt;
    for (int attempt = 0; attempt < 64; ++attempt) {
      prompt = render_prompt(random_spec(rng, lo, hi));
      if (seen.insert(prompt).second) break;
    }
    prompts.push_back(std::move(prompt));
  }
  return prompts;
}

}  // namespace ganpo::lists
