#pragma once
// A reusable barrier for the node workers of one data-parallel step.
//
// Not std::barrier: GCC 12's libstdc++ builds it on its atomic wait/notify,
// which can lose a wake-up (the family of GCC bug 98033). A worker was seen
// asleep in std::barrier::arrive_and_wait for minutes after the other
// worker had passed the same phase, hanging train_parallel_numa. Here the
// phase changes under a mutex and sleepers wait on a condition variable
// with that phase as the predicate, so no wake-up can be missed. Waiters
// poll briefly first: phases are short and a kernel wake-up costs 10-50 us.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <mutex>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace kortexdl::detail {

class StepBarrier {
 public:
  explicit StepBarrier(std::size_t parties) : parties_(parties), remaining_(parties) {}
  StepBarrier(const StepBarrier&) = delete;
  StepBarrier& operator=(const StepBarrier&) = delete;

  void arrive_and_wait() {
    std::unique_lock<std::mutex> lock(mutex_);
    const std::uint64_t phase = phase_.load(std::memory_order_relaxed);
    if (--remaining_ == 0) {
      remaining_ = parties_;
      phase_.store(phase + 1, std::memory_order_release);
      lock.unlock();
      phase_changed_.notify_all();
      return;
    }
    lock.unlock();
    const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(50);
    for (unsigned i = 1; phase_.load(std::memory_order_acquire) == phase; ++i) {
#if defined(__x86_64__) || defined(__i386__)
      _mm_pause();
#endif
      if (i % 64 == 0 && std::chrono::steady_clock::now() > until) {
        lock.lock();
        phase_changed_.wait(lock, [&] { return phase_.load(std::memory_order_relaxed) != phase; });
        return;
      }
    }
  }

 private:
  const std::size_t parties_;
  std::size_t remaining_;
  std::atomic<std::uint64_t> phase_{0};
  std::mutex mutex_;
  std::condition_variable phase_changed_;
};

}  // namespace kortexdl::detail
