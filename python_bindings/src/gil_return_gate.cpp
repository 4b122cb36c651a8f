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
constexpr std::int64_t kBackToBackNs = 50'000;
constexpr std::uint32_t kMaxLanes = 4096;

std::int64_t now_ns() noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

std::uint32_t read_lanes() noexcept {
  const std::uint32_t cpus = usable_cpus();
  return env_count("KORTEX_GIL_LANES", kMaxLanes, cpus);
}

// Whether a thread's calls are GIL-bound: they compute for less time than
// the thread holds the GIL between two of them. Judged on running averages,
// with a margin (a thread judged GIL-bound stays so until its calls take
// 1.25x its Python), so a stray slow call (an interrupt, a garbage
// collection) does not flip it back and forth.
class CallShape {
 public:
  bool observe(std::int64_t region_ns, std::int64_t held_ns) noexcept {
    // Held long (or unknown: a thread's first call): the thread did not call
    // back to back, and its return is no convoy.
    if (held_ns < 0 || held_ns >= kBackToBackNs) return gil_bound_;
    average(region_ns_, region_ns);
    average(held_ns_, held_ns);
    gil_bound_ = gil_bound_ ? region_ns_ * 4 < held_ns_ * 5 : region_ns_ < held_ns_;
    return gil_bound_;
  }

 private:
  // A sample counts at most twice the average: a call that an interrupt or
  // another process held up (10-50 us every few milliseconds on a busy
  // machine) would otherwise pull the average of 1 us calls over the line.
  static void average(std::int64_t& avg, std::int64_t sample) noexcept {
    avg = avg == 0 ? sample : avg + (std::min(sample, 2 * avg) - avg) / 16;
  }
  std::int64_t region_ns_ = 0;
  std::int64_t held_ns_ = 0;
  bool gil_bound_ = false;
};

thread_local CallShape this_threads_calls;

struct ThreadLane;

struct Lane {
  const ThreadLane* holder = nullptr;
  std::int64_t renewed_ns = 0;
  std::int64_t turn_started_ns = 0;
  bool gil_bound = false;  // the holder's calls, as of its last return
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
std::atomic<std::uint64_t> gil_bound_count{0};

struct ThreadLane {
  int lane = -1;
  int granted = -1;        // set by whoever hands this waiter a lane
  bool gil_bound = false;  // its calls, as of its last return
  std::condition_variable wake;
  ~ThreadLane();
};

thread_local ThreadLane this_thread;

bool expired_at(const Lane& l, std::int64_t now) { return now - l.renewed_ns > kLeaseNs; }

// GIL-bound threads share one lane among them: two such threads overlap
// almost nothing, while every hand-over of the GIL between CPUs costs more
// than they overlap. So a GIL-bound thread may hold `lane` only while no
// other lane is held by a GIL-bound thread; other threads may hold any lane.
// A lease that ran out still counts (its lane itself can be taken over): a
// thread just handed a lane may take longer than a lease to wake up, and
// meanwhile the GIL-bound ones must not take a second lane.
bool may_hold(const Gate& g, const ThreadLane& t, int lane) {
  if (!t.gil_bound) return true;
  for (std::size_t i = 0; i < g.lanes.size(); ++i) {
    const Lane& l = g.lanes[i];
    if (static_cast<int>(i) != lane && l.holder != nullptr && l.gil_bound) return false;
  }
  return true;
}

void give(Gate& g, int lane, ThreadLane& to, std::int64_t now) {
  g.lanes[lane] = Lane{&to, now, now, to.gil_bound};
  to.granted = lane;
  to.wake.notify_one();
}

// Hands `lane` to the first in line that may hold it; false if nobody may.
bool hand_to_first(Gate& g, int lane, std::int64_t now) {
  for (auto it = g.line.begin(); it != g.line.end(); ++it) {
    if (!may_hold(g, **it, lane)) continue;
    ThreadLane* to = *it;
    const bool was_first = it == g.line.begin();
    g.line.erase(it);
    give(g, lane, *to, now);
    if (was_first && !g.line.empty()) g.line.front()->wake.notify_one();  // the new first must watch the leases
    return true;
  }
  return false;
}

// A lane `me` may take now: a free one, else one whose lease ran out.
int free_or_expired(const Gate& g, const ThreadLane& me, std::int64_t now, bool* expired) {
  for (std::size_t i = 0; i < g.lanes.size(); ++i) {
    if (g.lanes[i].holder == nullptr && may_hold(g, me, static_cast<int>(i))) {
      *expired = false;
      return static_cast<int>(i);
    }
  }
  for (std::size_t i = 0; i < g.lanes.size(); ++i) {
    if (expired_at(g.lanes[i], now) && may_hold(g, me, static_cast<int>(i))) {
      *expired = true;
      return static_cast<int>(i);
    }
  }
  return -1;
}

// Run by the first in line when it wakes: free lanes and lanes whose lease
// ran out go to the first waiters that may hold them (itself, if it may).
void hand_out_idle_lanes(Gate& g, std::int64_t now) {
  for (std::size_t i = 0; i < g.lanes.size() && !g.line.empty(); ++i) {
    const Lane& l = g.lanes[i];
    const bool expired = l.holder != nullptr && expired_at(l, now);
    if ((l.holder == nullptr || expired) && hand_to_first(g, static_cast<int>(i), now) && expired) {
      expired_count.fetch_add(1, std::memory_order_relaxed);
    }
  }
}

// How long the first in line sleeps: until the first lease runs out, at
// most one lease (a free lane that nobody in line may hold stays free until
// a holder leaves, hands over or lets its lease run out).
std::int64_t wait_for_expiry_ns(const Gate& g, std::int64_t now) {
  std::int64_t wait = kLeaseNs;
  for (const Lane& l : g.lanes) {
    if (l.holder != nullptr) wait = std::min(wait, l.renewed_ns + kLeaseNs - now);
  }
  return std::max<std::int64_t>(wait, 1000);
}

// Frees the thread's lane, or hands it to the first in line that may hold
// it. Holds the mutex.
void give_up_lane(Gate& g, ThreadLane& me) {
  if (me.lane >= 0 && g.lanes[me.lane].holder == &me && !hand_to_first(g, me.lane, now_ns())) {
    g.lanes[me.lane] = Lane{};
  }
  me.lane = -1;
}

// give_up_lane for a thread that may hold no lane, taking the mutex only if it does.
void leave_gate(ThreadLane& me) {
  if (me.lane < 0 || return_gate_lanes() == 0) return;
  Gate& g = gate();
  std::lock_guard<std::mutex> lock(g.mutex);
  give_up_lane(g, me);
}

ThreadLane::~ThreadLane() { leave_gate(*this); }

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

void pass_return_gate(std::int64_t region_ns, std::int64_t held_ns) {
  if (return_gate_lanes() == 0) return;
  (void)fork_handlers;
  const bool short_call = region_ns < kShortCallNs;
  const bool gil_bound = short_call && this_threads_calls.observe(region_ns, held_ns);
  if (gil_bound) gil_bound_count.fetch_add(1, std::memory_order_relaxed);
  Gate& g = gate();
  ThreadLane& me = this_thread;
  std::unique_lock<std::mutex> lock(g.mutex);
  std::int64_t now = now_ns();
  me.gil_bound = gil_bound;
  if (me.lane >= 0 && g.lanes[me.lane].holder == &me) {
    Lane& mine = g.lanes[me.lane];
    mine.gil_bound = gil_bound;
    if (!may_hold(g, me, me.lane)) {
      give_up_lane(g, me);  // another GIL-bound thread holds a lane: this one is not for GIL-bound calls
    } else if (now - mine.turn_started_ns < kTurnNs) {
      mine.renewed_ns = now;
      return;
    } else if (hand_to_first(g, me.lane, now)) {
      rotated_count.fetch_add(1, std::memory_order_relaxed);
    } else {
      mine.renewed_ns = now;  // nobody in line may take it over
      return;
    }
  }
  me.lane = -1;
  if (!short_call) return;  // a long call's return is no convoy
  {
    // A free lane beside a line is one its waiters may not hold (GIL-bound
    // waiters, while another GIL-bound thread holds a lane): a call that
    // may, takes it. An expired one goes to the line first.
    bool expired = false;
    const int lane = free_or_expired(g, me, now, &expired);
    if (lane >= 0 && (!expired || g.line.empty())) {
      if (expired) expired_count.fetch_add(1, std::memory_order_relaxed);
      g.lanes[lane] = Lane{&me, now, now, gil_bound};
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
    me.wake.wait_for(lock, std::chrono::nanoseconds(wait_for_expiry_ns(g, now_ns())));
    if (me.granted >= 0) break;
    hand_out_idle_lanes(g, now_ns());
  }
  me.lane = me.granted;
  me.granted = -1;
}

void leave_return_gate() { leave_gate(this_thread); }

ReturnGateCounts return_gate_counts() noexcept {
  return {queued_count.load(std::memory_order_relaxed), rotated_count.load(std::memory_order_relaxed),
          expired_count.load(std::memory_order_relaxed), gil_bound_count.load(std::memory_order_relaxed)};
}

void reset_return_gate_counts() noexcept {
  queued_count.store(0, std::memory_order_relaxed);
  rotated_count.store(0, std::memory_order_relaxed);
  expired_count.store(0, std::memory_order_relaxed);
  gil_bound_count.store(0, std::memory_order_relaxed);
}

}  // namespace kortexdl::python
