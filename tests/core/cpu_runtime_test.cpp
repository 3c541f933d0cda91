#include "core/cpu_runtime.h"

#include <ATen/Parallel.h>
#include <sched.h>

#include <cstdlib>

#include <gtest/gtest.h>

namespace ganpo {
namespace {

// Sets an environment variable for one test and restores it after.
class ScopedEnv {
public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) had_ = true, old_ = old;
    if (value)
      setenv(name, value, 1);
    else
      unsetenv(name);
  }
  ~ScopedEnv() {
    if (had_)
      setenv(name_, old_.c_str(), 1);
    else
      unsetenv(name_);
  }

private:
  const char* name_;
  bool had_ = false;
  std::string old_;
};

TEST(CpuThreadsPlan, OneCoreRunsOneLaneWithOneBlasThread) {
  ScopedEnv omp("OMP_NUM_THREADS", nullptr);
  auto p = plan_cpu_threads(0, 1, 1);
  EXPECT_EQ(p.cores, 1);
  EXPECT_EQ(p.lanes, 1);
  EXPECT_EQ(p.blas_serial, 1);
  EXPECT_EQ(p.blas_per_lane, 1);
  EXPECT_EQ(p.intra_op, 1);
}

TEST(CpuThreadsPlan, DefaultTakesAllCoresAndTwoLanes) {
  ScopedEnv omp("OMP_NUM_THREADS", nullptr);
  auto p = plan_cpu_threads(0, 2, 1);
  EXPECT_EQ(p.cores, 2);
  EXPECT_EQ(p.lanes, 2);
  EXPECT_EQ(p.blas_serial, 2);
  EXPECT_EQ(p.blas_per_lane, 1);
  // ATen's own pool stays at one thread: its parallel regions fight the BLAS pool.
  EXPECT_EQ(p.intra_op, 1);
  auto big = plan_cpu_threads(0, 16, 1);
  EXPECT_EQ(big.cores, 16);
  EXPECT_EQ(big.blas_serial, 16);
  EXPECT_EQ(big.blas_per_lane, 8);
}

TEST(CpuThreadsPlan, DefaultSplitsTheCoresBetweenJobs) {
  ScopedEnv omp("OMP_NUM_THREADS", nullptr);
  EXPECT_EQ(plan_cpu_threads(0, 2, 2).cores, 1);
  EXPECT_EQ(plan_cpu_threads(0, 2, 2).lanes, 1);
  EXPECT_EQ(plan_cpu_threads(0, 2, 5).cores, 1);  // never below one core
  EXPECT_EQ(plan_cpu_threads(0, 8, 3).cores, 2);
}

TEST(CpuThreadsPlan, AnExplicitRequestWinsOverSharesAndTheEnvironment) {
  ScopedEnv omp("OMP_NUM_THREADS", "1");
  EXPECT_EQ(plan_cpu_threads(2, 2, 3).cores, 2);
  EXPECT_EQ(plan_cpu_threads(4, 2, 1).cores, 4);  // honoured; the trainer warns
  EXPECT_EQ(plan_cpu_threads(0, 2, 1).cores, 1);  // the default follows OMP_NUM_THREADS
}

TEST(CpuThreadsPlan, ApplySetsAtenAndBlasThreads) {
  auto before = plan_cpu_threads(1, 1, 1);
  apply_cpu_threads(plan_cpu_threads(2, 2, 1));
  EXPECT_EQ(at::get_num_threads(), 1);
  if (blas_info().thread_control) {
    EXPECT_EQ(blas_threads(), 2);
  }
  apply_cpu_threads(before);
  if (blas_info().thread_control) {
    EXPECT_EQ(blas_threads(), 1);
  }
}

TEST(CpuThreadsPlan, DescriptionNamesEverySetting) {
  const std::string d = describe_cpu_threads(plan_cpu_threads(2, 2, 1));
  for (const char* part : {"2 cores", "2 lanes", "BLAS 2 threads", "1 per lane", "ATen intra-op 1"})
    EXPECT_NE(d.find(part), std::string::npos) << part << " in " << d;
  EXPECT_NE(d.find(blas_info().name), std::string::npos) << d;
}

TEST(CpuRuntime, AvailableCoresFollowTheAffinityMask) {
  cpu_set_t set;
  ASSERT_EQ(sched_getaffinity(0, sizeof(set), &set), 0);
  EXPECT_GE(available_cpu_cores(), 1);
  EXPECT_LE(available_cpu_cores(), CPU_COUNT(&set));
}

TEST(CpuRuntime, FindsDebiansOpenBlas) {
  // Debian's LibTorch calls libblas.so.3, which packaging installs as OpenBLAS (pthreads).
  const BlasInfo b = blas_info();
  if (b.name == "unknown") GTEST_SKIP() << "the BLAS in this build is not OpenBLAS";
  EXPECT_EQ(b.name.rfind("OpenBLAS ", 0), 0u) << b.name;
  EXPECT_FALSE(b.core.empty());
  EXPECT_TRUE(b.thread_control);
}

TEST(CpuRuntime, WarnsWhenOpenBlasCoretypeHoldsAnAvx512CpuToAvx2Kernels) {
  BlasInfo blas;
  blas.name = "OpenBLAS 0.3.21";
  blas.core = "Haswell";
  const std::string w = blas_kernel_warning(blas, "Haswell", true);
  EXPECT_NE(w.find("OPENBLAS_CORETYPE=Haswell"), std::string::npos) << w;
  EXPECT_NE(w.find("unset OPENBLAS_CORETYPE"), std::string::npos) << w;
  blas.core = "Zen";
  EXPECT_FALSE(blas_kernel_warning(blas, "Zen", true).empty());
  EXPECT_EQ(blas_kernel_warning(blas, nullptr, true), "");  // OpenBLAS's own pick
  EXPECT_EQ(blas_kernel_warning(blas, "Zen", false), "");   // the CPU has no AVX-512
  blas.core = "SkylakeX";
  EXPECT_EQ(blas_kernel_warning(blas, "SkylakeX", true), "");
}

}  // namespace
}  // namespace ganpo
