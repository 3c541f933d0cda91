// Whether a LibTorch error is an allocation that failed. CUDA's caching allocator throws
// c10::OutOfMemoryError; the CPU allocator throws a plain c10::Error in LibTorch 1.13
// ("DefaultCPUAllocator: can't allocate memory: you tried to allocate N bytes") and its own
// message in later versions. The trainer and the playground turn either into a message that
// says what to change instead of LibTorch's text alone.
#pragma once

#include <string>

#include <c10/util/Exception.h>

namespace ganpo {

inline bool is_out_of_memory(const c10::Error& e) {
  if (dynamic_cast<const c10::OutOfMemoryError*>(&e)) return true;
  const std::string text = e.what_without_backtrace();
  return text.find("DefaultCPUAllocator") != std::string::npos &&
         (text.find("can't allocate memory") != std::string::npos || text.find("not enough memory") != std::string::npos);
}

}  // namespace ganpo
