// `ganpo study plan` through the real binary: the run count and folders of a valid study, and
// an invalid combination named by arm and seed with a failing exit code, nothing started.
#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

#include "tests/core/temp_dir_support.h"
#include "tests/support/cli_runner.h"

namespace fs = std::filesystem;

namespace {

using ganpo::test::run_cli;

// Each test writes its study file into a folder of its own (see temp_dir_support.h).
class StudyCommands : public ::testing::Test {
protected:
  fs::path write_study(const std::string& name, const std::string& text) const {
    std::ofstream(dir_.path() / name) << text;
    return dir_.path() / name;
  }
  ganpo::test::TestTempDir dir_;
};

TEST_F(StudyCommands, PlanListsEveryRunAndStartsNothing) {
  const fs::path study = write_study("ok.toml", R"(
name = "grid"
seeds = [1, 2]
[base]
[grid]
"ganpo.enabled" = [false, true]
[[stage]]
name = "sft"
set = { stage = "sft" }
)");
  const fs::path out = study.parent_path() / "out";
  auto r = run_cli("study plan " + study.string() + " --out " + out.string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("grid: 5 run(s) = 1 shared stage(s) + 2 arm(s) x 2 seed(s)"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find((out / "enabled-true__seed-2").string()), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(out)) << "planning starts nothing";
  // Without --out: the folder `study create` will use, beside the workspace.
  const fs::path db = study.parent_path() / "ws" / "workspace.sqlite";
  r = run_cli("study plan " + study.string() + " --db " + db.string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find((db.parent_path() / "studies" / "grid" / "enabled-true__seed-2").string()), std::string::npos)
      << r.output;

  r = run_cli("study plan " + study.string() + " --out " + out.string() + " --json");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto j = nlohmann::json::parse(r.output);
  ASSERT_EQ(j["runs"].size(), 5u);
  EXPECT_EQ(j["runs"][0]["stage"], "sft");
  EXPECT_EQ(j["runs"][4]["config"]["model"]["checkpoint"], (out / "stage-sft" / "final").string());
  EXPECT_EQ(j["runs"][4]["config"]["ganpo"]["enabled"], true);
}

TEST_F(StudyCommands, PlanNamesTheInvalidArm) {
  const fs::path study = write_study("bad.toml", "seeds = [7]\n[base]\n[grid]\n\"train.learning_rate\" = [1e-4, -1.0]\n");
  const auto r = run_cli("study plan " + study.string());
  EXPECT_EQ(r.exit_code, 2) << r.output << " (2: bad config, as train and bench)";
  EXPECT_NE(r.output.find("arm train.learning_rate=-1, seed 7: train.learning_rate must be"), std::string::npos)
      << r.output;
}

// A mistyped --db for commands that read a workspace says so and creates nothing there.
TEST_F(StudyCommands, AMistypedWorkspaceIsSaidAndNotCreated) {
  const fs::path db = dir_.path() / "typo" / "workspce.sqlite";
  for (const std::string command : {"runs --db " + db.string() + " show 1", "study --db " + db.string() + " status 1"}) {
    const auto r = run_cli(command);
    EXPECT_EQ(r.exit_code, 2) << command << ": " << r.output;
    EXPECT_NE(r.output.find("there is no workspace at " + db.string()), std::string::npos) << r.output;
  }
  // Listing: no runs (as a fresh install's default workspace), said so, nothing created.
  const auto list = run_cli("runs --db " + db.string() + " list");
  EXPECT_EQ(list.exit_code, 0) << list.output;
  EXPECT_NE(list.output.find("no workspace at " + db.string() + " yet, so no runs"), std::string::npos) << list.output;
  EXPECT_FALSE(fs::exists(db.parent_path()));
}

}  // namespace
