// Networks in a child forked while other threads used them
// (src/parallel/fork_safety.hpp).
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "kortexdl/kortexdl.hpp"
#include "parallel/access_guard.hpp"
#include "parallel/fork_safety.hpp"
#include "parallel/thread_budget.hpp"
#include "test_support.hpp"

namespace {

using kortexdl::LossType;

// A seeded network with thread safety on, as threads that share it need.
kortexdl::Network thread_safe_network(std::vector<std::size_t> sizes, std::uint64_t seed) {
  kortexdl::NetworkConfig config;
  config.seed = seed;
  kortexdl::Network net(std::move(sizes), config);
  net.enable_thread_safety(true);
  return net;
}

// A training step on another thread, held inside its write (its update
// observer waits) from construction until release(): a thread writing the
// network, with thread safety on, at a moment of the test's choosing.
class WriterHeldInsideItsWrite {
 public:
  WriterHeldInsideItsWrite(kortexdl::Network& net, const std::vector<float>& x, const std::vector<float>& t)
      : net_(net) {
    net_.set_update_observer([this](std::span<const float>, std::uint64_t) {
      writing_ = true;
      while (!released_.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    });
    thread_ = std::thread([&net, &x, &t] { net.train_batch(x, t, LossType::MSE, 0.01f, 4); });
    while (!writing_.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ~WriterHeldInsideItsWrite() { release(); }
  void release() {
    if (!thread_.joinable()) return;
    released_ = true;
    thread_.join();
    net_.set_update_observer(nullptr);
  }

 private:
  kortexdl::Network& net_;
  std::atomic<bool> writing_{false}, released_{false};
  std::thread thread_;
};

TEST(ForkSafety, ChildTrainsANetworkParentThreadsWereReading) {
  if (kortex_test::kSanitized) GTEST_SKIP() << "the sanitizers' runtimes are not fork-safe while other threads allocate";
  ASSERT_TRUE(kortexdl::detail::network_fork_handler_installed());
  kortexdl::set_num_threads(1);
  kortexdl::Network net = thread_safe_network({64, 32, 4}, 5);
  const std::vector<float> x = kortex_test::normal_floats(8 * 64, 6);
  const std::vector<float> t = kortex_test::normal_floats(8 * 4, 7);
  std::atomic<bool> stop{false};
  std::vector<std::thread> readers;
  for (int r = 0; r < 4; ++r) {
    readers.emplace_back([&] {
      std::vector<float> out(8 * 4);
      while (!stop.load(std::memory_order_relaxed)) net.forward(x, 8, out);
    });
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  int hung = 0, failed = 0;
  for (int i = 0; i < 20 && hung == 0; ++i) {
    const std::optional<int> status = kortex_test::status_of_forked_child(20, [&] {
      const float loss = net.train_batch(x, t, LossType::MSE, 0.01f, 8);  // a write: needs the lock alone
      return std::isfinite(loss) && net.forward(x, 8).size() == 8 * 4 ? 0 : 3;
    });
    ASSERT_TRUE(status) << "fork or waitpid failed";
    if (WIFSIGNALED(*status)) ++hung;
    if (!WIFEXITED(*status) || WEXITSTATUS(*status) != 0) ++failed;
  }
  stop = true;
  for (auto& r : readers) r.join();
  kortexdl::set_num_threads(0);
  EXPECT_EQ(hung, 0) << "children hung on a lock the parent's reading threads held";
  EXPECT_EQ(failed, 0);
}

TEST(ForkSafety, ChildRefusesANetworkAnotherThreadWasWriting) {
  if (kortex_test::kSanitized) GTEST_SKIP() << "the sanitizers' runtimes are not fork-safe while other threads allocate";
  kortexdl::Network net = thread_safe_network({16, 8, 2}, 8);
  const std::vector<float> x = kortex_test::normal_floats(4 * 16, 9);
  const std::vector<float> t = kortex_test::normal_floats(4 * 2, 10);
  WriterHeldInsideItsWrite writer(net, x, t);  // until the fork is over
  const std::optional<int> status = kortex_test::status_of_forked_child(20, [&] {
    int refused = 0;
    for (int call = 0; call < 2; ++call) {
      try {
        if (call == 0) net.train_batch(x, t, LossType::MSE, 0.01f, 4);
        else (void)net.forward(x, 4);
      } catch (const kortexdl::ConcurrencyError& e) {
        if (std::string(e.what()).find("forked") != std::string::npos) ++refused;
      }
    }
    return refused == 2 ? 0 : 3;
  });
  writer.release();
  ASSERT_TRUE(status) << "fork or waitpid failed";
  ASSERT_TRUE(WIFEXITED(*status)) << "the child hung or crashed (signal " << WTERMSIG(*status) << ")";
  EXPECT_EQ(WEXITSTATUS(*status), 0) << "the child did not refuse both calls with a ConcurrencyError about the fork";
  EXPECT_NO_THROW(net.train_batch(x, t, LossType::MSE, 0.01f, 4));  // the parent's network is untouched
}

// The parent's other threads' calls in flight and lock waits are not the
// child's: left counted, they would shrink the child's teams for good.
TEST(ForkSafety, ChildCountsOnlyItsOwnCallsAndLockWaits) {
  if (kortex_test::kSanitized) GTEST_SKIP() << "the sanitizers' runtimes are not fork-safe while other threads allocate";
  kortex_test::ThreadBudget budget(4);
  kortexdl::Network net = thread_safe_network({16, 8, 2}, 11);
  const std::vector<float> x = kortex_test::normal_floats(4 * 16, 12);
  const std::vector<float> t = kortex_test::normal_floats(4 * 2, 13);
  WriterHeldInsideItsWrite writer(net, x, t);  // in flight, holds the lock
  std::thread reader([&] { (void)net.forward(x, 4); });  // waits for the lock
  kortex_test::eventually([] { return kortexdl::detail::parameter_lock_contenders() == 1; });
  const std::size_t parent_in_flight = kortexdl::calls_in_flight();
  const int parent_contenders = kortexdl::detail::parameter_lock_contenders();
  const std::optional<int> status = kortex_test::status_of_forked_child(20, [] {
    if (kortexdl::calls_in_flight() != 0) return 3;
    if (kortexdl::detail::parameter_lock_contenders() != 0) return 4;
    if (kortexdl::detail::share_for(1e12) != 4) return 5;
    return 0;
  });
  writer.release();
  reader.join();
  EXPECT_EQ(parent_in_flight, 1u);
  EXPECT_EQ(parent_contenders, 1);
  ASSERT_TRUE(status) << "fork or waitpid failed";
  ASSERT_TRUE(WIFEXITED(*status)) << "the child hung or crashed (signal " << WTERMSIG(*status) << ")";
  EXPECT_EQ(WEXITSTATUS(*status), 0) << "3: the parent's calls in flight, 4: its lock waiters, 5: a smaller share";
  EXPECT_EQ(kortexdl::calls_in_flight(), 0u);
  EXPECT_EQ(kortexdl::detail::parameter_lock_contenders(), 0);
}

// A fork from inside a call (an update observer) keeps that call counted.
TEST(ForkSafety, ChildForkedInsideACallCountsThatCall) {
  kortexdl::Network net({16, 8, 2});
  const std::vector<float> x = kortex_test::normal_floats(4 * 16, 14);
  const std::vector<float> t = kortex_test::normal_floats(4 * 2, 15);
  std::optional<int> status;
  net.set_update_observer([&](std::span<const float>, std::uint64_t) {
    status = kortex_test::status_of_forked_child(20, [] { return kortexdl::calls_in_flight() == 1 ? 0 : 3; });
  });
  net.train_batch(x, t, LossType::MSE, 0.01f, 4);
  net.set_update_observer(nullptr);
  ASSERT_TRUE(status) << "fork or waitpid failed";
  ASSERT_TRUE(WIFEXITED(*status)) << "the child hung or crashed (signal " << WTERMSIG(*status) << ")";
  EXPECT_EQ(WEXITSTATUS(*status), 0) << "the child lost count of the call it was forked in";
}

}  // namespace
