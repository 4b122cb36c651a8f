// The per-thread scratch arena (src/workspace.hpp): leases nest in stack
// order and are 64-byte aligned, the arena stops growing after warm-up so
// compute calls do not allocate in steady state, and every thread has its
// own arena.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdint>
#include <thread>
#include <vector>

#include "alloc_counter.hpp"
#include "kortexdl/kortexdl.hpp"
#include "test_support.hpp"
#include "workspace.hpp"  // internal

namespace {

using kortexdl::Activation;
using kortexdl::LossType;
using kortexdl::Network;
using kortexdl::NetworkConfig;
using kortexdl::detail::Workspace;

bool aligned64(const float* p) { return reinterpret_cast<std::uintptr_t>(p) % 64 == 0; }

bool disjoint(const float* a, std::size_t na, const float* b, std::size_t nb) {
  return a + na <= b || b + nb <= a;
}

TEST(Workspace, PaddingIsToWholeCacheLines) {
  EXPECT_EQ(Workspace::padded_floats(0), 0u);
  EXPECT_EQ(Workspace::padded_floats(1), 16u);
  EXPECT_EQ(Workspace::padded_floats(16), 16u);
  EXPECT_EQ(Workspace::padded_floats(17), 32u);
}

TEST(Workspace, LeasesAreAlignedAndNestInStackOrder) {
  Workspace& ws = Workspace::local();
  const float* b_data = nullptr;
  {
    auto a = ws.acquire(100);
    EXPECT_EQ(a.size(), 112u) << "rounded up to whole cache lines";
    EXPECT_TRUE(aligned64(a.data()));
    float* a1 = a.take(10);
    float* a2 = a.take(20);
    EXPECT_EQ(a1, a.data());
    EXPECT_EQ(a2, a1 + 16) << "sub-buffers are consecutive and padded";
    EXPECT_TRUE(aligned64(a2));
    EXPECT_THROW(a.take(65), kortexdl::InternalError) << "64 floats are left, 65 pad to 80";
    float* a3 = a.take(64);
    EXPECT_EQ(a3, a2 + 32);
    for (std::size_t i = 0; i < a.size(); ++i) a.data()[i] = 1.0f;
    {
      auto b = ws.acquire(50);
      b_data = b.data();
      EXPECT_TRUE(aligned64(b.data()));
      EXPECT_GE(b.size(), 50u);
      EXPECT_TRUE(disjoint(a.data(), a.size(), b.data(), b.size())) << "a nested lease overlaps its parent";
      for (std::size_t i = 0; i < b.size(); ++i) b.data()[i] = 2.0f;
      {
        auto c = ws.acquire(5000);  // may need a new block: still disjoint and aligned
        EXPECT_TRUE(aligned64(c.data()));
        EXPECT_TRUE(disjoint(a.data(), a.size(), c.data(), c.size()));
        EXPECT_TRUE(disjoint(b.data(), b.size(), c.data(), c.size()));
        for (std::size_t i = 0; i < c.size(); ++i) c.data()[i] = 3.0f;
      }
      for (std::size_t i = 0; i < b.size(); ++i) ASSERT_EQ(b.data()[i], 2.0f) << "b overwritten at " << i;
    }
    for (std::size_t i = 0; i < a.size(); ++i) ASSERT_EQ(a.data()[i], 1.0f) << "a overwritten at " << i;
    auto d = ws.acquire(50);  // b and c were returned; d must still not overlap a
    EXPECT_TRUE(aligned64(d.data()));
    EXPECT_TRUE(disjoint(a.data(), a.size(), d.data(), d.size()));
  }
  // With nothing leased the arena coalesces into one block big enough for
  // the above, so nested leases now share a block and a returned lease's
  // space is handed out again, stack-wise.
  {
    auto x = ws.acquire(100);
    const float* y_data = nullptr;
    {
      auto y = ws.acquire(50);
      y_data = y.data();
      EXPECT_EQ(y_data, x.data() + x.size()) << "nested lease not directly above its parent";
    }
    auto z = ws.acquire(50);
    EXPECT_EQ(z.data(), y_data);
    EXPECT_NE(b_data, nullptr);
  }
  // A moved lease is returned once, by its new owner.
  const float* first = nullptr;
  {
    auto e = ws.acquire(10);
    first = e.data();
    auto f = std::move(e);
    EXPECT_EQ(f.data(), first);
  }
  auto g = ws.acquire(10);
  EXPECT_EQ(g.data(), first) << "after all leases are returned the arena starts from its beginning";
}

TEST(Workspace, OversizedRequestIsRefusedWithoutAllocating) {
  Workspace& ws = Workspace::local();
  const std::size_t allocations = ws.allocation_count();
  try {
    (void)ws.acquire(std::size_t{1} << 33);
    ADD_FAILURE() << "acquire(2^33 floats) succeeded";
  } catch (const kortexdl::ResourceLimitError& e) {
    EXPECT_NE(std::string(e.what()).find("batch_size"), std::string::npos) << e.what();
  }
  EXPECT_EQ(ws.allocation_count(), allocations);
}

TEST(Workspace, HugeBatchIsRefusedBeforeAllocatingScratch) {
  // 2^21 rows through a 4096-wide hidden layer needs 2 x 2^33 floats of
  // scratch: over the limit, refused before anything is allocated.
  NetworkConfig config;
  config.seed = 1;
  const Network net({4, 4096, 1}, config);
  const std::size_t rows = std::size_t{1} << 21;
  const std::vector<float> x(rows * 4, 0.5f);
  std::vector<float> out(rows);
  const std::size_t allocations = Workspace::local().allocation_count();
  try {
    net.forward(x, rows, out);
    ADD_FAILURE() << "forward with 2^21 rows succeeded";
  } catch (const kortexdl::ResourceLimitError& e) {
    EXPECT_NE(std::string(e.what()).find("smaller batch_size"), std::string::npos) << e.what();
  }
  EXPECT_EQ(Workspace::local().allocation_count(), allocations);
  EXPECT_EQ(kortexdl::calls_in_flight(), 0u);
  // The network is not left locked or marked busy.
  net.forward(std::span<const float>(x.data(), 8), 2, std::span<float>(out.data(), 2));
}

TEST(Workspace, SteadyStateComputeDoesNotAllocate) {
  NetworkConfig config;
  config.hidden_activation = Activation::GELU;  // GELU keeps pre-activations: the largest scratch
  config.output_activation = Activation::Softmax;
  config.optimizer = kortexdl::OptimizerConfig::adam();
  config.seed = 2;
  Network net({32, 64, 48, 10}, config);
  constexpr std::size_t batch = 64;
  const std::vector<float> x = kortex_test::normal_floats(batch * 32, 3);
  std::vector<std::int32_t> labels(batch);
  for (std::size_t i = 0; i < batch; ++i) labels[i] = static_cast<std::int32_t>(i % 10);
  std::vector<float> out(batch * 10);

  auto round = [&] {
    net.forward(x, batch, out);
    net.forward_batch(x, 24, out);
    (void)net.evaluate(x, labels, LossType::CrossEntropy, 20);
    (void)net.evaluate(x, labels, LossType::CrossEntropy);
    (void)net.train_batch(x, labels, LossType::CrossEntropy, 1e-3f, batch);
    (void)net.train_batch(std::span<const float>(x.data(), 16 * 32), std::span<const std::int32_t>(labels.data(), 16),
                          LossType::CrossEntropy, 1e-3f, 16);
  };
  for (int i = 0; i < 3; ++i) round();  // warm-up: the arena grows to the largest request

  Workspace& ws = Workspace::local();
  const std::size_t allocations = ws.allocation_count();
  const std::size_t capacity = ws.capacity();
  const auto heap_before = kortex_test::thread_allocations();
  for (int i = 0; i < 10; ++i) round();
  const auto heap_after = kortex_test::thread_allocations();
  EXPECT_EQ(ws.allocation_count(), allocations) << "the workspace allocated after warm-up";
  EXPECT_EQ(ws.capacity(), capacity);
  EXPECT_GT(capacity, 0u);
  if (kortex_test::allocation_counting_available()) {
    // Nothing else on this thread allocates either (span overloads only).
    EXPECT_EQ(heap_after.calls - heap_before.calls, 0u)
        << (heap_after.bytes - heap_before.bytes) << " bytes in steady state";
  }
}

TEST(Workspace, EachThreadHasItsOwnArena) {
  constexpr int kThreads = 2;
  const Workspace* arenas[kThreads] = {};
  const float* buffers[kThreads] = {};
  std::size_t sizes[kThreads] = {};
  kortex_test::TimedLatch both_hold_a_lease(kThreads);
  std::atomic<bool> timed_out{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      Workspace& ws = Workspace::local();
      auto lease = ws.acquire(1000);
      for (std::size_t i = 0; i < lease.size(); ++i) lease.data()[i] = static_cast<float>(t);
      arenas[t] = &ws;
      buffers[t] = lease.data();
      sizes[t] = lease.size();
      // Both leases are alive at once here.
      if (!both_hold_a_lease.arrive_and_wait()) timed_out = true;
      for (std::size_t i = 0; i < lease.size(); ++i) {
        if (lease.data()[i] != static_cast<float>(t)) timed_out = true;  // reported below
      }
    });
  }
  for (auto& th : threads) th.join();
  ASSERT_FALSE(timed_out) << "latch timed out or a lease was overwritten by the other thread";
  EXPECT_NE(arenas[0], arenas[1]);
  EXPECT_NE(arenas[0], &Workspace::local());
  EXPECT_TRUE(disjoint(buffers[0], sizes[0], buffers[1], sizes[1]));
}

}  // namespace
