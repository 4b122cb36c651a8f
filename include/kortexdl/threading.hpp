#pragma once
// The intra-op thread budget shared by every call in the process. One caller
// gets the whole budget; K concurrent callers get about budget/K threads each,
// so many application threads never oversubscribe the cores.
//
// Signals: install your handlers with SA_ONSTACK. Computing threads get an
// alternate signal stack, and a handler that runs on the interrupted stack
// inside oneDNN's GEMM kernel would write into heap memory (multi-threaded
// calls hold signals back, single-threaded calls do not; docs/CONCURRENCY.md,
// "Signals").
#include <cstddef>

namespace kortexdl {

// Total threads all concurrent calls share. Starts from KORTEX_NUM_THREADS,
// else OMP_NUM_THREADS, else the CPUs this process may run on. n == 0 restores
// that default. Throws InvalidArgumentError for n > 4096.
void set_num_threads(std::size_t n);
std::size_t get_num_threads();

// Calls currently inside the library (for diagnostics and tests).
std::size_t calls_in_flight();

// Whether this thread's latest computing call was a one-row forward or
// evaluate call that went through the line of concurrent one-row calls, to
// be computed in a batch with whatever other rows were queued
// (docs/CONCURRENCY.md, "One-row forward and evaluate calls computed
// together"; the Python bindings return such calls like training steps,
// without a lane).
bool last_call_joined_a_batch();

}  // namespace kortexdl
