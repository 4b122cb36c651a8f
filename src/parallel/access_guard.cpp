#include "access_guard.hpp"

#include <atomic>
#include <chrono>
#include <string>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include "kortexdl/error.hpp"
#include "kortexdl/threading.hpp"
#include "parallel/affinity.hpp"
#include "parallel/cache_line.hpp"

namespace kortexdl::detail {

namespace {

[[noreturn]] void refuse(const char* operation) {
  throw ConcurrencyError(std::string(operation) +
                         ": another call is using this network at the same time and one of them "
                         "changes its parameters; concurrent training needs "
                         "network.enable_thread_safety(True) (or the *_thread_safe methods). "
                         "Nothing was changed by this call.");
}

void check(int rc, const char* what) {
  if (rc != 0) throw InternalError(std::string("parameter lock: ") + what + " failed with code " + std::to_string(rc));
}

// Parameter locks are held for one gradient phase or one update: a few to a
// few hundred microseconds. Sleeping in the kernel and being woken costs
// 10-50 us on a virtual machine, so while every thread that wants the lock
// can have a CPU of its own, a contended lock is retried for a while before
// the thread sleeps. With more contenders than CPUs a spinner would take the
// CPU from the thread that holds the lock, so they sleep at once.
constexpr auto kLockSpin = std::chrono::microseconds(200);

// Threads waiting for some parameter lock, or holding one they had to wait
// for, process-wide. A lock taken at the first try is not counted: that is
// nearly every read, and two changes per call to a line that every calling
// thread writes cost each small call two cache misses once several threads
// call (docs/CONCURRENCY.md, "Per-call shared writes"). Whoever a waiter
// waits for holds the lock and needs a CPU too, hence the + 1 below; holders
// that took it at once (readers a writer waits for) compute, so they are
// among the calls in flight.
OwnCacheLine<std::atomic<int>> contenders_line;
std::atomic<int>& contenders = contenders_line.value;

bool more_threads_than_cpus() {
  const auto cpus = allowed_cpu_count();
  return static_cast<std::size_t>(contenders.load(std::memory_order_relaxed)) + 1 > cpus ||
         calls_in_flight() > cpus;
}

template <class TryLock>
bool acquired_by_spinning(TryLock try_lock) {
  const auto until = std::chrono::steady_clock::now() + kLockSpin;
  for (unsigned i = 1;; ++i) {
#if defined(__x86_64__) || defined(__i386__)
    _mm_pause();
#endif
    if (try_lock() == 0) return true;
    if (i % 16 == 0 && (more_threads_than_cpus() || std::chrono::steady_clock::now() > until)) {
      return false;
    }
  }
}

using LockFunction = int (*)(pthread_rwlock_t*);

// Takes the lock (shared or exclusive, by the pair of functions given).
// Returns whether the thread had to wait for it, and so counts among the
// contenders until unlock_and_leave.
bool enter(pthread_rwlock_t* lock, LockFunction try_lock, LockFunction block, const char* what) {
  if (try_lock(lock) == 0) return false;
  contenders.fetch_add(1, std::memory_order_relaxed);
  if (acquired_by_spinning([&] { return try_lock(lock); })) return true;
  const int rc = block(lock);
  if (rc != 0) {
    contenders.fetch_sub(1, std::memory_order_relaxed);
    check(rc, what);
  }
  return true;
}

void unlock_and_leave(pthread_rwlock_t* lock, bool waited) {
  pthread_rwlock_unlock(lock);
  if (waited) contenders.fetch_sub(1, std::memory_order_relaxed);
}

// Guards the calling thread holds (reads and writes, any network), and of
// those, the ones it had to wait for (counted among the contenders).
thread_local unsigned held_here = 0;
thread_local int waited_here = 0;

void count_hold_here(bool waited) {
  ++held_here;
  if (waited) ++waited_here;
}

void uncount_hold_here(bool waited) {
  --held_here;
  if (waited) --waited_here;
}

[[noreturn]] void refuse_forked_mid_write(const char* operation) {
  throw ConcurrencyError(std::string(operation) +
                         ": this process was forked while another thread was changing this network's "
                         "parameters, so in this child they may be partly updated; load the network again "
                         "(or copy it before forking). Nothing was changed by this call.");
}

}  // namespace

AccessGuard::AccessGuard() { init_lock(); }

void AccessGuard::init_lock() {
  pthread_rwlockattr_t attr;
  check(pthread_rwlockattr_init(&attr), "attribute init");
  // glibc's default lets a steady stream of readers starve writers forever.
  check(pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP), "setkind");
  check(pthread_rwlock_init(&lock_, &attr), "init");
  pthread_rwlockattr_destroy(&attr);
}

AccessGuard::~AccessGuard() { pthread_rwlock_destroy(&lock_); }

bool this_thread_holds_a_network() { return held_here != 0; }

int parameter_lock_contenders() { return contenders.load(std::memory_order_relaxed); }

void count_only_this_threads_contention_after_fork() {
  contenders.store(waited_here, std::memory_order_relaxed);
}

void AccessGuard::refuse_if_forked_mid_write(const char* operation) const {
  if (forked_mid_write_.load(std::memory_order_relaxed)) refuse_forked_mid_write(operation);
}

void AccessGuard::after_fork_in_child(bool steps_in_flight) {
  if (steps_in_flight || (state_.load(std::memory_order_relaxed) & kWriter) != 0) {
    forked_mid_write_.store(true, std::memory_order_relaxed);
    return;
  }
  // Only other threads' reads held it, and those threads are gone.
  state_.store(0, std::memory_order_relaxed);
  try {
    init_lock();
  } catch (...) {
    forked_mid_write_.store(true, std::memory_order_relaxed);
  }
}

AccessGuard::Read::Read(AccessGuard& guard, bool lock, const char* operation)
    : guard_(guard), locked_(lock) {
  guard_.refuse_if_forked_mid_write(operation);
  if (locked_) waited_ = enter(&guard_.lock_, pthread_rwlock_tryrdlock, pthread_rwlock_rdlock, "read lock");
  const std::uint64_t before = guard_.state_.fetch_add(1, std::memory_order_acquire);
  if ((before & kWriter) != 0) {
    guard_.state_.fetch_sub(1, std::memory_order_release);
    if (locked_) unlock_and_leave(&guard_.lock_, waited_);
    refuse(operation);
  }
  count_hold_here(waited_);
}

AccessGuard::Read::~Read() {
  uncount_hold_here(waited_);
  guard_.state_.fetch_sub(1, std::memory_order_release);
  if (locked_) unlock_and_leave(&guard_.lock_, waited_);
}

AccessGuard::Write::Write(AccessGuard& guard, bool lock, const char* operation)
    : guard_(guard), locked_(lock) {
  guard_.refuse_if_forked_mid_write(operation);
  if (locked_) waited_ = enter(&guard_.lock_, pthread_rwlock_trywrlock, pthread_rwlock_wrlock, "write lock");
  std::uint64_t expected = 0;
  if (!guard_.state_.compare_exchange_strong(expected, kWriter, std::memory_order_acquire,
                                             std::memory_order_relaxed)) {
    if (locked_) unlock_and_leave(&guard_.lock_, waited_);
    refuse(operation);
  }
  count_hold_here(waited_);
}

AccessGuard::Write::~Write() {
  uncount_hold_here(waited_);
  guard_.state_.fetch_and(~kWriter, std::memory_order_release);
  if (locked_) unlock_and_leave(&guard_.lock_, waited_);
}

}  // namespace kortexdl::detail
