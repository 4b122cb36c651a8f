#include "backend/fork_gate.hpp"

#include <pthread.h>
#include <sched.h>

#include <atomic>
#include <cstddef>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include "parallel/sharded_count.hpp"

namespace kortexdl::backend {
namespace {

// Threads inside the library's GEMM, each counting in a shard of its own.
detail::ShardedCount inside;
std::atomic<bool> forking{false};

void relax(unsigned round) {
#if defined(__x86_64__) || defined(__i386__)
  if (round < 64) {
    _mm_pause();
    return;
  }
#endif
  (void)round;
  sched_yield();
}

// The counts and the flag pair up as in Dekker's algorithm (sequentially
// consistent on both sides): a thread that counts itself in and then sees
// no fork is seen by the fork's scan, and a fork that raised the flag is
// seen by every thread that counts itself in after.
void before_fork() {
  forking.store(true, std::memory_order_seq_cst);
  for (std::size_t i = 0; i < detail::kCountShards; ++i) {
    for (unsigned round = 0; inside.shard(i, std::memory_order_seq_cst) != 0; ++round) relax(round);
  }
}

void after_fork_in_parent() { forking.store(false, std::memory_order_seq_cst); }

// Only the forking thread lives on in the child: counts that other threads
// held for a moment at the fork (counted in, saw the flag, not yet out)
// would never go back to zero.
void after_fork_in_child() {
  inside.reset();
  forking.store(false, std::memory_order_seq_cst);
}

const bool fork_handler_registered = pthread_atfork(before_fork, after_fork_in_parent, after_fork_in_child) == 0;

}  // namespace

LibraryCall::LibraryCall() {
  for (;;) {
    inside.increment(std::memory_order_seq_cst);
    if (!forking.load(std::memory_order_seq_cst)) return;
    inside.decrement(std::memory_order_seq_cst);
    for (unsigned round = 0; forking.load(std::memory_order_seq_cst); ++round) relax(round);
  }
}

LibraryCall::~LibraryCall() { inside.decrement(std::memory_order_release); }

bool library_fork_gate_installed() { return fork_handler_registered; }

std::size_t library_calls_inside() { return inside.sum(); }

}  // namespace kortexdl::backend
