#include "backend/fork_gate.hpp"

#include <pthread.h>
#include <sched.h>

#include <array>
#include <atomic>
#include <cstdint>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace kortexdl::backend {
namespace {

constexpr std::size_t kSlots = 64;

struct alignas(64) Slot {
  std::atomic<std::uint32_t> inside{0};
};

std::array<Slot, kSlots> slots;
std::atomic<bool> forking{false};
std::atomic<std::size_t> next_slot{0};

std::size_t this_threads_slot() {
  thread_local const std::size_t slot = next_slot.fetch_add(1, std::memory_order_relaxed) % kSlots;
  return slot;
}

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
  for (Slot& slot : slots) {
    for (unsigned round = 0; slot.inside.load(std::memory_order_seq_cst) != 0; ++round) relax(round);
  }
}

void after_fork_in_parent() { forking.store(false, std::memory_order_seq_cst); }

// Only the forking thread lives on in the child: counts that other threads
// held for a moment at the fork (counted in, saw the flag, not yet out)
// would never go back to zero.
void after_fork_in_child() {
  for (Slot& slot : slots) slot.inside.store(0, std::memory_order_relaxed);
  forking.store(false, std::memory_order_seq_cst);
}

const bool fork_handler_registered = pthread_atfork(before_fork, after_fork_in_parent, after_fork_in_child) == 0;

}  // namespace

LibraryCall::LibraryCall() : slot_(this_threads_slot()) {
  std::atomic<std::uint32_t>& inside = slots[slot_].inside;
  for (;;) {
    inside.fetch_add(1, std::memory_order_seq_cst);
    if (!forking.load(std::memory_order_seq_cst)) return;
    inside.fetch_sub(1, std::memory_order_seq_cst);
    for (unsigned round = 0; forking.load(std::memory_order_seq_cst); ++round) relax(round);
  }
}

LibraryCall::~LibraryCall() { slots[slot_].inside.fetch_sub(1, std::memory_order_release); }

bool library_fork_gate_installed() { return fork_handler_registered; }

std::size_t library_calls_inside() {
  std::size_t total = 0;
  for (const Slot& slot : slots) total += slot.inside.load(std::memory_order_relaxed);
  return total;
}

}  // namespace kortexdl::backend
