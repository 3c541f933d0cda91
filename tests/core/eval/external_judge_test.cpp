// The external judge protocol with real child processes (sh -c scripts): scores in order, and
// every way a judge can misbehave (exit, garbage, too few lines, never reading, hanging, not
// found) as a JudgeError that says what happened, with nothing left running; the command is an
// argument list that no shell interprets.
#include "core/eval/external_judge.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/command_line.h"

namespace ganpo {
namespace {

std::vector<JudgeRow> rows() {
  return {{"List 3 fruits.", "apple, pear, plum"}, {"Say hi", "hi \"there\"\nnew line"}, {"Ünïcode ✓", ""}};
}

// The judge runs without a shell: a test that wants one says so, as a user would.
std::string sh(const std::string& script) {
  std::string quoted;
  for (char c : script) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return "sh -c '" + quoted + "'";
}

std::string error_of(const std::string& command, double timeout = 60) {
  try {
    run_judge_command(command, rows(), timeout);
  } catch (const JudgeError& e) {
    return e.what();
  }
  return "";
}

TEST(ExternalJudge, ScoresComeBackInInputOrder) {
  // Scores each input line by its length in bytes.
  const auto scores = run_judge_command(
      sh("while IFS= read -r line; do printf '{\"score\": %d}\\n' \"$(printf '%s' \"$line\" | wc -c)\"; done"), rows());
  ASSERT_EQ(scores.size(), 3u);
  for (size_t i = 0; i < scores.size(); ++i) {
    const std::string line = nlohmann::json{{"prompt", rows()[i].prompt}, {"completion", rows()[i].completion}}.dump();
    EXPECT_EQ(scores[i], static_cast<double>(line.size())) << i;
  }
  // Blank lines and CRLF are tolerated; fractional scores are kept.
  const auto crlf = run_judge_command(sh("cat >/dev/null; printf '{\"score\": 0.25}\\r\\n\\n{\"score\": -1}\\n{\"score\": 1e-3}\\n'"), rows());
  EXPECT_EQ(crlf, (std::vector<double>{0.25, -1, 1e-3}));
  EXPECT_TRUE(run_judge_command(sh("cat >/dev/null"), {}).empty());
}

TEST(ExternalJudge, MisbehavingJudgesGiveClearErrors) {
  std::string e = error_of(sh("read line; echo 'model weights not found' >&2; exit 3"));
  EXPECT_NE(e.find("exited with status 3"), std::string::npos) << e;
  EXPECT_NE(e.find("model weights not found"), std::string::npos) << e;

  e = error_of(sh("while read -r line; do echo hello; done"));
  EXPECT_NE(e.find("line 1 of its output is not {\"score\""), std::string::npos) << e;
  EXPECT_NE(e.find("hello"), std::string::npos) << e;

  e = error_of(sh("cat >/dev/null; echo '{\"score\": \"high\"}'"));
  EXPECT_NE(e.find("is not {\"score\""), std::string::npos) << e;

  e = error_of(sh("read line; echo '{\"score\": 1}'"));  // stops reading after one line
  EXPECT_NE(e.find("printed 1 score(s) for 3 input line(s)"), std::string::npos) << e;

  e = error_of(sh("true"));  // never reads its input
  EXPECT_NE(e.find("printed 0 score(s)"), std::string::npos) << e;

  e = error_of(sh("kill -9 $$"));
  EXPECT_NE(e.find("killed by signal 9"), std::string::npos) << e;

  e = error_of("no-such-judge-program --flag");
  EXPECT_NE(e.find("no executable program no-such-judge-program on the PATH"), std::string::npos) << e;
}

TEST(ExternalJudge, TheCommandIsAnArgumentListThatNoShellSees) {
  const auto marker = std::filesystem::temp_directory_path() / ("ganpo-judge-pwned-" + std::to_string(::getpid()));
  std::filesystem::remove(marker);
  // The quoted argument reaches the judge as its literal bytes; nothing expands or runs it.
  const std::string argument = "$(touch " + marker.string() + ")";
  const auto scores = run_judge_command(
      "sh -c 'cat >/dev/null; for i in 1 2 3; do echo \"{\\\"score\\\": ${#1}}\"; done' judge '" + argument + "'",
      rows());
  EXPECT_EQ(scores, (std::vector<double>(3, static_cast<double>(argument.size()))));
  EXPECT_FALSE(std::filesystem::exists(marker));

  // Shell syntax outside quotes is refused before anything starts, with what to do instead.
  for (const char* command : {"python3 judge.py; touch x", "judge | tee log", "judge > out", "echo $HOME",
                              "judge `id`", "judge & disown"}) {
    const std::string e = error_of(command);
    EXPECT_NE(e.find("would need a shell, and the command runs without one"), std::string::npos) << command << ": " << e;
    EXPECT_NE(e.find("sh -c"), std::string::npos) << e;
  }
  EXPECT_NE(error_of("judge 'unclosed").find("single quote at character 7 is not closed"), std::string::npos);
  EXPECT_NE(error_of("   ").find("the command is empty"), std::string::npos);
}

TEST(CommandLine, SplitsWordsLikeAShellWithoutExpanding) {
  std::vector<std::string> argv;
  EXPECT_EQ(split_command_line(R"(python3  judge.py --name 'a b' "c \"d\" \$e" f\ g '')", argv), "");
  EXPECT_EQ(argv, (std::vector<std::string>{"python3", "judge.py", "--name", "a b", R"(c "d" $e)", "f g", ""}));
  EXPECT_EQ(split_command_line(R"(sh -c 'it'\''s')", argv), "");
  EXPECT_EQ(argv, (std::vector<std::string>{"sh", "-c", "it's"}));
  EXPECT_NE(split_command_line("judge \"open", argv).find("double quote at character 7 is not closed"), std::string::npos);
  EXPECT_NE(split_command_line("judge \\", argv).find("ends with a backslash"), std::string::npos);
  EXPECT_NE(split_command_line(R"(judge "$HOME/x")", argv).find("would be expanded by a shell"), std::string::npos);
  EXPECT_EQ(split_command_line("judge.py \\\n  --x \"a\\\nb\"", argv), "");  // backslash-newline joins lines
  EXPECT_EQ(argv, (std::vector<std::string>{"judge.py", "--x", "ab"}));
}

TEST(ExternalJudge, TextThatIsNotUtf8IsSentWithReplacementCharacters) {
  // A byte model's sample may end inside a character.
  const auto scores = run_judge_command(
      sh("while IFS= read -r line; do printf '{\"score\": %d}\\n' \"$(printf '%s' \"$line\" | wc -c)\"; done"),
      {{"p", "ok\xff"}});
  const std::string sent = nlohmann::json{{"prompt", "p"}, {"completion", "ok\xEF\xBF\xBD"}}.dump();
  EXPECT_EQ(scores, (std::vector<double>{static_cast<double>(sent.size())})) << "the byte became U+FFFD";
  EXPECT_NE(error_of(sh("cat >/dev/null; echo '{\"score\": 1}'"), 0).find("positive number of seconds"), std::string::npos);
}

TEST(ExternalJudge, AHangingJudgeIsStoppedAtTheTimeLimit) {
  // The judge and the child it starts both sleep; the whole group is killed.
  const std::string e = error_of(sh("sleep 1000 & sleep 1000"), 0.5);
  EXPECT_NE(e.find("did not finish within 0.5 s"), std::string::npos) << e;
  // Its output closed early, the judge still runs: the limit covers waiting for it too.
  const std::string quiet = error_of(sh("exec >/dev/null 2>&1; sleep 1000"), 0.5);
  EXPECT_NE(quiet.find("did not finish within 0.5 s"), std::string::npos) << quiet;
}

}  // namespace
}  // namespace ganpo
