// Teams shrink by the CPUs other processes keep busy
// (src/parallel/machine_load.hpp). What must hold:
//  * the load of others is the machine's busy time less our own, per second;
//  * a CPU counts as taken once others keep it 60% busy;
//  * while other processes spin on all but one of our CPUs, a team is one
//    thread, unless the user chose the thread count; with the adaptation
//    off, teams are what the budget says;
//  * while a team is shortened, the machine is sampled every 50 ms instead
//    of every 200 ms, so the team grows back soon after the others stop.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cmath>
#include <limits>
#include <thread>
#include <vector>

#include "parallel/affinity.hpp"
#include "parallel/machine_load.hpp"
#include "parallel/thread_budget.hpp"
#include "kortexdl/threading.hpp"

namespace {

using kortexdl::detail::busy_elsewhere;
using kortexdl::detail::cpus_taken;
using kortexdl::detail::LoadSample;
using kortexdl::detail::team_left_by_others;

// Turns the adaptation on for one test (this binary runs with it off:
// test_thread_budget.cpp).
class AdaptationOn {
 public:
  AdaptationOn() : before_(kortexdl::detail::load_adaptation_enabled()) {
    kortexdl::detail::set_load_adaptation(true);
  }
  ~AdaptationOn() { kortexdl::detail::set_load_adaptation(before_); }

 private:
  bool before_;
};

TEST(MachineLoad, OthersAreTheMachinesBusyTimeLessOurs) {
  // Over 0.5 s the machine was busy 1.5 CPU-seconds, 0.5 of them ours.
  EXPECT_NEAR(busy_elsewhere({10.0, 3.0, 100.0}, {11.5, 3.5, 100.5}), 2.0, 1e-9);
  EXPECT_NEAR(busy_elsewhere({10.0, 3.0, 100.0}, {10.5, 3.5, 100.5}), 0.0, 1e-9) << "all of it ours";
  // Tick rounding can make our own time exceed the machine's: no load.
  EXPECT_EQ(busy_elsewhere({10.0, 3.0, 100.0}, {10.0, 3.2, 100.2}), 0.0);
  EXPECT_EQ(busy_elsewhere({10.0, 3.0, 100.0}, {12.0, 3.0, 100.0}), 0.0) << "an empty window";
  EXPECT_EQ(busy_elsewhere({10.0, 3.0, 100.0}, {12.0, 0.1, 101.0}), 0.0) << "a forked child's own clock restarts";
}

TEST(MachineLoad, ACpuCountsOnceOthersKeepItMostlyBusy) {
  EXPECT_EQ(cpus_taken(0.0), 0u);
  EXPECT_EQ(cpus_taken(0.55), 0u);
  EXPECT_EQ(cpus_taken(0.65), 1u);
  EXPECT_EQ(cpus_taken(1.5), 1u);
  EXPECT_EQ(cpus_taken(1.7), 2u);
  EXPECT_EQ(cpus_taken(std::numeric_limits<double>::quiet_NaN()), 0u);
}

TEST(MachineLoad, OffOrOneThreadLeavesTheTeamAlone) {
  kortexdl::detail::set_load_adaptation(false);
  EXPECT_EQ(team_left_by_others(5), 5u);
  AdaptationOn on;
  EXPECT_EQ(team_left_by_others(1), 1u);
  EXPECT_GE(team_left_by_others(3), 1u);
}

TEST(MachineLoad, ConcurrentCallersShareTheSampling) {
  // One of them samples per window, the others read the last estimate
  // (under ThreadSanitizer in CI).
  AdaptationOn on;
  std::vector<std::thread> callers;
  std::atomic<bool> out_of_range{false};
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(500);
  for (int t = 0; t < 4; ++t) {
    callers.emplace_back([&] {
      while (std::chrono::steady_clock::now() < until) {
        const std::size_t team = team_left_by_others(2);
        if (team < 1 || team > 2) out_of_range = true;
      }
    });
  }
  for (auto& c : callers) c.join();
  EXPECT_FALSE(out_of_range.load());
}

// Processes spinning on all but one of our CPUs for as long as it lives.
class Spinners {
 public:
  explicit Spinners(std::size_t count) {
    for (std::size_t i = 0; i < count; ++i) {
      const pid_t pid = fork();
      if (pid == 0) {
        const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(5);
        volatile unsigned long spins = 0;
        while (std::chrono::steady_clock::now() < until) spins = spins + 1;
        _exit(0);
      }
      if (pid > 0) pids_.push_back(pid);
    }
  }
  ~Spinners() {
    for (pid_t pid : pids_) {
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
    }
  }
  Spinners(const Spinners&) = delete;
  Spinners& operator=(const Spinners&) = delete;
  std::size_t started() const { return pids_.size(); }

 private:
  std::vector<pid_t> pids_;
};

// Three samples 250 ms apart: the last window lies inside the spinning.
std::size_t team_after_three_samples(std::size_t threads) {
  std::size_t team = threads;
  for (int i = 0; i < 3; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
    team = team_left_by_others(threads);
  }
  return team;
}

TEST(MachineLoad, ATeamIsOneThreadWhileOthersSpinOnTheOtherCpus) {
  const std::size_t cpus = kortexdl::detail::allowed_cpu_count();
  if (cpus < 2) GTEST_SKIP() << "needs two CPUs";
  AdaptationOn on;
  std::size_t team = cpus;
  {
    Spinners spinners(cpus - 1);
    ASSERT_EQ(spinners.started(), cpus - 1);
    team = team_after_three_samples(cpus);
  }
  EXPECT_EQ(team, 1u) << cpus - 1 << " other processes kept " << cpus - 1 << " of " << cpus << " CPUs busy";
}

TEST(MachineLoad, AShortenedTeamIsReconsideredSooner) {
  const std::size_t cpus = kortexdl::detail::allowed_cpu_count();
  if (cpus < 2) GTEST_SKIP() << "needs two CPUs";
  AdaptationOn on;
  std::uint64_t samples = 0;
  double seconds = 0.0;
  std::size_t team = cpus;
  {
    Spinners spinners(cpus - 1);
    ASSERT_EQ(spinners.started(), cpus - 1);
    team = team_after_three_samples(cpus);
    // Calls every 5 ms: in 400 ms, 8 samples at 50 ms, 2 at 200 ms. Sampled
    // every 200 ms, `seconds` of calls see at most seconds / 0.2 + 1 samples,
    // however long they go on; judged against the time actually spent, as
    // this thread may be held up for part of it on a loaded machine (the
    // sanitizer lanes beside compilers). So the calls go on for at least
    // 400 ms and until they saw 5 samples and more than 200 ms re-checks
    // could give (at most 2 s, well inside the spinners' 5 s).
    const std::uint64_t before = kortexdl::detail::load_samples();
    const auto start = std::chrono::steady_clock::now();
    const auto enough = [&] {
      samples = kortexdl::detail::load_samples() - before;
      seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      return seconds >= 0.4 && samples >= 5 && static_cast<double>(samples) > seconds / 0.2 + 1.0;
    };
    while (!enough() && seconds < 2.0) {
      (void)team_left_by_others(cpus);
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }
  ASSERT_EQ(team, 1u) << "the team was not shortened, so nothing to reconsider";
  EXPECT_GE(samples, 5u) << "a shortened team was sampled " << samples << " times in " << seconds << " s";
  EXPECT_GT(static_cast<double>(samples), seconds / 0.2 + 1.0)
      << samples << " samples in " << seconds << " s: a shortened team was reconsidered only every 200 ms";
}

TEST(MachineLoad, OnlyTheDefaultBudgetIsShortened) {
  // A thread count the user chose is kept (results stay the same for the
  // same count); the default budget leaves the busy CPUs out.
  const std::size_t cpus = kortexdl::detail::allowed_cpu_count();
  if (cpus < 2) GTEST_SKIP() << "needs two CPUs";
  AdaptationOn on;
  const std::size_t before = kortexdl::get_num_threads();
  std::size_t chosen = 0;
  std::size_t by_default = 0;
  {
    Spinners spinners(cpus - 1);
    ASSERT_EQ(spinners.started(), cpus - 1);
    (void)team_after_three_samples(cpus);
    kortexdl::set_num_threads(cpus);
    chosen = kortexdl::detail::ComputeScope(1e12).threads();
    kortexdl::set_num_threads(0);
    by_default = kortexdl::detail::ComputeScope(1e12).threads();
  }
  kortexdl::set_num_threads(before);
  EXPECT_EQ(chosen, cpus) << "set_num_threads(" << cpus << ") was shortened by the load";
  if (std::getenv("KORTEX_NUM_THREADS") == nullptr && std::getenv("OMP_NUM_THREADS") == nullptr) {
    EXPECT_EQ(by_default, 1u) << "the default budget kept CPUs that others keep busy";
  }
}

}  // namespace
