#pragma once
// Guards one network's parameters (DESIGN.md section 3).
//
// Every call registers itself in `state_`: readers add one, a writer sets the
// WRITER bit and only from zero. That makes an unsafe overlap (a write while
// anything else runs) visible at no more cost than one atomic operation, so
// it is reported as ConcurrencyError instead of corrupting anything. When
// locking is requested the call also holds a writer-preferring
// pthread_rwlock (readers shared, writers exclusive), so locked calls never
// see each other in `state_` at a conflicting moment and writers are not
// starved by a stream of readers.
#include <pthread.h>

#include <atomic>
#include <cstdint>

#include "parallel/cache_line.hpp"

namespace kortexdl::detail {

// Aligned so that the lock and the reader count, which every locked call
// changes, share one cache line with nothing else, and the flags every call
// only reads sit on the next.
class alignas(kCacheLineBytes) AccessGuard {
 public:
  AccessGuard();
  ~AccessGuard();
  AccessGuard(const AccessGuard&) = delete;
  AccessGuard& operator=(const AccessGuard&) = delete;

  void set_locking(bool enabled) { locking_.store(enabled, std::memory_order_release); }
  bool locking() const { return locking_.load(std::memory_order_acquire); }

  // Throws ConcurrencyError if the process forked while another thread was
  // writing through this guard (fork_safety.hpp): for calls that queue
  // before they take the guard (combined and gated training steps).
  void refuse_if_forked_mid_write(const char* operation) const;
  // In a forked child (fork_safety.hpp), with no other thread left: drops
  // the holds of the parent's other threads if they were only reading and
  // `steps_in_flight` is false, else refuses every later call.
  void after_fork_in_child(bool steps_in_flight);

  class Read {
   public:
    // operation names the public method, for the error message.
    Read(AccessGuard& guard, bool lock, const char* operation);
    ~Read();
    Read(const Read&) = delete;
    Read& operator=(const Read&) = delete;

   private:
    AccessGuard& guard_;
    bool locked_;
    bool waited_ = false;  // counted among the lock's contenders (access_guard.cpp)
  };

  class Write {
   public:
    Write(AccessGuard& guard, bool lock, const char* operation);
    ~Write();
    Write(const Write&) = delete;
    Write& operator=(const Write&) = delete;

   private:
    AccessGuard& guard_;
    bool locked_;
    bool waited_ = false;  // counted among the lock's contenders (access_guard.cpp)
  };

 private:
  static constexpr std::uint64_t kWriter = std::uint64_t{1} << 63;
  void init_lock();
  pthread_rwlock_t lock_;
  std::atomic<std::uint64_t> state_{0};
  alignas(kCacheLineBytes) std::atomic<bool> locking_{false};
  std::atomic<bool> forked_mid_write_{false};
};

// Whether the calling thread is inside a call on some network (holds an
// AccessGuard::Read or Write).
bool this_thread_holds_a_network();

// Threads waiting for a parameter lock, or holding one they had to wait for,
// process-wide (the spin-or-sleep rule in access_guard.cpp; tests).
int parameter_lock_contenders();
// In a forked child: the contenders are the calling thread's own waited-for
// holds, the parent's other threads being gone (fork_safety.cpp).
void count_only_this_threads_contention_after_fork();

}  // namespace kortexdl::detail
