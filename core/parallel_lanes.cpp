#include "core/parallel_lanes.h"

#include "core/bf16_autocast.h"

namespace ganpo {

ParallelLanes::~ParallelLanes() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    quit_ = true;
  }
  cv_.notify_all();
  if (helper_.joinable()) helper_.join();
}

void ParallelLanes::helper_loop() {
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    cv_.wait(lock, [this] { return quit_ || (job_ != nullptr && !job_done_); });
    if (quit_) return;
    const std::function<void()>* job = job_;
    lock.unlock();
    std::exception_ptr error;
    try {
      (*job)();
    } catch (...) {
      error = std::current_exception();
    }
    lock.lock();
    job_error_ = error;
    job_done_ = true;
    cv_.notify_all();
  }
}

void ParallelLanes::run(const std::function<void()>& a, const std::function<void()>& b) {
  if (plan_.lanes < 2) {
    b();
    a();
    return;
  }
  if (!helper_.joinable()) helper_ = std::thread([this] { helper_loop(); });
  // The helper computes as the caller does under the CPU's bf16 autocast (the testing aid
  // Bf16OnCpuForTests; autocast's state is per thread).
  const bool bf16 = cpu_bf16_autocast_enabled();
  const std::function<void()> b_as_caller = [&] {
    const Bf16Autocast autocast(bf16);
    b();
  };
  set_blas_threads(plan_.blas_per_lane);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    job_ = &b_as_caller;
    job_done_ = false;
    job_error_ = nullptr;
  }
  cv_.notify_all();
  std::exception_ptr a_error;
  try {
    a();
  } catch (...) {
    a_error = std::current_exception();
  }
  std::exception_ptr b_error;
  {
    // b must finish before run() returns even when a failed: it refers to the caller's frame.
    std::unique_lock<std::mutex> lock(mutex_);
    cv_.wait(lock, [this] { return job_done_; });
    job_ = nullptr;
    b_error = job_error_;
  }
  set_blas_threads(plan_.blas_serial);
  if (a_error) std::rethrow_exception(a_error);
  if (b_error) std::rethrow_exception(b_error);
}

}  // namespace ganpo
