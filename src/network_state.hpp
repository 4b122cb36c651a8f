#pragma once
// Everything a Network owns, behind the public class's pointer.
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "aligned_buffer.hpp"
#include "architecture.hpp"
#include "kortexdl/network.hpp"
#include "optimizer_update.hpp"
#include "parallel/access_guard.hpp"
#include "parallel/affinity.hpp"
#include "parallel/fork_safety.hpp"
#include "parallel/forward_batcher.hpp"
#include "parallel/step_combiner.hpp"
#include "parallel/step_gate.hpp"

namespace kortexdl::detail {

class NetworkState {
 public:
  NetworkState(Architecture architecture, NetworkConfig network_config, std::uint64_t initial_seed)
      : arch(std::move(architecture)), config(std::move(network_config)), seed(initial_seed) {}

  Architecture arch;
  NetworkConfig config;
  std::uint64_t seed;
  AlignedFloats params;
  Network::OptimizerState optimizer;
  mutable AccessGuard guard;
  StepCombiner combiner;  // locked small training steps (parallel/step_combiner.hpp)
  StepGate gate{allowed_cpu_count()};  // locked large training steps (parallel/step_gate.hpp)
  ForwardBatcher batcher{allowed_cpu_count()};  // concurrent one-row forward calls (parallel/forward_batcher.hpp)
  std::atomic<std::uint64_t> version{0};
  Network::UpdateObserver observer;  // read and written under write access
  ForkRegistration fork_registration{this};  // last: registered once whole

  // What a training step writes: the parameters and the optimizer's state
  // (from the configuration, fixed at construction: callers read it
  // without a lock).
  std::size_t bytes_written_per_step() const {
    return arch.parameter_count * (1 + optimizer_buffer_count(config.optimizer.kind)) * sizeof(float);
  }

  // Call with write access held: bumps the version and tells the observer.
  void published_write() {
    const std::uint64_t v = version.fetch_add(1, std::memory_order_acq_rel) + 1;
    if (observer) observer(params, v);
  }
};

}  // namespace kortexdl::detail
