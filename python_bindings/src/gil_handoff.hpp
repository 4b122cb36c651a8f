#pragma once
// Releasing the GIL for a compute call and taking it back without a wake-up.
//
// CPython hands the GIL over through a condition variable: a thread that
// finds it taken goes to sleep, and the holder's release wakes it. On a
// virtual machine that wake-up costs 5-50 us (the sleeping vCPU has halted),
// longer than a small forward call. Worse, the releasing thread usually
// finishes its own 2-10 us call and takes the GIL back before the sleeper
// is awake, so two threads calling small methods run one at a time.
//
// ReleasedGil avoids the sleep when it can see that it would be short: when
// the GIL is held by a thread that took it back from a KortexDL call (and is
// therefore running the few microseconds of Python between two calls), the
// returning thread polls until that holder releases it, then takes it while
// it is free. Only one thread polls at a time, for at most a bounded time
// (KORTEX_GIL_SPIN_US, default 50 us, 0 turns it off), and never on a
// single CPU. Everything else goes through PyEval_RestoreThread as usual:
// the hint can be wrong (the GIL may be taken by other Python code), which
// only costs the wait CPython would have made anyway.
#include <Python.h>

#include <chrono>
#include <cstdint>

namespace kortexdl::python {

// What a returning call does at the return gate (gil_return_gate.hpp).
enum class ReturnGate { pass, leave };

class ReleasedGil {
 public:
  using Clock = std::chrono::steady_clock;

  explicit ReleasedGil(ReturnGate gate = ReturnGate::pass) noexcept;  // releases the GIL; must hold it
  ~ReleasedGil();                                                     // takes it back
  ReleasedGil(const ReleasedGil&) = delete;
  ReleasedGil& operator=(const ReleasedGil&) = delete;

  // When the GIL was released, and (told by the caller, who times the region
  // anyway) when the work without it ended; unset, the destructor reads the
  // clock itself.
  Clock::time_point released_at() const noexcept { return released_at_; }
  void work_ended_at(Clock::time_point end) noexcept { work_ended_at_ = end; }

 private:
  PyThreadState* state_;
  ReturnGate gate_;
  Clock::time_point released_at_;
  Clock::time_point work_ended_at_{};
  std::int64_t held_ns_ = -1;  // the thread's Python since its previous call (-1: no previous call)
};

// The polling bound in microseconds (0: never poll), read once from
// KORTEX_GIL_SPIN_US; exposed for tests and kortexdl.gil_stats().
std::uint32_t gil_spin_budget_us() noexcept;

// How many re-acquisitions polled, and how many of those found the GIL free
// before the bound (the rest fell back to waiting).
struct GilHandoffCounts {
  std::uint64_t polled = 0;
  std::uint64_t handed_off = 0;
};
GilHandoffCounts gil_handoff_counts() noexcept;
void reset_gil_handoff_counts() noexcept;

}  // namespace kortexdl::python
