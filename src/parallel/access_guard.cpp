#include "access_guard.hpp"

#include <string>

#include "kortexdl/error.hpp"

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

}  // namespace

AccessGuard::AccessGuard() {
  pthread_rwlockattr_t attr;
  check(pthread_rwlockattr_init(&attr), "attribute init");
  // glibc's default lets a steady stream of readers starve writers forever.
  check(pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP), "setkind");
  check(pthread_rwlock_init(&lock_, &attr), "init");
  pthread_rwlockattr_destroy(&attr);
}

AccessGuard::~AccessGuard() { pthread_rwlock_destroy(&lock_); }

AccessGuard::Read::Read(AccessGuard& guard, bool lock, const char* operation)
    : guard_(guard), locked_(lock) {
  if (locked_) check(pthread_rwlock_rdlock(&guard_.lock_), "read lock");
  const std::uint64_t before = guard_.state_.fetch_add(1, std::memory_order_acquire);
  if ((before & kWriter) != 0) {
    guard_.state_.fetch_sub(1, std::memory_order_release);
    if (locked_) pthread_rwlock_unlock(&guard_.lock_);
    refuse(operation);
  }
}

AccessGuard::Read::~Read() {
  guard_.state_.fetch_sub(1, std::memory_order_release);
  if (locked_) pthread_rwlock_unlock(&guard_.lock_);
}

AccessGuard::Write::Write(AccessGuard& guard, bool lock, const char* operation)
    : guard_(guard), locked_(lock) {
  if (locked_) check(pthread_rwlock_wrlock(&guard_.lock_), "write lock");
  std::uint64_t expected = 0;
  if (!guard_.state_.compare_exchange_strong(expected, kWriter, std::memory_order_acquire,
                                             std::memory_order_relaxed)) {
    if (locked_) pthread_rwlock_unlock(&guard_.lock_);
    refuse(operation);
  }
}

AccessGuard::Write::~Write() {
  guard_.state_.fetch_and(~kWriter, std::memory_order_release);
  if (locked_) pthread_rwlock_unlock(&guard_.lock_);
}

}  // namespace kortexdl::detail
