#pragma once
// A count that threads change on every call and that is read far less often:
// each thread counts in a shard (a cache line) of its own and a read sums the
// shards. One shared counter costs every change a cache miss once another
// core has written it: two threads making 100-50-10 forward calls at batch
// 1, a network each, ran at 0.79 of one thread's rate each with the
// calls-in-flight count on one line of its own, 0.99 with it sharded
// (docs/CONCURRENCY.md, "Per-call shared writes").
//
// A thread always uses the same shard, so each shard is the count of its
// threads' calls and never goes below zero; threads beyond kCountShards share
// shards, which costs only contention.
#include <array>
#include <atomic>
#include <cstddef>

#include "parallel/cache_line.hpp"

namespace kortexdl::detail {

inline constexpr std::size_t kCountShards = 16;

// The calling thread's shard: threads take them in turn as they first count.
std::size_t this_threads_shard() noexcept;

class ShardedCount {
 public:
  void increment(std::memory_order order = std::memory_order_relaxed) noexcept {
    shards_[this_threads_shard()].value.fetch_add(1, order);
  }
  void decrement(std::memory_order order = std::memory_order_relaxed) noexcept {
    shards_[this_threads_shard()].value.fetch_sub(1, order);
  }
  std::size_t shard(std::size_t i, std::memory_order order = std::memory_order_relaxed) const noexcept {
    return shards_[i].value.load(order);
  }
  // Not a snapshot: the shards are read one after another.
  std::size_t sum(std::memory_order order = std::memory_order_relaxed) const noexcept {
    std::size_t total = 0;
    for (std::size_t i = 0; i < kCountShards; ++i) total += shard(i, order);
    return total;
  }
  // Every shard to zero; for a forked child, where the threads that counted
  // in other shards do not exist.
  void reset() noexcept {
    for (auto& s : shards_) s.value.store(0, std::memory_order_relaxed);
  }

 private:
  std::array<OwnCacheLine<std::atomic<std::size_t>>, kCountShards> shards_{};
};

}  // namespace kortexdl::detail
