#pragma once
// Concurrent small training steps on one network, run back to back by one
// of their callers (flat combining).
//
// A locked training step computes its gradients under the shared lock and
// takes the exclusive lock for the update. For small steps (batch 1) the
// update is half of the step, so two threads gain little from overlapping
// the other half, and they lose much more: each step waits for a lock hand-
// off (a futex wake, 5-50 us on a virtual machine), and the parameters,
// written on one core, must travel to the other core's cache before its
// next step can read them (a 784-256-128-10 network is 0.9 MB). Measured:
// two threads training one network at batch 1 made 0.5-0.7x the steps of
// one thread.
//
// Instead, a thread that arrives while another runs steps leaves its step in
// a FIFO queue and waits; the running thread (the combiner) takes the
// exclusive lock for each queued step in turn and runs it, so the parameters
// stay in one core's cache and nobody sleeps on the lock. A combiner that
// has finished its own step runs at most kStepsAfterOwn more before it hands
// the role to the first in line, so its own call returns in bounded time;
// when the line is empty it waits up to 100 us for another caller's next
// step, which is usually on its way (its return to Python and back), before
// it leaves.
// Steps that write little (the parameters and optimizer state of a network
// like 100-50-10) are the exception: there, moving them to the next
// thread's core costs less than the combiner's own return to Python, which
// combining holds up (see kMaxHandOnBytes).
// The result, or the exception, of a step is delivered to the thread that
// submitted it. Each step is whole and sees every earlier step's update:
// the steps are applied one after another, in arrival order.
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <mutex>
#include <optional>

#include "parallel/access_guard.hpp"
#include "parallel/hand_over.hpp"
#include "parallel/thread_budget.hpp"

namespace kortexdl::detail {

class StepCombiner {
 public:
  // Steps of at most this many rows are combined. Measured on two cores
  // (784-256-128-10, two threads against one): at 1-8 rows combining made
  // 0.83-1.05x the steps of one thread where the shared-lock path made
  // 0.53-0.84x; at 16 rows both about 0.9x; at 32 the shared-lock path,
  // whose gradient phases overlap, is ahead.
  static constexpr std::size_t kMaxRows = 8;

  // Whether a locked step of `rows` rows should be combined: small steps
  // always; larger ones while more calls are in flight than there are CPUs,
  // where the shared-lock path's waiters sleep at once and convoy (at 32
  // rows on two cores, four threads made 0.29x (100-50-10) and 0.90x
  // (784-256-128-10) the steps of one thread that way, 0.95x and 1.12x
  // combined; two threads did better overlapping their gradient phases).
  // Larger steps that pass the step gate (step_gate.hpp) are not asked.
  static bool worth_combining(std::size_t rows);
  static constexpr std::size_t kStepsAfterOwn = 64;

  // Steps of at least this much work run on as many threads as the budget
  // gives the calls that are not waiting here (thread_budget.hpp): only the
  // thread that owns the intra-op team may open a team (thread_budget.cpp),
  // so a combiner that does not own it hands the role to the owner as soon
  // as the owner's step is queued; the owner runs at most kStepsAfterOwn for
  // others, as anyone, and the waiters sleep meanwhile rather than take a
  // core from the team. With the default budget, threads training a
  // 1000-512-256-128-10 network at batch 1 (about 100 MFLOP of work by this
  // estimate) made 0.56x / 0.55x / 0.53x the steps of one thread at 2 / 4 /
  // 16 threads before (combined steps ran on one core while one thread
  // alone used a team of two), 0.92x / 0.80x / 0.72x with this
  // (bench/gil_handoff_ab.py --library, docs/BENCHMARKS.md). Shorter steps
  // run as their combiner's own call was set up: at 784-256-128-10 (35
  // MFLOP) waking the waiter after each step cost as much as the team saved
  // (0.66-0.73x against 0.75-0.93x at 2 threads).
  static constexpr double kMinTeamStepFlops = 50.0e6;

  // A combiner whose own step is done hands the role to the first in line,
  // if that thread polls on a CPU of its own (calls do not outnumber the
  // CPUs) and a step writes at most this many bytes: that thread runs its
  // own step on its own core while the combiner returns to Python, where
  // combining would hold the combiner's thread in C++ for the others'
  // steps and leave only one thread's Python beside the steps. Two Python
  // threads training at batch 1 (one core per call, medians of 3-11 runs,
  // docs/BENCHMARKS.md) made, handing on against combining, 0.95-1.15x
  // against 0.65-0.90x the steps of one thread for 100-50-10 (22 KB of
  // parameters), 0.90-1.01x against 0.80-0.93x for 100-100-10 (44 KB),
  // about the same at 89 KB, and 0.66-0.73x against 0.85-0.92x from 129 KB
  // up (784-256-128-10, 0.9 MB: 0.59x against 0.91x): past that the
  // parameters' trip between the cores costs more than the overlap gains.
  static constexpr std::size_t kMaxHandOnBytes = 64 * 1024;
  // ... and if the combiner's thread spends at least this long away from
  // the combiner between two of its steps, on average: that time is what
  // passing the role on overlaps. Threads that submit their next step at
  // once (a C++ training loop) gain nothing and pay the parameters' trip:
  // two such threads made 115-143k steps/s of 100-50-10 at batch 1 passing
  // the role on, 125-173k combined and 159-194k with this rule (medians of
  // 3, `shared/train/small/1/threads:2` of kortexdl_bench, 4 alternating
  // rounds), while Python threads spend 2-3 us between steps.
  static constexpr std::int64_t kMinTimeBetweenStepsNs = 1000;

  // Runs step() (`work` flops, writing `written_bytes` of shared state)
  // with `guard` held exclusively (locked), on this thread or on another
  // caller's, and returns its result or rethrows its exception here. The
  // callers waiting here are parked (thread_budget.hpp), so a combiner may
  // use the cores they leave idle.
  template <class Step>
  float run(AccessGuard& guard, const char* operation, double work, std::size_t written_bytes, Step& step) {
    Request request;
    request.run = [](void* context) { return (*static_cast<Step*>(context))(); };
    request.context = &step;
    request.operation = operation;
    request.work = work;
    request.written_bytes = written_bytes;
    submit(guard, request);
    if (request.error) std::rethrow_exception(request.error);
    return request.result;
  }

  // For a forked child (fork_safety.hpp): whether no step is queued or
  // being combined. A mutex a parent thread held at the fork stays locked
  // here, and counts as busy.
  bool idle_in_forked_child() {
    std::unique_lock<std::mutex> lock(mutex_, std::try_to_lock);
    return lock.owns_lock() && !combining_ && head_ == nullptr;
  }

  // Steps run for other threads since creation (diagnostics and tests).
  std::size_t steps_run_for_others() const { return run_for_others_.load(std::memory_order_relaxed); }
  // Times a combiner passed the role to a thread in line.
  std::size_t roles_passed_on() const { return passed_on_.load(std::memory_order_relaxed); }
  // Steps in line, not yet taken by a combiner (tests).
  std::size_t steps_queued() const { return queued_.load(std::memory_order_acquire); }

 private:
  enum : int { kWaiting = 0, kDone = 1, kCombine = 2 };

  struct Request {
    float (*run)(void*) = nullptr;
    void* context = nullptr;
    const char* operation = nullptr;
    double work = 0.0;
    std::size_t written_bytes = 0;
    // Its thread's average time away from the combiner between steps.
    std::int64_t time_between_steps_ns = 0;
    // Whether its thread polls while it waits (a CPU to spare), set under
    // the queue's mutex before the request is linked in.
    bool polls = false;
    // While queued, the call leaves its share of the budget to the combiner
    // (set and reset by the submitting thread only, before the combiner can
    // see the request and after it is done with it).
    std::optional<ParkedCall> parked;
    float result = 0.0f;
    std::exception_ptr error;
    HandOver state{kWaiting};  // peeked at while polling
    Request* next = nullptr;
  };
  static void park(Request& own);
  // Whether a combiner whose own step `own` is done passes the role to `next`.
  static bool hands_on_to(const Request& next, const Request& own);

  void submit(AccessGuard& guard, Request& own);
  // Runs queued steps; false if it handed the role on before `own` ran.
  bool combine(AccessGuard& guard, Request& own);
  void wait_for_turn(Request& own);

  std::mutex mutex_;  // guards the queue, owner_queued_ and combining_
  Request* head_ = nullptr;
  Request* tail_ = nullptr;
  Request* owner_queued_ = nullptr;  // the team owner's request, if queued
  bool combining_ = false;
  // The combiner's step runs on several threads: waiters sleep rather than
  // poll, so as not to take a core from the team.
  std::atomic<bool> team_running_{false};
  std::atomic<std::size_t> queued_{0};  // polled by a lingering combiner
  std::atomic<std::size_t> run_for_others_{0};
  std::atomic<std::size_t> passed_on_{0};
};

}  // namespace kortexdl::detail
