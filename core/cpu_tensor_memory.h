// The bytes of CPU tensors this process holds, as the CUDA caching allocator counts a GPU's
// "allocated" memory: the sum of live tensor storages, and its peak since the last reset. The
// process's resident memory (RSS) says little about a training step's tensors, since freed heap
// stays resident and BLAS keeps its own buffers; this is the CPU figure to set beside the New
// Run dialog's memory estimate (core/memory_estimate.h) and, on a GPU, beside cuda_memory().
// Counting starts when count_cpu_tensor_memory() puts a counting allocator in front of
// LibTorch's CPU allocator (a map entry per live block, under a mutex: for benchmarks and
// tests, not every run); storages allocated before are not counted, on allocation or release.
#pragma once

#include <cstdint>

namespace ganpo {

struct CpuTensorMemory {
  int64_t allocated_bytes = 0;  // storages alive that were allocated while counting
  int64_t peak_bytes = 0;       // the largest allocated_bytes since the last reset
};

// Installs the counting allocator for the rest of the process (idempotent, thread-safe).
void count_cpu_tensor_memory();
bool counting_cpu_tensor_memory();
CpuTensorMemory cpu_tensor_memory();
// The peak starts again from what is allocated now.
void reset_cpu_tensor_peak();

}  // namespace ganpo
