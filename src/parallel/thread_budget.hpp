#pragma once
// Shares the process-wide intra-op thread budget between concurrent calls.
#include <chrono>
#include <cstddef>
#include <optional>

#include "parallel/signal_safety.hpp"

namespace kortexdl::detail {

// Below this much work a parallel region costs more than it saves.
inline constexpr double kMinFlopsPerExtraThread = 4.0e6;

// Sets the calling thread's OpenMP team size for the regions it opens, for
// the object's lifetime (OpenMP's thread count is a per-thread setting), and
// holds asynchronous signals back while that is more than one thread
// (signal_safety.hpp: pool threads libgomp starts meanwhile inherit the
// mask and never run a handler).
class TeamScope {
 public:
  explicit TeamScope(std::size_t threads);
  ~TeamScope();
  TeamScope(const TeamScope&) = delete;
  TeamScope& operator=(const TeamScope&) = delete;
  std::size_t threads() const { return threads_; }

 private:
  std::size_t threads_;
  int previous_;
  std::optional<AsynchronousSignalsBlocked> signals_held_;
};

// The intra-op team's owner opens no team for this long after another
// thread started a call that computes: threads calling in turn are often
// between two calls at the moment the owner starts one, and a team opened
// then shares the CPUs with their next calls (thread_budget.cpp).
inline constexpr std::chrono::microseconds kTeamQuietWindow{1000};

// Whether a call computes on its own thread for sure, or may instead wait
// while another thread runs its work (a training step that may be
// combined): such a call tells the team owner only once it knows
// (note_computing_call).
enum class CallComputes { here, maybe };

// RAII for one compute call: counts the call as in flight, gives the calling
// thread's regions its share of the budget (TeamScope) and the thread an
// alternate signal stack (signal_safety.hpp).
class ComputeScope {
 public:
  // flops: an estimate of the call's work; small calls run on one thread.
  explicit ComputeScope(double flops, CallComputes computes = CallComputes::here);
  ~ComputeScope();
  ComputeScope(const ComputeScope&) = delete;
  ComputeScope& operator=(const ComputeScope&) = delete;
  std::size_t threads() const { return team_->threads(); }

 private:
  std::optional<TeamScope> team_;
};

// A call in flight that waits while another thread runs its work (a queued
// training step, parallel/step_combiner.hpp) does not use a core, so for the
// object's lifetime it is not counted among the calls that share the budget.
class ParkedCall {
 public:
  ParkedCall();
  ~ParkedCall();
  ParkedCall(const ParkedCall&) = delete;
  ParkedCall& operator=(const ParkedCall&) = delete;
};

// Records, for kortexdl::last_call_joined_a_batch(), that the calling
// thread's current call went through the line of one-row forward calls
// (forward_batcher.hpp). Every ComputeScope clears it.
void note_joined_a_batch();

// Tells the intra-op team's owner that this thread computes now (nothing if
// it is the owner): the owner keeps to one thread for kTeamQuietWindow.
void note_computing_call();

// Threads the caller may use for a region of `flops` work right now: its
// share of the budget among the calls in flight that are not parked.
std::size_t share_for(double flops);
// share_for, less the CPUs other processes keep busy (machine_load.hpp)
// unless the user chose the thread count, and limited to one thread unless
// this thread owns (or may now take) the intra-op team and no other thread
// started a computing call within kTeamQuietWindow.
std::size_t team_size_for(double flops);

// Whether this thread owns the intra-op team (see thread_budget.cpp: one
// thread at a time opens OpenMP teams), and giving it up while the thread
// lives (tests; a thread that stops computing for good).
bool owns_intra_op_team();
void release_intra_op_team();
// Whether the fork handler that keeps forked children from hanging in
// libgomp is installed (it is registered when the library loads).
bool fork_handler_installed();

}  // namespace kortexdl::detail
