#include "core/gpu_monitor.h"

#include <dlfcn.h>

#include <cstdlib>
#include <mutex>
#include <type_traits>
#include <sstream>
#include <vector>

namespace ganpo {
namespace {

// The few NVML declarations used (nvml.h, stable since NVML 2): opaque handles, 0 = success.
using nvmlReturn_t = int;
using nvmlDevice_t = struct nvmlDevice_st*;
struct nvmlUtilization_t {
  unsigned int gpu, memory;
};
struct nvmlMemory_t {
  unsigned long long total, free, used;
};

struct Nvml {
  nvmlReturn_t (*init)() = nullptr;
  nvmlReturn_t (*handle_by_index)(unsigned int, nvmlDevice_t*) = nullptr;
  nvmlReturn_t (*handle_by_uuid)(const char*, nvmlDevice_t*) = nullptr;
  nvmlReturn_t (*name)(nvmlDevice_t, char*, unsigned int) = nullptr;
  nvmlReturn_t (*utilization)(nvmlDevice_t, nvmlUtilization_t*) = nullptr;
  nvmlReturn_t (*memory)(nvmlDevice_t, nvmlMemory_t*) = nullptr;
  nvmlReturn_t (*compute_capability)(nvmlDevice_t, int*, int*) = nullptr;  // (NVML 9 on; optional)
  bool ready = false;
};

const Nvml& nvml() {
  static Nvml lib;
  static std::once_flag once;
  std::call_once(once, [] {
    void* handle = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!handle) return;
    auto sym = [&](auto& fn, const char* name) { fn = reinterpret_cast<std::decay_t<decltype(fn)>>(dlsym(handle, name)); };
    sym(lib.init, "nvmlInit_v2");
    sym(lib.handle_by_index, "nvmlDeviceGetHandleByIndex_v2");
    sym(lib.handle_by_uuid, "nvmlDeviceGetHandleByUUID");
    sym(lib.name, "nvmlDeviceGetName");
    sym(lib.utilization, "nvmlDeviceGetUtilizationRates");
    sym(lib.memory, "nvmlDeviceGetMemoryInfo");
    sym(lib.compute_capability, "nvmlDeviceGetCudaComputeCapability");
    lib.ready = lib.init && lib.handle_by_index && lib.name && lib.utilization && lib.memory && lib.init() == 0;
  });
  return lib;
}

// CUDA_VISIBLE_DEVICES="2,3": this process's device 0 is the driver's 2. Entries may be
// indices or GPU UUIDs ("GPU-..."); unset means the identity.
std::optional<nvmlDevice_t> device_handle(const Nvml& lib, int cuda_index) {
  nvmlDevice_t device = nullptr;
  std::string entry = std::to_string(cuda_index);
  if (const char* visible = std::getenv("CUDA_VISIBLE_DEVICES")) {
    std::vector<std::string> entries;
    std::stringstream list(visible);
    for (std::string e; std::getline(list, e, ',');) entries.push_back(e);
    if (cuda_index < 0 || cuda_index >= static_cast<int>(entries.size())) return std::nullopt;
    entry = entries[static_cast<size_t>(cuda_index)];
  }
  if (entry.rfind("GPU-", 0) == 0 || entry.rfind("MIG-", 0) == 0) {
    if (!lib.handle_by_uuid || lib.handle_by_uuid(entry.c_str(), &device) != 0) return std::nullopt;
    return device;
  }
  char* end = nullptr;
  const long index = std::strtol(entry.c_str(), &end, 10);
  if (end == entry.c_str() || index < 0 || lib.handle_by_index(static_cast<unsigned int>(index), &device) != 0)
    return std::nullopt;
  return device;
}

}  // namespace

std::optional<GpuReading> read_gpu(int cuda_index) {
  const Nvml& lib = nvml();
  if (!lib.ready) return std::nullopt;
  const auto device = device_handle(lib, cuda_index);
  if (!device) return std::nullopt;
  GpuReading r;
  char name[96] = {};
  if (lib.name(*device, name, sizeof name) == 0) r.name = name;
  nvmlUtilization_t util{};
  if (lib.utilization(*device, &util) == 0) r.utilization_percent = util.gpu;
  nvmlMemory_t memory{};
  if (lib.memory(*device, &memory) == 0) {
    r.memory_used_mb = static_cast<double>(memory.used) / (1024.0 * 1024.0);
    r.memory_total_mb = static_cast<double>(memory.total) / (1024.0 * 1024.0);
  }
  int major = 0, minor = 0;
  if (lib.compute_capability && lib.compute_capability(*device, &major, &minor) == 0) r.compute_capability_major = major;
  return r;
}

}  // namespace ganpo
