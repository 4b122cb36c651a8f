#pragma once
// Admission of large locked training steps: at most one per CPU at a time,
// the others asleep in arrival order.
//
// A locked step of more than a few rows computes its gradients under the
// network's shared lock and takes the exclusive lock for the update
// (network.cpp), so two such steps on two cores overlap their gradient
// phases. With more steps in flight than CPUs they no longer gain from that
// and lose: the CPUs are time-sliced between steps that all reach the
// exclusive lock late, and every update waits for every reader. Combining
// them (step_combiner.hpp) avoids the convoy but runs the steps on one core.
// Admitting one step per CPU keeps the overlap; a step that finds every
// slot taken sleeps until one is free. Measured with one core per call
// (bench/gil_handoff_ab.py --library, 7 alternating runs): threads training
// 784-256-128-10 at 256 rows made 1.26x / 1.26x / 1.22x the steps of one
// thread at 4 / 8 / 16 threads, 0.99x / 1.00x / 1.00x combined;
// 1000-512-256-128-10 at 32 rows 1.00x / 0.95x / 0.94x against 0.94x /
// 0.85x / 0.78x.
//
// Only for steps of at least kMinWork: for shorter ones (100-50-10 at 16-32
// rows, 1.5 MFLOP) the gate did no better than combining, which keeps the
// parameters in one core's cache.
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <mutex>
#include <optional>

namespace kortexdl::detail {

class StepGate {
 public:
  // Work (flop-equivalents, Architecture::training_work) from which a step
  // is admitted here rather than combined when calls outnumber the CPUs.
  static constexpr double kMinWork = 4.0e6;

  // Whether a locked step of `rows` rows and `work` should pass the gate:
  // more rows than the combiner always takes, at least kMinWork, and not a
  // step the combiner would run on the intra-op team (with a budget above
  // one thread, steps of StepCombiner::kMinTeamStepFlops and more). There,
  // one step at a time on both cores did better than two on one core each:
  // 16 threads training 784-256-128-10 or 1000-512-256-128-10 at 32-256 rows
  // with the default budget made 0.97-0.99x the steps of one thread
  // combined, 0.84-0.89x through the gate.
  static bool worth_gating(std::size_t rows, double work);

  // A freed slot goes to whoever arrives first, which is usually the
  // thread that freed it: back from Python within microseconds and already
  // running, where a sleeper, woken, may wait for a CPU longer than a step
  // lasts. The first sleeper's turn comes after kTurn: it then gets the next
  // freed slot whoever else arrives, so a thread waits at most about
  // (sleepers ahead + 1) x kTurn, CPython's own switch interval.
  // Handing every freed slot to the first sleeper did no better than
  // combining at 16 threads; so did waking the first sleeper every 200 us
  // to take a slot left free that long.
  static constexpr std::chrono::microseconds kTurn{5000};
  // A slot nobody has taken for this long was left by a thread that stopped
  // training; the next step to end hands its own slot to the first sleeper,
  // so such a slot stays unused for about one step, not a whole turn (a
  // thread returns from Python for its next step within tens of
  // microseconds). So does the last step inside when it ends (with two
  // slots or more): otherwise threads that stop together, as in a burst of
  // a few steps per thread, left every slot free until the turn ended
  // (16 threads making 19 steps each of 100-50-10 at 256 rows: 0.46x the
  // throughput of one thread).
  static constexpr std::chrono::microseconds kAbandoned{1000};

  // `slots`: how many steps may compute at once (a network's gate has one
  // per usable CPU); 0 counts as 1.
  explicit StepGate(std::size_t slots);
  StepGate(const StepGate&) = delete;
  StepGate& operator=(const StepGate&) = delete;

  // Holds one slot for its lifetime; the constructor sleeps until it gets
  // one.
  class Admission {
   public:
    explicit Admission(StepGate& gate);
    ~Admission();
    Admission(const Admission&) = delete;
    Admission& operator=(const Admission&) = delete;

   private:
    StepGate& gate_;
  };

  // For a forked child (fork_safety.hpp): whether no step holds or waits
  // for a slot. A mutex a parent thread held at the fork stays locked here,
  // and counts as busy.
  bool idle_in_forked_child() {
    std::unique_lock<std::mutex> lock(mutex_, std::try_to_lock);
    return lock.owns_lock() && admitted_ == 0 && head_ == nullptr;
  }

  // Diagnostics and tests.
  std::size_t slots() const { return slots_; }
  std::size_t admitted() const;
  std::size_t waiting() const;

 private:
  using Clock = std::chrono::steady_clock;
  struct Waiter {
    Clock::time_point deadline;  // end of its turn, set when it becomes the head
    bool admitted = false;       // set under mutex_ when a slot is handed over
    std::condition_variable turn;
    Waiter* next = nullptr;
  };

  bool head_overdue(Clock::time_point now) const;
  void pop_head(Clock::time_point now);
  void take_slot();

  const std::size_t slots_;
  mutable std::mutex mutex_;
  std::size_t admitted_ = 0;
  // Since when at least one slot has been free (unset while none is, or
  // since the last admission).
  std::optional<Clock::time_point> free_since_;
  Waiter* head_ = nullptr;  // sleepers in arrival order; only the head is woken
  Waiter* tail_ = nullptr;
};

}  // namespace kortexdl::detail
