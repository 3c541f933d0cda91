// What the GPU is doing, as nvidia-smi reads it: NVIDIA's management library (NVML), opened at
// run time (dlopen of libnvidia-ml.so.1, which the driver installs), so builds need no CUDA
// headers and machines without the driver simply get no reading.
//
// A CUDA run reports the utilisation of its device (percent of time a kernel ran) and the
// memory in use on it by every process; the caching allocator's own view (allocated, reserved,
// peak of this process) comes from core/cuda_memory.h.
#pragma once

#include <optional>
#include <string>

namespace ganpo {

struct GpuReading {
  std::string name;              // "NVIDIA H200"
  double utilization_percent = 0;
  double memory_used_mb = 0;     // by every process on the device
  double memory_total_mb = 0;
  // 8 for Ampere (A100, RTX 30xx), 9 for Hopper (H100, H200), ...; 0 when NVML cannot say.
  // From 8 on the GPU computes bf16 natively (pre-Ampere cards emulate it, slowly).
  int compute_capability_major = 0;
};

// The reading of CUDA device `cuda_index` (as this process numbers it: CUDA_VISIBLE_DEVICES
// maps it to the driver's index), or nothing without NVML or such a device.
std::optional<GpuReading> read_gpu(int cuda_index);

}  // namespace ganpo
