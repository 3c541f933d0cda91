#include "core/tasks/lists_task.h"

#include <algorithm>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "core/error.h"

namespace ganpo::lists {
namespace {

ListSpec make_spec(int count, const std::string& category, Order order, Separator separator,
                   LetterCase letter_case) {
  ListSpec spec;
  spec.count = count;
  spec.category = category;
  spec.order = order;
  spec.separator = separator;
  spec.letter_case = letter_case;
  return spec;
}

const ListSpec kFruits4 = make_spec(4, "fruits", Order::Alphabetical, Separator::Comma, LetterCase::Lower);

bool same_spec(const ListSpec& a, const ListSpec& b) {
  return a.count == b.count && a.category == b.category && a.order == b.order && a.separator == b.separator &&
         a.letter_case == b.letter_case;
}

std::set<std::string> failed_set(const JudgeResult& r) { return {r.failed.begin(), r.failed.end()}; }

TEST(ListsWordLists, CategoriesAreWellFormedAndDisjoint) {
  const auto& cats = categories();
  ASSERT_GE(cats.size(), 8u);
  ASSERT_LE(cats.size(), 10u);
  EXPECT_TRUE(std::is_sorted(cats.begin(), cats.end()));
  std::map<std::string, std::string> owner;
  for (const auto& cat : cats) {
    const auto& list = words(cat);
    EXPECT_GE(list.size(), 10u) << cat;
    EXPECT_LE(list.size(), 40u) << cat;
    EXPECT_TRUE(std::is_sorted(list.begin(), list.end())) << cat;
    for (const auto& w : list) {
      EXPECT_GE(w.size(), 3u) << w;
      EXPECT_LE(w.size(), 9u) << w;
      EXPECT_TRUE(std::all_of(w.begin(), w.end(), [](char c) { return c >= 'a' && c <= 'z'; })) << w;
      auto [it, inserted] = owner.emplace(w, cat);
      EXPECT_TRUE(inserted) << w << " is in both " << it->second << " and " << cat;
    }
  }
}

TEST(ListsWordLists, UnknownCategoryThrows) { EXPECT_THROW(words("spaceships"), Error); }

TEST(ListsPrompt, RendersTheDocumentedTemplate) {
  EXPECT_EQ(render_prompt(kFruits4),
            "List 4 fruits in alphabetical order, separated by commas, in lower case.");
  EXPECT_EQ(render_prompt(make_spec(3, "animals", Order::Reverse, Separator::Semicolon, LetterCase::Upper)),
            "List 3 animals in reverse alphabetical order, separated by semicolons, in upper case.");
  EXPECT_EQ(render_prompt(make_spec(5, "colors", Order::Any, Separator::Newline, LetterCase::Capitalized)),
            "List 5 colors in any order, one per line, capitalized.");
  EXPECT_EQ(render_prompt(make_spec(8, "tools", Order::Any, Separator::Pipe, LetterCase::Lower)),
            "List 8 tools in any order, separated by pipes, in lower case.");
}

TEST(ListsPrompt, RoundTripsEverySpec) {
  for (const auto& cat : categories())
    for (int count = 2; count <= 8; ++count)
      for (Order order : {Order::Alphabetical, Order::Reverse, Order::Any})
        for (Separator sep : {Separator::Comma, Separator::Semicolon, Separator::Newline, Separator::Pipe})
          for (LetterCase lc : {LetterCase::Lower, LetterCase::Upper, LetterCase::Capitalized}) {
            ListSpec spec = make_spec(count, cat, order, sep, lc);
            std::string prompt = render_prompt(spec);
            EXPECT_LT(prompt.size(), 90u) << prompt;
            auto parsed = parse_prompt(prompt);
            ASSERT_TRUE(parsed.has_value()) << prompt;
            EXPECT_TRUE(same_spec(*parsed, spec)) << prompt;
            auto padded = parse_prompt(" \n\t" + prompt + "\n ");
            ASSERT_TRUE(padded.has_value()) << prompt;
            EXPECT_TRUE(same_spec(*padded, spec)) << prompt;
          }
}

TEST(ListsPrompt, RoundTripsRandomSpecs) {
  std::mt19937_64 rng(7);
  for (int i = 0; i < 2000; ++i) {
    ListSpec spec = random_spec(rng);
    EXPECT_GE(spec.count, 2);
    EXPECT_LE(spec.count, 8);
    auto parsed = parse_prompt(render_prompt(spec));
    ASSERT_TRUE(parsed.has_value());
    EXPECT_TRUE(same_spec(*parsed, spec));
  }
}

TEST(ListsPrompt, RejectsOtherText) {
  const std::string good = render_prompt(kFruits4);
  for (const std::string& text : std::vector<std::string>{
           "",
           "   ",
           "List",
           "List 4 fruits",
           good.substr(0, good.size() - 1),
           good + " Thanks.",
           good + ".",
           "list 4 fruits in alphabetical order, separated by commas, in lower case.",
           "List 4  fruits in alphabetical order, separated by commas, in lower case.",
           "List 04 fruits in alphabetical order, separated by commas, in lower case.",
           "List 9 fruits in alphabetical order, separated by commas, in lower case.",
           "List 1 fruits in alphabetical order, separated by commas, in lower case.",
           "List 10 fruits in alphabetical order, separated by commas, in lower case.",
           "List 4 spaceships in alphabetical order, separated by commas, in lower case.",
           "List 4 fruits in random order, separated by commas, in lower case.",
           "List 4 fruits in alphabetical order, separated by tabs, in lower case.",
           "List 4 fruits in alphabetical order, separated by commas, in title case.",
           "List 4 fruits in alphabetical order, in lower case, separated by commas.",
           std::string("List 4 fruits\0 in alphabetical order", 35),
           "What is the capital of France?"}) {
    EXPECT_FALSE(parse_prompt(text).has_value()) << text;
  }
}

TEST(ListsJudge, HandWrittenExamples) {
  struct Case {
    ListSpec spec;
    std::string response;
    std::set<std::string> failed;
  };
  const ListSpec upper_rev_semi =
      make_spec(3, "animals", Order::Reverse, Separator::Semicolon, LetterCase::Upper);
  const ListSpec cap_any_lines =
      make_spec(2, "colors", Order::Any, Separator::Newline, LetterCase::Capitalized);
  const std::vector<Case> cases = {
      {kFruits4, "apple, banana, fig, grape", {}},
      {kFruits4, "  apple,banana ,fig,   grape\n", {}},
      {kFruits4, "banana, apple, fig, grape", {"order"}},
      {kFruits4, "apple, banana, fig", {"count"}},
      {kFruits4, "apple, banana, fig, grape, mango", {"count"}},
      {kFruits4, "apple, banana, carrot, grape", {"category"}},
      {kFruits4, "apple, banana, banana, grape", {"no_duplicates"}},
      {kFruits4, "apple; banana; fig; grape", {"separator"}},
      {kFruits4, "apple, banana; fig, grape", {"separator"}},
      {kFruits4, "apple, Banana, fig, grape", {"case"}},
      {kFruits4, "apple, banana, fig, grape etc.", {"clean_ending"}},
      {kFruits4, "apple, banana, fig, grape.", {"clean_ending"}},
      {kFruits4, "apple, banana, fig, grape,", {"clean_ending"}},
      {kFruits4, "apple, banana, fig, grape, ...", {"clean_ending"}},
      {kFruits4,
       "Banana; apple; carrot and more",
       {"count", "category", "order", "separator", "case", "clean_ending"}},
      {upper_rev_semi, "WOLF; LION; CAT", {}},
      {upper_rev_semi, "WOLF; Lion; CAT", {"case"}},
      {upper_rev_semi, "CAT; LION; WOLF", {"order"}},
      {upper_rev_semi, "WOLF | LION | CAT", {"separator"}},
      {cap_any_lines, "Teal\nAmber", {}},
      {cap_any_lines, "Teal\r\nAmber\r\n", {}},
      {cap_any_lines, "TEAL\nAmber", {"case"}},
      {cap_any_lines, "Teal, Amber", {"separator"}},
      {cap_any_lines, "Teal\n\nAmber", {"count", "category", "case"}},
  };
  for (const auto& c : cases) {
    JudgeResult r = judge(c.spec, c.response);
    EXPECT_EQ(r.total, 7) << c.response;
    EXPECT_EQ(failed_set(r), c.failed) << c.response;
    EXPECT_EQ(r.met, 7 - static_cast<int>(c.failed.size())) << c.response;
    EXPECT_DOUBLE_EQ(r.score, (7.0 - static_cast<double>(c.failed.size())) / 7.0) << c.response;
  }
}

TEST(ListsJudge, KnownScoresFromTheBrief) {
  EXPECT_DOUBLE_EQ(judge(kFruits4, "apple, banana, fig, grape").score, 1.0);
  EXPECT_DOUBLE_EQ(judge(kFruits4, "banana, apple, fig, grape").score, 6.0 / 7.0);
}

TEST(ListsJudge, JudgePromptParsesTheSpec) {
  auto r = judge_prompt(render_prompt(kFruits4), "apple, banana, fig, grape");
  ASSERT_TRUE(r.has_value());
  EXPECT_DOUBLE_EQ(r->score, 1.0);
  EXPECT_FALSE(judge_prompt("Write a poem.", "apple").has_value());
}

TEST(ListsJudge, NeverThrowsOnGarbage) {
  std::vector<std::string> responses = {"",
                                        " ",
                                        "\n\n\n",
                                        ",",
                                        ",,,;;;|||",
                                        "...",
                                        "\0\0\0",
                                        std::string(1 << 20, 'a'),
                                        std::string(1 << 20, ','),
                                        std::string(1 << 20, '\n')};
  std::string all_bytes;
  for (int b = 0; b < 256; ++b) all_bytes.push_back(static_cast<char>(b));
  responses.push_back(all_bytes);
  std::string huge;
  while (huge.size() < (1u << 20)) huge += "apple, ";
  responses.push_back(huge);
  std::mt19937_64 rng(3);
  for (int i = 0; i < 500; ++i) {
    std::string bytes(rng() % 200, '\0');
    for (char& c : bytes) c = static_cast<char>(rng() & 0xff);
    responses.push_back(bytes);
  }
  std::vector<ListSpec> specs = {
      kFruits4, make_spec(3, "no-such-category", Order::Any, Separator::Pipe, LetterCase::Upper),
      make_spec(-1, "", Order::Reverse, Separator::Newline, LetterCase::Capitalized)};
  for (const auto& spec : specs)
    for (const auto& response : responses) {
      JudgeResult r;
      ASSERT_NO_THROW(r = judge(spec, response));
      EXPECT_GE(r.score, 0.0);
      EXPECT_LE(r.score, 1.0);
      EXPECT_EQ(r.total, 7);
      EXPECT_EQ(r.met + static_cast<int>(r.failed.size()), r.total);
    }
  EXPECT_DOUBLE_EQ(judge(kFruits4, "").score, 0.0);
  EXPECT_DOUBLE_EQ(judge(kFruits4, " \n\t ").score, 0.0);
  // The 256 bytes split into four pieces in ascending byte order: count, no_duplicates and order
  // hold by accident, nothing else does.
  EXPECT_DOUBLE_EQ(judge(kFruits4, all_bytes).score, 3.0 / 7.0);
  EXPECT_NO_THROW(judge_prompt(all_bytes, all_bytes));
}

TEST(ListsAnswers, PerfectAnswersScoreOne) {
  std::mt19937_64 rng(11);
  for (int i = 0; i < 3000; ++i) {
    ListSpec spec = random_spec(rng);
    std::string answer = perfect_answer(spec, rng);
    JudgeResult r = judge(spec, answer);
    EXPECT_DOUBLE_EQ(r.score, 1.0) << render_prompt(spec) << "\n" << answer;
  }
}

TEST(ListsAnswers, PerfectAnswerFollowsTheFormatExactly) {
  std::mt19937_64 rng(5);
  std::string piped =
      perfect_answer(make_spec(8, "metals", Order::Alphabetical, Separator::Pipe, LetterCase::Upper), rng);
  size_t pipes = 0;
  for (size_t pos = piped.find(" | "); pos != std::string::npos; pos = piped.find(" | ", pos + 1)) ++pipes;
  EXPECT_EQ(pipes, 7u) << piped;
  EXPECT_TRUE(std::none_of(piped.begin(), piped.end(), [](char c) { return c >= 'a' && c <= 'z'; })) << piped;
  std::string lines =
      perfect_answer(make_spec(3, "colors", Order::Any, Separator::Newline, LetterCase::Capitalized), rng);
  EXPECT_EQ(std::count(lines.begin(), lines.end(), '\n'), 2) << lines;
  EXPECT_NE(lines.back(), '\n');
  EXPECT_THROW(
      perfect_answer(make_spec(4, "spaceships", Order::Any, Separator::Comma, LetterCase::Lower), rng),
      Error);
}

// Every fault is built to break exactly one constraint, so k faults give exactly k failures.
TEST(ListsAnswers, EachFaultBreaksExactlyOneConstraint) {
  std::mt19937_64 rng(13);
  std::map<std::string, int> single_fault_failures;
  for (int i = 0; i < 6000; ++i) {
    ListSpec spec = random_spec(rng);
    int n_faults = 1 + i % 3;
    std::string answer = faulty_answer(spec, n_faults, rng);
    JudgeResult r = judge(spec, answer);
    EXPECT_LT(r.score, 1.0) << render_prompt(spec) << "\n" << answer;
    EXPECT_EQ(static_cast<int>(r.failed.size()), n_faults) << render_prompt(spec) << "\n" << answer;
    if (n_faults == 1 && r.failed.size() == 1) ++single_fault_failures[r.failed[0]];
  }
  // Each of the seven fault kinds shows up as the one failed constraint.
  for (const char* name :
       {"count", "category", "no_duplicates", "order", "separator", "case", "clean_ending"})
    EXPECT_GT(single_fault_failures[name], 50) << name;
}

TEST(ListsAnswers, ManyFaultsStillScoreBelowOne) {
  std::mt19937_64 rng(17);
  for (int i = 0; i < 2000; ++i) {
    ListSpec spec = random_spec(rng, 2, 3);  // small lists are where faults could collide
    int max_faults = spec.order == Order::Any ? 6 : 7;
    int n_faults = 1 + static_cast<int>(rng() % static_cast<uint64_t>(max_faults));
    JudgeResult r = judge(spec, faulty_answer(spec, n_faults, rng));
    EXPECT_EQ(static_cast<int>(r.failed.size()), n_faults);
  }
}

TEST(ListsAnswers, OrderFaultNeedsAnOrder) {
  std::mt19937_64 rng(19);
  ListSpec spec = make_spec(4, "sports", Order::Any, Separator::Comma, LetterCase::Lower);
  for (int i = 0; i < 500; ++i) {
    JudgeResult r = judge(spec, faulty_answer(spec, 1, rng));
    EXPECT_NE(r.failed, std::vector<std::string>{"order"});
  }
  EXPECT_THROW(faulty_answer(spec, 7, rng), Error);
  EXPECT_THROW(faulty_answer(spec, 0, rng), Error);
}

TEST(ListsCorpus, SftIsDeterministicAndMixesAnswers) {
  auto a = make_sft_corpus(600, 0.5, 42);
  auto b = make_sft_corpus(600, 0.5, 42);
  auto c = make_sft_corpus(600, 0.5, 43);
  ASSERT_EQ(a.size(), 600u);
  int perfect = 0;
  bool differs = false;
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].prompt, b[i].prompt);
    EXPECT_EQ(a[i].completion, b[i].completion);
    differs = differs || a[i].completion != c[i].completion;
    auto r = judge_prompt(a[i].prompt, a[i].completion);
    ASSERT_TRUE(r.has_value());
    perfect += r->score == 1.0;
  }
  EXPECT_TRUE(differs);
  EXPECT_GT(perfect, 240);
  EXPECT_LT(perfect, 360);
  for (const auto& ex : make_sft_corpus(200, 1.0, 1))
    EXPECT_DOUBLE_EQ(judge_prompt(ex.prompt, ex.completion)->score, 1.0);
  for (const auto& ex : make_sft_corpus(200, 0.0, 1))
    EXPECT_LT(judge_prompt(ex.prompt, ex.completion)->score, 1.0);
  EXPECT_TRUE(make_sft_corpus(0, 0.5, 1).empty());
  EXPECT_THROW(make_sft_corpus(10, 1.5, 1), ConfigError);
  EXPECT_THROW(make_sft_corpus(-1, 0.5, 1), ConfigError);
}

TEST(ListsCorpus, PreferencePairsPreferTheHigherScore) {
  auto pairs = make_preference_pairs(1000, 0.0, 9);
  ASSERT_EQ(pairs.size(), 1000u);
  int with_perfect = 0;
  for (const auto& p : pairs) {
    auto chosen = judge_prompt(p.prompt, p.chosen);
    auto rejected = judge_prompt(p.prompt, p.rejected);
    ASSERT_TRUE(chosen && rejected);
    EXPECT_GT(chosen->score, rejected->score) << p.prompt << "\n" << p.chosen << "\n" << p.rejected;
    with_perfect += chosen->score == 1.0;
  }
  // Three pairs in four pit a perfect answer against a flawed one.
  EXPECT_GT(with_perfect, 700);
  EXPECT_LT(with_perfect, 800);
}

TEST(ListsCorpus, PreferencePairsAreDeterministic) {
  auto a = make_preference_pairs(300, 0.2, 5);
  auto b = make_preference_pairs(300, 0.2, 5);
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].prompt, b[i].prompt);
    EXPECT_EQ(a[i].chosen, b[i].chosen);
    EXPECT_EQ(a[i].rejected, b[i].rejected);
  }
}

TEST(ListsCorpus, LabelNoiseSwapsPairs) {
  for (const auto& p : make_preference_pairs(500, 1.0, 9))
    EXPECT_LT(judge_prompt(p.prompt, p.chosen)->score, judge_prompt(p.prompt, p.rejected)->score);
  int swapped = 0;
  for (const auto& p : make_preference_pairs(2000, 0.3, 9))
    swapped += judge_prompt(p.prompt, p.chosen)->score < judge_prompt(p.prompt, p.rejected)->score;
  EXPECT_GT(swapped, 500);
  EXPECT_LT(swapped, 700);
  EXPECT_THROW(make_preference_pairs(10, -0.1, 1), ConfigError);
}

TEST(ListsCorpus, EvalPromptsAreBalancedAndDeterministic) {
  for (int64_t n : {0, 1, 2, 300, 301, 302}) {
    auto prompts = make_eval_prompts(n, 21);
    ASSERT_EQ(static_cast<int64_t>(prompts.size()), n);
    EXPECT_EQ(prompts, make_eval_prompts(n, 21));
    std::map<LengthBucket, int64_t> per_bucket;
    for (const auto& prompt : prompts) {
      auto spec = parse_prompt(prompt);
      ASSERT_TRUE(spec.has_value()) << prompt;
      ++per_bucket[bucket_of(*spec)];
    }
    for (LengthBucket b : {LengthBucket::Short, LengthBucket::Medium, LengthBucket::Long}) {
      EXPECT_GE(per_bucket[b], n / 3) << bucket_name(b);
      EXPECT_LE(per_bucket[b], n / 3 + 1) << bucket_name(b);
    }
  }
  auto prompts = make_eval_prompts(300, 21);
  EXPECT_EQ(std::set<std::string>(prompts.begin(), prompts.end()).size(), prompts.size());
  EXPECT_NE(prompts, make_eval_prompts(300, 22));
}

TEST(ListsCorpus, Buckets) {
  EXPECT_EQ(bucket_of(make_spec(2, "fruits", Order::Any, Separator::Comma, LetterCase::Lower)),
            LengthBucket::Short);
  EXPECT_EQ(bucket_of(make_spec(3, "fruits", Order::Any, Separator::Comma, LetterCase::Lower)),
            LengthBucket::Short);
  EXPECT_EQ(bucket_of(make_spec(4, "fruits", Order::Any, Separator::Comma, LetterCase::Lower)),
            LengthBucket::Medium);
  EXPECT_EQ(bucket_of(make_spec(5, "fruits", Order::Any, Separator::Comma, LetterCase::Lower)),
            LengthBucket::Medium);
  EXPECT_EQ(bucket_of(make_spec(6, "fruits", Order::Any, Separator::Comma, LetterCase::Lower)),
            LengthBucket::Long);
  EXPECT_EQ(bucket_of(make_spec(8, "fruits", Order::Any, Separator::Comma, LetterCase::Lower)),
            LengthBucket::Long);
  EXPECT_STREQ(bucket_name(LengthBucket::Short), "short");
  EXPECT_STREQ(bucket_name(LengthBucket::Medium), "medium");
  EXPECT_STREQ(bucket_name(LengthBucket::Long), "long");
}

}  // namespace
}  // namespace ganpo::lists
