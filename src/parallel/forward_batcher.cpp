#include "parallel/forward_batcher.hpp"

#include <algorithm>

#include "engine.hpp"
#include "kortexdl/threading.hpp"
#include "parallel/access_guard.hpp"
#include "parallel/affinity.hpp"
#include "parallel/thread_budget.hpp"
#include "workspace.hpp"

namespace kortexdl::detail {

ForwardBatcher::ForwardBatcher(std::size_t leaders) : max_leaders_(std::max<std::size_t>(1, leaders)) {}

bool ForwardBatcher::takes(double work) const {
  // calls_in_flight() does not count this call yet. A call made from inside
  // another (an update observer's) computes alone: its thread holds a
  // network's lock, which a leader might need.
  return work >= kMinWork && !stopped_.load(std::memory_order_relaxed) && calls_in_flight() >= allowed_cpu_count() &&
         !this_thread_holds_a_network() && rows_compute_as_alone();
}

ForwardBatcher::Request* ForwardBatcher::pop() {
  Request* request = head_;
  head_ = request->next;
  if (head_ == nullptr) tail_ = nullptr;
  return request;
}

void ForwardBatcher::submit(Request& own, const Batch& batch) {
  bool leads = false;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (leaders_ < max_leaders_) {
      ++leaders_;
      leads = true;
    } else {
      (tail_ != nullptr ? tail_->next : head_) = &own;
      tail_ = &own;
    }
  }
  if (!leads) {
    // Calls fill the CPUs here, so the waiter sleeps rather than take a core
    // from a leader.
    if (own.state.wait_while(kQueued) == kDone) return;
  }
  lead(own, batch);  // its own row first
}

void ForwardBatcher::lead(Request& own, const Batch& batch) {
  bool own_done = false;
  std::size_t after_own = 0;
  for (;;) {
    Request* requests[kMaxRows];
    std::size_t count = 0;
    Request* successor = nullptr;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!own_done) {
        requests[count++] = &own;
      } else if (head_ == nullptr) {
        --leaders_;
        return;
      } else if (after_own >= kBatchesAfterOwn) {
        successor = pop();  // leads from here, starting with its own row
      }
      if (successor == nullptr) {
        while (count < kMaxRows && head_ != nullptr) requests[count++] = pop();
      }
    }
    if (successor != nullptr) {
      successor->state.set(kLead);
      return;
    }
    compute(requests, count, batch);
    for (std::size_t i = 0; i < count; ++i) {
      if (requests[i] != &own) requests[i]->state.set(kDone);
    }
    if (own_done) ++after_own;
    own_done = true;
  }
}

void ForwardBatcher::compute(Request* const* requests, std::size_t count, const Batch& batch) {
  try {
    if (count == 1) {
      batch.compute(batch.context, requests[0]->input, 1, requests[0]->output, &requests[0]->last_activation);
      return;
    }
    // From the leader's workspace, which compute's own scratch nests in.
    const std::size_t input_floats = count * batch.inputs;
    const std::size_t output_floats = count * batch.outputs;
    auto lease = Workspace::local().acquire(Workspace::padded_floats(input_floats) +
                                            Workspace::padded_floats(output_floats));
    float* inputs = lease.take(input_floats);
    float* outputs = lease.take(output_floats);
    Activation last_activations[kMaxRows];
    for (std::size_t i = 0; i < count; ++i) {
      std::copy_n(requests[i]->input, batch.inputs, inputs + i * batch.inputs);
      last_activations[i] = requests[i]->last_activation;
    }
    batch.compute(batch.context, inputs, count, outputs, last_activations);
    for (std::size_t i = 0; i < count; ++i) {
      std::copy_n(outputs + i * batch.outputs, batch.outputs, requests[i]->output);
    }
    rows_batched_.fetch_add(count, std::memory_order_relaxed);
  } catch (...) {
    const std::exception_ptr error = std::current_exception();
    for (std::size_t i = 0; i < count; ++i) requests[i]->error = error;
  }
}

}  // namespace kortexdl::detail
