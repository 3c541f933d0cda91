// The kernel's count of out-of-memory kills, as a launcher reads it (/proc/vmstat, or the file a
// test names), and the fault point's way of counting itself there.
#include "core/oom_kill_count.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <optional>
#include <string>

#include "tests/core/temp_dir_support.h"

namespace ganpo {
namespace {

// GANPO_VMSTAT_FOR_TESTS set for one test, and put back as it was after.
class VmstatFile {
public:
  explicit VmstatFile(const std::string& path) {
    if (const char* old = std::getenv(kVmstatForTestsVariable)) old_ = old;
    ::setenv(kVmstatForTestsVariable, path.c_str(), 1);
  }
  ~VmstatFile() {
    if (old_)
      ::setenv(kVmstatForTestsVariable, old_->c_str(), 1);
    else
      ::unsetenv(kVmstatForTestsVariable);
  }

private:
  std::optional<std::string> old_;
};

TEST(OomKillCount, ReadFromVmstatOrTheTestsFile) {
  test::TestTempDir tmp;
  const std::string file = (tmp.path() / "vmstat").string();
  std::ofstream(file) << "nr_free_pages 12\noom_kill_other 9\noom_kill 3\nnr_dirty 0\n";
  {
    const VmstatFile vmstat(file);
    EXPECT_EQ(oom_kill_count(), 3);
    std::ofstream(file) << "nr_free_pages 12\n";  // a kernel before 4.13
    EXPECT_FALSE(oom_kill_count().has_value());
  }
  const VmstatFile none((tmp.path() / "none").string());
  EXPECT_FALSE(oom_kill_count().has_value());
}

TEST(OomKillCount, OneMoreKill) {
  EXPECT_EQ(with_one_more_oom_kill("nr_free_pages 12\noom_kill 3\n"), "nr_free_pages 12\noom_kill 4\n");
  EXPECT_EQ(with_one_more_oom_kill("nr_free_pages 12\n"), "nr_free_pages 12\noom_kill 1\n");
  EXPECT_EQ(with_one_more_oom_kill(""), "oom_kill 1\n");
}

}  // namespace
}  // namespace ganpo
