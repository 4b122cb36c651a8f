// ShardedCount (src/parallel/sharded_count.hpp): the calls-in-flight count
// and the fork gate's count of threads inside the GEMM.
#include <gtest/gtest.h>

#include <atomic>
#include <cstddef>
#include <latch>
#include <thread>
#include <vector>

#include "parallel/sharded_count.hpp"

namespace {

using kortexdl::detail::kCacheLineBytes;
using kortexdl::detail::kCountShards;
using kortexdl::detail::OwnCacheLine;
using kortexdl::detail::ShardedCount;
using kortexdl::detail::this_threads_shard;

static_assert(sizeof(OwnCacheLine<std::atomic<std::size_t>>) == kCacheLineBytes);
static_assert(alignof(ShardedCount) == kCacheLineBytes);

// More threads than shards, so some share one: each holds i + 1 counts at
// once, the sum sees all of them, and every shard is back at zero after.
TEST(ShardedCount, SumsTheCountsOfEveryThread) {
  constexpr std::size_t kThreads = kCountShards + 8;
  ShardedCount count;
  std::latch counted(kThreads + 1), checked(1);
  std::vector<std::thread> threads;
  for (std::size_t i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] {
      for (std::size_t k = 0; k <= i; ++k) count.increment();
      counted.count_down();
      checked.wait();
      for (std::size_t k = 0; k <= i; ++k) count.decrement();
    });
  }
  counted.arrive_and_wait();
  EXPECT_EQ(count.sum(), kThreads * (kThreads + 1) / 2);
  checked.count_down();
  for (auto& t : threads) t.join();
  EXPECT_EQ(count.sum(), 0u);
  for (std::size_t i = 0; i < kCountShards; ++i) EXPECT_EQ(count.shard(i), 0u) << "shard " << i;
}

// Two threads that count at the same time write different cache lines.
TEST(ShardedCount, ThreadsStartedTogetherCountInDifferentShards) {
  std::size_t first = 0, second = 0;
  std::thread a([&] { first = this_threads_shard(); });
  a.join();
  std::thread b([&] { second = this_threads_shard(); });
  b.join();
  EXPECT_NE(first, second);
  EXPECT_LT(first, kCountShards);
  EXPECT_LT(second, kCountShards);
  EXPECT_EQ(this_threads_shard(), this_threads_shard()) << "a thread keeps its shard";
}

TEST(ShardedCount, ResetZeroesEveryShard) {
  ShardedCount count;
  std::thread([&] { count.increment(); }).join();
  count.increment();
  count.increment();
  EXPECT_EQ(count.sum(), 3u);
  count.reset();
  EXPECT_EQ(count.sum(), 0u);
}

}  // namespace
