#pragma once
// One worker thread per NUMA node, pinned to the node's CPUs, that runs
// tasks dispatched by the coordinating (calling) thread. The caller's own
// thread is never re-pinned: it may be an application's main thread.
#include <condition_variable>
#include <cstddef>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "kortexdl/numa.hpp"

namespace kortexdl::detail {

class NodeWorkers {
 public:
  // threads_per_node[k]: the OpenMP team size worker k uses.
  NodeWorkers(const NumaTopology& topology, const std::vector<std::size_t>& threads_per_node);
  ~NodeWorkers();
  NodeWorkers(const NodeWorkers&) = delete;
  NodeWorkers& operator=(const NodeWorkers&) = delete;

  std::size_t size() const { return threads_.size(); }
  // Runs task(k) on worker k for every k and waits for all of them; the
  // first exception thrown by any worker is rethrown here.
  void run(const std::function<void(std::size_t)>& task);
  // Whether worker k's pinning succeeded (false where the OS forbids it).
  bool pinned(std::size_t k) const { return pinned_[k] != 0; }
  // The CPUs worker k may run on, as the OS reported them after pinning.
  const std::vector<int>& cpus(std::size_t k) const { return cpus_[k]; }

 private:
  void loop(std::size_t k, std::vector<int> cpus, std::size_t team);

  std::mutex mutex_;
  std::condition_variable start_;
  std::condition_variable done_;
  const std::function<void(std::size_t)>* task_ = nullptr;
  std::size_t generation_ = 0;
  std::size_t pending_ = 0;
  bool stopping_ = false;
  std::exception_ptr error_;
  std::vector<char> pinned_;
  std::vector<std::vector<int>> cpus_;
  std::vector<std::thread> threads_;
};

}  // namespace kortexdl::detail
