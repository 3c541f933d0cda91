#include "core/host_sync_check.h"

#if defined(GANPO_C10_CUDA) && __has_include(<c10/cuda/CUDAFunctions.h>)
#include <c10/cuda/CUDAFunctions.h>
#define GANPO_HAS_SYNC_DEBUG_MODE 1
#endif

#include <c10/util/Exception.h>

#include <string>

#include "core/error.h"

namespace ganpo {

#ifdef GANPO_HAS_SYNC_DEBUG_MODE
void run_without_host_sync(const std::function<void()>& body) {
  auto& state = c10::cuda::warning_state();
  const auto before = state.get_sync_debug_mode();
  struct Restore {
    c10::cuda::WarningState& state;
    c10::cuda::SyncDebugMode mode;
    ~Restore() { state.set_sync_debug_mode(mode); }
  } restore{state, before};
  state.set_sync_debug_mode(c10::cuda::SyncDebugMode::L_ERROR);
  try {
    body();
  } catch (const c10::Error& e) {
    // LibTorch's words for it (c10/cuda/CUDAFunctions.cpp, warn_or_error_on_sync).
    if (std::string(e.what_without_backtrace()).find("synchronizing CUDA operation") == std::string::npos) throw;
    throw Error(std::string("the host waited for the device where it must not: ") + e.what());
  }
}
bool host_sync_checks_available() { return true; }
#else
void run_without_host_sync(const std::function<void()>& body) { body(); }
bool host_sync_checks_available() { return false; }
#endif

}  // namespace ganpo
