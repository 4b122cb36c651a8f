// fork() while other threads are inside the library's GEMM
// (src/backend/fork_gate.hpp).
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <atomic>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "backend/fork_gate.hpp"
#include "kortexdl/kortexdl.hpp"
#include "test_support.hpp"

namespace {

using kortexdl::backend::library_calls_inside;
using kortexdl::backend::LibraryCall;

TEST(LibraryForkGate, IsInstalledAndCountsTheCallsInside) {
  ASSERT_TRUE(kortexdl::backend::library_fork_gate_installed());
  EXPECT_EQ(library_calls_inside(), 0u);
  {
    const LibraryCall outer;
    EXPECT_EQ(library_calls_inside(), 1u);
    std::thread other([] {
      const LibraryCall inside;
      EXPECT_EQ(library_calls_inside(), 2u);
    });
    other.join();
    EXPECT_EQ(library_calls_inside(), 1u);
  }
  EXPECT_EQ(library_calls_inside(), 0u);
}

// Without the gate a child forked while another thread held oneDNN's GEMM
// mutex waited forever in its first GEMM: with eight threads computing,
// about one fork in a few dozen on two cores.
TEST(LibraryForkGate, ChildrenForkedWhileThreadsRunGemmsCompute) {
  if (kortex_test::kSanitized) {
    GTEST_SKIP() << "the sanitizers' runtimes are not fork-safe while other threads allocate";
  }
  kortexdl::set_num_threads(1);
  kortexdl::NetworkConfig config;
  config.seed = 3;
  const kortexdl::Network net({100, 64, 10}, config);
  const std::size_t batch = 32;  // several rows: the library's GEMM, not the row kernels
  const std::vector<float> x = kortex_test::normal_floats(batch * 100, 4);
  const std::vector<float> expected = net.forward(x, batch);

  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      std::vector<float> out(batch * 10);
      while (!stop.load(std::memory_order_relaxed)) net.forward(x, batch, out);
    });
  }
  int hung = 0, wrong = 0;
  for (int i = 0; i < 200 && hung == 0; ++i) {
    const std::optional<int> status = kortex_test::status_of_forked_child(20, [&] {
      bool same = true;
      for (int k = 0; k < 5; ++k) same = same && net.forward(x, batch) == expected;
      return same ? 0 : 3;
    });
    ASSERT_TRUE(status) << "fork or waitpid failed";
    if (WIFSIGNALED(*status)) ++hung;
    if (WIFEXITED(*status) && WEXITSTATUS(*status) != 0) ++wrong;
  }
  stop = true;
  for (auto& t : threads) t.join();
  kortexdl::set_num_threads(0);
  EXPECT_EQ(hung, 0) << "a forked child hung in its first GEMM";
  EXPECT_EQ(wrong, 0) << "a forked child computed different outputs";
  EXPECT_EQ(library_calls_inside(), 0u);
}

}  // namespace
