// Signal handlers during compute calls (src/parallel/signal_safety.hpp):
// oneDNN's JIT GEMM points the stack pointer into the heap, so a handler run
// on the interrupted stack used to write its frame into heap memory (a
// Ctrl-C during `kortexdl train` aborted with "corrupted size vs.
// prev_size"). These tests send thousands of signals into running calls and
// require bit-exact results and an intact heap.
#include <gtest/gtest.h>
#include <omp.h>
#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <thread>
#include <vector>

#include "kortexdl/kortexdl.hpp"
#include "parallel/node_workers.hpp"     // internal: NodeWorkers
#include "parallel/signal_safety.hpp"    // internal: the defences under test
#include "parallel/thread_budget.hpp"    // internal: ComputeScope
#include "test_support.hpp"

namespace {

using kortexdl::LossType;
using kortexdl::Network;
using kortexdl::NetworkConfig;
using kortex_test::BitwiseEqual;
using kortex_test::ThreadBudget;

std::atomic<long> handled{0};
extern "C" void count_signal(int) { handled.fetch_add(1, std::memory_order_relaxed); }

// Installs count_signal for SIGUSR1 (with or without SA_ONSTACK) for the
// lifetime of the object.
class CountingHandler {
 public:
  explicit CountingHandler(bool on_alternate_stack) {
    struct sigaction action {};
    action.sa_handler = count_signal;
    sigemptyset(&action.sa_mask);
    action.sa_flags = SA_RESTART | (on_alternate_stack ? SA_ONSTACK : 0);
    EXPECT_EQ(sigaction(SIGUSR1, &action, &previous_), 0);
  }
  ~CountingHandler() { sigaction(SIGUSR1, &previous_, nullptr); }

 private:
  struct sigaction previous_ {};
};

// Sends SIGUSR1 to `target` as fast as it can until destroyed.
class SignalStorm {
 public:
  explicit SignalStorm(pthread_t target)
      : sender_([this, target] {
          while (!stop_.load(std::memory_order_relaxed)) {
            pthread_kill(target, SIGUSR1);
            sent_.fetch_add(1, std::memory_order_relaxed);
            std::this_thread::sleep_for(std::chrono::microseconds(20));
          }
        }) {}
  ~SignalStorm() {
    stop_.store(true);
    sender_.join();
  }
  long sent() const { return sent_.load(); }

 private:
  std::atomic<bool> stop_{false};
  std::atomic<long> sent_{0};
  std::thread sender_;
};

struct Batch {
  std::vector<float> inputs;
  std::vector<std::int32_t> labels;
};

Batch make_batch(std::size_t rows) {
  Batch b{kortex_test::normal_floats(rows * 784, 11), std::vector<std::int32_t>(rows)};
  for (std::size_t i = 0; i < rows; ++i) b.labels[i] = static_cast<std::int32_t>(i % 10);
  return b;
}

// Trains a fresh 784-256-128-10 network for `steps` steps and returns its
// parameters followed by its outputs on the batch.
std::vector<float> train_and_answer(const Batch& b, std::size_t rows, int steps) {
  NetworkConfig config;
  config.seed = 5;
  Network net({784, 256, 128, 10}, config);
  for (int s = 0; s < steps; ++s) {
    net.train_batch(b.inputs, kortexdl::Targets(b.labels), LossType::CrossEntropy, 0.01f, rows);
  }
  std::vector<float> result = net.parameters();
  const std::vector<float> outputs = net.forward_batch(b.inputs, rows);
  result.insert(result.end(), outputs.begin(), outputs.end());
  return result;
}

// Runs job on a new thread (which has no alternate signal stack of its
// own), optionally under a storm of SIGUSR1 aimed at that thread.
std::vector<float> on_fresh_thread(bool storm, const std::function<std::vector<float>()>& job, long* sent) {
  std::vector<float> result;
  std::thread worker([&] {
    if (!storm) {
      result = job();
      return;
    }
    SignalStorm signals(pthread_self());
    result = job();
    *sent = signals.sent();
  });
  worker.join();
  return result;
}

bool blocked_here(int signal) {
  sigset_t current;
  pthread_sigmask(SIG_BLOCK, nullptr, &current);
  return sigismember(&current, signal) == 1;
}

TEST(SignalSafety, ComputingThreadsGetAnAlternateSignalStack) {
  Network net({8, 4, 2});
  const std::vector<float> x(8, 0.5f);
  std::thread worker([&] {
    stack_t before{};
    ASSERT_EQ(sigaltstack(nullptr, &before), 0);
    if ((before.ss_flags & SS_DISABLE) == 0) {
      // AddressSanitizer's runtime gives every thread one: it must be kept.
      net.forward(x, 1);
      stack_t after{};
      ASSERT_EQ(sigaltstack(nullptr, &after), 0);
      EXPECT_EQ(after.ss_sp, before.ss_sp);
      return;
    }
    net.forward(x, 1);
    stack_t after{};
    ASSERT_EQ(sigaltstack(nullptr, &after), 0);
    EXPECT_EQ(after.ss_flags & SS_DISABLE, 0) << "no alternate signal stack after a compute call";
    EXPECT_EQ(after.ss_size, kortexdl::detail::alternate_signal_stack_bytes());
    EXPECT_GE(after.ss_size, 64u * 1024u);
  });
  worker.join();
}

TEST(SignalSafety, AnApplicationsOwnAlternateStackIsKept) {
  Network net({8, 4, 2});
  const std::vector<float> x(8, 0.5f);
  std::thread worker([&] {
    std::vector<char> own(128 * 1024);
    stack_t mine{};
    mine.ss_sp = own.data();
    mine.ss_size = own.size();
    ASSERT_EQ(sigaltstack(&mine, nullptr), 0);
    net.forward(x, 1);
    stack_t after{};
    ASSERT_EQ(sigaltstack(nullptr, &after), 0);
    EXPECT_EQ(after.ss_sp, own.data());
    EXPECT_EQ(after.ss_size, own.size());
    stack_t off{};
    off.ss_flags = SS_DISABLE;
    ASSERT_EQ(sigaltstack(&off, nullptr), 0);  // before `own` goes away
  });
  worker.join();
}

// Single-threaded calls: the thread itself runs oneDNN's kernels, and
// handlers installed with SA_ONSTACK (as Python's are) run on the stack the
// library gave it. Without it this test aborted in glibc within a second.
TEST(SignalSafety, OnStackHandlersDuringSingleThreadedTrainingChangeNothing) {
  ThreadBudget one(1);
  const std::size_t rows = 32;
  const Batch b = make_batch(rows);
  const auto job = [&] { return train_and_answer(b, rows, 100); };
  long unused = 0;
  const std::vector<float> quiet = on_fresh_thread(false, job, &unused);
  CountingHandler handler(/*on_alternate_stack=*/true);
  // How many signals land inside the calls depends on how busy the machine
  // is; rounds go on until enough have (one round usually suffices).
  const long handled_before = handled.load();
  long sent = 0;
  for (int round = 0; round < 60 && handled.load() - handled_before < 1000; ++round) {
    long sent_now = 0;
    const std::vector<float> stormy = on_fresh_thread(true, job, &sent_now);
    sent += sent_now;
    ASSERT_TRUE(BitwiseEqual(stormy, quiet)) << "round " << round;
  }
  EXPECT_GE(handled.load() - handled_before, 1000)
      << "too few signals reached the computing thread (sent " << sent << "): the test would prove nothing";
}

// Multi-threaded calls hold asynchronous signals back until they return,
// so even a handler without SA_ONSTACK never runs inside a kernel.
TEST(SignalSafety, HandlersWaitForMultiThreadedCalls) {
  ThreadBudget two(2);
  const std::size_t rows = 256;
  const Batch b = make_batch(rows);
  const std::vector<float> quiet = train_and_answer(b, rows, 20);
  ASSERT_TRUE(kortexdl::detail::owns_intra_op_team()) << "the main thread's calls did not run multi-threaded";
  CountingHandler handler(/*on_alternate_stack=*/false);
  const long handled_before = handled.load();
  std::vector<float> stormy;
  {
    SignalStorm signals(pthread_self());
    stormy = train_and_answer(b, rows, 20);
  }
  EXPECT_TRUE(BitwiseEqual(stormy, quiet));
  EXPECT_GT(handled.load(), handled_before) << "held signals must still be delivered when the calls return";
  EXPECT_FALSE(blocked_here(SIGUSR1)) << "the mask was not restored";
}

TEST(SignalSafety, OnlyMultiThreadedScopesHoldSignals) {
  ThreadBudget two(2);
  using kortexdl::detail::ComputeScope;
  {
    ComputeScope small(1.0);
    EXPECT_EQ(small.threads(), 1u);
    EXPECT_FALSE(blocked_here(SIGINT)) << "a single-threaded call paid for masking signals";
  }
  {
    ComputeScope big(1e12);
    ASSERT_EQ(big.threads(), 2u);
    EXPECT_TRUE(blocked_here(SIGINT));
    EXPECT_TRUE(blocked_here(SIGTERM));
    EXPECT_FALSE(blocked_here(SIGSEGV)) << "a fault signal cannot wait";
    EXPECT_FALSE(blocked_here(SIGFPE));
  }
  EXPECT_FALSE(blocked_here(SIGINT));
}

// Pool threads are started inside a multi-threaded call and keep its mask:
// a process-directed signal never lands on a thread inside a kernel.
TEST(SignalSafety, PoolThreadsNeverTakeAsynchronousSignals) {
  ThreadBudget two(2);
  std::vector<int> blocked(2, -1);
  {
    kortexdl::detail::ComputeScope big(1e12);
    ASSERT_EQ(big.threads(), 2u);
#pragma omp parallel num_threads(2)
    blocked[static_cast<std::size_t>(omp_get_thread_num())] = blocked_here(SIGINT) ? 1 : 0;
  }
  EXPECT_EQ(blocked[1], 1) << "a pool thread started in a multi-threaded call takes signals";
  // The same pool, later, from a region the library did not open.
  std::vector<int> later(2, -1);
#pragma omp parallel num_threads(2)
  later[static_cast<std::size_t>(omp_get_thread_num())] = blocked_here(SIGINT) ? 1 : 0;
  EXPECT_EQ(later[0], 0) << "the caller's own mask was not restored";
  EXPECT_EQ(later[1], 1) << "a pool thread's mask changed after the call";
}

TEST(SignalSafety, NumaNodeWorkersNeverTakeAsynchronousSignals) {
  const kortexdl::NumaTopology topology = kortexdl::numa_topology(2);
  ASSERT_EQ(topology.nodes.size(), 2u);
  kortexdl::detail::NodeWorkers workers(topology, {1, 1});
  std::vector<int> blocked(2, -1);
  workers.run([&](std::size_t k) { blocked[k] = blocked_here(SIGINT) ? 1 : 0; });
  EXPECT_EQ(blocked, (std::vector<int>{1, 1}));
  EXPECT_FALSE(blocked_here(SIGINT));
}

}  // namespace
