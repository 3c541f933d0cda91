// The watch that ends a data-parallel rank which has not ended after a rank asked the launcher
// to start every rank again: its grace, and the end it makes (a death test: it ends the process).
#include "core/relaunch_watch.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include "core/relaunch_request.h"
#include "tests/core/temp_dir_support.h"

namespace ganpo {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

TEST(RelaunchWatch, ItsGraceIsATenthOfTheCollectiveTimeoutFromFiveToSixtySecondsAndAtMostHalfOfIt) {
  EXPECT_EQ(RelaunchWatch::grace_for(seconds(1800)), seconds(60));  // train.dist_timeout_s's default
  EXPECT_EQ(RelaunchWatch::grace_for(seconds(100)), seconds(10));
  EXPECT_EQ(RelaunchWatch::grace_for(seconds(20)), seconds(5));
  EXPECT_EQ(RelaunchWatch::grace_for(seconds(5)), milliseconds(2500));
}

// The decision alone, on a clock the test moves: the grace counts from the request's first
// sighting, a request gone starts it again, and no end comes while a NotNow lives.
TEST(RelaunchWatch, ItEndsTheProcessOnceARequestHasBeenThereForTheGraceAndNothingHoldsIt) {
  const auto t0 = std::chrono::steady_clock::time_point{} + seconds(100);
  RelaunchWatch::Decision d(seconds(10));
  EXPECT_FALSE(d.end_now(t0, false, false));
  EXPECT_FALSE(d.end_now(t0 + seconds(1), true, false));  // first seen
  EXPECT_FALSE(d.end_now(t0 + seconds(10), true, false));
  EXPECT_FALSE(d.end_now(t0 + seconds(11), true, true)) << "rank 0 still writes a checkpoint";
  EXPECT_TRUE(d.end_now(t0 + seconds(12), true, false));

  RelaunchWatch::Decision gone(seconds(10));
  EXPECT_FALSE(gone.end_now(t0, true, false));
  EXPECT_FALSE(gone.end_now(t0 + seconds(5), false, false));  // cleared: a new start's folder
  EXPECT_FALSE(gone.end_now(t0 + seconds(12), true, false)) << "a new request counts from its own sighting";
  EXPECT_TRUE(gone.end_now(t0 + seconds(22), true, false));
}

TEST(RelaunchWatch, WithoutARequestItStopsWithItsOwner) {
  test::TestTempDir tmp;
  { RelaunchWatch watch(tmp.path().string(), 0, milliseconds(0)); }
  SUCCEED() << "the watch's thread was joined";
}

TEST(RelaunchWatchDeathTest, AProcessThatHasNotEndedAfterARequestEndsToBeStartedAgain) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  test::TestTempDir tmp;
  const std::string dir = tmp.path().string();
  write_relaunch_request(dir, {1, {2, 2, 8}, "", "2 rows a micro-batch x 2 accumulation steps", "rank 1's words"});
  // Rank 0 waits where nothing would end it (as on an NCCL all-reduce whose peer has gone).
  EXPECT_EXIT(
      {
        RelaunchWatch watch(dir, 0, milliseconds(0));
        for (;;) ::pause();
      },
      ::testing::ExitedWithCode(kRelaunchExitCode),
      "rank 0: rank 1 asked the launcher to start every rank again \\(train.auto_find_batch_size\\), and this rank "
      "has not ended with it 0 s later");
  // The rank that asked, should it hang as it ends (tearing its process group down), is ended too.
  EXPECT_EXIT(
      {
        RelaunchWatch watch(dir, 1, milliseconds(0));
        for (;;) ::pause();
      },
      ::testing::ExitedWithCode(kRelaunchExitCode), "rank 1: rank 1 asked .* and this process has not ended 0 s later");
}

}  // namespace
}  // namespace ganpo
