// Whether a LibTorch error is an allocation that failed. CUDA's caching allocator throws
// c10::OutOfMemoryError; the CPU allocator a plain c10::Error ("DefaultCPUAllocator: can't
// allocate memory: you tried to allocate N bytes"; "not enough memory" on some systems), as do
// CUDA's libraries when they cannot allocate their own memory ("CUDA error: out of memory",
// cuBLAS's CUBLAS_STATUS_ALLOC_FAILED). The trainer and the playground turn either into a message that
// says what to change instead of LibTorch's text alone.
#pragma once

#include <string>

#include <c10/util/Exception.h>

namespace ganpo {

inline bool is_out_of_memory(const c10::Error& e) {
  if (dynamic_cast<const c10::OutOfMemoryError*>(&e)) return true;
  const std::string text = e.what_without_backtrace();
  const auto has = [&](const char* part) { return text.find(part) != std::string::npos; };
  return (has("DefaultCPUAllocator") && (has("can't allocate memory") || has("not enough memory"))) ||
         has("CUDA error: out of memory") || has("CUBLAS_STATUS_ALLOC_FAILED");
}

// A command's failure when memory ran out on `device` ("cuda:0"; "cpu": this machine's RAM) while
// `doing` something, with `ways` to need less; `detail` is what the allocator said: LibTorch's,
// or, with `host`, C++'s (std::bad_alloc), which is always the machine's RAM.
inline std::string out_of_memory_message(const std::string& device, const std::string& doing, const std::string& ways,
                                         const std::string& detail, bool host = false) {
  return (device.rfind("cuda", 0) == 0 && !host ? device : std::string("this machine's RAM")) +
         " ran out of memory while " + doing + ". To need less memory, " + ways + (host ? ". C++: " : ". LibTorch: ") +
         detail;
}

}  // namespace ganpo
