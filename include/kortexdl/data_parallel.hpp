#pragma once
// Synchronous data-parallel training over NUMA nodes (DESIGN.md section 4):
// one parameter replica per node, allocated on that node and worked on by a
// thread pinned to its CPUs. Every mini-batch is split across the nodes in
// proportion to their CPUs, the gradients are averaged, and every replica
// applies the same update, so the replicas stay bit-identical and the result
// equals single-replica training on the same batches up to float rounding.
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <vector>

#include "kortexdl/evaluation.hpp"
#include "kortexdl/loss.hpp"
#include "kortexdl/network.hpp"
#include "kortexdl/targets.hpp"

namespace kortexdl {

class GradientExchange;  // kortexdl/distributed.hpp

struct DataParallelOptions {
  std::size_t batch_size = 32;  // rows per optimizer step; the last step of an epoch may be smaller
  std::size_t epochs = 1;
  bool shuffle = false;                 // a new row order every epoch
  std::optional<std::uint64_t> seed;    // shuffle seed; default: the network's seed
  std::size_t numa_nodes = 0;           // 0: KORTEX_NUMA_NODES or the machine's nodes
  bool thread_safe = false;             // lock whatever enable_thread_safety says
  // Polled on the calling thread between mini-batches; returning true stops
  // training with InterruptedError after the last whole step.
  std::function<bool()> should_stop;
  // Called on the calling thread after every epoch with its mean loss.
  std::function<void(std::size_t epoch, double loss)> on_epoch_end;
  // Across processes (kortexdl/distributed.hpp): every rank passes its own
  // rows and the same options; batch_size is per rank, each step's gradient
  // is the mean over all ranks' rows of that step, losses are over all
  // ranks, should_stop on any rank stops every rank after the same step.
  // The call starts by checking that the ranks agree and copying rank 0's
  // parameters and optimizer state to every rank. Null: this process only.
  GradientExchange* distributed = nullptr;
};

struct DataParallelResult {
  double loss = 0.0;                 // mean loss of the last epoch
  std::vector<double> epoch_losses;  // one per completed epoch
  std::size_t steps = 0;
  std::size_t nodes = 1;
  double seconds = 0.0;          // wall time of the training loop
  double reduce_seconds = 0.0;   // of which averaging gradients across replicas
  double exchange_seconds = 0.0; // of which summing them across processes (distributed)
  // For each node's worker thread, the CPUs the OS let it run on after
  // pinning (empty with one node: it runs on the calling thread).
  std::vector<std::vector<int>> worker_cpus;
};

DataParallelResult train_parallel_numa(Network& network, std::span<const float> inputs, const Targets& targets,
                                       LossType loss, float learning_rate, const DataParallelOptions& options);

// evaluate(), with the rows sharded across the nodes.
Evaluation evaluate_parallel_numa(const Network& network, std::span<const float> inputs, const Targets& targets,
                                  LossType loss, std::size_t batch_size = 0, std::size_t numa_nodes = 0,
                                  bool thread_safe = false);

}  // namespace kortexdl
