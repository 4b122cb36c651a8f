#pragma once
// Keeps signal handlers from writing into heap memory while oneDNN's GEMM
// runs (docs/CONCURRENCY.md, "Signals").
//
// oneDNN's JIT GEMM kernels (jit_avx512_common_gemm_f32 and its AVX2
// sibling, up to oneDNN 3.11) point the stack pointer at a heap buffer while
// they run. A signal handled on that thread's ordinary stack has its frame
// (about 3 KiB with AVX-512 state) written below that pointer, into the heap:
// glibc later aborts ("corrupted size vs. prev_size") or a result is wrong.
// A Ctrl-C during training did exactly that to the kortexdl command line.
//
// Two defences, chosen by what they cost per call:
//  * every thread that computes gets an alternate signal stack, so handlers
//    installed with SA_ONSTACK (Python's signal module sets it for all of
//    its handlers) never run on the kernel's stack: one thread-local check
//    per call;
//  * threads that only ever compute (OpenMP pool threads, NUMA node
//    workers) block asynchronous signals for good, and a calling thread
//    blocks them for the duration of a multi-threaded call (350 ns per call,
//    on calls of 4 MFLOP and more), during which its pool threads are
//    created and inherit the mask. Blocked signals stay pending for, or go
//    to, a thread that is not computing.
#include <signal.h>

#include <cstddef>

namespace kortexdl::detail {

// Gives the calling thread an alternate signal stack unless it has one
// (Python's faulthandler, an application's own); freed when the thread
// exits. Cheap after the first call on a thread.
void ensure_alternate_signal_stack();

// The size of the stacks ensure_alternate_signal_stack installs.
std::size_t alternate_signal_stack_bytes();

// The signals a computing thread holds back: all but those the CPU raises
// on the faulting instruction itself (SIGSEGV, SIGBUS, SIGFPE, SIGILL,
// SIGTRAP, SIGSYS), which cannot wait, and SIGABRT, which abort() raises.
const sigset_t& asynchronous_signals();

// Blocks asynchronous_signals() on the calling thread for the lifetime of
// the object, then restores the previous mask.
class AsynchronousSignalsBlocked {
 public:
  AsynchronousSignalsBlocked();
  ~AsynchronousSignalsBlocked();
  AsynchronousSignalsBlocked(const AsynchronousSignalsBlocked&) = delete;
  AsynchronousSignalsBlocked& operator=(const AsynchronousSignalsBlocked&) = delete;

 private:
  sigset_t previous_;
};

// For threads that only compute: blocks asynchronous_signals() for the rest
// of the thread's life.
void block_asynchronous_signals_for_good();

}  // namespace kortexdl::detail
