// A data-parallel rank's request to be started again with a smaller batch: written whole, the
// lowest rank's read back, and cleared for the next start (what else the ranks left there stays).
#include "core/relaunch_request.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "tests/core/temp_dir_support.h"

namespace fs = std::filesystem;

namespace ganpo {
namespace {

TEST(RelaunchRequest, TheLowestRanksRequestIsReadBack) {
  test::TestTempDir tmp;
  const std::string dir = tmp.path().string();
  EXPECT_FALSE(read_relaunch_request(dir).has_value());
  write_relaunch_request(dir, {3, {2, 2, 8}, "/runs/a/checkpoint-10", "2 rows a micro-batch x 2 accumulation steps", ""});
  write_relaunch_request(dir, {1, {1, 4, 8}, "/runs/a/checkpoint-10", "1 row a micro-batch x 4 accumulation steps",
                              "This machine's RAM ran out of memory while training after step 10. C++: std::bad_alloc"});
  std::ofstream(fs::path(dir) / "rank0.json") << "{\"rank\": 0, \"batc";  // not one of ours: a file cut short
  EXPECT_FALSE(fs::exists(fs::path(dir) / "rank1.json.tmp"));
  const auto r = read_relaunch_request(dir);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->rank, 1);
  EXPECT_EQ(r->batches, (std::vector<int64_t>{1, 4, 8}));
  EXPECT_EQ(r->resume_from, "/runs/a/checkpoint-10");
  EXPECT_EQ(r->change, "1 row a micro-batch x 4 accumulation steps");
  EXPECT_EQ(r->reason, "This machine's RAM ran out of memory while training after step 10. C++: std::bad_alloc");
  std::ofstream(fs::path(dir) / "precomputed_ref_logps.safetensors") << "rank 0's, for the new start";
  clear_relaunch_requests(dir);
  EXPECT_FALSE(read_relaunch_request(dir).has_value());
  EXPECT_EQ(std::distance(fs::directory_iterator(dir), fs::directory_iterator()), 1) << "what is not a request stays";
  EXPECT_TRUE(fs::exists(fs::path(dir) / "precomputed_ref_logps.safetensors"));
}

// A standing request (a CPU rank's, while it tries its longest rows) is no request until its
// launcher takes it (the system ended the rank there); its peers find another rank's, not their
// own; it goes with the requests.
TEST(RelaunchRequest, AStandingRequestIsTakenAsTheRanksRequest) {
  test::TestTempDir tmp;
  const std::string dir = tmp.path().string();
  write_standing_request(dir, {0, {2, 2, 8}, "", "2 rows a micro-batch x 2 accumulation steps", "ended"});
  write_standing_request(dir, {1, {2, 2, 8}, "", "2 rows a micro-batch x 2 accumulation steps", "ended"});
  EXPECT_FALSE(read_relaunch_request(dir).has_value()) << "not asked for yet";
  ASSERT_TRUE(standing_request_of_another(dir, 0).has_value());
  EXPECT_EQ(standing_request_of_another(dir, 0)->rank, 1);
  EXPECT_EQ(standing_request_of_another(dir, 1)->rank, 0);
  remove_standing_request(dir, 0);  // rank 0's try ended
  EXPECT_FALSE(standing_request_of_another(dir, 1).has_value());
  EXPECT_FALSE(take_standing_request(dir, 0)) << "it has none now";
  EXPECT_TRUE(take_standing_request(dir, 1));
  const auto r = read_relaunch_request(dir);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->rank, 1);
  EXPECT_EQ(r->reason, "ended");
  write_standing_request(dir, {0, {2, 2, 8}, "", "", ""});
  clear_relaunch_requests(dir);
  EXPECT_EQ(std::distance(fs::directory_iterator(dir), fs::directory_iterator()), 0);
}

TEST(RelaunchRequest, BatchesAsTheLauncherPassesThem) {
  EXPECT_EQ(format_batches({4, 2, 8}), "4,2,8");
  EXPECT_EQ(parse_batches("4,2,8", "X"), (std::vector<int64_t>{4, 2, 8}));
  EXPECT_THROW(parse_batches("4,2", "X"), ConfigError);
}

}  // namespace
}  // namespace ganpo
