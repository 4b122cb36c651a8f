#pragma once
// The CPUs that other processes (and the hypervisor) leave to this one.
//
// A team of two waits for both of its threads at every parallel region. When
// another process, or the hypervisor ("steal"), keeps one of two CPUs busy,
// the thread on that CPU runs in slices and every region waits for it:
// measured in the GIL-release benchmark, a batch-1 forward of
// 1000-512-256-128-10 on the default 2-thread budget took 39-49 us with the
// machine to itself and 538-685 us while others used 0.6 of a CPU; on one
// core per call it took 85-101 us throughout (docs/BENCHMARKS.md). So a
// team is shortened by the CPUs others kept busy over the last ~200 ms (50
// ms while it is shortened, so it grows back soon after they stop), sampled
// from /proc/stat (the CPUs this process may use, steal included) less this
// process's own CPU time. Only the default budget adapts
// (thread_budget.cpp); KORTEX_ADAPT_TO_LOAD=0 turns it off.
#include <cstddef>
#include <cstdint>

namespace kortexdl::detail {

// Cumulative seconds: busy time of the CPUs this process may use (steal
// included), this process's CPU time, and the wall clock.
struct LoadSample {
  double machine_busy = 0.0;
  double own = 0.0;
  double wall = 0.0;
};

// CPUs others kept busy between two samples (0 when the window is empty, or
// when our own CPU time went back: a forked child's).
double busy_elsewhere(const LoadSample& earlier, const LoadSample& later);

// How many of `others` CPUs' worth of foreign load takes a thread from a
// team: a CPU counts once it is busy 60% of the time.
std::size_t cpus_taken(double others);

// `threads` less the CPUs others keep busy (at least 1). Samples the machine
// at most every 200 ms (50 ms while others hold CPUs), from whichever call
// comes by; cheap otherwise.
std::size_t team_left_by_others(std::size_t threads);

// Samples taken so far (for tests).
std::uint64_t load_samples();

// Whether teams adapt to the load (KORTEX_ADAPT_TO_LOAD, default on); tests
// of exact team sizes turn it off, the tests of this file on.
bool load_adaptation_enabled();
void set_load_adaptation(bool enabled);

}  // namespace kortexdl::detail
