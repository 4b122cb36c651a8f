#include "gil_return_gate.hpp"

#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <vector>

#include "env_settings.hpp"

namespace kortexdl::python {

namespace {

constexpr std::int64_t kShortCallNs = 100'000;
constexpr std::int64_t kLeaseNs = 200'000;
constexpr std::int64_t kTurnNs = 5'000'000;
constexpr std::uint32_t kMaxLanes = 4096;

std::int64_t now_ns() noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

std::uint32_t read_lanes() noexcept {
  const std::uint32_t cpus = usable_cpus();
  return env_count("KORTEX_GIL_LANES", kMaxLanes, cpus);
}

struct ThreadLane;

struct Lane {
  const ThreadLane* holder = nullptr;
  std::int64_t renewed_ns = 0;
  std::int64_t turn_started_ns = 0;
};

struct Gate {
  std::mutex mutex;
  std::vector<Lane> lanes;
  std::deque<ThreadLane*> line;
};

Gate& gate() {
  static Gate* instance = [] {
    auto* g = new Gate();  // never destroyed: threads may return after static destruction
    g->lanes.resize(return_gate_lanes());
    return g;
  }();
  return *instance;
}

std::atomic<std::uint64_t> queued_count{0};
std::atomic<std::uint64_t> rotated_count{0};
std::atomic<std::uint64_t> expired_count{0};

struct ThreadLane {
  int lane = -1;
  int granted = -1;  // set by whoever hands this waiter a lane
  std::condition_variable wake;
  ~ThreadLane();
};

thread_local ThreadLane this_thread;

void give(Gate& g, int lane, ThreadLane& to, std::int64_t now) {
  g.lanes[lane] = Lane{&to, now, now};
  to.granted = lane;
  to.wake.notify_one();
}

// Hands `lane` to the first in line (the caller has popped nobody yet).
void hand_to_first(Gate& g, int lane, std::int64_t now) {
  ThreadLane* first = g.line.front();
  g.line.pop_front();
  give(g, lane, *first, now);
  if (!g.line.empty()) g.line.front()->wake.notify_one();  // the new first must watch the leases
}

int free_or_expired(const Gate& g, std::int64_t now, bool* expired) {
  for (std::size_t i = 0; i < g.lanes.size(); ++i) {
    if (g.lanes[i].holder == nullptr) {
      *expired = false;
      return static_cast<int>(i);
    }
  }
  for (std::size_t i = 0; i < g.lanes.size(); ++i) {
    if (now - g.lanes[i].renewed_ns > kLeaseNs) {
      *expired = true;
      return static_cast<int>(i);
    }
  }
  return -1;
}

std::int64_t earliest_expiry(const Gate& g) {
  std::int64_t earliest = INT64_MAX;
  for (const Lane& l : g.lanes) earliest = std::min(earliest, l.renewed_ns + kLeaseNs);
  return earliest;
}

// Frees the thread's lane, or hands it to the first in line. Holds the mutex.
void give_up_lane(Gate& g, ThreadLane& me) {
  if (me.lane >= 0 && g.lanes[me.lane].holder == &me) {
    if (g.line.empty()) {
      g.lanes[me.lane] = Lane{};
    } else {
      hand_to_first(g, me.lane, now_ns());
    }
  }
  me.lane = -1;
}

ThreadLane::~ThreadLane() {
  if (lane < 0 || return_gate_lanes() == 0) return;
  Gate& g = gate();
  std::lock_guard<std::mutex> lock(g.mutex);
  give_up_lane(g, *this);
}

// After fork() only the forking thread exists: the line and the lanes of the
// parent's other threads mean nothing in the child, and the mutex may have
// been held by one of them. Holding it across fork() makes both sides
// consistent.
void before_fork() {
  if (return_gate_lanes() != 0) gate().mutex.lock();
}
void after_fork_in_parent() {
  if (return_gate_lanes() != 0) gate().mutex.unlock();
}
void after_fork_in_child() {
  if (return_gate_lanes() == 0) return;
  Gate& g = gate();
  g.line.clear();
  for (Lane& l : g.lanes) l = Lane{};
  this_thread.lane = -1;
  this_thread.granted = -1;
  g.mutex.unlock();
}
const bool fork_handlers = pthread_atfork(before_fork, after_fork_in_parent, after_fork_in_child) == 0;

}  // namespace

std::uint32_t return_gate_lanes() noexcept {
  static const std::uint32_t lanes = read_lanes();
  return lanes;
}

void pass_return_gate(std::int64_t region_ns) {
  if (return_gate_lanes() == 0) return;
  (void)fork_handlers;
  Gate& g = gate();
  ThreadLane& me = this_thread;
  std::unique_lock<std::mutex> lock(g.mutex);
  std::int64_t now = now_ns();
  if (me.lane >= 0 && g.lanes[me.lane].holder == &me) {
    Lane& mine = g.lanes[me.lane];
    if (g.line.empty() || now - mine.turn_started_ns < kTurnNs) {
      mine.renewed_ns = now;
      return;
    }
    rotated_count.fetch_add(1, std::memory_order_relaxed);
    hand_to_first(g, me.lane, now);
  }
  me.lane = -1;
  if (region_ns >= kShortCallNs) return;  // a long call's return is no convoy
  if (g.line.empty()) {
    bool expired = false;
    const int lane = free_or_expired(g, now, &expired);
    if (lane >= 0) {
      if (expired) expired_count.fetch_add(1, std::memory_order_relaxed);
      g.lanes[lane] = Lane{&me, now, now};
      me.lane = lane;
      return;
    }
  }
  queued_count.fetch_add(1, std::memory_order_relaxed);
  me.granted = -1;
  g.line.push_back(&me);
  while (me.granted < 0) {
    if (g.line.front() != &me) {
      me.wake.wait(lock);
      continue;
    }
    const std::int64_t wait_ns = std::max<std::int64_t>(earliest_expiry(g) - now_ns(), 1000);
    me.wake.wait_for(lock, std::chrono::nanoseconds(wait_ns));
    if (me.granted >= 0) break;
    now = now_ns();
    bool expired = false;
    const int lane = free_or_expired(g, now, &expired);
    if (lane >= 0) {
      if (expired) expired_count.fetch_add(1, std::memory_order_relaxed);
      g.line.pop_front();
      g.lanes[lane] = Lane{&me, now, now};
      me.granted = lane;
      if (!g.line.empty()) g.line.front()->wake.notify_one();
    }
  }
  me.lane = me.granted;
  me.granted = -1;
}

void leave_return_gate() {
  ThreadLane& me = this_thread;
  if (me.lane < 0 || return_gate_lanes() == 0) return;
  Gate& g = gate();
  std::lock_guard<std::mutex> lock(g.mutex);
  give_up_lane(g, me);
}

ReturnGateCounts return_gate_counts() noexcept {
  return {queued_count.load(std::memory_order_relaxed), rotated_count.load(std::memory_order_relaxed),
          expired_count.load(std::memory_order_relaxed)};
}

void reset_return_gate_counts() noexcept {
  queued_count.store(0, std::memory_order_relaxed);
  rotated_count.store(0, std::memory_order_relaxed);
  expired_count.store(0, std::memory_order_relaxed);
}

}  // namespace kortexdl::python
