#pragma once
// Shares the process-wide intra-op thread budget between concurrent calls.
#include <cstddef>
#include <optional>

#include "parallel/signal_safety.hpp"

namespace kortexdl::detail {

// Below this much work a parallel region costs more than it saves.
inline constexpr double kMinFlopsPerExtraThread = 4.0e6;

// RAII for one compute call: counts the call as in flight and sets the
// calling thread's OpenMP team size to its share of the budget (OpenMP's
// thread count is a per-thread setting, so it is set on every call), then
// restores the previous setting. It also keeps signal handlers off the
// heap while oneDNN's GEMM runs (signal_safety.hpp): the thread gets an
// alternate signal stack, and a multi-threaded call holds asynchronous
// signals back until it returns.
class ComputeScope {
 public:
  // flops: an estimate of the call's work; small calls run on one thread.
  explicit ComputeScope(double flops);
  ~ComputeScope();
  ComputeScope(const ComputeScope&) = delete;
  ComputeScope& operator=(const ComputeScope&) = delete;
  std::size_t threads() const { return threads_; }

 private:
  std::size_t threads_ = 1;
  int previous_ = 1;
  std::optional<AsynchronousSignalsBlocked> signals_held_;
};

// Threads the caller may use for a region of `flops` work right now.
std::size_t share_for(double flops);

// Whether this thread owns the intra-op team (see thread_budget.cpp: one
// thread at a time opens OpenMP teams), and giving it up while the thread
// lives (tests; a thread that stops computing for good).
bool owns_intra_op_team();
void release_intra_op_team();
// Whether the fork handler that keeps forked children from hanging in
// libgomp is installed (it is registered when the library loads).
bool fork_handler_installed();

}  // namespace kortexdl::detail
