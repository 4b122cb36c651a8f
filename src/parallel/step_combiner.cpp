#include "parallel/step_combiner.hpp"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <optional>

#include <sched.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include "kortexdl/threading.hpp"
#include "parallel/affinity.hpp"
#include "parallel/steady_clock.hpp"
#include "parallel/thread_budget.hpp"

namespace kortexdl::detail {

namespace {

// A waiter polls (or, with more calls than CPUs, yields) for this long
// before it sleeps. It waits for the combiner's step and its own, 10-600 us
// for the steps combined here; waking it from sleep would cost the combiner
// a futex call per step, and the waiter 5-50 us on a virtual machine.
constexpr auto kPollFor = std::chrono::microseconds(1000);
constexpr auto kLinger = std::chrono::microseconds(100);

// One round of waiting: a pause while a CPU is free for this thread, else
// a yield, so that a waiter never keeps the combiner from a CPU.
void wait_a_little(bool spare_cpu) {
  if (!spare_cpu) {
    sched_yield();
    return;
  }
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#endif
}

bool cpu_to_spare() { return calls_in_flight() <= allowed_cpu_count(); }

// How long this thread spends away from the combiner between two of its
// steps (its caller's own work: Python, the next batch), as a running
// average. Samples count at most 4x the threshold the average is compared
// with: a thread preempted between two steps of a tight loop must not
// look like one with work of its own for the next twenty steps.
struct TimeBetweenSteps {
  static constexpr std::int64_t kCapNs = 4 * StepCombiner::kMinTimeBetweenStepsNs;
  std::int64_t left_at_ns = 0;
  std::int64_t average_ns = 0;
  bool sampled = false;

  void arrived(std::int64_t now) {
    if (left_at_ns == 0) return;
    const std::int64_t sample = std::min(now - left_at_ns, kCapNs);
    average_ns = sampled ? average_ns + (sample - average_ns) / 8 : sample;
    sampled = true;
  }
};
thread_local TimeBetweenSteps between_steps;

struct LeavesTheCombiner {
  ~LeavesTheCombiner() { between_steps.left_at_ns = steady_now_ns(); }
};

}  // namespace

bool StepCombiner::worth_combining(std::size_t rows) {
  return rows <= kMaxRows || calls_in_flight() > allowed_cpu_count();
}

void StepCombiner::wait_for_turn(Request& own) {
  const auto until = std::chrono::steady_clock::now() + kPollFor;
  for (unsigned i = 1; !team_running_.load(std::memory_order_relaxed); ++i) {
    wait_a_little(own.polls);
    if (own.state.peek() != kWaiting) break;
    if (i % 32 == 0 && std::chrono::steady_clock::now() > until) break;
  }
  own.state.wait_while(kWaiting);
}

bool StepCombiner::hands_on_to(const Request& next, const Request& own) {
  return next.polls && own.written_bytes <= kMaxHandOnBytes && own.time_between_steps_ns >= kMinTimeBetweenStepsNs;
}

void StepCombiner::park(Request& own) {
  // Only for steps worth a team: for shorter ones the combiner's team would
  // only start while this waiter polls.
  if (own.work >= kMinTeamStepFlops) own.parked.emplace();
}

void StepCombiner::submit(AccessGuard& guard, Request& own) {
  const bool team_owner = owns_intra_op_team();
  bool combiner = false;
  const bool polls = cpu_to_spare();
  between_steps.arrived(steady_now_ns());
  own.time_between_steps_ns = between_steps.average_ns;
  const LeavesTheCombiner leaves;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    own.polls = polls;
    (tail_ != nullptr ? tail_->next : head_) = &own;
    tail_ = &own;
    if (team_owner) owner_queued_ = &own;
    queued_.fetch_add(1, std::memory_order_release);
    if (!combining_) {
      combining_ = combiner = true;
    } else {
      park(own);  // before the combiner can see the request
    }
  }
  for (;;) {
    if (!combiner) {
      wait_for_turn(own);
      own.parked.reset();
      if (own.state.peek() == kDone) return;
    }
    if (combine(guard, own)) return;
    combiner = false;  // handed the role to the team owner before its own step ran
  }
}

bool StepCombiner::combine(AccessGuard& guard, Request& own) {
  bool own_done = false;
  bool served_others = false;
  bool lingered = false;
  std::size_t after_own = 0;
  Request* successor = nullptr;
  for (;;) {
    Request* request = nullptr;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      if (head_ == nullptr && own_done && served_others && !lingered) {
        // Another caller's next step is usually a few microseconds away (its
        // return to Python and back). Waiting for it keeps the parameters in
        // this core's cache; leaving would move them to the next combiner's.
        // The combiner keeps its CPU meanwhile, also when calls outnumber
        // the CPUs: yielding it to the yielding waiters cost a third of the
        // steps (100-50-10 at batch 1, 4 threads: 0.36-0.48x of one thread's
        // steps yielding, 0.60-0.73x pausing; 16 threads 0.42-0.55x and
        // 0.62-0.76x; 784-256-128-10 unchanged).
        lingered = true;
        lock.unlock();
        const auto until = std::chrono::steady_clock::now() + kLinger;
        for (unsigned i = 1; queued_.load(std::memory_order_acquire) == 0; ++i) {
          wait_a_little(true);
          if (i % 32 == 0 && std::chrono::steady_clock::now() > until) break;
        }
        lock.lock();
      }
      if (head_ == nullptr) {
        combining_ = false;
        break;
      }
      lingered = false;
      if (owner_queued_ != nullptr && owner_queued_->work >= kMinTeamStepFlops && !owns_intra_op_team() &&
          share_for(owner_queued_->work) > 1) {
        // It stays queued, runs the steps before its own (this one's too, if
        // not done yet) and then its own. Reset before the hand-off: from
        // then on the new combiner may finish this thread's step.
        if (!own_done) {
          own.state.reset(kWaiting);
          park(own);
        }
        successor = owner_queued_;
        break;
      }
      if (own_done && (after_own >= kStepsAfterOwn || hands_on_to(*head_, own))) {
        successor = head_;  // stays queued: it runs its own step first
        break;
      }
      request = head_;
      head_ = request->next;
      if (head_ == nullptr) tail_ = nullptr;
      if (request == owner_queued_) owner_queued_ = nullptr;
      queued_.fetch_sub(1, std::memory_order_relaxed);
    }
    {
      std::optional<TeamScope> team;
      if (request->work >= kMinTeamStepFlops) team.emplace(team_size_for(request->work));
      const bool on_team = team && team->threads() > 1;
      if (on_team) team_running_.store(true, std::memory_order_relaxed);
      try {
        AccessGuard::Write access(guard, true, request->operation);
        request->result = request->run(request->context);
      } catch (...) {
        request->error = std::current_exception();
      }
      if (on_team) team_running_.store(false, std::memory_order_relaxed);
    }
    if (request == &own) {
      own_done = true;
      continue;
    }
    run_for_others_.fetch_add(1, std::memory_order_relaxed);
    served_others = true;
    if (own_done) ++after_own;
    request->state.set(kDone);
  }
  if (successor != nullptr) {
    passed_on_.fetch_add(1, std::memory_order_relaxed);
    successor->state.set(kCombine);
  }
  return own_done;
}

}  // namespace kortexdl::detail
