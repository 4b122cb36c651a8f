#pragma once
// The machinery shared by every multi-step training call (train_parallel_numa,
// fit): one synchronous optimizer step at a time over one or more NUMA nodes,
// with the network's access rules held for the whole call.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <random>
#include <span>
#include <vector>

#include "engine.hpp"
#include "kortexdl/numa.hpp"
#include "network_state.hpp"
#include "workspace.hpp"

namespace kortexdl {
class GradientExchange;
}

namespace kortexdl::detail {

class DataParallelTrainer;

// A distributed step's votes. In: this process's; out: whether any process
// voted (the same answer on every process, after the same whole step).
struct StepVotes {
  bool interrupt = false;  // should_stop: the call throws InterruptedError
  bool stop = false;       // a callback asked to stop: the call ends normally
};

class TrainingSession {
 public:
  // lock: take the reader-writer lock per step (gradients shared, update
  // exclusive); otherwise every step is one unlocked write, so a call that
  // overlaps a step is refused with ConcurrencyError. Between steps (in
  // callbacks) the network is free for other calls; a parameter write made
  // there by someone else is picked up by every replica at the next step.
  // exchange: the cross-process step (distributed training); null for one
  // process. Start-up agreement (detail::DistributedRun) is the caller's.
  TrainingSession(NetworkState& state, const NumaTopology& topology, bool lock, const char* operation,
                  GradientExchange* exchange = nullptr);
  ~TrainingSession();
  TrainingSession(const TrainingSession&) = delete;
  TrainingSession& operator=(const TrainingSession&) = delete;

  // One optimizer step on `rows` rows. A non-finite loss throws
  // NumericalError and the step is not applied.
  LossSums step(const float* inputs, TargetRows targets, std::size_t rows, LossType loss, float learning_rate);
  // The cross-process step (needs an exchange): this process's `rows` rows
  // (0 allowed) of a step of `global_rows` rows over all processes. Each
  // shard's gradient is scaled by 1 / global_rows, the in-process
  // reduce-scatter makes one contiguous buffer, and that buffer is summed
  // across processes with one allreduce; the loss sums and `stop` travel in
  // a second, 4-double allreduce. Returns the sums over all processes.
  LossSums step(const float* inputs, TargetRows targets, std::size_t rows, std::size_t global_rows, LossType loss,
                float learning_rate, StepVotes& votes);
  // Loss sums of the current parameters, rows sharded across the nodes.
  LossSums evaluate(const float* inputs, TargetRows targets, std::size_t rows, std::size_t chunk, LossType loss);
  // Replaces the parameters (every replica), e.g. to restore the best epoch.
  void restore(const std::vector<float>& parameters);
  std::vector<float> parameters();

  std::size_t nodes() const;
  std::size_t steps() const { return steps_; }
  double reduce_seconds() const { return reduce_seconds_; }
  double exchange_seconds() const { return exchange_seconds_; }
  std::vector<std::vector<int>> worker_cpus() const;
  bool replicas_identical() const;

 private:
  NetworkState& state_;
  bool lock_;
  const char* operation_;
  std::uint64_t expected_version_ = 0;  // the network's version after our last write
  std::unique_ptr<DataParallelTrainer> trainer_;  // only with more than one node
  std::unique_ptr<Workspace::Lease> grad_lease_;  // single node: the gradient buffer
  float* grad_ = nullptr;
  std::size_t steps_ = 0;
  double reduce_seconds_ = 0.0;
  GradientExchange* exchange_ = nullptr;
  double exchange_seconds_ = 0.0;

  LossSums step_impl(const float* inputs, TargetRows targets, std::size_t rows, std::size_t global_rows,
                     LossType loss, float learning_rate, StepVotes* votes);
};

// The rows of one mini-batch: straight from the caller's arrays, or gathered
// into a staging buffer in shuffled order.
struct BatchView {
  const float* inputs;
  TargetRows targets;
};

class BatchGatherer {
 public:
  BatchGatherer(std::span<const float> inputs, TargetRows targets, std::size_t in, std::size_t out,
                std::size_t max_rows);
  BatchView take(const std::vector<std::size_t>* order, std::size_t start, std::size_t rows);

 private:
  std::span<const float> inputs_;
  TargetRows targets_;
  std::size_t in_, out_;
  std::vector<float> input_buffer_;
  std::vector<float> value_buffer_;
  std::vector<std::int32_t> label_buffer_;
};

// Loss sums of `rows` rows, sharded across the topology's nodes, each shard
// computed by a worker pinned to its node (reading `params` wherever they
// live). The caller holds read access to params.
LossSums sharded_loss(const NumaTopology& topology, const Architecture& arch, const float* params,
                      const float* inputs, TargetRows targets, std::size_t rows, std::size_t chunk, LossType loss);

// Fisher-Yates with our own index draw, so an order is the same with every
// standard library.
void shuffle_order(std::vector<std::size_t>& order, std::mt19937_64& engine);

using Clock = std::chrono::steady_clock;
inline double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

}  // namespace kortexdl::detail
