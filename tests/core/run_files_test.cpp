// A run's plain files in output_dir: a stage that starts again from a step keeps only the rows
// of the steps up to it, so each step has one row; events.log keeps every line.
#include "core/run_files.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "tests/core/temp_dir_support.h"

namespace fs = std::filesystem;

namespace ganpo {
namespace {

std::vector<std::string> lines_of(const fs::path& p) {
  std::ifstream in(p);
  std::vector<std::string> out;
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

std::vector<int64_t> steps_of(const fs::path& p) {
  std::vector<int64_t> out;
  for (const auto& line : lines_of(p)) out.push_back(nlohmann::json::parse(line).at("step"));
  return out;
}

// Two trainings into one folder (two workspaces, --no-db, two terminals) would write every file
// twice over: while one writer lives, another for the same folder is refused naming its pid.
TEST(RunFiles, ASecondWriterForTheSameFolderIsRefusedWhileTheFirstLives) {
  test::TestTempDir tmp;
  RunConfig config;
  config.output_dir = (tmp.path() / "run").string();
  {
    RunFilesWriter first(config, false);
    try {
      RunFilesWriter second(config, true);
      FAIL() << "two writers for one folder";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("(pid " + std::to_string(::getpid()) + ") is training into"), std::string::npos)
          << e.what();
    }
    RunConfig elsewhere = config;
    elsewhere.output_dir = (tmp.path() / "other").string();
    EXPECT_NO_THROW(RunFilesWriter other(elsewhere, false)) << "another folder is free";
  }
  EXPECT_NO_THROW(RunFilesWriter again(config, true)) << "the first writer gone, the folder is free";
}

TEST(RunFiles, AStageThatStartsAgainFromAStepKeepsTheRowsUpToIt) {
  test::TestTempDir tmp;
  RunConfig config;
  config.output_dir = (tmp.path() / "run").string();
  {
    RunFilesWriter first(config, false);
    first.on_start(6, 0, {});
    for (int64_t step = 1; step <= 5; ++step) first.on_metrics(step, {{"loss", 0.1 * static_cast<double>(step)}});
    first.on_samples(0, {SampleRecord{0, "p", "a", "b"}});
    first.on_samples(4, {SampleRecord{0, "p", "c", "d"}});
    first.on_log("info", "first attempt");
  }
  std::ofstream(fs::path(config.output_dir) / "metrics.jsonl", std::ios::app) << "{\"step\": 6, \"lo";  // cut by a crash

  RunFilesWriter again(config, true);
  again.on_start(6, 3, {});  // a resume from checkpoint-3
  EXPECT_EQ(steps_of(fs::path(config.output_dir) / "metrics.jsonl"), (std::vector<int64_t>{1, 2, 3}));
  EXPECT_EQ(steps_of(fs::path(config.output_dir) / "samples.jsonl"), (std::vector<int64_t>{0}));
  again.on_metrics(4, {{"loss", 9.0}});
  const auto metrics = lines_of(fs::path(config.output_dir) / "metrics.jsonl");
  ASSERT_EQ(metrics.size(), 4u);
  EXPECT_EQ(nlohmann::json::parse(metrics.back()).at("loss"), 9.0) << "appended after the rows kept";
  EXPECT_FALSE(fs::exists(fs::path(config.output_dir) / "metrics.jsonl.tmp"));

  again.on_start(6, 0, {});  // a stage that goes on from the start: step 0's samples are drawn again
  EXPECT_TRUE(lines_of(fs::path(config.output_dir) / "metrics.jsonl").empty());
  EXPECT_TRUE(lines_of(fs::path(config.output_dir) / "samples.jsonl").empty());
  again.on_log("info", "second attempt");
  EXPECT_EQ(lines_of(fs::path(config.output_dir) / "events.log"),
            (std::vector<std::string>{"info: first attempt", "info: second attempt"}));
}

}  // namespace
}  // namespace ganpo
