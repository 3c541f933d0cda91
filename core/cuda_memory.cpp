#include "core/cuda_memory.h"

#if defined(GANPO_C10_CUDA) && __has_include(<c10/cuda/CUDACachingAllocator.h>)
#include <c10/cuda/CUDACachingAllocator.h>
#define GANPO_HAS_CUDA_ALLOCATOR 1
#endif

namespace ganpo {

#ifdef GANPO_HAS_CUDA_ALLOCATOR
// The allocator knows a device only once CUDA has been initialised in this process (the first
// CUDA tensor does it); before that, and for an index it does not know, it throws c10::Error
// ("Invalid device argument ... did you call init?"): nothing to read or reset yet.
std::optional<CudaMemory> cuda_memory(int device_index) {
  try {
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(static_cast<c10::DeviceIndex>(device_index));
    // Index 0 is the aggregate over pool kinds (StatType::AGGREGATE, whose namespace moved
    // between LibTorch releases).
    constexpr double mb = 1024.0 * 1024.0;
    return CudaMemory{static_cast<double>(stats.allocated_bytes[0].current) / mb,
                      static_cast<double>(stats.reserved_bytes[0].current) / mb,
                      static_cast<double>(stats.allocated_bytes[0].peak) / mb};
  } catch (const c10::Error&) {
    return std::nullopt;
  }
}

void reset_cuda_peak(int device_index) {
  try {
    c10::cuda::CUDACachingAllocator::resetPeakStats(static_cast<c10::DeviceIndex>(device_index));
  } catch (const c10::Error&) {
  }
}

void set_cuda_memory_fraction(int device_index, double fraction) {
  c10::cuda::CUDACachingAllocator::setMemoryFraction(fraction, static_cast<c10::DeviceIndex>(device_index));
}
void release_cached_cuda_memory() {
  try {
    c10::cuda::CUDACachingAllocator::emptyCache();
  } catch (const c10::Error&) {  // (CUDA not initialised in this process: nothing held)
  }
}
#else
std::optional<CudaMemory> cuda_memory(int) { return std::nullopt; }
void reset_cuda_peak(int) {}
void set_cuda_memory_fraction(int, double) {}
void release_cached_cuda_memory() {}
#endif

}  // namespace ganpo
