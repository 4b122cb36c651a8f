#pragma once
// Concurrent one-row forward and evaluate calls on one network, computed
// together.
//
// A one-row forward product reads every weight once for a handful of
// multiply-adds each: on one core of this machine a 1000-512-256-128-10
// forward took 104 us for one row and 132 us for eight (16.5 us a row).
// Threads serving single requests from one network therefore do far more
// work per request than one batch would. While the calls in flight fill the
// CPUs (a call would wait for a core anyway), a one-row call on a network
// that large joins a line; at most one caller per CPU (a leader) takes up
// to kMaxRows rows from the line at a time and computes them in one pass of
// the row kernels, whose outputs for every row are bit for bit those of the
// row alone on one core (engine.hpp, forward_rows_as_alone): a caller cannot
// tell from its result whether its row was computed with others. With fewer
// calls than CPUs, every call computes on its own core, as before. A leader
// whose own row is done leads at most kBatchesAfterOwn more batches, then
// hands the role to the first caller in line, so its own call returns in
// bounded time. Measured: docs/BENCHMARKS.md, "one-row forward calls
// computed together".
#include <atomic>
#include <cstddef>
#include <exception>
#include <mutex>

#include "kortexdl/activation.hpp"
#include "parallel/hand_over.hpp"
#include "parallel/thread_budget.hpp"

namespace kortexdl::detail {

class ForwardBatcher {
 public:
  static constexpr std::size_t kMaxRows = 16;
  static constexpr std::size_t kBatchesAfterOwn = 4;
  // One-row calls below this much work (Architecture::forward_work, which
  // counts the weights' bytes) compute alone: the line costs its callers a
  // sleep and a wake-up, which a short call's saving does not repay. 16
  // Python threads made 0.93-0.96x the calls of 784-256-128-10 (4.2e6 by
  // this estimate, 8-13 us a call) batched, and 1.17-1.45x of
  // 1000-512-256-128-10 (1.2e7, 90-100 us).
  static constexpr double kMinWork = 8.0e6;

  // leaders: how many callers compute batches at once (one per CPU).
  explicit ForwardBatcher(std::size_t leaders);
  ForwardBatcher(const ForwardBatcher&) = delete;
  ForwardBatcher& operator=(const ForwardBatcher&) = delete;

  // Whether a one-row call of `work` (Architecture::forward_work) joins the
  // line: rows compute as alone on this machine, the calls besides this one
  // fill the CPUs, the call is not made from inside another, and batching
  // is on (off in a forked child).
  bool takes(double work) const;

  // Computes one row (`inputs` floats at input, `outputs` floats to output,
  // its last layer through `last_activation`) with
  // `compute(inputs, rows, outputs, last_activations)` on contiguous rows, on
  // this thread or another caller's, and returns when it is done, rethrowing
  // here what compute threw for the batch that held the row. Rows of
  // forward calls and of evaluations (which may stop at the logits) share
  // batches.
  template <class Compute>
  void run(const float* input, std::size_t inputs, float* output, std::size_t outputs, Activation last_activation,
           Compute& compute) {
    Request request;
    request.input = input;
    request.output = output;
    request.last_activation = last_activation;
    submit(request,
           Batch{[](void* context, const float* in, std::size_t rows, float* out, const Activation* last) {
                   (*static_cast<Compute*>(context))(in, rows, out, last);
                 },
                 &compute, inputs, outputs});
    note_joined_a_batch();
    if (request.error) std::rethrow_exception(request.error);
  }

  // In a forked child: other callers are gone with their threads (and may
  // have left the mutex locked), so later calls compute alone.
  void stop_after_fork() { stopped_.store(true, std::memory_order_relaxed); }

  // Rows computed in batches of two or more, since creation (tests).
  std::size_t rows_batched() const { return rows_batched_.load(std::memory_order_relaxed); }

 private:
  enum : int { kQueued = 0, kDone = 1, kLead = 2 };

  struct Request {
    const float* input = nullptr;
    float* output = nullptr;
    Activation last_activation = Activation::Linear;
    std::exception_ptr error;
    HandOver state{kQueued};
    Request* next = nullptr;
  };

  // The leader's compute, type-erased.
  struct Batch {
    void (*compute)(void*, const float*, std::size_t, float*, const Activation*);
    void* context;
    std::size_t inputs;
    std::size_t outputs;
  };

  void submit(Request& own, const Batch& batch);
  void lead(Request& own, const Batch& batch);
  void compute(Request* const* requests, std::size_t count, const Batch& batch);
  Request* pop();

  const std::size_t max_leaders_;
  std::mutex mutex_;  // guards the line and leaders_
  Request* head_ = nullptr;
  Request* tail_ = nullptr;
  std::size_t leaders_ = 0;
  std::atomic<bool> stopped_{false};
  std::atomic<std::size_t> rows_batched_{0};
};

}  // namespace kortexdl::detail
