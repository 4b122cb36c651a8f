#pragma once
// A request's state, set by the thread that serves it and awaited by the
// thread that made it, with the request on the waiter's stack
// (step_combiner.hpp, forward_batcher.hpp). set() writes and notifies under
// the mutex, so a waiter that has seen the new state under it knows the
// setter is done with the object and may return (destroying it).
#include <atomic>
#include <condition_variable>
#include <mutex>

namespace kortexdl::detail {

class HandOver {
 public:
  explicit HandOver(int initial) : state_(initial) {}
  HandOver(const HandOver&) = delete;
  HandOver& operator=(const HandOver&) = delete;

  // For polling; a waiter about to return must have seen the state in wait_while.
  int peek() const { return state_.load(std::memory_order_acquire); }
  void set(int state) {
    std::lock_guard<std::mutex> lock(mutex_);
    state_.store(state, std::memory_order_release);
    changed_.notify_one();
  }
  // Sets the state without waking anyone: only while no other thread may
  // set it or wait for it.
  void reset(int state) { state_.store(state, std::memory_order_relaxed); }
  // Sleeps while the state is `from`; returns the state it changed to.
  int wait_while(int from) {
    std::unique_lock<std::mutex> lock(mutex_);
    changed_.wait(lock, [&] { return state_.load(std::memory_order_relaxed) != from; });
    return state_.load(std::memory_order_relaxed);
  }

 private:
  std::atomic<int> state_;
  std::mutex mutex_;
  std::condition_variable changed_;
};

}  // namespace kortexdl::detail
