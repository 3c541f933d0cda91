// Proof that a piece of CUDA work only queues: run_without_host_sync() runs `body` with
// LibTorch's CUDA sync debug mode at its error level (torch.cuda.set_sync_debug_mode("error")),
// so a call that would make the host wait for the device (a blocking copy to the host, item(),
// nonzero, a stream or device synchronize) throws instead, on any thread (the autograd engine's
// device threads included: their errors come back through backward()). Such an error leaves as
// an Error that says so, with LibTorch's backtrace of the call; others pass unchanged. The mode
// is process-wide and goes back to what it was. Where LibTorch has no CUDA (GANPO_C10_CUDA unset,
// as with Debian's CPU build), `body` runs unchecked. The trainer uses it for one testing aid,
// TrainerOptions::forbid_host_sync_in_steps.
#pragma once

#include <functional>

namespace ganpo {

void run_without_host_sync(const std::function<void()>& body);
// Whether run_without_host_sync() checks anything in this build.
bool host_sync_checks_available();

}  // namespace ganpo
