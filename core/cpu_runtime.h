// How a process uses the CPU for tensor work: cores, thread pools, BLAS kernels, allocator.
//
// On the CPU a training step is mostly matrix products in the BLAS library (OpenBLAS on
// Debian) plus many small ATen ops. Measured on 2-core machines (issue 9), two things decide
// the speed, and this module owns both:
// - Thread pools. OpenBLAS has its own pool; ATen has an OpenMP pool. Both spin while idle, so
//   running both with more than one thread makes them steal each other's cores (a step 2x
//   slower). The plan gives the cores to BLAS and to the trainer's concurrent lanes
//   (parallel_lanes.h) and keeps ATen's intra-op pool at one thread, whose parallel regions
//   did not pay at any measured size.
// - The allocator. glibc maps and unmaps every tensor above its mmap threshold, and trims the
//   heap after each step, so every step page-faults its activations back in (up to half of a
//   step's time). tune_allocator_for_tensors() raises both thresholds once per process.
// - The BLAS kernel set. OpenBLAS picks it when the library loads (OPENBLAS_CORETYPE overrides
//   its pick), and it moves a step's time by ~1.7x (AVX2 vs AVX-512 kernels, measured on an
//   AMD EPYC). `--version`, bench and the run log print the set in use, and say so when the
//   variable holds an AVX-512 CPU to AVX2 kernels.
// Nothing here changes what is computed, only where and how fast; a test checks that a run's
// losses with one thread equal the default's.
#pragma once

#include <cstdint>
#include <string>

namespace ganpo {

// Raises glibc's mmap and trim thresholds (once per process; CpuJob calls it).
void tune_allocator_for_tensors();

// Asks the kernel to back [data, data + bytes) with transparent huge pages where it allows them
// (THP "madvise" mode, Debian's default): a multi-GB model loaded tensor by tensor then takes
// one page fault per 2 MiB instead of one per 4 KiB. A no-op for small ranges.
void advise_huge_pages(void* data, size_t bytes);

// Cores this process may run on: its CPU affinity, capped by a cgroup CPU quota. At least 1.
int available_cpu_cores();

// The BLAS library linked in, as found at run time.
struct BlasInfo {
  std::string name = "unknown";  // "OpenBLAS 0.3.21" or "unknown" (MKL in pip LibTorch, ...)
  std::string threading;         // "pthreads" | "OpenMP" | "sequential" | ""
  std::string core;              // the kernel set in use, e.g. "SkylakeX", "Haswell"
  bool thread_control = false;   // whether set_blas_threads() has an effect
};
BlasInfo blas_info();
// "OpenBLAS 0.3.21 pthreads SkylakeX"; "unknown" for another BLAS.
std::string describe_blas(const BlasInfo& blas);

// Why the run is slower than it could be when OPENBLAS_CORETYPE (`coretype`, null when unset)
// holds OpenBLAS to an AVX2 kernel set (Haswell, Zen) on a CPU whose AVX-512 the OS enables;
// "" otherwise. Bench and the run log print it.
std::string blas_kernel_warning(const BlasInfo& blas, const char* coretype, bool cpu_has_avx512);
bool cpu_has_avx512();  // F, CD, BW, DQ and VL, with the OS saving their registers
// blas_kernel_warning() for this process: its BLAS, its OPENBLAS_CORETYPE, this CPU.
std::string blas_kernel_warning();
int blas_threads();  // the BLAS pool's thread count now (1 when unknown)
void set_blas_threads(int threads);

// How one process splits its cores.
struct CpuThreads {
  int cores = 1;          // cores this process uses now
  int lanes = 1;          // concurrent lanes in a step (2 lets independent passes overlap)
  int blas_serial = 1;    // BLAS threads while one lane runs
  int blas_per_lane = 1;  // BLAS threads while the lanes run together
  int intra_op = 1;       // ATen's intra-op (OpenMP) threads
  bool operator==(const CpuThreads& o) const {
    return cores == o.cores && lanes == o.lanes && blas_serial == o.blas_serial &&
           blas_per_lane == o.blas_per_lane && intra_op == o.intra_op;
  }
  bool operator!=(const CpuThreads& o) const { return !(*this == o); }
};

// The plan for `requested` threads (train.num_threads; 0 = this process's fair share of the
// available cores among `participants` CPU jobs on the machine, or OMP_NUM_THREADS when that is
// set). A request above the available cores is honoured (the caller warns).
CpuThreads plan_cpu_threads(int64_t requested, int available, int participants);
// Sets ATen's intra-op threads and the BLAS pool to the plan's serial values.
void apply_cpu_threads(const CpuThreads& plan);
// "2 cores: 2 lanes, BLAS 2 threads (1 per lane), ATen intra-op 1; OpenBLAS 0.3.21 pthreads SkylakeX"
std::string describe_cpu_threads(const CpuThreads& plan);

}  // namespace ganpo
