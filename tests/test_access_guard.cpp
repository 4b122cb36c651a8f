// AccessGuard's count of lock contenders (src/parallel/access_guard.cpp):
// a lock taken at the first try is not counted, a thread that had to wait is
// counted until it unlocks, also when its call is then refused.
#include <gtest/gtest.h>

#include <atomic>
#include <optional>
#include <thread>

#include "kortexdl/error.hpp"
#include "parallel/access_guard.hpp"
#include "test_support.hpp"

namespace {

using kortexdl::ConcurrencyError;
using kortexdl::detail::AccessGuard;
using kortexdl::detail::parameter_lock_contenders;
using kortex_test::eventually;

TEST(AccessGuardContenders, LocksTakenAtOnceAreNotCounted) {
  AccessGuard guard;
  {
    AccessGuard::Read first(guard, true, "test");
    AccessGuard::Read second(guard, true, "test");
    EXPECT_EQ(parameter_lock_contenders(), 0);
  }
  {
    AccessGuard::Write write(guard, true, "test");
    EXPECT_EQ(parameter_lock_contenders(), 0);
  }
}

TEST(AccessGuardContenders, AThreadThatWaitedCountsUntilItUnlocks) {
  AccessGuard guard;
  std::optional<AccessGuard::Write> held;
  held.emplace(guard, true, "test");
  std::atomic<bool> reading{false}, finish{false};
  std::thread reader([&] {
    AccessGuard::Read read(guard, true, "test");  // waits for the writer
    reading = true;
    while (!finish) std::this_thread::yield();
  });
  EXPECT_TRUE(eventually([] { return parameter_lock_contenders() == 1; })) << "the waiting reader is not counted";
  held.reset();
  EXPECT_TRUE(eventually([&] { return reading.load(); }));
  EXPECT_EQ(parameter_lock_contenders(), 1) << "a holder that waited counts until it unlocks";
  finish = true;
  reader.join();
  EXPECT_EQ(parameter_lock_contenders(), 0);
}

// The writer waits for a locked reader; by the time it has the lock an
// unlocked reader (thread safety off for that call) is in, so it is refused,
// and leaves the count as it found it.
TEST(AccessGuardContenders, AWaiterThatIsRefusedLeavesTheCount) {
  AccessGuard guard;
  std::optional<AccessGuard::Read> locked_read;
  locked_read.emplace(guard, true, "test");
  std::atomic<bool> refused{false};
  std::thread writer([&] {
    try {
      AccessGuard::Write write(guard, true, "test");
    } catch (const ConcurrencyError&) {
      refused = true;
    }
  });
  EXPECT_TRUE(eventually([] { return parameter_lock_contenders() == 1; })) << "the waiting writer is not counted";
  {
    AccessGuard::Read unlocked_read(guard, false, "test");
    locked_read.reset();
    writer.join();
  }
  EXPECT_TRUE(refused.load());
  EXPECT_EQ(parameter_lock_contenders(), 0);
}

}  // namespace
