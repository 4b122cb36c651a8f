// The return gate of the Python bindings (python_bindings/src/gil_return_gate.hpp)
// has no Python in it, so it is tested here too, where ThreadSanitizer can
// watch it: a std::mutex stands in for the GIL.
#include <gtest/gtest.h>

#include <algorithm>
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
void caller_loop(const std::atomic<bool>& stop, std::int64_t region_ns, std::atomic<std::size_t>* calls) {
  while (!stop.load(std::memory_order_relaxed)) {
    {
      std::lock_guard<std::mutex> gil(fake_gil);
      spin_for(500ns);
    }
    spin_for(std::chrono::nanoseconds(std::min<std::int64_t>(region_ns, 20'000)));
    pass_return_gate(region_ns);
    calls->fetch_add(1, std::memory_order_relaxed);
  }
}

using Clock = std::chrono::steady_clock;

std::int64_t ns_since(Clock::time_point start) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - start).count();
}

// Takes turns in arrival order, as CPython's GIL does between threads that
// want it (its holder has to let a waiting thread in); a std::mutex would let
// a thread that relocks at once keep it for good.
class FairGil {
 public:
  void lock() {
    const std::uint32_t mine = next_.fetch_add(1);
    while (serving_.load() != mine) std::this_thread::yield();
  }
  void unlock() { serving_.fetch_add(1); }

 private:
  std::atomic<std::uint32_t> next_{0};
  std::atomic<std::uint32_t> serving_{0};
};

FairGil fair_gil;

// When each caller last got past the gate, while it runs its Python (past
// the gate, not yet in its next call); 0 otherwise.
using PythonSince = std::vector<std::atomic<std::int64_t>>;

std::int64_t steady_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count();
}

// Whether another caller got past the gate less than a lease (200 us) ago
// and still runs its Python: both hold lanes. A caller that has run its
// Python for longer was held up (preempted: on a loaded machine, under the
// sanitizers), and its lease has rightly been taken over.
bool shares_the_gil_with_a_holder(const PythonSince& since, std::size_t me, std::int64_t now) {
  for (std::size_t i = 0; i < since.size(); ++i) {
    const std::int64_t t = since[i].load();
    if (i != me && t != 0 && now - t < 200'000) return true;
  }
  return false;
}

// A caller of a given shape: `held` of "Python" under the fair fake GIL
// between calls, then a `region` long call; it tells the gate both, as
// ReleasedGil does. Counts its calls, the time it spent in the gate, and
// (once `counting`) the returns that found another lane holder running its
// Python.
struct ShapedCaller {
  std::chrono::nanoseconds held;
  std::chrono::nanoseconds region;
  std::size_t calls = 0;
  std::int64_t in_gate_ns = 0;
  std::size_t counted_returns = 0;
  std::size_t overlapping_returns = 0;
};

void shaped_caller_loop(const std::atomic<bool>& stop, const std::atomic<bool>& counting,
                        std::atomic<std::size_t>& all_counted, PythonSince& since, std::size_t index,
                        ShapedCaller& me) {
  bool past_gate = false;
  std::int64_t held_ns = -1;  // a thread's first return has no Python before it to judge
  while (!stop.load(std::memory_order_relaxed)) {
    if (past_gate) {
      {
        std::lock_guard<FairGil> gil(fair_gil);
        const auto start = Clock::now();
        spin_for(me.held);
        held_ns = ns_since(start);
      }
      since[index] = 0;
    }
    const auto start = Clock::now();
    spin_for(me.region);
    const auto returned = Clock::now();
    pass_return_gate(std::chrono::duration_cast<std::chrono::nanoseconds>(returned - start).count(), held_ns);
    const std::int64_t now = steady_ns();
    const bool overlaps = shares_the_gil_with_a_holder(since, index, now);
    since[index] = now;
    past_gate = true;
    ++me.calls;
    if (counting.load(std::memory_order_relaxed)) {
      me.in_gate_ns += ns_since(returned);
      ++me.counted_returns;
      all_counted.fetch_add(1, std::memory_order_relaxed);
      if (overlaps) ++me.overlapping_returns;
    }
  }
  since[index] = 0;
}

// Runs the callers for warm_up, then counts for at least `at_least` and
// until they made `returns` counted returns (at most 20 s): on a loaded
// machine (the sanitizer lanes run side by side with compilers) 300 ms may
// see fewer than a hundred returns, too few to judge a ratio on. Returns how
// long it counted.
std::chrono::nanoseconds run_shaped(std::vector<ShapedCaller>& callers, std::chrono::milliseconds warm_up,
                                    std::chrono::milliseconds at_least, std::size_t returns) {
  std::atomic<bool> stop{false};
  std::atomic<bool> counting{false};
  std::atomic<std::size_t> all_counted{0};
  PythonSince since(callers.size());
  std::vector<std::thread> pool;
  for (std::size_t i = 0; i < callers.size(); ++i) {
    pool.emplace_back(shaped_caller_loop, std::cref(stop), std::cref(counting), std::ref(all_counted),
                      std::ref(since), i, std::ref(callers[i]));
  }
  std::this_thread::sleep_for(warm_up);
  const auto start = Clock::now();
  counting = true;
  std::this_thread::sleep_for(at_least);
  while (all_counted.load() < returns && Clock::now() - start < 20s) std::this_thread::sleep_for(10ms);
  stop = true;
  const auto counted_for = Clock::now() - start;
  for (auto& t : pool) t.join();
  return counted_for;
}

// Runs the callers for at least `how_long`, then until `enough(calls)` holds
// (at most 20 s: a loaded machine may deschedule spinning threads for whole
// time slices, so a fixed window may see too little to judge).
template <class Enough>
std::vector<std::size_t> run_callers(int threads, std::int64_t region_ns, std::chrono::milliseconds how_long,
                                     Enough enough) {
  std::atomic<bool> stop{false};
  std::vector<std::atomic<std::size_t>> calls(threads);
  std::vector<std::thread> pool;
  for (int i = 0; i < threads; ++i) pool.emplace_back(caller_loop, std::cref(stop), region_ns, &calls[i]);
  const auto start = Clock::now();
  std::this_thread::sleep_for(how_long);
  std::vector<std::size_t> seen(threads);
  auto look = [&] {
    for (int i = 0; i < threads; ++i) seen[i] = calls[i].load(std::memory_order_relaxed);
    return enough(seen);
  };
  while (!look() && Clock::now() - start < 20s) std::this_thread::sleep_for(10ms);
  stop = true;
  for (auto& t : pool) t.join();
  for (int i = 0; i < threads; ++i) seen[i] = calls[i].load();
  return seen;
}

std::vector<std::size_t> run_callers(int threads, std::int64_t region_ns, std::chrono::milliseconds how_long) {
  return run_callers(threads, region_ns, how_long, [](const std::vector<std::size_t>&) { return true; });
}

TEST(GilReturnGate, LaneCountComesFromTheEnvironment) {
  ASSERT_TRUE(two_lanes);
  EXPECT_EQ(return_gate_lanes(), 2u);
}

TEST(GilReturnGate, EveryThreadMakesProgressWhileTurnsRotate) {
  reset_return_gate_counts();
  const std::vector<std::size_t> calls = run_callers(8, kShortCallNs, 400ms, [](const std::vector<std::size_t>& c) {
    const auto now = return_gate_counts();
    return now.queued > 0 && now.rotated > 0 && *std::min_element(c.begin(), c.end()) >= 5;
  });
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
      const auto deadline = std::chrono::steady_clock::now() + 30s;  // past the bound below
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
  EXPECT_LT(waited, 10s);  // leases run out after 200 us; without that the third waits for the holders to exit
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

TEST(GilReturnGate, GilBoundCallersTakeTurnsOnOneLane) {
  // Four threads whose 0.5 us calls are far shorter than their 10 us of
  // Python share one lane: a returning call almost never finds another lane
  // holder running its Python (with two lanes for them, most returns would),
  // and turns still rotate, so every thread makes progress.
  reset_return_gate_counts();
  std::vector<ShapedCaller> callers(4, ShapedCaller{10us, 500ns});
  run_shaped(callers, 50ms, 300ms, 1000);
  std::size_t returns = 0;
  std::size_t overlapping = 0;
  for (std::size_t i = 0; i < callers.size(); ++i) {
    EXPECT_GE(callers[i].calls, 5u) << "thread " << i << " starved";
    returns += callers[i].counted_returns;
    overlapping += callers[i].overlapping_returns;
  }
  const auto counts = return_gate_counts();
  EXPECT_GT(counts.gil_bound, 0u);
  EXPECT_GT(counts.rotated + counts.expired, 0u);  // turns end, or leases of held-up holders are taken over
  ASSERT_GT(returns, 100u);
  EXPECT_LT(overlapping * 20, returns) << overlapping << " of " << returns << " returns overlapped";
}

TEST(GilReturnGate, OneThreadWithLongerCallsKeepsItsLane) {
  // Beside three GIL-bound threads, one whose 20 us calls overlap well with
  // their Python keeps the second lane: at the end of its turns nobody in
  // line may take it over (they share the first), so it hardly ever waits
  // in the gate; handing its lane to them would park it for whole turns.
  // The time in the gate also counts every preemption of that thread inside
  // it, or of a lane holder it waits for: on a loaded machine one window may
  // cross the line by that alone, so up to five windows (within a minute)
  // get to show it. A gate that parks the thread for whole turns fails all.
  const auto give_up = Clock::now() + 60s;
  std::int64_t counted_ns = 0;
  ShapedCaller longer{};
  for (int window = 0; window < 5 && Clock::now() < give_up; ++window) {
    reset_return_gate_counts();
    std::vector<ShapedCaller> callers(3, ShapedCaller{10us, 500ns});
    callers.push_back(ShapedCaller{500ns, 20us});
    counted_ns = run_shaped(callers, 50ms, 300ms, 1000).count();
    longer = callers.back();
    EXPECT_GT(return_gate_counts().gil_bound, 0u);
    ASSERT_GT(longer.counted_returns, 0u);
    if (longer.in_gate_ns * 10 < counted_ns) break;
  }
  EXPECT_LT(longer.in_gate_ns * 10, counted_ns) << "the thread with longer calls waited " << longer.in_gate_ns / 1000
                                                << " us of " << counted_ns / 1000 << " us in the gate";
}

TEST(GilReturnGate, CallersThatPauseBetweenCallsAreNotJudgedGilBound) {
  // 50 us or more of Python between calls (a server waiting for requests),
  // or none known: such returns are no convoy, and are not judged.
  reset_return_gate_counts();
  std::thread([] {
    for (int i = 0; i < 50; ++i) pass_return_gate(1'000, 200'000);
    for (int i = 0; i < 50; ++i) pass_return_gate(1'000, -1);
  }).join();
  EXPECT_EQ(return_gate_counts().gil_bound, 0u);
}

}  // namespace
