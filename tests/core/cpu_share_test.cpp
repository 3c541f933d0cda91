#include "core/cpu_share.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>

#include <gtest/gtest.h>

#include "core/cpu_job.h"

namespace ganpo {
namespace {

namespace fs = std::filesystem;

class CpuShareTest : public ::testing::Test {
protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("ganpo_cpu_share_" + std::to_string(::getpid()) + "_" +
            std::to_string(std::chrono::steady_clock::now().time_since_epoch().count()));
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  size_t files() const {
    size_t n = 0;
    for (const auto& e : fs::directory_iterator(dir_)) n += e.path().extension() == ".lock";
    return n;
  }
  fs::path dir_;
};

TEST_F(CpuShareTest, CountsLiveParticipantsAndForgetsTheOnesThatLeave) {
  CpuShare a(dir_.string());
  ASSERT_TRUE(a.attached());
  EXPECT_EQ(a.participants(), 1);
  {
    CpuShare b(dir_.string());
    CpuShare c(dir_.string());
    EXPECT_EQ(a.participants(), 3);
    EXPECT_EQ(b.participants(), 3);
  }
  EXPECT_EQ(a.participants(), 1);
  EXPECT_EQ(files(), 1u);
}

// A real process joins, then dies by SIGKILL without cleaning up: the kernel drops its lock,
// so the next count no longer includes it and removes its file.
TEST_F(CpuShareTest, AKilledProcessLosesItsShare) {
  CpuShare me(dir_.string());
  int ready[2];
  ASSERT_EQ(pipe(ready), 0);
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    CpuShare other(dir_.string());
    const char ok = other.attached() ? 'y' : 'n';
    (void)!write(ready[1], &ok, 1);
    for (;;) pause();
  }
  close(ready[1]);
  char ok = 0;
  ASSERT_EQ(read(ready[0], &ok, 1), 1);
  close(ready[0]);
  EXPECT_EQ(ok, 'y');
  EXPECT_EQ(me.participants(), 2);
  EXPECT_EQ(files(), 2u);
  ASSERT_EQ(kill(child, SIGKILL), 0);
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  EXPECT_EQ(me.participants(), 1);
  EXPECT_EQ(files(), 1u);
}

TEST_F(CpuShareTest, AnUnusableFolderLeavesTheShareDetached) {
  fs::create_directories(dir_);
  const fs::path file = dir_ / "not-a-folder";
  std::ofstream(file) << "x";
  CpuShare s(file.string());
  EXPECT_FALSE(s.attached());
  EXPECT_EQ(s.participants(), 1);
}

// Two jobs on the default plan split the cores; when one ends the other takes them back.
TEST_F(CpuShareTest, JobsOnTheDefaultReplanWhenTheCountChanges) {
  const char* old = std::getenv("GANPO_CPU_SHARE_DIR");
  const std::string saved = old ? old : "";
  setenv("GANPO_CPU_SHARE_DIR", dir_.c_str(), 1);
  unsetenv("OMP_NUM_THREADS");
  {
    CpuJob first;
    const int all = first.plan().cores;
    EXPECT_EQ(all, available_cpu_cores());
    auto second = std::make_unique<CpuJob>();
    EXPECT_EQ(second->plan().cores, std::max(1, all / 2));
    if (all >= 2) {
      EXPECT_EQ(first.refresh(0.0), 2);
      EXPECT_EQ(first.plan().cores, all / 2);
    }
    second.reset();
    if (all >= 2) {
      EXPECT_EQ(first.refresh(0.0), 1);
      EXPECT_EQ(first.plan().cores, all);
    }
    CpuJob pinned(1);  // an explicit request never re-plans
    EXPECT_EQ(pinned.refresh(0.0), 0);
    EXPECT_EQ(pinned.plan().cores, 1);
  }
  if (old)
    setenv("GANPO_CPU_SHARE_DIR", saved.c_str(), 1);
  else
    unsetenv("GANPO_CPU_SHARE_DIR");
}

}  // namespace
}  // namespace ganpo
