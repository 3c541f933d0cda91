// The task interface: every built-in task by name, deterministic corpora, balanced and distinct
// evaluation prompts, preference pairs ordered by the task's own judge (and swapped by label
// noise), and prompts judged by whichever task made them.
#include "core/tasks/task.h"

#include <gtest/gtest.h>

#include <map>
#include <set>

#include "core/error.h"

namespace ganpo {
namespace {

TEST(Tasks, BuiltInTasksByNameAndAClearErrorForOthers) {
  std::vector<std::string> names;
  for (const Task* t : builtin_tasks()) names.push_back(t->name());
  EXPECT_EQ(names, (std::vector<std::string>{"lists", "arithmetic", "mixed"}));
  EXPECT_EQ(find_builtin_task("arithmetic")->name(), "arithmetic");
  EXPECT_EQ(find_builtin_task("words"), nullptr);
  try {
    builtin_task("words");
    FAIL() << "no error";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("lists, arithmetic, mixed"), std::string::npos) << e.what();
  }
}

TEST(Tasks, EveryTaskIsDeterministicBalancedAndJudgesItsOwnData) {
  for (const Task* task : builtin_tasks()) {
    SCOPED_TRACE(task->name());
    EXPECT_FALSE(task->description().empty());
    const auto sft = task->sft_corpus(60, 1.0, 3);
    ASSERT_EQ(sft.size(), 60u);
    for (const auto& ex : sft) EXPECT_EQ(task->judge(ex.prompt, ex.completion), 1.0) << ex.prompt << " -> " << ex.completion;
    EXPECT_EQ(task->sft_corpus(60, 0.5, 3)[7].prompt, task->sft_corpus(60, 0.5, 3)[7].prompt);

    const auto pairs = task->preference_pairs(200, 0.0, 9);
    ASSERT_EQ(pairs.size(), 200u);
    for (const auto& ex : pairs) EXPECT_GT(*task->judge(ex.prompt, ex.chosen), *task->judge(ex.prompt, ex.rejected));
    const auto noisy = task->preference_pairs(200, 1.0, 9);  // the same draws, every pair swapped
    for (size_t i = 0; i < pairs.size(); ++i) {
      EXPECT_EQ(noisy[i].chosen, pairs[i].rejected);
      EXPECT_EQ(noisy[i].rejected, pairs[i].chosen);
    }

    const auto prompts = task->eval_prompts(90, 21);
    ASSERT_EQ(prompts.size(), 90u);
    std::map<std::string, int> per_bucket;
    std::set<std::string> distinct;
    for (const auto& p : prompts) {
      ++per_bucket[p.bucket];
      distinct.insert(p.prompt);
      EXPECT_TRUE(task->judge(p.prompt, "x")) << p.prompt;
      EXPECT_EQ(p.for_judge(), p.prompt);
    }
    EXPECT_EQ(per_bucket, (std::map<std::string, int>{{"long", 30}, {"medium", 30}, {"short", 30}}));
    EXPECT_EQ(distinct.size(), 90u);
    EXPECT_EQ(task->eval_prompts(90, 21)[44].prompt, prompts[44].prompt);
    EXPECT_NE(task->eval_prompts(90, 22)[44].prompt, prompts[44].prompt);
  }
}

TEST(Tasks, APromptIsJudgedByTheTaskThatMadeIt) {
  const auto lists = find_builtin_task("lists")->eval_prompts(3, 1);
  const auto arithmetic = find_builtin_task("arithmetic")->eval_prompts(3, 1);
  EXPECT_FALSE(find_builtin_task("arithmetic")->judge(lists[0].prompt, "a"));
  EXPECT_FALSE(find_builtin_task("lists")->judge(arithmetic[0].prompt, "a"));
  EXPECT_TRUE(judge_builtin_prompt(lists[0].prompt, "a"));
  EXPECT_TRUE(judge_builtin_prompt(arithmetic[0].prompt, "12"));
  EXPECT_FALSE(judge_builtin_prompt("Hello there", "hi"));
  // "mixed" holds both kinds, half each.
  std::set<std::string> kinds;
  for (const auto& p : find_builtin_task("mixed")->eval_prompts(6, 1))
    kinds.insert(find_builtin_task("lists")->judge(p.prompt, "") ? "lists" : "arithmetic");
  EXPECT_EQ(kinds.size(), 2u);
}

}  // namespace
}  // namespace ganpo
