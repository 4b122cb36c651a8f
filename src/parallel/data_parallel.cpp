#include "kortexdl/data_parallel.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <memory>
#include <numeric>
#include <random>
#include <string>

#include "checked_math.hpp"
#include "engine.hpp"
#include "kortexdl/error.hpp"
#include "kortexdl/numa.hpp"
#include "kortexdl/threading.hpp"
#include "network_state.hpp"
#include "optimizer_update.hpp"
#include "parallel/node_workers.hpp"
#include "parallel/thread_budget.hpp"
#include "validation.hpp"
#include "workspace.hpp"

namespace kortexdl {

using detail::AccessGuard;
using detail::LossSums;
using detail::NetworkState;
using detail::TargetRows;

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// OpenMP team per node: the node's share of the process budget.
std::vector<std::size_t> teams_for(const NumaTopology& topology) {
  std::size_t total_cpus = 0;
  for (const auto& node : topology.nodes) total_cpus += node.cpus.size();
  const std::size_t budget = get_num_threads();
  std::vector<std::size_t> teams;
  for (const auto& node : topology.nodes) {
    const std::size_t share = budget * node.cpus.size() / std::max<std::size_t>(1, total_cpus);
    teams.push_back(std::max<std::size_t>(1, std::min(share, node.cpus.size())));
  }
  return teams;
}

// Row ranges of a batch, in proportion to each node's CPUs.
std::vector<std::size_t> shard_bounds(const NumaTopology& topology, std::size_t rows) {
  std::size_t total = 0;
  for (const auto& node : topology.nodes) total += node.cpus.size();
  std::vector<std::size_t> bounds{0};
  std::size_t cumulative = 0;
  for (const auto& node : topology.nodes) {
    cumulative += node.cpus.size();
    bounds.push_back(rows * cumulative / total);
  }
  return bounds;
}

// Fisher-Yates with our own index draw, so an order is the same with every
// standard library.
void shuffle_order(std::vector<std::size_t>& order, std::mt19937_64& engine) {
  for (std::size_t i = order.size(); i > 1; --i) {
    const std::size_t j = static_cast<std::size_t>(engine() % i);
    std::swap(order[i - 1], order[j]);
  }
}

// A parameter replica owned by one node: allocated and first touched by the
// node's pinned worker, so its pages live on that node.
struct Replica {
  std::vector<float> own_params;   // empty for node 0, which works on the network's own buffer
  Network::OptimizerState own_optimizer;
  std::vector<float> grad;
  float* params = nullptr;
  Network::OptimizerState* optimizer = nullptr;
  LossSums sums;
  std::size_t rows = 0;
};

class DataParallelTrainer {
 public:
  DataParallelTrainer(NetworkState& state, const NumaTopology& topology)
      : state_(state), topology_(topology), workers_(topology, teams_for(topology)),
        replicas_(topology.nodes.size()) {
    const std::size_t count = state.arch.parameter_count;
    reduced_.resize(count);
    // Segment k of the reduced gradient is summed by node k.
    const std::size_t nodes = topology.nodes.size();
    for (std::size_t k = 0; k <= nodes; ++k) {
      const std::size_t edge = count * k / nodes;
      segments_.push_back(k == nodes ? count : edge / 16 * 16);
    }
    workers_.run([this, count](std::size_t k) {
      Replica& r = replicas_[k];
      r.grad.assign(count, 0.0f);
      if (k == 0) {
        r.params = state_.params.data();
        r.optimizer = &state_.optimizer;
      } else {
        r.own_params = state_.params;
        r.own_optimizer = state_.optimizer;
        r.params = r.own_params.data();
        r.optimizer = &r.own_optimizer;
      }
    });
  }

  std::size_t nodes() const { return replicas_.size(); }
  std::vector<std::vector<int>> worker_cpus() const {
    std::vector<std::vector<int>> all;
    for (std::size_t k = 0; k < workers_.size(); ++k) all.push_back(workers_.cpus(k));
    return all;
  }

  // Gradients of one batch on every node, then their average, in parallel:
  // node k sums segment k over all replicas (a reduce-scatter that does not
  // funnel through one node). Returns the batch's loss sums.
  LossSums gradients(const float* inputs, TargetRows targets, std::size_t rows, LossType loss, double* reduce_time) {
    const auto bounds = shard_bounds(topology_, rows);
    const float scale = 1.0f / static_cast<float>(rows);
    const std::size_t in = state_.arch.inputs();
    const std::size_t out = state_.arch.outputs();
    workers_.run([&](std::size_t k) {
      Replica& r = replicas_[k];
      r.rows = bounds[k + 1] - bounds[k];
      r.sums = LossSums{};
      if (r.rows > 0) {
        r.sums = detail::gradient_rows(state_.arch, r.params, inputs + bounds[k] * in, targets.offset(bounds[k], out),
                                       r.rows, loss, scale, r.grad.data());
      }
    });
    const auto reduce_start = Clock::now();
    workers_.run([&](std::size_t k) {
      float* dst = reduced_.data();
      const std::size_t begin = segments_[k];
      const std::size_t end = segments_[k + 1];
      std::fill(dst + begin, dst + end, 0.0f);
      for (const Replica& source : replicas_) {
        if (source.rows == 0) continue;
        const float* src = source.grad.data();
#pragma omp simd
        for (std::size_t i = begin; i < end; ++i) dst[i] += src[i];
      }
    });
    *reduce_time += seconds_since(reduce_start);
    LossSums total;
    for (const Replica& r : replicas_) total += r.sums;
    return total;
  }

  // Every replica applies the same averaged gradient.
  void update(float learning_rate) {
    workers_.run([&](std::size_t k) {
      Replica& r = replicas_[k];
      detail::apply_update(state_.config.optimizer, state_.arch, r.params, reduced_.data(), learning_rate,
                           *r.optimizer);
    });
  }

  bool replicas_identical() const {
    for (std::size_t k = 1; k < replicas_.size(); ++k) {
      if (!std::equal(replicas_[k].own_params.begin(), replicas_[k].own_params.end(), state_.params.begin())) {
        return false;
      }
    }
    return true;
  }

 private:
  NetworkState& state_;
  const NumaTopology& topology_;
  detail::NodeWorkers workers_;
  std::vector<Replica> replicas_;
  std::vector<float> reduced_;
  std::vector<std::size_t> segments_;
};

// Rows of one step, gathered in shuffled order when needed.
struct BatchView {
  const float* inputs;
  TargetRows targets;
};

class BatchGatherer {
 public:
  BatchGatherer(std::span<const float> inputs, TargetRows targets, std::size_t in, std::size_t out,
                std::size_t batch)
      : inputs_(inputs), targets_(targets), in_(in), out_(out) {
    input_buffer_.resize(detail::checked_mul(batch, in, "batch_size x input_size"));
    if (targets.values != nullptr) {
      value_buffer_.resize(batch * out);
    } else {
      label_buffer_.resize(batch);
    }
  }

  BatchView take(const std::vector<std::size_t>* order, std::size_t start, std::size_t rows) {
    if (order == nullptr) return {inputs_.data() + start * in_, targets_.offset(start, out_)};
    for (std::size_t i = 0; i < rows; ++i) {
      const std::size_t src = (*order)[start + i];
      std::copy_n(inputs_.data() + src * in_, in_, input_buffer_.data() + i * in_);
      if (targets_.values != nullptr) {
        std::copy_n(targets_.values + src * out_, out_, value_buffer_.data() + i * out_);
      } else {
        label_buffer_[i] = targets_.labels[src];
      }
    }
    TargetRows t = targets_.values != nullptr ? TargetRows{value_buffer_.data(), nullptr}
                                              : TargetRows{nullptr, label_buffer_.data()};
    return {input_buffer_.data(), t};
  }

 private:
  std::span<const float> inputs_;
  TargetRows targets_;
  std::size_t in_, out_;
  std::vector<float> input_buffer_;
  std::vector<float> value_buffer_;
  std::vector<std::int32_t> label_buffer_;
};

[[noreturn]] void throw_non_finite(double mean, std::size_t steps) {
  throw NumericalError("train_parallel_numa: the loss is " + std::string(std::isnan(mean) ? "nan" : "inf") +
                       " at step " + std::to_string(steps + 1) +
                       ", so that step was not applied (the network keeps the parameters of the last finite "
                       "step); lower the learning rate or check the inputs' scale");
}

}  // namespace

DataParallelResult train_parallel_numa(Network& network, std::span<const float> inputs, const Targets& targets,
                                       LossType loss, float learning_rate, const DataParallelOptions& options) {
  NetworkState& s = network.state();
  const std::size_t in = s.arch.inputs();
  const std::size_t out = s.arch.outputs();
  detail::check_batch_size(options.batch_size);
  if (options.epochs == 0) throw InvalidArgumentError("epochs: must be at least 1, got 0");
  const std::size_t rows = detail::rows_of(inputs, in);
  if (options.batch_size > rows) {
    throw InvalidArgumentError("batch_size: must not exceed the number of rows in inputs (" + std::to_string(rows) +
                               "), got " + std::to_string(options.batch_size));
  }
  detail::check_learning_rate(learning_rate);
  detail::check_loss_matches_output(loss, s.arch.output_activation);
  const TargetRows all_targets = detail::check_targets(targets, loss, rows, out);
  detail::check_finite(inputs, "inputs");
  const NumaTopology topology = numa_topology(options.numa_nodes);

  const bool lock = options.thread_safe || s.guard.locking();
  // Without locking the whole call is one write: any overlapping call is refused.
  std::unique_ptr<AccessGuard::Write> exclusive;
  if (!lock) exclusive = std::make_unique<AccessGuard::Write>(s.guard, false, "train_parallel_numa");

  DataParallelResult result;
  result.nodes = topology.nodes.size();
  const std::size_t steps_per_epoch = (rows + options.batch_size - 1) / options.batch_size;
  std::vector<std::size_t> order;
  std::mt19937_64 engine(options.seed.value_or(s.seed));
  if (options.shuffle) {
    order.resize(rows);
    std::iota(order.begin(), order.end(), std::size_t{0});
  }
  BatchGatherer gather(inputs, all_targets, in, out, options.shuffle ? options.batch_size : 0);

  std::unique_ptr<DataParallelTrainer> trainer;
  std::unique_ptr<detail::Workspace::Lease> single_grad;
  float* grad = nullptr;
  detail::ComputeScope scope(s.arch.training_flops(options.batch_size));
  if (topology.nodes.size() > 1) {
    trainer = std::make_unique<DataParallelTrainer>(s, topology);
    result.worker_cpus = trainer->worker_cpus();
  } else {
    single_grad = std::make_unique<detail::Workspace::Lease>(detail::Workspace::local().acquire(s.arch.parameter_count));
    grad = single_grad->take(s.arch.parameter_count);
  }

  const auto started = Clock::now();
  for (std::size_t epoch = 0; epoch < options.epochs; ++epoch) {
    if (options.shuffle) shuffle_order(order, engine);
    double epoch_loss = 0.0;
    for (std::size_t step = 0; step < steps_per_epoch; ++step) {
      if (options.should_stop && options.should_stop()) {
        throw InterruptedError("train_parallel_numa: interrupted after " + std::to_string(result.steps) +
                               " step(s), in epoch " + std::to_string(epoch + 1) +
                               "; the network holds the parameters after the last whole step");
      }
      const std::size_t start = step * options.batch_size;
      const std::size_t n = std::min(options.batch_size, rows - start);
      const BatchView batch = gather.take(options.shuffle ? &order : nullptr, start, n);
      LossSums sums;
      {
        std::unique_ptr<AccessGuard::Read> shared;
        if (lock) shared = std::make_unique<AccessGuard::Read>(s.guard, true, "train_parallel_numa");
        if (trainer) {
          sums = trainer->gradients(batch.inputs, batch.targets, n, loss, &result.reduce_seconds);
        } else {
          sums = detail::gradient_rows(s.arch, s.params.data(), batch.inputs, batch.targets, n, loss,
                                       1.0f / static_cast<float>(n), grad);
        }
      }
      const double mean = sums.loss / static_cast<double>(n);
      if (!std::isfinite(mean)) throw_non_finite(mean, result.steps);
      {
        std::unique_ptr<AccessGuard::Write> write;
        if (lock) write = std::make_unique<AccessGuard::Write>(s.guard, true, "train_parallel_numa");
        if (trainer) {
          trainer->update(learning_rate);
        } else {
          detail::apply_update(s.config.optimizer, s.arch, s.params.data(), grad, learning_rate, s.optimizer);
        }
        s.published_write();
      }
      epoch_loss += sums.loss;
      ++result.steps;
    }
    const double mean_epoch = epoch_loss / static_cast<double>(rows);
    result.epoch_losses.push_back(mean_epoch);
    result.loss = mean_epoch;
    if (options.on_epoch_end) options.on_epoch_end(epoch, mean_epoch);
  }
  result.seconds = seconds_since(started);
  if (trainer && !trainer->replicas_identical()) {
    throw InternalError("train_parallel_numa: replicas diverged; please report this");
  }
  return result;
}

Evaluation evaluate_parallel_numa(const Network& network, std::span<const float> inputs, const Targets& targets,
                                  LossType loss, std::size_t batch_size, std::size_t numa_nodes, bool thread_safe) {
  NetworkState& s = network.state();
  const NumaTopology topology = numa_topology(numa_nodes);
  if (topology.nodes.size() == 1) {
    return thread_safe ? network.evaluate_thread_safe(inputs, targets, loss, batch_size)
                       : network.evaluate(inputs, targets, loss, batch_size);
  }
  const std::size_t in = s.arch.inputs();
  const std::size_t out = s.arch.outputs();
  const std::size_t rows = detail::rows_of(inputs, in);
  detail::check_loss_matches_output(loss, s.arch.output_activation);
  const TargetRows target_rows = detail::check_targets(targets, loss, rows, out);
  const std::size_t chunk = detail::evaluation_chunk(batch_size, rows);

  // Every node reads the network's own parameters for its shard of the rows.
  AccessGuard::Read access(s.guard, thread_safe || s.guard.locking(), "evaluate_parallel_numa");
  detail::ComputeScope scope(s.arch.forward_flops(chunk));
  detail::NodeWorkers workers(topology, teams_for(topology));
  const auto bounds = shard_bounds(topology, rows);
  std::vector<LossSums> sums(workers.size());
  workers.run([&](std::size_t k) {
    for (std::size_t start = bounds[k]; start < bounds[k + 1]; start += chunk) {
      const std::size_t n = std::min(chunk, bounds[k + 1] - start);
      sums[k] += detail::loss_rows(s.arch, s.params.data(), inputs.data() + start * in,
                                   target_rows.offset(start, out), n, loss);
    }
  });
  LossSums total;
  for (const auto& part : sums) total += part;
  return detail::to_evaluation(total, rows, out, loss);
}

}  // namespace kortexdl
