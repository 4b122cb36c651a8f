#include "parallel/sharded_count.hpp"

namespace kortexdl::detail {

std::size_t this_threads_shard() noexcept {
  static std::atomic<std::size_t> next{0};
  thread_local const std::size_t shard = next.fetch_add(1, std::memory_order_relaxed) % kCountShards;
  return shard;
}

}  // namespace kortexdl::detail
