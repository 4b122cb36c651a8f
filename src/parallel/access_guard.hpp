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

namespace kortexdl::detail {

class AccessGuard {
 public:
  AccessGuard();
  ~AccessGuard();
  AccessGuard(const AccessGuard&) = delete;
  AccessGuard& operator=(const AccessGuard&) = delete;

  void set_locking(bool enabled) { locking_.store(enabled, std::memory_order_release); }
  bool locking() const { return locking_.load(std::memory_order_acquire); }

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
  };

 private:
  static constexpr std::uint64_t kWriter = std::uint64_t{1} << 63;
  pthread_rwlock_t lock_;
  std::atomic<std::uint64_t> state_{0};
  std::atomic<bool> locking_{false};
};

}  // namespace kortexdl::detail
