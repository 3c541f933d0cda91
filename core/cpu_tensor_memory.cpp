#include "core/cpu_tensor_memory.h"

#include <atomic>
#include <mutex>
#include <unordered_map>

#include <c10/core/CPUAllocator.h>
#include <torch/version.h>

namespace ganpo {
namespace {

std::atomic<int64_t> allocated{0};
std::atomic<int64_t> peak{0};
std::atomic<bool> installed{false};

// The blocks this allocator handed out, with their sizes. Some LibTorch code keeps a block from
// GetCPUAllocator()->raw_allocate() across calls and frees it through whatever GetCPUAllocator()
// is then, so a block allocated before counting began can come back here: it goes to the
// default allocator's deleter, uncounted.
std::mutex blocks_mutex;
std::unordered_map<void*, int64_t>& blocks() {
  static auto* map = new std::unordered_map<void*, int64_t>;  // never destroyed: used until exit
  return *map;
}

void release(void* data) {
  int64_t bytes = -1;
  {
    std::lock_guard<std::mutex> lock(blocks_mutex);
    auto it = blocks().find(data);
    if (it != blocks().end()) {
      bytes = it->second;
      blocks().erase(it);
    }
  }
  if (bytes >= 0) allocated.fetch_sub(bytes, std::memory_order_relaxed);
  c10::GetDefaultCPUAllocator()->raw_deleter()(data);
}

// LibTorch 2.3 made allocate() non-const and added copy_data().
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 3)
#define GANPO_ALLOCATOR_API_2_3 1
#define GANPO_ALLOCATE_CONST
#else
#define GANPO_ALLOCATOR_API_2_3 0
#define GANPO_ALLOCATE_CONST const
#endif

class CountingCpuAllocator final : public c10::Allocator {
public:
  c10::DataPtr allocate(size_t n) GANPO_ALLOCATE_CONST override {
    if (n == 0) return c10::GetDefaultCPUAllocator()->allocate(0);
    void* data = c10::GetDefaultCPUAllocator()->raw_allocate(n);
    const auto bytes = static_cast<int64_t>(n);
    {
      std::lock_guard<std::mutex> lock(blocks_mutex);
      blocks().insert_or_assign(data, bytes);
    }
    const int64_t now = allocated.fetch_add(bytes, std::memory_order_relaxed) + bytes;
    int64_t seen = peak.load(std::memory_order_relaxed);
    while (now > seen && !peak.compare_exchange_weak(seen, now, std::memory_order_relaxed)) {
    }
    return {data, data, &release, c10::Device(c10::DeviceType::CPU)};
  }
  c10::DeleterFnPtr raw_deleter() const override { return &release; }
#if GANPO_ALLOCATOR_API_2_3
  void copy_data(void* dest, const void* src, std::size_t count) const override { default_copy_data(dest, src, count); }
#endif
};

}  // namespace

void count_cpu_tensor_memory() {
  static std::once_flag once;
  std::call_once(once, [] {
    // Never destroyed: LibTorch calls it until the process ends (static destructors included).
    static auto* counting = new CountingCpuAllocator;
    // Above the default allocator's registration (priority 0).
    c10::SetCPUAllocator(counting, /*priority=*/1);
    installed = true;
  });
}

bool counting_cpu_tensor_memory() { return installed; }

CpuTensorMemory cpu_tensor_memory() {
  return {allocated.load(std::memory_order_relaxed), peak.load(std::memory_order_relaxed)};
}

void reset_cpu_tensor_peak() { peak.store(allocated.load(std::memory_order_relaxed), std::memory_order_relaxed); }

}  // namespace ganpo
