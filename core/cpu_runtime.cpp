#include "core/cpu_runtime.h"

#include <ATen/Parallel.h>
#include <dlfcn.h>
#include <malloc.h>
#include <sched.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <sstream>

namespace ganpo {
namespace {

// OpenBLAS's run-time interface, looked up in the process (it is loaded through libblas.so.3);
// null when the BLAS is another library.
struct OpenBlasApi {
  char* (*get_config)() = nullptr;
  char* (*get_corename)() = nullptr;
  int (*get_num_threads)() = nullptr;
  void (*set_num_threads)(int) = nullptr;
  int (*get_parallel)() = nullptr;
};

const OpenBlasApi& openblas() {
  static const OpenBlasApi api = [] {
    OpenBlasApi a;
    a.get_config = reinterpret_cast<char* (*)()>(dlsym(RTLD_DEFAULT, "openblas_get_config"));
    a.get_corename = reinterpret_cast<char* (*)()>(dlsym(RTLD_DEFAULT, "openblas_get_corename"));
    a.get_num_threads = reinterpret_cast<int (*)()>(dlsym(RTLD_DEFAULT, "openblas_get_num_threads"));
    a.set_num_threads = reinterpret_cast<void (*)(int)>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"));
    a.get_parallel = reinterpret_cast<int (*)()>(dlsym(RTLD_DEFAULT, "openblas_get_parallel"));
    return a;
  }();
  return api;
}

// A cgroup's CPU quota in cores (rounded up), or 0 when there is none.
int cgroup_quota_cores() {
  double quota = -1, period = -1;
  {
    std::ifstream v2("/sys/fs/cgroup/cpu.max");  // cgroup v2: "max 100000" or "200000 100000"
    std::string q;
    if (v2 >> q >> period) quota = q == "max" ? -1 : std::atof(q.c_str());
  }
  if (quota <= 0) {
    std::ifstream q1("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"), p1("/sys/fs/cgroup/cpu/cpu.cfs_period_us");
    if (!(q1 >> quota) || !(p1 >> period)) quota = -1;
  }
  if (quota <= 0 || period <= 0) return 0;
  return std::max(1, static_cast<int>(std::ceil(quota / period)));
}

}  // namespace

void advise_huge_pages(void* data, size_t bytes) {
#ifdef MADV_HUGEPAGE
  constexpr uintptr_t kHuge = 2u << 20;
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(data) + kHuge - 1) & ~(kHuge - 1);
  const uintptr_t end = (reinterpret_cast<uintptr_t>(data) + bytes) & ~(kHuge - 1);
  if (end > begin) ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
#else
  (void)data;
  (void)bytes;
#endif
}

void tune_allocator_for_tensors() {
  static std::once_flag once;
  std::call_once(once, [] {
    // Tensors up to 32 MiB (glibc's largest mmap threshold) come from the heap, and up to
    // 1 GiB of free heap top stays mapped between steps.
    mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024);
    mallopt(M_TRIM_THRESHOLD, 1024 * 1024 * 1024);
  });
}

int available_cpu_cores() {
  int cores = 0;
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) cores = CPU_COUNT(&set);
  if (cores <= 0) cores = static_cast<int>(std::max(1L, sysconf(_SC_NPROCESSORS_ONLN)));
  const int quota = cgroup_quota_cores();
  if (quota > 0) cores = std::min(cores, quota);
  return std::max(1, cores);
}

BlasInfo blas_info() {
  BlasInfo info;
  const auto& api = openblas();
  if (api.get_config == nullptr) return info;
  std::istringstream words(api.get_config());
  std::string product, version;
  words >> product >> version;
  info.name = product + " " + version;
  if (api.get_corename != nullptr) info.core = api.get_corename();
  if (api.get_parallel != nullptr) {
    const int p = api.get_parallel();
    info.threading = p == 0 ? "sequential" : p == 1 ? "pthreads" : "OpenMP";
  }
  info.thread_control = api.set_num_threads != nullptr && info.threading != "sequential";
  return info;
}

std::string blas_kernel_warning(const BlasInfo& blas, const char* coretype, bool avx512) {
  const bool avx2_set = blas.core == "Haswell" || blas.core == "Zen";
  if (coretype == nullptr || !avx2_set || !avx512) return "";
  return std::string("OPENBLAS_CORETYPE=") + coretype + " holds OpenBLAS to its AVX2 kernels (" + blas.core +
         ") on a CPU with AVX-512: matrix products run ~1.7x slower than with OpenBLAS's own choice; "
         "unset OPENBLAS_CORETYPE unless something needs it";
}

std::string blas_kernel_warning() {
  return blas_kernel_warning(blas_info(), std::getenv("OPENBLAS_CORETYPE"), cpu_has_avx512());
}

bool cpu_has_avx512() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  // libgcc's checks include the OS's XCR0 bits for the AVX-512 registers.
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512cd") &&
         __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
         __builtin_cpu_supports("avx512vl");
#else
  return false;
#endif
}

std::string describe_blas(const BlasInfo& blas) {
  std::string text = blas.name;
  if (!blas.threading.empty()) text += " " + blas.threading;
  if (!blas.core.empty()) text += " " + blas.core;
  return text;
}

int blas_threads() {
  const auto& api = openblas();
  return api.get_num_threads != nullptr ? api.get_num_threads() : 1;
}

void set_blas_threads(int threads) {
  const auto& api = openblas();
  if (api.set_num_threads != nullptr && api.get_num_threads != nullptr && api.get_num_threads() != threads)
    api.set_num_threads(std::max(1, threads));
}

CpuThreads plan_cpu_threads(int64_t requested, int available, int participants) {
  int cores = static_cast<int>(requested);
  if (requested <= 0) {
    const char* omp = std::getenv("OMP_NUM_THREADS");
    const int from_env = omp != nullptr ? std::atoi(omp) : 0;
    cores = from_env > 0 ? std::min(from_env, available) : available / std::max(1, participants);
  }
  CpuThreads plan;
  plan.cores = std::max(1, cores);
  plan.lanes = plan.cores >= 2 ? 2 : 1;
  plan.blas_serial = plan.cores;
  plan.blas_per_lane = std::max(1, plan.cores / plan.lanes);
  plan.intra_op = 1;
  return plan;
}

void apply_cpu_threads(const CpuThreads& plan) {
  if (at::get_num_threads() != plan.intra_op) at::set_num_threads(plan.intra_op);
  set_blas_threads(plan.blas_serial);
}

std::string describe_cpu_threads(const CpuThreads& plan) {
  const BlasInfo blas = blas_info();
  std::ostringstream out;
  out << plan.cores << (plan.cores == 1 ? " core: " : " cores: ") << plan.lanes << (plan.lanes == 1 ? " lane" : " lanes")
      << ", BLAS " << plan.blas_serial << (plan.blas_serial == 1 ? " thread" : " threads");
  if (plan.lanes > 1) out << " (" << plan.blas_per_lane << " per lane)";
  out << ", ATen intra-op " << plan.intra_op << "; " << describe_blas(blas);
  return out.str();
}

}  // namespace ganpo
