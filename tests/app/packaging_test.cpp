// Command-line manners: `--version`, options after a subcommand's action, and a bash completion
// that knows every subcommand `ganpo --help` lists.
#include <gtest/gtest.h>

#include <fstream>
#include <regex>
#include <sstream>
#include <string>

#include "tests/support/cli_runner.h"
#include "tests/support/expect_contains.h"

namespace ganpo::test {
namespace {

TEST(CliManners, VersionNamesTheBuildAndLibTorch) {
  auto r = run_cli("--version");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(std::regex_search(r.output, std::regex("^ganpo [0-9]+\\.[0-9]+\\.[0-9]+ \\(git [^)]+\\)\nLibTorch [0-9.]+, ")))
      << r.output;
}

TEST(CliManners, WorkspaceOptionWorksAfterTheRunsAction) {
  ASSERT_TRUE(use_private_workspace());
  const auto dir = fresh_test_dir("ganpo-cli");
  const std::string db = (dir / "ws.sqlite").string();
  auto before = run_cli("runs --db " + db + " list");
  EXPECT_EQ(before.exit_code, 0) << before.output;
  auto after = run_cli("runs list --db " + db);
  EXPECT_EQ(after.exit_code, 0) << after.output;
  EXPECT_EQ(after.output, before.output);
}

// --db "" opened the default workspace without a word, and --no-db beside --db or --run was
// ignored (a run recorded nowhere, or a stored run trained anyway): each is refused as usage.
TEST(CliManners, AnEmptyWorkspaceNameAndNoDbBesideDbOrRunAreRefused) {
  ASSERT_TRUE(use_private_workspace());
  for (const char* args : {"runs list --db \"\"", "study --db \"\" status 1", "train --config x.toml --db \"\"",
                           "study plan x.toml --db \"\"", "demo --db \"\""}) {
    auto r = run_cli(args);
    EXPECT_EQ(r.exit_code, 2) << args << ": " << r.output;
    EXPECT_CONTAINS(r.output, "--db: must name a workspace file, got \"\"; leave --db out for the default workspace");
  }
  for (const char* args : {"train --config x.toml --no-db --db w.sqlite", "train --no-db --run 1", "demo --no-db --db w.sqlite"}) {
    auto r = run_cli(args);
    EXPECT_EQ(r.exit_code, 2) << args << ": " << r.output;
    EXPECT_CONTAINS(r.output, "excludes --");
  }
}

TEST(CliManners, BashCompletionKnowsEverySubcommand) {
  auto help = run_cli("--help");
  ASSERT_EQ(help.exit_code, 0) << help.output;
  std::ifstream file(std::string(GANPO_SOURCE_DIR) + "/packaging/ganpo.bash-completion");
  const std::string completion((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  ASSERT_FALSE(completion.empty());
  auto at = help.output.find("Subcommands:");
  if (at == std::string::npos) at = help.output.find("SUBCOMMANDS:");  // CLI11 2.5 and later
  ASSERT_NE(at, std::string::npos) << help.output;
  std::istringstream lines(help.output.substr(at));
  std::string line;
  std::getline(lines, line);
  int subcommands = 0;
  while (std::getline(lines, line)) {
    std::smatch m;
    if (!std::regex_search(line, m, std::regex("^  ([a-z]+) "))) continue;
    EXPECT_CONTAINS(completion, " " + m[1].str() + ")");
    ++subcommands;
  }
  EXPECT_GE(subcommands, 10);
}

}  // namespace
}  // namespace ganpo::test
