// The kernel's count of out-of-memory kills, as a launcher reads it (/proc/vmstat, or the file a
// test names), and the fault point's way of counting itself there.
#include "core/oom_kill_count.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>

#include "tests/core/temp_dir_support.h"

namespace ganpo {
namespace {

TEST(OomKillCount, ReadFromVmstatOrTheTestsFile) {
  test::TestTempDir tmp;
  const std::string file = (tmp.path() / "vmstat").string();
  std::ofstream(file) << "nr_free_pages 12\noom_kill 3\nnr_dirty 0\n";
  ::setenv(kVmstatForTestsVariable, file.c_str(), 1);
  EXPECT_EQ(oom_kill_count(), 3);
  std::ofstream(file) << "nr_free_pages 12\n";  // a kernel before 4.13
  EXPECT_FALSE(oom_kill_count().has_value());
  ::setenv(kVmstatForTestsVariable, (tmp.path() / "none").string().c_str(), 1);
  EXPECT_FALSE(oom_kill_count().has_value());
  ::unsetenv(kVmstatForTestsVariable);
}

TEST(OomKillCount, OneMoreKill) {
  EXPECT_EQ(with_one_more_oom_kill("nr_free_pages 12\noom_kill 3\n"), "nr_free_pages 12\noom_kill 4\n");
  EXPECT_EQ(with_one_more_oom_kill("nr_free_pages 12\n"), "nr_free_pages 12\noom_kill 1\n");
  EXPECT_EQ(with_one_more_oom_kill(""), "oom_kill 1\n");
}

}  // namespace
}  // namespace ganpo
