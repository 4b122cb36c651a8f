#include "parallel/signal_safety.hpp"

#include <pthread.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>

namespace kortexdl::detail {

namespace {

std::size_t page_bytes() {
  static const std::size_t bytes = static_cast<std::size_t>(std::max(4096L, sysconf(_SC_PAGESIZE)));
  return bytes;
}

// Room for the kernel's frame (the AVX-512 state alone is about 2.7 KiB)
// and a handler that calls a few functions; Python's C handler needs little.
std::size_t stack_bytes() {
  static const std::size_t bytes = [] {
    const long minimum = sysconf(_SC_MINSIGSTKSZ);
    const std::size_t scaled = minimum > 0 ? 8 * static_cast<std::size_t>(minimum) : 0;
    const std::size_t wanted = std::max<std::size_t>(64 * 1024, scaled);
    return (wanted + page_bytes() - 1) / page_bytes() * page_bytes();
  }();
  return bytes;
}

// One per thread. The mapping has an inaccessible page below the stack, so
// a handler that overflows it faults instead of writing over other memory.
class AlternateStack {
 public:
  void ensure() {
    if (checked_) return;
    checked_ = true;
    stack_t current{};
    if (sigaltstack(nullptr, &current) != 0 || (current.ss_flags & SS_DISABLE) == 0) return;  // has one
    const std::size_t mapped = stack_bytes() + page_bytes();
    void* base = mmap(nullptr, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (base == MAP_FAILED) return;  // no memory for it: the thread computes as before
    if (mprotect(base, page_bytes(), PROT_NONE) != 0) {
      munmap(base, mapped);
      return;
    }
    stack_t stack{};
    stack.ss_sp = static_cast<char*>(base) + page_bytes();
    stack.ss_size = stack_bytes();
    stack.ss_flags = 0;
    if (sigaltstack(&stack, nullptr) != 0) {
      munmap(base, mapped);
      return;
    }
    base_ = base;
    mapped_ = mapped;
  }

  ~AlternateStack() {
    if (base_ == nullptr) return;
    // Only unmapped once the kernel no longer delivers onto it; if someone
    // replaced it in the meantime, theirs stays.
    stack_t current{};
    if (sigaltstack(nullptr, &current) != 0) return;
    if (current.ss_sp == static_cast<char*>(base_) + page_bytes()) {
      stack_t off{};
      off.ss_flags = SS_DISABLE;
      if (sigaltstack(&off, nullptr) != 0) return;  // on it right now: leaking beats a crash
    }
    munmap(base_, mapped_);
  }

 private:
  bool checked_ = false;
  void* base_ = nullptr;
  std::size_t mapped_ = 0;
};

thread_local AlternateStack this_thread_stack;

sigset_t make_asynchronous_signals() {
  sigset_t set;
  sigfillset(&set);
  for (const int synchronous : {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGSYS, SIGABRT}) {
    sigdelset(&set, synchronous);
  }
  return set;
}

}  // namespace

void ensure_alternate_signal_stack() { this_thread_stack.ensure(); }

std::size_t alternate_signal_stack_bytes() { return stack_bytes(); }

const sigset_t& asynchronous_signals() {
  static const sigset_t set = make_asynchronous_signals();
  return set;
}

AsynchronousSignalsBlocked::AsynchronousSignalsBlocked() {
  pthread_sigmask(SIG_BLOCK, &asynchronous_signals(), &previous_);
}

AsynchronousSignalsBlocked::~AsynchronousSignalsBlocked() { pthread_sigmask(SIG_SETMASK, &previous_, nullptr); }

void block_asynchronous_signals_for_good() { pthread_sigmask(SIG_BLOCK, &asynchronous_signals(), nullptr); }

}  // namespace kortexdl::detail
