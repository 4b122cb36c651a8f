#include "parallel/node_workers.hpp"

#include <omp.h>

#include "parallel/affinity.hpp"
#include "parallel/signal_safety.hpp"

namespace kortexdl::detail {

NodeWorkers::NodeWorkers(const NumaTopology& topology, const std::vector<std::size_t>& threads_per_node)
    : pinned_(topology.nodes.size(), 0), cpus_(topology.nodes.size()) {
  threads_.reserve(topology.nodes.size());
  try {
    for (std::size_t k = 0; k < topology.nodes.size(); ++k) {
      threads_.emplace_back(&NodeWorkers::loop, this, k, topology.nodes[k].cpus, threads_per_node[k]);
    }
    // Wait until every worker has pinned itself before anything is dispatched.
    run([](std::size_t) {});
  } catch (...) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    start_.notify_all();
    for (auto& t : threads_) t.join();
    throw;
  }
}

NodeWorkers::~NodeWorkers() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  start_.notify_all();
  for (auto& t : threads_) t.join();
}

void NodeWorkers::run(const std::function<void(std::size_t)>& task) {
  std::unique_lock<std::mutex> lock(mutex_);
  task_ = &task;
  error_ = nullptr;
  pending_ = threads_.size();
  ++generation_;
  start_.notify_all();
  done_.wait(lock, [this] { return pending_ == 0; });
  task_ = nullptr;
  if (error_) std::rethrow_exception(error_);
}

void NodeWorkers::loop(std::size_t k, std::vector<int> cpus, std::size_t team) {
  // A worker only computes; its OpenMP pool inherits the mask.
  block_asynchronous_signals_for_good();
  pinned_[k] = pin_current_thread(cpus) ? 1 : 0;
  cpus_[k] = current_thread_cpus();
  // Threads of this worker's OpenMP team inherit its (pinned) affinity.
  omp_set_num_threads(static_cast<int>(team));
  std::size_t seen = 0;
  std::unique_lock<std::mutex> lock(mutex_);
  while (true) {
    start_.wait(lock, [&] { return stopping_ || generation_ != seen; });
    if (stopping_) return;
    seen = generation_;
    const auto* task = task_;
    lock.unlock();
    std::exception_ptr failure;
    try {
      (*task)(k);
    } catch (...) {
      failure = std::current_exception();
    }
    lock.lock();
    if (failure && !error_) error_ = failure;
    if (--pending_ == 0) done_.notify_one();
  }
}

}  // namespace kortexdl::detail
