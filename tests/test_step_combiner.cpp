// Locked small training steps are run back to back by one of their callers
// (src/parallel/step_combiner.hpp). What must hold:
//  * every step runs alone (exclusive), whole, and its result or exception
//    reaches the thread that submitted it;
//  * on a network, concurrent steps are serializable: threads that train on
//    the same sample end with parameters bit-identical to the same number of
//    steps made one after another;
//  * a step that is refused changes nothing, also when another thread runs it.
#include <gtest/gtest.h>
#include <omp.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "kortexdl/kortexdl.hpp"
#include "parallel/access_guard.hpp"
#include "parallel/affinity.hpp"
#include "parallel/step_combiner.hpp"
#include "parallel/thread_budget.hpp"
#include "test_support.hpp"

namespace {

using kortexdl::LossType;
using kortexdl::Network;
using kortexdl::NetworkConfig;
using kortexdl::NumericalError;
using kortexdl::detail::AccessGuard;
using kortexdl::detail::StepCombiner;

// Steps that write more than a combiner hands on: these are combined.
constexpr std::size_t kHeavyStep = StepCombiner::kMaxHandOnBytes + 1;
constexpr std::size_t kLightStep = StepCombiner::kMaxHandOnBytes;

void busy_for(std::chrono::microseconds d) {
  const auto end = std::chrono::steady_clock::now() + d;
  while (std::chrono::steady_clock::now() < end) {
  }
}

// Called from the step that holds the combiner's role: waits until `count`
// other steps have queued behind it, so they are combined (at most 20 s).
// A fixed sleep instead lost to a loaded machine, where a thread may be
// descheduled between deciding to submit and submitting.
void wait_until_queued(const StepCombiner& combiner, std::size_t count) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (combiner.steps_queued() < count && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
}

TEST(StepCombiner, StepsRunAloneAndReturnToTheirCallers) {
  AccessGuard guard;
  StepCombiner combiner;
  constexpr int kThreads = 4;
  constexpr int kSteps = 300;
  std::int64_t unguarded_total = 0;  // plain on purpose: only exclusive steps may touch it (TSan checks)
  std::atomic<int> inside{0};
  std::atomic<int> overlaps{0};
  std::atomic<int> wrong_results{0};
  // Thread 0's first step waits until the others have queued theirs behind
  // it, so those are combined: steps that never overlap in time (on a loaded
  // machine a thread may make all its steps within one time slice) are
  // never combined.
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kSteps; ++i) {
        auto step = [&] {
          if (inside.fetch_add(1) != 0) overlaps.fetch_add(1);
          if (t == 0 && i == 0) wait_until_queued(combiner, kThreads - 1);
          unguarded_total += t + 1;
          busy_for(std::chrono::microseconds(5));
          inside.fetch_sub(1);
          return static_cast<float>(t * 1000 + i);
        };
        if (combiner.run(guard, "step", 1.0, kHeavyStep, step) != static_cast<float>(t * 1000 + i)) {
          wrong_results.fetch_add(1);
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(overlaps.load(), 0);
  EXPECT_EQ(wrong_results.load(), 0);
  EXPECT_EQ(unguarded_total, static_cast<std::int64_t>(kSteps) * (1 + 2 + 3 + 4));
  EXPECT_GT(combiner.steps_run_for_others(), 0u) << "no step was ever combined";
}

// One more call in flight than there are CPUs, each on an idle thread, for
// the object's lifetime.
class CallsOutnumberingTheCpus {
 public:
  CallsOutnumberingTheCpus() {
    const std::size_t cpus = kortexdl::detail::allowed_cpus().size();
    for (std::size_t i = 0; i <= cpus; ++i) {
      callers_.emplace_back([this] {
        kortexdl::detail::ComputeScope scope(1.0);
        open_.fetch_add(1);
        while (!release_.load()) std::this_thread::sleep_for(std::chrono::microseconds(100));
      });
    }
    while (open_.load() <= cpus) std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
  ~CallsOutnumberingTheCpus() {
    release_ = true;
    for (auto& t : callers_) t.join();
  }
  CallsOutnumberingTheCpus(const CallsOutnumberingTheCpus&) = delete;
  CallsOutnumberingTheCpus& operator=(const CallsOutnumberingTheCpus&) = delete;

 private:
  std::atomic<std::size_t> open_{0};
  std::atomic<bool> release_{false};
  std::vector<std::thread> callers_;
};

// Threads submit light steps, spending `between` on their own before each
// (a Python thread's time between calls); the first one's first step waits
// until the others have queued theirs, so they overlap. Each thread first
// makes a few steps on a combiner of its own, so that the combiner below
// knows its time between steps from the start. Returns the steps run for
// another thread, and the times the role passed between them.
struct LightRun {
  std::size_t run_for_others = 0;
  std::size_t passed_on = 0;
  int wrong_results = 0;
};

LightRun run_light_steps(int threads_count, std::chrono::microseconds between) {
  AccessGuard guard;
  StepCombiner combiner;
  constexpr int kSteps = 400;
  std::atomic<int> wrong_results{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < threads_count; ++t) {
    threads.emplace_back([&, t] {
      {
        AccessGuard own_guard;
        StepCombiner own_combiner;
        auto warm_up = [] { return 0.0f; };
        for (int i = 0; i < 8; ++i) {
          busy_for(between);
          own_combiner.run(own_guard, "warm-up", 1.0, kLightStep, warm_up);
        }
      }
      for (int i = 0; i < kSteps; ++i) {
        auto step = [&] {
          if (t == 0 && i == 0) wait_until_queued(combiner, threads_count - 1);
          busy_for(std::chrono::microseconds(20));
          return static_cast<float>(t * 1000 + i);
        };
        busy_for(between);
        if (combiner.run(guard, "step", 1.0, kLightStep, step) != static_cast<float>(t * 1000 + i)) {
          wrong_results.fetch_add(1);
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  return {combiner.steps_run_for_others(), combiner.roles_passed_on(), wrong_results.load()};
}

// Comfortably above StepCombiner::kMinTimeBetweenStepsNs.
constexpr std::chrono::microseconds kPythonLikeGap{5};

TEST(StepCombiner, LightStepsRunOnTheirOwnThreadsWhileTheWaiterPolls) {
  // No call counts as in flight here, so a waiter polls: the combiner
  // passes the role to it after its own step instead of running its step,
  // and goes back to its own work meanwhile.
  const LightRun run = run_light_steps(2, kPythonLikeGap);
  EXPECT_EQ(run.wrong_results, 0);
  EXPECT_GT(run.passed_on, 0u) << "the two threads' steps never overlapped";
  EXPECT_EQ(run.run_for_others, 0u);
}

TEST(StepCombiner, LightStepsOfThreadsThatComeBackAtOnceAreCombined) {
  // A thread that submits its next step at once (a C++ training loop) has
  // nothing to overlap with the other's step: passing the role on would
  // only move the parameters between the cores.
  if (kortex_test::kSanitized) GTEST_SKIP() << "a sanitizer slows the loop between steps past the threshold";
  const LightRun run = run_light_steps(2, std::chrono::microseconds(0));
  EXPECT_EQ(run.wrong_results, 0);
  EXPECT_GT(run.run_for_others, 0u);
}

TEST(StepCombiner, LightStepsAreCombinedWhenCallsOutnumberTheCpus) {
  // With more calls in flight than CPUs a waiter yields its CPU, and a role
  // passed to it would wait for the scheduler: the combiner runs its steps.
  std::optional<CallsOutnumberingTheCpus> crowd(std::in_place);
  const LightRun run = run_light_steps(2, kPythonLikeGap);
  crowd.reset();
  EXPECT_EQ(run.wrong_results, 0);
  EXPECT_GT(run.run_for_others, 0u);
}

TEST(StepCombiner, ExceptionsReachTheThreadWhoseStepThrew) {
  AccessGuard guard;
  StepCombiner combiner;
  constexpr int kSteps = 400;
  std::atomic<int> thrower_errors{0};
  std::atomic<int> worker_errors{0};
  std::atomic<int> worker_results{0};
  std::thread thrower([&] {
    for (int i = 0; i < kSteps; ++i) {
      auto step = [&]() -> float {
        busy_for(std::chrono::microseconds(3));
        throw std::runtime_error("thrower's step");
      };
      try {
        combiner.run(guard, "step", 1.0, kHeavyStep, step);
      } catch (const std::runtime_error& e) {
        if (std::string(e.what()) == "thrower's step") thrower_errors.fetch_add(1);
      }
    }
  });
  std::thread worker([&] {
    for (int i = 0; i < kSteps; ++i) {
      auto step = [&] {
        busy_for(std::chrono::microseconds(3));
        return 2.0f;
      };
      try {
        if (combiner.run(guard, "step", 1.0, kHeavyStep, step) == 2.0f) worker_results.fetch_add(1);
      } catch (...) {
        worker_errors.fetch_add(1);
      }
    }
  });
  thrower.join();
  worker.join();
  EXPECT_EQ(thrower_errors.load(), kSteps);
  EXPECT_EQ(worker_errors.load(), 0);
  EXPECT_EQ(worker_results.load(), kSteps);
}

TEST(StepCombiner, SmallStepsAlwaysCombineLargerOnesWhenCallsOutnumberCpus) {
  EXPECT_TRUE(StepCombiner::worth_combining(1));
  EXPECT_TRUE(StepCombiner::worth_combining(StepCombiner::kMaxRows));
  ASSERT_EQ(kortexdl::calls_in_flight(), 0u);
  EXPECT_FALSE(StepCombiner::worth_combining(StepCombiner::kMaxRows + 1));
  std::optional<CallsOutnumberingTheCpus> crowd(std::in_place);
  EXPECT_TRUE(StepCombiner::worth_combining(32));
  crowd.reset();
  EXPECT_FALSE(StepCombiner::worth_combining(32));
}

TEST(StepCombiner, TheTeamOwnerRunsCombinedStepsOnItsTeam) {
  // Only the thread that owns the intra-op team may run a step on several
  // threads, so a combiner that does not own it hands the role to the owner
  // whenever the owner's step is queued: the owner's steps all run on the
  // owner's thread, and the other thread's steps that the owner runs (the
  // other thread parked meanwhile) get the whole budget of 2. Without the
  // hand-off, the other thread runs the owner's queued steps on one thread.
  kortex_test::ThreadBudget budget(2);
  kortexdl::detail::release_intra_op_team();  // this thread may own it from an earlier test
  AccessGuard guard;
  StepCombiner combiner;
  constexpr int kSteps = 150;
  constexpr double kWork = 1e12;
  std::atomic<int> owner_steps_elsewhere{0};
  std::atomic<int> others_on_owner{0};
  std::atomic<int> others_on_owner_without_team{0};
  std::atomic<bool> owner_ready{false};
  std::atomic<std::thread::id> owner_id{};
  auto caller = [&](bool owner) {
    if (owner) {
      kortexdl::detail::ComputeScope claim(kWork);  // takes the team
      ASSERT_TRUE(kortexdl::detail::owns_intra_op_team());
      owner_id = std::this_thread::get_id();
      owner_ready = true;
    }
    while (!owner_ready.load()) std::this_thread::yield();
    for (int i = 0; i < kSteps; ++i) {
      // As a training step that may be combined (network.cpp): its waiting
      // must not keep the owner off its team.
      kortexdl::detail::ComputeScope scope(kWork, kortexdl::detail::CallComputes::maybe);
      auto step = [&] {
        // Long enough that the other thread's next step arrives meanwhile.
        busy_for(std::chrono::microseconds(200));
        const bool on_owner_thread = std::this_thread::get_id() == owner_id.load();
        if (owner && !on_owner_thread) owner_steps_elsewhere.fetch_add(1);
        if (!owner && on_owner_thread) {
          others_on_owner.fetch_add(1);
          if (omp_get_max_threads() != 2) others_on_owner_without_team.fetch_add(1);
        }
        return 0.0f;
      };
      combiner.run(guard, "step", kWork, kHeavyStep, step);
    }
    if (owner) kortexdl::detail::release_intra_op_team();
  };
  std::thread owner(caller, true);
  std::thread other(caller, false);
  owner.join();
  other.join();
  EXPECT_EQ(owner_steps_elsewhere.load(), 0);
  EXPECT_GT(others_on_owner.load(), 0);
  EXPECT_EQ(others_on_owner_without_team.load(), 0);
}

NetworkConfig momentum_config() {
  NetworkConfig config;
  config.seed = 5;
  config.optimizer = kortexdl::OptimizerConfig::with_momentum(0.9f);
  return config;
}

// Threads that all train on one sample: whatever the order, the steps are
// the same, so serializable steps give exactly the parameters of as many
// sequential steps. A gradient computed on parameters that another step
// then updates (the shared-lock path) would not.
void expect_serializable(std::size_t rows, bool flag_on) {
  kortex_test::ThreadBudget one(1);
  constexpr int kThreads = 4;
  constexpr int kSteps = 150;
  Network shared({20, 16, 3}, momentum_config());
  Network sequential = shared.clone();
  shared.enable_thread_safety(flag_on);
  const std::vector<float> x = kortex_test::normal_floats(rows * 20, 9);
  std::vector<std::int32_t> labels(rows);
  for (std::size_t r = 0; r < rows; ++r) labels[r] = static_cast<std::int32_t>(r % 3);
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kSteps; ++i) {
        try {
          if (flag_on) {
            shared.train_batch(x, labels, LossType::CrossEntropy, 0.05f, rows);
          } else {
            shared.train_batch_thread_safe(x, labels, LossType::CrossEntropy, 0.05f, rows);
          }
        } catch (...) {
          failures.fetch_add(1);
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  for (int i = 0; i < kThreads * kSteps; ++i) sequential.train_batch(x, labels, LossType::CrossEntropy, 0.05f, rows);
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(shared.version(), sequential.version());
  const std::vector<float> got = shared.parameters();
  const std::vector<float> want = sequential.parameters();
  ASSERT_EQ(got.size(), want.size());
  std::size_t differing = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    differing += kortex_test::bits_of(got[i]) != kortex_test::bits_of(want[i]);
  }
  EXPECT_EQ(differing, 0u) << "of " << got.size() << " parameters";
}

TEST(StepCombiner, ConcurrentBatchOneStepsAreSerializable) { expect_serializable(1, true); }
TEST(StepCombiner, ConcurrentSmallBatchStepsAreSerializable) { expect_serializable(StepCombiner::kMaxRows, true); }
TEST(StepCombiner, ThreadSafeVariantsCombineWithTheFlagOff) { expect_serializable(1, false); }

TEST(StepCombiner, ARefusedStepChangesNothingWhoeverRunsIt) {
  // One thread's steps always fail inside the step (targets of 1e30 make
  // the MSE loss overflow); another's succeed. The failing thread gets every
  // refusal, and the parameters are those of the good steps alone.
  kortex_test::ThreadBudget one(1);
  constexpr int kSteps = 300;
  NetworkConfig config = momentum_config();
  Network shared({6, 8, 2}, config);
  Network sequential = shared.clone();
  shared.enable_thread_safety(true);
  const std::vector<float> x = kortex_test::normal_floats(6, 4);
  const std::vector<float> good_targets = {0.25f, -0.5f};
  const std::vector<float> bad_targets = {1e30f, 1e30f};
  std::atomic<int> refused{0};
  std::atomic<int> other_errors{0};
  std::thread bad([&] {
    for (int i = 0; i < kSteps; ++i) {
      try {
        shared.train_batch(x, bad_targets, LossType::MSE, 0.01f, 1);
      } catch (const NumericalError&) {
        refused.fetch_add(1);
      } catch (...) {
        other_errors.fetch_add(1);
      }
    }
  });
  std::thread good([&] {
    for (int i = 0; i < kSteps; ++i) {
      try {
        shared.train_batch(x, good_targets, LossType::MSE, 0.01f, 1);
      } catch (...) {
        other_errors.fetch_add(1);
      }
    }
  });
  bad.join();
  good.join();
  for (int i = 0; i < kSteps; ++i) sequential.train_batch(x, good_targets, LossType::MSE, 0.01f, 1);
  EXPECT_EQ(refused.load(), kSteps);
  EXPECT_EQ(other_errors.load(), 0);
  EXPECT_EQ(shared.version(), sequential.version());
  EXPECT_EQ(shared.parameters(), sequential.parameters());
}

}  // namespace
