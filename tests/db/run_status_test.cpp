// The run status enum: its stored text, the questions callers ask, and a stored text this build
// does not know (a damaged or newer workspace) reading as failed rather than crashing.
#include "db/run_status.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <unistd.h>

#include "db/run_store.h"

#include <nlohmann/json.hpp>

namespace fs = std::filesystem;
using ganpo::RunStatus;

TEST(RunStatus, TextRoundTripsAndPredicates) {
  const RunStatus all[] = {RunStatus::queued,    RunStatus::running, RunStatus::paused,
                           RunStatus::completed, RunStatus::stopped, RunStatus::failed};
  for (RunStatus s : all) EXPECT_EQ(ganpo::parse_run_status(ganpo::to_string(s)), s) << ganpo::to_string(s);
  EXPECT_FALSE(ganpo::parse_run_status("Running").has_value());
  EXPECT_FALSE(ganpo::parse_run_status("").has_value());
  int finished = 0, resumable = 0, active = 0;
  for (RunStatus s : all) finished += ganpo::is_finished(s), resumable += ganpo::is_resumable(s), active += ganpo::is_active(s);
  EXPECT_EQ(finished, 3);
  EXPECT_EQ(resumable, 2);
  EXPECT_EQ(active, 2);
  EXPECT_TRUE(ganpo::is_resumable(RunStatus::stopped) && ganpo::is_resumable(RunStatus::failed));
  EXPECT_FALSE(ganpo::is_resumable(RunStatus::completed));
  EXPECT_EQ(nlohmann::json(RunStatus::completed), "completed") << "JSON holds the text, not a number";
}

TEST(RunStatus, StoredTextIsTheEnumsAndUnknownTextReadsAsFailed) {
  const fs::path dir = fs::temp_directory_path() / ("ganpo-run-status-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  {
    auto store = ganpo::RunStore::open((dir / "w.sqlite").string());
    const int64_t id = store.create_run("r", "sft", "{}");
    EXPECT_EQ(store.run(id)->status, RunStatus::queued);
    store.set_status(id, RunStatus::paused);
    ganpo::sql::Statement text(store.database(), "SELECT status FROM runs WHERE id = ?");
    text.bind(1, id);
    ASSERT_TRUE(text.step());
    EXPECT_EQ(text.col_text(0), "paused");
    store.database().exec("UPDATE runs SET status = 'exploded' WHERE id = " + std::to_string(id));
    EXPECT_EQ(store.run(id)->status, RunStatus::failed);
  }
  fs::remove_all(dir);
}
