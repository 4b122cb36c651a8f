#include "gil_handoff.hpp"

#include <immintrin.h>

#include <atomic>
#include <chrono>

#include "env_settings.hpp"
#include "gil_return_gate.hpp"
#include "kortexdl/threading.hpp"

namespace kortexdl::python {

namespace {

constexpr std::uint32_t kDefaultSpinUs = 50;  // about one wake-up of a halted vCPU
constexpr std::uint32_t kMaxSpinUs = 10000;

std::uint32_t read_budget() noexcept {
  // Polling on the only CPU would keep the holder from running.
  if (usable_cpus() < 2) return 0;
  return env_count("KORTEX_GIL_SPIN_US", kMaxSpinUs, kDefaultSpinUs);
}

// GIL ownership as far as ReleasedGil sees it. Both counters only grow.
// `taken` counts re-acquisitions through ReleasedGil and is written with the
// GIL held, so its writes are ordered by the GIL. A thread about to release
// reads it (still holding the GIL) and, once released, raises `released` to
// that value. taken > released therefore means: the last thread that came
// back from a KortexDL call through here still holds the GIL. fetch_max,
// not store, because two releasers may publish out of order.
std::atomic<std::uint64_t> taken{0};
std::atomic<std::uint64_t> released{0};
std::atomic<bool> someone_polling{false};
// After a poll that ran out (the holder went on to sleep or do I/O, which
// releases the GIL where this code cannot see it), nobody polls for a while,
// so such programs lose at most one budget per kCooldownBudgets budgets.
constexpr std::int64_t kCooldownBudgets = 100;
std::atomic<std::int64_t> no_polling_until_ns{0};

// When this thread last took the GIL back from a call: the next release
// tells the return gate how long the thread's Python between calls took.
thread_local ReleasedGil::Clock::time_point gil_taken_at{};

std::atomic<std::uint64_t> polled_count{0};
std::atomic<std::uint64_t> handed_off_count{0};

void raise_to(std::atomic<std::uint64_t>& counter, std::uint64_t value) noexcept {
  std::uint64_t seen = counter.load(std::memory_order_relaxed);
  while (seen < value && !counter.compare_exchange_weak(seen, value, std::memory_order_release)) {
  }
}

std::int64_t now_ns() noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

bool held_by_returning_caller() noexcept {
  return taken.load(std::memory_order_acquire) > released.load(std::memory_order_acquire);
}

// Polls until the returning caller that holds the GIL releases it, or the
// budget runs out. True when the GIL looked free at the end.
bool poll_until_released(std::uint32_t budget_us) noexcept {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::microseconds(budget_us);
  for (;;) {
    for (int i = 0; i < 32; ++i) {
      _mm_pause();
      if (!held_by_returning_caller()) return true;
    }
    if (std::chrono::steady_clock::now() >= deadline) return false;
  }
}

// Polling pays only when a CPU would otherwise idle: one runs the GIL's
// holder, so the others must not all be busy with compute calls. With more
// callers than CPUs the poller would take a CPU from a computing thread.
bool spare_cpu() noexcept {
  static const std::size_t cpus = usable_cpus();
  return calls_in_flight() + 1 < cpus;
}

}  // namespace

std::uint32_t gil_spin_budget_us() noexcept {
  static const std::uint32_t budget = read_budget();
  return budget;
}

ReleasedGil::ReleasedGil(ReturnGate gate) noexcept : gate_(gate) {
  const std::uint64_t mine = taken.load(std::memory_order_relaxed);
  state_ = PyEval_SaveThread();
  raise_to(released, mine);
  released_at_ = Clock::now();
  if (gil_taken_at != Clock::time_point{}) {
    held_ns_ = std::chrono::duration_cast<std::chrono::nanoseconds>(released_at_ - gil_taken_at).count();
  }
}

ReleasedGil::~ReleasedGil() {
  const Clock::time_point ended = work_ended_at_ != Clock::time_point{} ? work_ended_at_ : Clock::now();
  // A one-row forward computed with other threads' rows returns with them,
  // after a wait in C++: like a training step, it takes no lane.
  if (gate_ == ReturnGate::pass && !last_call_joined_a_batch()) {
    pass_return_gate(std::chrono::duration_cast<std::chrono::nanoseconds>(ended - released_at_).count(), held_ns_);
  } else {
    leave_return_gate();
  }
  const std::uint32_t budget = gil_spin_budget_us();
  if (budget != 0 && held_by_returning_caller() && spare_cpu() &&
      now_ns() >= no_polling_until_ns.load(std::memory_order_relaxed) &&
      !someone_polling.exchange(true, std::memory_order_acquire)) {
    polled_count.fetch_add(1, std::memory_order_relaxed);
    if (poll_until_released(budget)) {
      handed_off_count.fetch_add(1, std::memory_order_relaxed);
    } else {
      no_polling_until_ns.store(now_ns() + kCooldownBudgets * 1000 * budget, std::memory_order_relaxed);
    }
    someone_polling.store(false, std::memory_order_release);
  }
  PyEval_RestoreThread(state_);
  taken.fetch_add(1, std::memory_order_release);
  gil_taken_at = Clock::now();
}

GilHandoffCounts gil_handoff_counts() noexcept {
  return {polled_count.load(std::memory_order_relaxed), handed_off_count.load(std::memory_order_relaxed)};
}

void reset_gil_handoff_counts() noexcept {
  polled_count.store(0, std::memory_order_relaxed);
  handed_off_count.store(0, std::memory_order_relaxed);
}

}  // namespace kortexdl::python
