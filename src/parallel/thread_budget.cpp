#include "thread_budget.hpp"

#include <omp.h>
#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "kortexdl/error.hpp"
#include "kortexdl/threading.hpp"
#include "parallel/cache_line.hpp"
#include "parallel/machine_load.hpp"
#include "parallel/sharded_count.hpp"
#include "parallel/steady_clock.hpp"

namespace kortexdl {
namespace {

std::size_t env_threads(const char* name) {
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0') return 0;
  char* end = nullptr;
  const unsigned long parsed = std::strtoul(value, &end, 10);
  // OMP_NUM_THREADS may be a list ("4,2"): its first entry is the top level.
  if (end == value || parsed == 0 || parsed > 4096) return 0;
  return static_cast<std::size_t>(parsed);
}

// The thread count the environment chooses: KORTEX_NUM_THREADS, else
// OMP_NUM_THREADS; 0 when neither does.
std::size_t env_chosen_threads() {
  if (auto n = env_threads("KORTEX_NUM_THREADS")) return n;
  return env_threads("OMP_NUM_THREADS");
}

std::size_t default_threads() {
  if (auto n = env_chosen_threads()) return n;
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    const int count = CPU_COUNT(&set);
    if (count > 0) return static_cast<std::size_t>(count);
  }
  return static_cast<std::size_t>(std::max(1, omp_get_num_procs()));
}

std::atomic<std::size_t>& budget() {
  static std::atomic<std::size_t> value{default_threads()};
  return value;
}

// Whether the user chose the thread count (set_num_threads(n > 0),
// KORTEX_NUM_THREADS, OMP_NUM_THREADS). A chosen count is kept whatever the
// machine's load, so results stay the same for the same count; only the
// default budget adapts (machine_load.hpp).
std::atomic<bool>& budget_chosen() {
  static std::atomic<bool> value{env_chosen_threads() != 0};
  return value;
}

// Changed by every call; read by calls that could use more than one thread
// (share_for) and by the GIL hand-off and step combiner.
detail::ShardedCount in_flight;
// Of in_flight; changed only by training steps that wait for another's work.
detail::OwnCacheLine<std::atomic<std::size_t>> parked;
// This thread's calls in flight (nested calls from an update observer count
// too): what a forked child, where only this thread lives on, has in flight.
thread_local std::size_t in_flight_here = 0;
// Whether this thread's latest computing call went through the line of
// one-row forward calls (forward_batcher.hpp).
thread_local bool call_joined_a_batch = false;

// libgomp gives every thread that opens a parallel region a pool of worker
// threads of its own, kept until that thread exits. Once the pools together
// hold more threads than there are CPUs, every pool stops spinning between
// regions (a "throttled" spin of 100-1000 iterations, whatever
// GOMP_SPINCOUNT says), and each region and barrier then wakes its workers
// through the kernel. Measured here: a 784-256-128-10 training step at batch
// 1 took 115 us from the first thread that used OpenMP and 700-1100 us from
// any other thread (batch 32: 300 us and 1400 us); one thread alone: 120 us.
// A server answers from many threads, so that was the common case.
//
// So one thread at a time owns the intra-op team: the first thread that
// makes a call worth several threads, until it exits. Calls from other
// threads run on their own thread with OpenMP set to one thread (oneDNN's
// GEMM then runs inline too) and never create a pool. Several callers at
// once would share the cores anyway (share_for), so they lose nothing; one
// caller alone on a non-owner thread runs single-threaded.
std::atomic<const void*> team_owner{nullptr};

struct TeamOwnership {
  bool owner = false;
  // This thread has a libgomp pool (it opened a team at some point).
  bool opened_team = false;
  // Forked child of a process in which this thread had a pool: libgomp would
  // wait forever for the parent's pool threads, which the child does not have.
  bool pool_lost_in_fork = false;
  void release() {
    if (!owner) return;
    owner = false;
    team_owner.store(nullptr, std::memory_order_release);
  }
  ~TeamOwnership() { release(); }
};
thread_local TeamOwnership this_thread_team;

// When a thread other than the team owner last started a computing call
// (steady-clock nanoseconds), refreshed at most every kStampEveryNs so that
// callers seldom write the shared line. Two Python threads call in turn:
// when the owner starts a call the other is often in Python between two
// calls, so "calls in flight" says the owner is alone, and a team of two
// opened then shares the two CPUs with the other's next call (three
// threads, the team's barrier waiting for whichever lost its CPU). With
// the default budget, two threads calling 1000-512-256-128-10 at batch 1
// (forward, evaluate) made 0.85-0.90x the calls of one thread (which uses
// the team), 1.01-1.04x with the owner keeping to one thread while others
// compute (docs/BENCHMARKS.md).
detail::OwnCacheLine<std::atomic<std::int64_t>> other_call_started_ns{};
constexpr std::int64_t kStampEveryNs = 100'000;
// The last stamp this thread wrote: a thread that takes the team after
// calls too small for one must not keep off its own calls.
thread_local std::int64_t own_stamp_ns = 0;

bool other_thread_computed_lately() {
  const std::int64_t stamp = other_call_started_ns.value.load(std::memory_order_relaxed);
  const std::int64_t window = std::chrono::duration_cast<std::chrono::nanoseconds>(detail::kTeamQuietWindow).count();
  return stamp != 0 && stamp != own_stamp_ns && detail::steady_now_ns() - stamp < window;
}

bool may_use_team() {
  if (this_thread_team.pool_lost_in_fork) return false;
  if (!this_thread_team.owner) {
    const void* expected = nullptr;
    if (team_owner.load(std::memory_order_relaxed) == nullptr &&
        team_owner.compare_exchange_strong(expected, &this_thread_team, std::memory_order_acq_rel)) {
      this_thread_team.owner = true;
    }
  }
  if (this_thread_team.owner) this_thread_team.opened_team = true;
  return this_thread_team.owner;
}

// In a forked child only the forking thread exists. GNU OpenMP is not
// fork-safe: a thread that had a pool in the parent hangs at its next
// parallel region (measured: a Python child of a parent that trained once
// hung in train_batch). So that thread computes single-threaded from now
// on; a forking thread without a pool may still become the owner.
void after_fork_in_child() {
  team_owner.store(nullptr, std::memory_order_relaxed);
  this_thread_team.owner = false;
  if (this_thread_team.opened_team) this_thread_team.pool_lost_in_fork = true;
  // The parent's other threads' calls would stay counted for good, and the
  // child's calls would get smaller teams than its cores allow.
  in_flight.reset();
  for (std::size_t i = 0; i < in_flight_here; ++i) in_flight.increment();
  parked.value.store(0, std::memory_order_relaxed);  // a parked call waits, it does not fork
}

const bool fork_handler_registered = pthread_atfork(nullptr, nullptr, after_fork_in_child) == 0;

}  // namespace

void set_num_threads(std::size_t n) {
  if (n > 4096) {
    throw InvalidArgumentError("num_threads: must be between 0 (default) and 4096, got " + std::to_string(n));
  }
  budget().store(n == 0 ? default_threads() : n);
  budget_chosen().store(n != 0 || env_chosen_threads() != 0);
}

std::size_t get_num_threads() { return budget().load(); }

std::size_t calls_in_flight() { return in_flight.sum(); }

bool last_call_joined_a_batch() { return call_joined_a_batch; }

namespace detail {

std::size_t share_for(double flops) {
  const auto useful = static_cast<std::size_t>(std::max(1.0, flops / kMinFlopsPerExtraThread));
  if (useful == 1) return 1;  // without summing the calls in flight: most calls are small
  const std::size_t total = budget().load(std::memory_order_relaxed);
  const std::size_t calls = in_flight.sum();
  const std::size_t waiting = parked.value.load(std::memory_order_relaxed);
  const std::size_t callers = calls > waiting ? calls - waiting : 1;
  const std::size_t share = std::max<std::size_t>(1, total / callers);
  return std::min(share, useful);
}

std::size_t team_size_for(double flops) {
  const std::size_t share = share_for(flops);
  const std::size_t threads = budget_chosen().load(std::memory_order_relaxed) ? share : team_left_by_others(share);
  return threads > 1 && may_use_team() && !other_thread_computed_lately() ? threads : 1;
}

void note_computing_call() {
  // Without an owner (one thread per call, or only small calls so far)
  // there is no team to keep quiet, and no clock to read.
  if (this_thread_team.owner || team_owner.load(std::memory_order_relaxed) == nullptr) return;
  const std::int64_t now = detail::steady_now_ns();
  if (now - other_call_started_ns.value.load(std::memory_order_relaxed) >= kStampEveryNs) {
    other_call_started_ns.value.store(now, std::memory_order_relaxed);
    own_stamp_ns = now;
  }
}

bool owns_intra_op_team() { return this_thread_team.owner; }

void release_intra_op_team() { this_thread_team.release(); }

bool fork_handler_installed() { return fork_handler_registered; }

TeamScope::TeamScope(std::size_t threads) : threads_(threads), previous_(omp_get_max_threads()) {
  // Before the first parallel region: pool threads libgomp starts while this
  // scope lasts inherit the mask and never run a handler.
  if (threads_ > 1) signals_held_.emplace();
  if (previous_ != static_cast<int>(threads_)) omp_set_num_threads(static_cast<int>(threads_));
}

TeamScope::~TeamScope() {
  if (previous_ != static_cast<int>(threads_)) omp_set_num_threads(previous_);
}

ComputeScope::ComputeScope(double flops, CallComputes computes) {
  call_joined_a_batch = false;
  ensure_alternate_signal_stack();
  in_flight.increment();
  ++in_flight_here;
  // After the team decision, which may make this thread the owner.
  team_.emplace(team_size_for(flops));
  if (computes == CallComputes::here) note_computing_call();
}

ComputeScope::~ComputeScope() {
  team_.reset();
  --in_flight_here;
  in_flight.decrement();
}

void note_joined_a_batch() { call_joined_a_batch = true; }

ParkedCall::ParkedCall() { parked.value.fetch_add(1, std::memory_order_relaxed); }

ParkedCall::~ParkedCall() { parked.value.fetch_sub(1, std::memory_order_relaxed); }

}  // namespace detail
}  // namespace kortexdl
