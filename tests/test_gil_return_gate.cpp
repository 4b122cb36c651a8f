// The return gate of the Python bindings (python_bindings/src/gil_return_gate.hpp)
// has no Python in it, so it is tested here too, where ThreadSanitizer can
// watch it: a std::mutex stands in for the GIL.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <vector>

#include "gil_return_gate.hpp"

namespace {

using kortexdl::python::leave_return_gate;
using kortexdl::python::pass_return_gate;
using kortexdl::python::reset_return_gate_counts;
using kortexdl::python::return_gate_counts;
using kortexdl::python::return_gate_lanes;
using namespace std::chrono_literals;

// Read once by the gate, on its first use: before main, so before any test.
const bool two_lanes = setenv("KORTEX_GIL_LANES", "2", 1) == 0;

constexpr std::int64_t kShortCallNs = 5'000;
constexpr std::int64_t kLongCallNs = 1'000'000;

std::mutex fake_gil;

void spin_for(std::chrono::nanoseconds d) {
  const auto end = std::chrono::steady_clock::now() + d;
  while (std::chrono::steady_clock::now() < end) {
  }
}

// One "Python" caller: some work under the GIL, a call without it, the gate.
void caller_loop(const std::atomic<bool>& stop, std::int64_t region_ns, std::size_t* calls) {
  while (!stop.load(std::memory_order_relaxed)) {
    {
      std::lock_guard<std::mutex> gil(fake_gil);
      spin_for(500ns);
    }
    spin_for(std::chrono::nanoseconds(std::min<std::int64_t>(region_ns, 20'000)));
    pass_return_gate(region_ns);
    ++*calls;
  }
}

std::vector<std::size_t> run_callers(int threads, std::int64_t region_ns, std::chrono::milliseconds how_long) {
  std::atomic<bool> stop{false};
  std::vector<std::size_t> calls(threads, 0);
  std::vector<std::thread> pool;
  for (int i = 0; i < threads; ++i) pool.emplace_back(caller_loop, std::cref(stop), region_ns, &calls[i]);
  std::this_thread::sleep_for(how_long);
  stop = true;
  for (auto& t : pool) t.join();
  return calls;
}

TEST(GilReturnGate, LaneCountComesFromTheEnvironment) {
  ASSERT_TRUE(two_lanes);
  EXPECT_EQ(return_gate_lanes(), 2u);
}

TEST(GilReturnGate, EveryThreadMakesProgressWhileTurnsRotate) {
  reset_return_gate_counts();
  const std::vector<std::size_t> calls = run_callers(8, kShortCallNs, 400ms);
  const auto counts = return_gate_counts();
  EXPECT_GT(counts.queued, 0u);
  EXPECT_GT(counts.rotated, 0u);
  for (std::size_t i = 0; i < calls.size(); ++i) EXPECT_GE(calls[i], 5u) << "thread " << i << " starved";
}

TEST(GilReturnGate, LongCallsNeverQueue) {
  reset_return_gate_counts();
  run_callers(8, kLongCallNs, 100ms);
  EXPECT_EQ(return_gate_counts().queued, 0u);
}

TEST(GilReturnGate, HoldersThatStayAwayLoseTheirLanes) {
  // Both lanes taken by threads that then wait for a third thread: that
  // thread must pass once their leases (200 us) run out.
  reset_return_gate_counts();
  std::atomic<bool> passed{false};
  std::atomic<int> holding{0};
  std::vector<std::thread> holders;
  for (int i = 0; i < 2; ++i) {
    holders.emplace_back([&] {
      pass_return_gate(kShortCallNs);
      holding.fetch_add(1);
      const auto deadline = std::chrono::steady_clock::now() + 10s;
      while (!passed.load() && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(100us);
    });
  }
  while (holding.load() < 2) std::this_thread::sleep_for(100us);
  const auto start = std::chrono::steady_clock::now();
  std::thread third([&] {
    for (int i = 0; i < 10; ++i) pass_return_gate(kShortCallNs);
    passed = true;
  });
  third.join();
  const auto waited = std::chrono::steady_clock::now() - start;
  for (auto& t : holders) t.join();
  EXPECT_LT(waited, 2s);
  EXPECT_GT(return_gate_counts().expired, 0u);
}

TEST(GilReturnGate, ALeavingHolderFreesItsLane) {
  // Both lanes held (fresh leases); one holder leaves, as a training step
  // does: the next caller finds that lane free, neither queuing nor waiting
  // for a lease to run out. Holders stay alive (an exiting thread gives its
  // lane back anyway).
  reset_return_gate_counts();
  std::atomic<int> holding{0};
  std::atomic<bool> done{false};
  auto holder = [&](bool leaves) {
    pass_return_gate(kShortCallNs);
    if (leaves) leave_return_gate();
    holding.fetch_add(1);
    while (!done.load()) std::this_thread::sleep_for(100us);
  };
  std::thread stays(holder, false);
  while (holding.load() < 1) std::this_thread::yield();
  std::thread leaves(holder, true);
  while (holding.load() < 2) std::this_thread::yield();
  pass_return_gate(kShortCallNs);
  const auto counts = return_gate_counts();
  done = true;
  stays.join();
  leaves.join();
  leave_return_gate();  // the main thread's lane, for the tests after this one
  EXPECT_EQ(counts.queued, 0u);
  EXPECT_EQ(counts.expired, 0u);
}

TEST(GilReturnGate, LeavingWithoutALaneChangesNothing) {
  reset_return_gate_counts();
  std::thread([] { leave_return_gate(); }).join();
  std::thread([] {
    leave_return_gate();
    pass_return_gate(kShortCallNs);
    leave_return_gate();
    leave_return_gate();
  }).join();
  const auto counts = return_gate_counts();
  EXPECT_EQ(counts.queued + counts.rotated + counts.expired, 0u);
}

}  // namespace
