#include "kortexdl/data_parallel.hpp"

#include <algorithm>
#include <exception>
#include <numeric>
#include <optional>
#include <random>
#include <string>

#include "distributed/run.hpp"
#include "kortexdl/error.hpp"
#include "kortexdl/numa.hpp"
#include "network_state.hpp"
#include "parallel/training_session.hpp"
#include "validation.hpp"

namespace kortexdl {

using detail::LossSums;
using detail::TargetRows;

DataParallelResult train_parallel_numa(Network& network, std::span<const float> inputs, const Targets& targets,
                                       LossType loss, float learning_rate, const DataParallelOptions& options) {
  detail::NetworkState& s = network.state();
  const std::size_t in = s.arch.inputs();
  const std::size_t out = s.arch.outputs();
  std::size_t rows = 0;
  TargetRows all_targets;
  // Distributed, a rank whose arguments fail still takes part in the
  // start-up exchange, so every rank throws instead of waiting for it.
  std::exception_ptr local_error;
  try {
    detail::check_batch_size(options.batch_size);
    if (options.epochs == 0) throw InvalidArgumentError("epochs: must be at least 1, got 0");
    rows = detail::rows_of(inputs, in);
    if (options.batch_size > rows) {
      throw InvalidArgumentError("batch_size: must not exceed the number of rows in inputs (" + std::to_string(rows) +
                                 "), got " + std::to_string(options.batch_size));
    }
    detail::check_learning_rate(learning_rate);
    detail::check_loss_matches_output(loss, s.arch.output_activation);
    all_targets = detail::check_targets(targets, loss, rows, out);
    detail::check_finite(inputs, "inputs");
  } catch (...) {
    if (options.distributed == nullptr) throw;
    local_error = std::current_exception();
  }
  const bool lock = options.thread_safe || s.guard.locking();
  std::optional<detail::DistributedRun> run;
  if (options.distributed != nullptr) {
    detail::RunSettings settings{"train_parallel_numa", loss, options.batch_size, options.epochs, learning_rate,
                                 options.shuffle, 0, local_error ? 0 : rows, 0};
    run.emplace(*options.distributed, s, settings, local_error, lock);
  }
  const NumaTopology topology = numa_topology(options.numa_nodes);

  detail::TrainingSession session(s, topology, lock, "train_parallel_numa", options.distributed);
  DataParallelResult result;
  result.nodes = session.nodes();
  result.worker_cpus = session.worker_cpus();

  std::vector<std::size_t> order;
  std::mt19937_64 engine(options.seed.value_or(s.seed));
  if (options.shuffle) {
    order.resize(rows);
    std::iota(order.begin(), order.end(), std::size_t{0});
  }
  detail::BatchGatherer gather(inputs, all_targets, in, out, options.shuffle ? options.batch_size : 0);
  const std::size_t steps_per_epoch =
      run ? run->steps_per_epoch(options.batch_size) : (rows + options.batch_size - 1) / options.batch_size;

  const auto started = detail::Clock::now();
  for (std::size_t epoch = 0; epoch < options.epochs; ++epoch) {
    if (options.shuffle) detail::shuffle_order(order, engine);
    double epoch_loss = 0.0;
    for (std::size_t step = 0; step < steps_per_epoch; ++step) {
      const bool stop = options.should_stop && options.should_stop();
      if (stop && !run) {
        throw InterruptedError("train_parallel_numa: interrupted after " + std::to_string(session.steps()) +
                               " step(s), in epoch " + std::to_string(epoch + 1) +
                               "; the network holds the parameters after the last whole step");
      }
      if (run) {
        // Every rank takes this step (some maybe with no rows); a stop asked
        // for anywhere ends every rank after it.
        const std::size_t n = run->local_rows(step, options.batch_size);
        const detail::BatchView batch =
            gather.take(options.shuffle ? &order : nullptr, n > 0 ? step * options.batch_size : 0, n);
        detail::StepVotes votes;
        votes.interrupt = stop;
        epoch_loss += session
                          .step(batch.inputs, batch.targets, n, run->global_rows(step, options.batch_size), loss,
                                learning_rate, votes)
                          .loss;
        if (votes.interrupt) {
          throw InterruptedError("train_parallel_numa: interrupted on request of a rank after " +
                                 std::to_string(session.steps()) + " step(s), in epoch " + std::to_string(epoch + 1) +
                                 "; every rank holds the parameters after that step");
        }
        continue;
      }
      const std::size_t start = step * options.batch_size;
      const std::size_t n = std::min(options.batch_size, rows - start);
      const detail::BatchView batch = gather.take(options.shuffle ? &order : nullptr, start, n);
      epoch_loss += session.step(batch.inputs, batch.targets, n, loss, learning_rate).loss;
    }
    const double mean_epoch = epoch_loss / static_cast<double>(run ? run->global_rows() : rows);
    result.epoch_losses.push_back(mean_epoch);
    result.loss = mean_epoch;
    if (options.on_epoch_end) options.on_epoch_end(epoch, mean_epoch);
  }
  result.seconds = detail::seconds_since(started);
  result.steps = session.steps();
  result.reduce_seconds = session.reduce_seconds();
  result.exchange_seconds = session.exchange_seconds();
  if (!session.replicas_identical()) throw InternalError("train_parallel_numa: replicas diverged; please report this");
  return result;
}

Evaluation evaluate_parallel_numa(const Network& network, std::span<const float> inputs, const Targets& targets,
                                  LossType loss, std::size_t batch_size, std::size_t numa_nodes, bool thread_safe) {
  detail::NetworkState& s = network.state();
  const NumaTopology topology = numa_topology(numa_nodes);
  if (topology.nodes.size() == 1) {
    return thread_safe ? network.evaluate_thread_safe(inputs, targets, loss, batch_size)
                       : network.evaluate(inputs, targets, loss, batch_size);
  }
  const std::size_t out = s.arch.outputs();
  const std::size_t rows = detail::rows_of(inputs, s.arch.inputs());
  detail::check_loss_matches_output(loss, s.arch.output_activation);
  const TargetRows target_rows = detail::check_targets(targets, loss, rows, out);
  const std::size_t chunk = detail::evaluation_chunk(batch_size, rows);

  // Every node reads the network's own parameters for its shard of the rows:
  // a read, so it runs beside other reads whatever the thread-safety mode.
  detail::AccessGuard::Read access(s.guard, thread_safe || s.guard.locking(), "evaluate_parallel_numa");
  const LossSums sums = detail::sharded_loss(topology, s.arch, s.params.data(), inputs.data(), target_rows, rows,
                                             chunk, loss);
  return detail::to_evaluation(sums, rows, out, loss);
}

}  // namespace kortexdl
