// The process-wide intra-op thread budget (threading.hpp,
// src/parallel/thread_budget.hpp): get/set, the default and the environment
// variables it honours, the in-flight call count, and the per-call share of
// the budget.
#include <gtest/gtest.h>
#include <omp.h>
#include <sched.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <future>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "kortexdl/kortexdl.hpp"
#include "parallel/machine_load.hpp"
#include "parallel/thread_budget.hpp"  // internal: ComputeScope, share_for
#include "test_support.hpp"

extern char** environ;

namespace {

// Exact team sizes are checked here and elsewhere in this binary, and ctest
// runs other test processes beside it, which the load adaptation would count
// (machine_load.hpp): off for the whole binary; its own tests turn it on.
const bool load_adaptation_off = (kortexdl::detail::set_load_adaptation(false), true);

using kortexdl::LossType;
using kortexdl::Network;
using kortexdl::NetworkConfig;
using kortex_test::ThreadBudget;

// The default as documented: KORTEX_NUM_THREADS, else OMP_NUM_THREADS (its
// first entry), else the CPUs this process may run on.
std::size_t documented_default() {
  for (const char* name : {"KORTEX_NUM_THREADS", "OMP_NUM_THREADS"}) {
    const char* v = std::getenv(name);
    if (v != nullptr && *v != '\0') {
      char* end = nullptr;
      const unsigned long n = std::strtoul(v, &end, 10);
      if (end != v && n > 0 && n <= 4096) return n;
    }
  }
  cpu_set_t set;
  CPU_ZERO(&set);
  EXPECT_EQ(sched_getaffinity(0, sizeof set, &set), 0);
  return static_cast<std::size_t>(CPU_COUNT(&set));
}

TEST(ThreadBudget, SetAndGet) {
  ThreadBudget restore(0);
  for (const std::size_t n : {std::size_t{1}, std::size_t{3}, std::size_t{64}, std::size_t{4096}}) {
    kortexdl::set_num_threads(n);
    EXPECT_EQ(kortexdl::get_num_threads(), n);
  }
  kortexdl::set_num_threads(7);
  EXPECT_THROW(kortexdl::set_num_threads(4097), kortexdl::InvalidArgumentError);
  EXPECT_EQ(kortexdl::get_num_threads(), 7u) << "a refused value changed the budget";
}

TEST(ThreadBudget, ZeroRestoresTheDefault) {
  kortexdl::set_num_threads(0);
  const std::size_t initial = kortexdl::get_num_threads();
  EXPECT_EQ(initial, documented_default());
  kortexdl::set_num_threads(initial + 5);
  EXPECT_EQ(kortexdl::get_num_threads(), initial + 5);
  kortexdl::set_num_threads(0);
  EXPECT_EQ(kortexdl::get_num_threads(), initial);
}

TEST(ThreadBudget, CallsInFlightReturnsToZero) {
  EXPECT_EQ(kortexdl::calls_in_flight(), 0u);
  NetworkConfig config;
  config.seed = 1;
  Network net({8, 16, 4}, config);
  const std::vector<float> x = kortex_test::normal_floats(4 * 8, 2);
  const std::vector<float> t = kortex_test::normal_floats(4 * 4, 3);
  std::vector<std::size_t> inside;
  net.set_update_observer([&](std::span<const float>, std::uint64_t) { inside.push_back(kortexdl::calls_in_flight()); });
  (void)net.forward(x, 4);
  (void)net.forward_batch(x, 3);
  (void)net.evaluate(x, t, LossType::MSE, 2);
  (void)net.compute_gradients(x, t, LossType::MSE, 4);
  net.train_batch(x, t, LossType::MSE, 0.01f, 4);
  net.train_batch_thread_safe(x, t, LossType::MSE, 0.01f, 4);
  EXPECT_EQ(kortexdl::calls_in_flight(), 0u);
  // The observer runs inside a training call: that call is in flight.
  ASSERT_EQ(inside.size(), 2u);
  EXPECT_EQ(inside[0], 1u);
  EXPECT_EQ(inside[1], 1u);
  // Calls that fail inside the library are not left counted.
  const std::vector<float> huge(4 * 8, 3e38f);
  net.set_parameters(std::vector<float>(net.parameter_count(), 0.5f));
  EXPECT_THROW(net.train_batch(huge, t, LossType::MSE, 0.01f, 4), kortexdl::NumericalError);
  EXPECT_THROW((void)net.forward(x, 5), kortexdl::ShapeError);
  EXPECT_EQ(kortexdl::calls_in_flight(), 0u);
}

TEST(ThreadBudget, ConcurrentCallsShareTheBudget) {
  // Two training calls on two networks meet inside their update observers:
  // both are in flight, so each may use half of the budget.
  ThreadBudget budget(4);
  NetworkConfig config;
  config.seed = 4;
  Network a({8, 16, 4}, config);
  Network b({8, 16, 4}, config);
  const std::vector<float> x = kortex_test::normal_floats(4 * 8, 5);
  const std::vector<float> t = kortex_test::normal_floats(4 * 4, 6);
  // Both observers arrive before either measures, and both have measured
  // before either leaves (and ends its call).
  kortex_test::TimedLatch arrived(2), measured(2);
  std::size_t in_flight[2] = {0, 0};
  std::size_t share[2] = {0, 0};
  bool met[2] = {false, false};
  auto observer_for = [&](int i) {
    return [&, i](std::span<const float>, std::uint64_t) {
      met[i] = arrived.arrive_and_wait();
      in_flight[i] = kortexdl::calls_in_flight();
      share[i] = kortexdl::detail::share_for(1e12);
      met[i] = measured.arrive_and_wait() && met[i];
    };
  };
  a.set_update_observer(observer_for(0));
  b.set_update_observer(observer_for(1));
  std::thread ta([&] { a.train_batch(x, t, LossType::MSE, 0.01f, 4); });
  std::thread tb([&] { b.train_batch(x, t, LossType::MSE, 0.01f, 4); });
  ta.join();
  tb.join();
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(met[i]) << "the two calls never were in flight together";
    EXPECT_EQ(in_flight[i], 2u);
    EXPECT_EQ(share[i], 2u) << "budget 4 shared by 2 calls";
  }
  EXPECT_EQ(kortexdl::calls_in_flight(), 0u);
  // Alone again: the whole budget, but never more threads than the work is worth.
  EXPECT_EQ(kortexdl::detail::share_for(1e12), 4u);
  EXPECT_EQ(kortexdl::detail::share_for(1.0), 1u);
  EXPECT_EQ(kortexdl::detail::share_for(2.5 * kortexdl::detail::kMinFlopsPerExtraThread), 2u);
}

TEST(ThreadBudget, ParkedCallsLeaveTheirShareToTheOthers) {
  // A call waiting for another thread to run its step (a combined training
  // step) uses no core: the calls that compute share the budget without it.
  ThreadBudget budget(4);
  kortexdl::detail::ComputeScope running(1.0);
  {
    kortexdl::detail::ComputeScope waiting(1.0);
    EXPECT_EQ(kortexdl::detail::share_for(1e12), 2u);
    kortexdl::detail::ParkedCall parked;
    EXPECT_EQ(kortexdl::calls_in_flight(), 2u);
    EXPECT_EQ(kortexdl::detail::share_for(1e12), 4u);
  }
  EXPECT_EQ(kortexdl::detail::share_for(1e12), 4u);
}

TEST(ThreadBudget, OneThreadAtATimeOwnsTheIntraOpTeam) {
  // libgomp slows every team down once the teams of several threads
  // outnumber the CPUs, so only one thread opens teams; the others compute
  // single-threaded until it exits.
  ThreadBudget budget(2);
  kortexdl::detail::release_intra_op_team();  // this thread may own it from an earlier test
  std::promise<void> measured;
  std::shared_future<void> measured_done = measured.get_future().share();
  std::promise<std::size_t> owner_threads;
  std::thread owner([&] {
    {
      kortexdl::detail::ComputeScope scope(1e12);
      owner_threads.set_value(scope.threads());
    }
    measured_done.wait();  // stays alive, and the owner, until the other thread has looked
  });
  EXPECT_EQ(owner_threads.get_future().get(), 2u);
  std::thread other([] {
    kortexdl::detail::ComputeScope scope(1e12);
    EXPECT_EQ(scope.threads(), 1u) << "a second thread got a team while the owner lives";
    EXPECT_EQ(omp_get_max_threads(), 1);
    EXPECT_FALSE(kortexdl::detail::owns_intra_op_team());
  });
  other.join();
  measured.set_value();
  owner.join();
  // The other thread's call keeps any owner to one thread for a while.
  std::this_thread::sleep_for(2 * kortexdl::detail::kTeamQuietWindow);
  std::thread next([] {  // the owner has exited: the team is free again
    kortexdl::detail::ComputeScope scope(1e12);
    EXPECT_EQ(scope.threads(), 2u);
    EXPECT_TRUE(kortexdl::detail::owns_intra_op_team());
    kortexdl::detail::release_intra_op_team();
    EXPECT_FALSE(kortexdl::detail::owns_intra_op_team());
  });
  next.join();
}

// The owner's team size for a call started now, if it starts within the
// quiet window after `since`; nullopt if the machine took longer.
std::optional<std::size_t> owner_team_within_window(std::chrono::steady_clock::time_point since) {
  kortexdl::detail::ComputeScope scope(1e12);
  if (std::chrono::steady_clock::now() - since >= kortexdl::detail::kTeamQuietWindow) return std::nullopt;
  return scope.threads();
}

TEST(ThreadBudget, TheTeamOwnerKeepsToOneThreadWhileAnotherThreadComputes) {
  // Threads calling in turn are often between calls when the owner starts
  // one: a team opened then would share the CPUs with their next calls.
  ThreadBudget budget(2);
  kortexdl::detail::release_intra_op_team();
  {
    kortexdl::detail::ComputeScope claim(1e12);
    ASSERT_EQ(claim.threads(), 2u);
    ASSERT_TRUE(kortexdl::detail::owns_intra_op_team());
  }
  auto other_calls = [](kortexdl::detail::CallComputes computes, bool then_computes) {
    std::thread([&] {
      kortexdl::detail::ComputeScope scope(1e12, computes);
      if (then_computes) kortexdl::detail::note_computing_call();
    }).join();
  };
  // Each attempt needs the other thread's start, call and exit, and the
  // owner's call, within the 1 ms window; with the sanitizer jobs beside this
  // one on two cores most attempts miss it (50 attempts once all missed), so
  // attempts go on for a while instead of a fixed number of times.
  int checked = 0;
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (checked < 2 && std::chrono::steady_clock::now() < give_up) {
    // A call that computes, and one that learns only later that it does
    // (a training step that was not combined).
    const bool later = checked == 1;
    std::this_thread::sleep_for(2 * kortexdl::detail::kTeamQuietWindow);
    const auto since = std::chrono::steady_clock::now();
    other_calls(later ? kortexdl::detail::CallComputes::maybe : kortexdl::detail::CallComputes::here, later);
    if (const auto threads = owner_team_within_window(since)) {
      EXPECT_EQ(*threads, 1u) << (later ? "after a noted call" : "after a computing call");
      ++checked;
    }
  }
  EXPECT_EQ(checked, 2) << "the machine never let the owner call within the window";
  // A call that waits for another thread's work (a combined training step)
  // leaves the team alone, and so does the owner's own computing.
  std::this_thread::sleep_for(2 * kortexdl::detail::kTeamQuietWindow);
  other_calls(kortexdl::detail::CallComputes::maybe, false);
  kortexdl::detail::note_computing_call();
  EXPECT_EQ(kortexdl::detail::ComputeScope(1e12).threads(), 2u);
  // After the window the team is back.
  other_calls(kortexdl::detail::CallComputes::here, false);
  std::this_thread::sleep_for(2 * kortexdl::detail::kTeamQuietWindow);
  EXPECT_EQ(kortexdl::detail::ComputeScope(1e12).threads(), 2u);
  kortexdl::detail::release_intra_op_team();
}

TEST(ThreadBudget, ForkedChildOfATeamOwnerComputesInsteadOfHanging) {
  // GNU OpenMP is not fork-safe: a thread that had a team in the parent
  // waits forever in the child for pool threads the child does not have.
  ASSERT_TRUE(kortexdl::detail::fork_handler_installed());
  ThreadBudget budget(2);
  kortexdl::detail::release_intra_op_team();
  NetworkConfig config;
  config.seed = 11;
  Network net({64, 256, 10}, config);
  const std::size_t batch = 512;  // enough work for a 2-thread team
  const std::vector<float> x = kortex_test::normal_floats(batch * 64, 12);
  const std::vector<float> t = kortex_test::normal_floats(batch * 10, 13);
  net.train_batch(x, t, LossType::MSE, 0.01f, batch);
  ASSERT_TRUE(kortexdl::detail::owns_intra_op_team()) << "this thread never opened a team; the test proves nothing";
  const std::optional<int> status = kortex_test::status_of_forked_child(60, [&] {
    const float loss = net.train_batch(x, t, LossType::MSE, 0.01f, batch);
    const std::vector<float> out = net.forward(x, batch);
    return std::isfinite(loss) && out.size() == batch * 10 ? 0 : 3;
  });
  ASSERT_TRUE(status) << "fork or waitpid failed";
  ASSERT_TRUE(WIFEXITED(*status)) << "the child was killed by signal " << WTERMSIG(*status) << " (14: it hung)";
  EXPECT_EQ(WEXITSTATUS(*status), 0);
  // The parent keeps its team.
  net.train_batch(x, t, LossType::MSE, 0.01f, batch);
  EXPECT_TRUE(kortexdl::detail::owns_intra_op_team());
}

TEST(ThreadBudget, ComputeScopeSetsAndRestoresTheCallingThreadsTeamSize) {
  ThreadBudget budget(3);
  kortexdl::detail::release_intra_op_team();  // this thread may own it from an earlier test
  // On a fresh thread, which never set its OpenMP team size itself.
  std::thread worker([] {
    const int before = omp_get_max_threads();
    {
      kortexdl::detail::ComputeScope scope(1e12);
      EXPECT_EQ(scope.threads(), 3u);
      EXPECT_EQ(omp_get_max_threads(), 3);
      EXPECT_EQ(kortexdl::calls_in_flight(), 1u);
      {
        kortexdl::detail::ComputeScope nested(1e12);  // 2 in flight: 3 / 2 = 1 each
        EXPECT_EQ(nested.threads(), 1u);
        EXPECT_EQ(omp_get_max_threads(), 1);
      }
      EXPECT_EQ(omp_get_max_threads(), 3);
      kortexdl::detail::ComputeScope small(1000.0);  // too little work for a team
      EXPECT_EQ(small.threads(), 1u);
    }
    EXPECT_EQ(omp_get_max_threads(), before);
    EXPECT_EQ(kortexdl::calls_in_flight(), 0u);
  });
  worker.join();
}

// ---- environment variables, checked in child processes ----------------------
//
// The default is read from the environment when the budget is first used,
// so each case runs this binary again with a prepared environment and only
// the (disabled by default) child test below.

TEST(ThreadBudgetChild, DISABLED_ReportsTheExpectedDefault) {
  const char* expected = std::getenv("KORTEX_TEST_EXPECTED_THREADS");
  ASSERT_NE(expected, nullptr) << "run by ThreadBudget.EnvironmentVariablesAreHonoured";
  const std::size_t n = std::strtoul(expected, nullptr, 10);
  EXPECT_EQ(kortexdl::get_num_threads(), n);
  kortexdl::set_num_threads(n + 3);
  kortexdl::set_num_threads(0);
  EXPECT_EQ(kortexdl::get_num_threads(), n) << "set_num_threads(0) does not restore the environment's value";
}

// Runs the child test with `vars` set (and KORTEX_NUM_THREADS /
// OMP_NUM_THREADS removed unless given); returns its exit status.
int run_child(const std::vector<std::string>& vars, std::size_t expected) {
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string entry = *e;
    if (entry.rfind("KORTEX_NUM_THREADS=", 0) == 0 || entry.rfind("OMP_NUM_THREADS=", 0) == 0 ||
        entry.rfind("KORTEX_TEST_EXPECTED_THREADS=", 0) == 0 || entry.rfind("GTEST_", 0) == 0) {
      continue;
    }
    env.push_back(entry);
  }
  for (const auto& v : vars) env.push_back(v);
  env.push_back("KORTEX_TEST_EXPECTED_THREADS=" + std::to_string(expected));
  std::vector<char*> envp;
  for (auto& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);

  std::string self = "/proc/self/exe";
  std::string filter = "--gtest_filter=ThreadBudgetChild.DISABLED_ReportsTheExpectedDefault";
  std::string disabled = "--gtest_also_run_disabled_tests";
  std::string brief = "--gtest_brief=1";
  std::vector<char*> argv = {self.data(), filter.data(), disabled.data(), brief.data(), nullptr};
  pid_t pid = 0;
  if (posix_spawn(&pid, "/proc/self/exe", nullptr, nullptr, argv.data(), envp.data()) != 0) return -1;
  int status = 0;
  if (waitpid(pid, &status, 0) != pid) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

TEST(ThreadBudget, EnvironmentVariablesAreHonoured) {
  cpu_set_t set;
  CPU_ZERO(&set);
  ASSERT_EQ(sched_getaffinity(0, sizeof set, &set), 0);
  const auto cpus = static_cast<std::size_t>(CPU_COUNT(&set));
  struct Case {
    std::vector<std::string> vars;
    std::size_t expected;
  };
  const std::vector<Case> cases = {
      {{"KORTEX_NUM_THREADS=3"}, 3},
      {{"KORTEX_NUM_THREADS=3", "OMP_NUM_THREADS=5"}, 3},  // ours wins
      {{"OMP_NUM_THREADS=5"}, 5},
      {{"OMP_NUM_THREADS=6,2"}, 6},  // a nesting list: its first entry
      {{}, cpus},
      {{"KORTEX_NUM_THREADS=0"}, cpus},       // not a thread count: ignored
      {{"KORTEX_NUM_THREADS=lots"}, cpus},    // not a number: ignored
      {{"KORTEX_NUM_THREADS=9999", "OMP_NUM_THREADS=2"}, 2},  // above the limit: ignored
  };
  for (const auto& c : cases) {
    std::string label;
    for (const auto& v : c.vars) label += v + " ";
    EXPECT_EQ(run_child(c.vars, c.expected), 0) << "environment: " << label << "expected " << c.expected;
  }
}

}  // namespace
