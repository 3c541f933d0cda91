// This process's GPU memory as LibTorch's CUDA caching allocator counts it: allocated (tensors
// alive), reserved (held from the driver, what nvidia-smi shows for the process) and the peak
// of allocated since the last reset. Compiled in where LibTorch has CUDA (GANPO_C10_CUDA,
// set by CMake when it finds c10_cuda); Debian's CPU LibTorch reports nothing.
#pragma once

#include <optional>

namespace ganpo {

struct CudaMemory {
  double allocated_mb = 0;
  double reserved_mb = 0;
  double peak_allocated_mb = 0;
};

// Nothing (nullopt; no-op) before this process has initialised CUDA or for a device it has not.
std::optional<CudaMemory> cuda_memory(int device_index);
void reset_cuda_peak(int device_index);
// Lets LibTorch's caching allocator hold at most `fraction` of the device's memory (1: all), as
// torch.cuda.set_per_process_memory_fraction; an allocation beyond it fails as one beyond the
// device's memory does. Tests make a real CUDA out-of-memory error with it. A no-op without CUDA.
void set_cuda_memory_fraction(int device_index, double fraction);
// Gives the blocks LibTorch's caching allocator holds and no tensor uses back to the driver, as
// torch.cuda.empty_cache (and accelerate's find_executable_batch_size before it tries a smaller
// batch): a stage that ran out left its memory cut into the blocks its batch needed, and the
// smaller batch's stage then starts from whole segments. A no-op without CUDA or before it.
void release_cached_cuda_memory();

}  // namespace ganpo
