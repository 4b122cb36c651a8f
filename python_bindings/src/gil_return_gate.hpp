#pragma once
// Which returning calls may compete for the GIL: a few lanes, kept by the
// threads that use them.
//
// With more threads than CPUs calling short methods, CPython's GIL becomes a
// convoy: every release wakes one of the sleeping waiters (a futex wake and a
// context switch, 5-50 us on a virtual machine), which usually finds the GIL
// taken again and goes back to sleep. Two threads alternating would do the
// same work without sleeping at all.
//
// The gate gives out as many lanes as there are CPUs. A thread returning from
// a short call (under 100 us) keeps its lane while it keeps calling, and
// passes without waiting; a thread without a lane takes a free one, or one
// whose holder has not come back for 200 us, else waits in line (FIFO) with
// the GIL released. A holder whose turn has lasted 5 ms (CPython's switch
// interval) while others wait hands its lane to the first of them, so every
// thread makes progress. Only the first in line wakes up to look for expired
// lanes; the others sleep until a lane is given to them. Training steps take
// no lane (leave_return_gate). The gate never keeps a thread from running
// Python for longer than a turn or a lease, so it cannot deadlock: lanes are
// not locks, only priorities.
//
// Calls can be GIL-bound: shorter than the Python their thread runs between
// two of them (100-50-10 forward at batch 1: about 0.7-1.5 us of compute
// against 1.2-2 us of Python). Two such threads overlap almost nothing, and
// every hand-over of the GIL between CPUs costs more than they overlap: two
// threads made 0.8-0.9x of one thread's calls, sixteen 0.7-0.8x. So the
// threads judged GIL-bound (from running averages of their calls and their
// Python, when they call back to back: under 50 us of Python between calls)
// share one lane among them and take turns on it; other threads keep the
// other lanes, and a lane is handed on (at a turn's end, or when its holder
// leaves) to the first in line that may hold it.
//
// KORTEX_GIL_LANES sets the number of lanes (default: the usable CPUs; 0
// turns the gate off), read once.
#include <cstdint>

namespace kortexdl::python {

// Called with the GIL released, after a call's C++ part (region_ns long);
// held_ns is how long the thread held the GIL since its previous call
// returned (its Python between the two calls), -1 if unknown.
void pass_return_gate(std::int64_t region_ns, std::int64_t held_ns = -1);

// Called instead by a training step on a shared network: gives up the
// caller's lane, if it holds one, and never waits. Concurrent steps are
// combined or gated in C++ (docs/CONCURRENCY.md, "Reads and writes"), which
// works best with every trainer able to submit; keeping all but two of them
// parked here made 100-50-10 training at batch 1 on 4 threads run at 0.69x
// of one thread instead of 0.91x (docs/BENCHMARKS.md).
void leave_return_gate();

std::uint32_t return_gate_lanes() noexcept;

struct ReturnGateCounts {
  std::uint64_t queued = 0;   // returns that waited in line
  std::uint64_t rotated = 0;  // lanes handed to a waiter at the end of a turn
  std::uint64_t expired = 0;  // lanes taken over after their holder stayed away
  std::uint64_t gil_bound = 0;  // returns of calls judged GIL-bound
};
ReturnGateCounts return_gate_counts() noexcept;
void reset_return_gate_counts() noexcept;

}  // namespace kortexdl::python
