#include "parallel/training_session.hpp"

#include <algorithm>
#include <atomic>
#include <barrier>
#include <cmath>
#include <exception>
#include <optional>
#include <string>

#include "checked_math.hpp"
#include "kortexdl/distributed.hpp"
#include "kortexdl/error.hpp"
#include "kortexdl/threading.hpp"
#include "optimizer_update.hpp"
#include "parallel/node_workers.hpp"
#include "parallel/thread_budget.hpp"

namespace kortexdl::detail {

namespace {

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
    bounds.push_back(checked_mul(rows, cumulative, "rows x CPUs") / total);
  }
  return bounds;
}

// A parameter replica owned by one node: allocated and first touched by the
// node's pinned worker, so its pages live on that node.
struct Replica {
  AlignedFloats own_params;  // empty for node 0, which works on the network's own buffer
  Network::OptimizerState own_optimizer;
  std::vector<float> grad;
  float* params = nullptr;
  Network::OptimizerState* optimizer = nullptr;
  LossSums sums;
  std::size_t rows = 0;
};

}  // namespace

LossSums sharded_loss(NodeWorkers& workers, const NumaTopology& topology, const Architecture& arch,
                      const float* params, const float* inputs, TargetRows targets, std::size_t rows,
                      std::size_t chunk, LossType loss) {
  const auto bounds = shard_bounds(topology, rows);
  const std::size_t in = arch.inputs();
  const std::size_t out = arch.outputs();
  std::vector<LossSums> sums(workers.size());
  workers.run([&](std::size_t k) {
    for (std::size_t start = bounds[k]; start < bounds[k + 1]; start += chunk) {
      const std::size_t n = std::min(chunk, bounds[k + 1] - start);
      sums[k] += loss_rows(arch, params, inputs + start * in, targets.offset(start, out), n, loss);
    }
  });
  LossSums total;
  for (const auto& part : sums) total += part;
  return total;
}

LossSums sharded_loss(const NumaTopology& topology, const Architecture& arch, const float* params,
                      const float* inputs, TargetRows targets, std::size_t rows, std::size_t chunk, LossType loss) {
  NodeWorkers workers(topology, teams_for(topology));
  return sharded_loss(workers, topology, arch, params, inputs, targets, rows, chunk, loss);
}

class DataParallelTrainer {
 public:
  DataParallelTrainer(NetworkState& state, const NumaTopology& topology)
      : state_(state), topology_(topology), workers_(topology, teams_for(topology)),
        replicas_(topology.nodes.size()), barrier_(static_cast<std::ptrdiff_t>(topology.nodes.size())) {
    const std::size_t count = state.arch.parameter_count;
    reduced_.resize(count);
    // Segment k of the averaged gradient is summed by node k, in whole
    // cache lines so nodes never write the same line.
    const std::size_t nodes = topology.nodes.size();
    for (std::size_t k = 0; k <= nodes; ++k) {
      segments_.push_back(k == nodes ? count : (count * k / nodes) / 16 * 16);
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
  const float* averaged_gradient() const { return reduced_.data(); }
  // The same contiguous buffer, summed in place across processes.
  float* averaged_gradient() { return reduced_.data(); }

  std::vector<std::vector<int>> worker_cpus() const {
    std::vector<std::vector<int>> all;
    for (std::size_t k = 0; k < workers_.size(); ++k) all.push_back(workers_.cpus(k));
    return all;
  }

  // Every node's gradient on its shard, then their sum (the shards are
  // already scaled by `scale`: 1/rows, or 1/rows-over-all-processes)
  // reduce-scattered: node k sums segment k over all replicas, so the
  // reduction does not funnel through one node.
  LossSums gradients(const float* inputs, TargetRows targets, std::size_t rows, LossType loss, float scale,
                     double* reduce_time) {
    const auto bounds = shard_bounds(topology_, rows);
    const std::size_t in = state_.arch.inputs();
    const std::size_t out = state_.arch.outputs();
    // One dispatch: every worker computes its shard's gradient, meets the
    // others at the barrier, then sums its segment. A worker that fails
    // still arrives at the barrier (nobody waits forever) and the reduce is
    // skipped; NodeWorkers::run rethrows the first failure.
    std::atomic<bool> failed{false};
    std::vector<double> reduce_seconds(nodes(), 0.0);
    workers_.run([&](std::size_t k) {
      Replica& r = replicas_[k];
      r.rows = bounds[k + 1] - bounds[k];
      r.sums = LossSums{};
      std::exception_ptr error;
      try {
        if (r.rows > 0) {
          r.sums = gradient_rows(state_.arch, r.params, inputs + bounds[k] * in, targets.offset(bounds[k], out),
                                 r.rows, loss, scale, r.grad.data());
        }
      } catch (...) {
        error = std::current_exception();
        failed.store(true);
      }
      barrier_.arrive_and_wait();
      if (error) std::rethrow_exception(error);
      if (failed.load()) return;
      const auto reduce_start = Clock::now();
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
      reduce_seconds[k] = seconds_since(reduce_start);
    });
    *reduce_time += *std::max_element(reduce_seconds.begin(), reduce_seconds.end());
    LossSums total;
    for (const Replica& r : replicas_) total += r.sums;
    return total;
  }

  // Every replica applies the same averaged gradient to identical state.
  void update(float learning_rate) {
    workers_.run([&](std::size_t k) {
      Replica& r = replicas_[k];
      apply_update(state_.config.optimizer, state_.arch, r.params, reduced_.data(), learning_rate, *r.optimizer);
    });
  }

  LossSums evaluate(const float* inputs, TargetRows targets, std::size_t rows, std::size_t chunk, LossType loss) {
    return sharded_loss(workers_, topology_, state_.arch, state_.params.data(), inputs, targets, rows, chunk, loss);
  }

  void restore(const std::vector<float>& parameters) {
    workers_.run([&](std::size_t k) { std::copy(parameters.begin(), parameters.end(), replicas_[k].params); });
  }

  // Copies the network's parameters and optimizer state to every replica.
  void resync() {
    workers_.run([&](std::size_t k) {
      if (k == 0) return;
      std::copy(state_.params.begin(), state_.params.end(), replicas_[k].params);
      *replicas_[k].optimizer = state_.optimizer;
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
  NumaTopology topology_;
  NodeWorkers workers_;
  std::vector<Replica> replicas_;
  std::vector<float> reduced_;
  std::vector<std::size_t> segments_;
  std::barrier<> barrier_;
};

TrainingSession::TrainingSession(NetworkState& state, const NumaTopology& topology, bool lock, const char* operation,
                                 GradientExchange* exchange)
    : state_(state), lock_(lock), operation_(operation), exchange_(exchange) {
  if (topology.nodes.size() > 1) {
    AccessGuard::Read access(state.guard, lock, operation);
    trainer_ = std::make_unique<DataParallelTrainer>(state, topology);
    expected_version_ = state.version.load();
  } else {
    grad_lease_ = std::make_unique<Workspace::Lease>(Workspace::local().acquire(state.arch.parameter_count));
    grad_ = grad_lease_->take(state.arch.parameter_count);
  }
}

TrainingSession::~TrainingSession() = default;

std::size_t TrainingSession::nodes() const { return trainer_ ? trainer_->nodes() : 1; }

std::vector<std::vector<int>> TrainingSession::worker_cpus() const {
  return trainer_ ? trainer_->worker_cpus() : std::vector<std::vector<int>>{};
}

bool TrainingSession::replicas_identical() const { return trainer_ ? trainer_->replicas_identical() : true; }

LossSums TrainingSession::step(const float* inputs, TargetRows targets, std::size_t rows, LossType loss,
                               float learning_rate) {
  return step_impl(inputs, targets, rows, rows, loss, learning_rate, nullptr);
}

LossSums TrainingSession::step(const float* inputs, TargetRows targets, std::size_t rows, std::size_t global_rows,
                               LossType loss, float learning_rate, StepVotes& votes) {
  if (exchange_ == nullptr || global_rows == 0) {
    throw InternalError(std::string(operation_) + ": a cross-process step without an exchange or rows");
  }
  return step_impl(inputs, targets, rows, global_rows, loss, learning_rate, &votes);
}

// global_rows == rows and no exchange: the single-process step.
LossSums TrainingSession::step_impl(const float* inputs, TargetRows targets, std::size_t rows,
                                    std::size_t global_rows, LossType loss, float learning_rate,
                                    StepVotes* votes) {
  // With one node this thread computes, with the whole budget; with more,
  // the node workers do and this thread only coordinates.
  ComputeScope scope(trainer_ ? 0.0 : state_.arch.training_work(rows));
  // Unlocked, the whole step is one write; locked, the gradients are a read
  // and only the update is exclusive.
  std::unique_ptr<AccessGuard::Write> unlocked_write;
  if (!lock_) unlocked_write = std::make_unique<AccessGuard::Write>(state_.guard, false, operation_);
  LossSums sums;
  // One row on one process: the gradient stays in factors (engine.hpp).
  std::optional<OneRowGradient> one_row;
  if (!trainer_ && exchange_ == nullptr && rows == 1) one_row.emplace(state_.arch);
  {
    std::unique_ptr<AccessGuard::Read> shared;
    if (lock_) shared = std::make_unique<AccessGuard::Read>(state_.guard, true, operation_);
    if (one_row) {
      sums = one_row->compute(state_.params.data(), inputs, targets, loss, 1.0f);
    } else if (trainer_) {
      if (state_.version.load() != expected_version_) trainer_->resync();
      sums = trainer_->gradients(inputs, targets, rows, loss, 1.0f / static_cast<float>(global_rows),
                                 &reduce_seconds_);
    } else if (rows > 0) {
      sums = gradient_rows(state_.arch, state_.params.data(), inputs, targets, rows, loss,
                           1.0f / static_cast<float>(global_rows), grad_);
    } else {
      std::fill_n(grad_, state_.arch.parameter_count, 0.0f);  // this process has no rows in this step
    }
  }
  if (exchange_ != nullptr) {
    // Across processes: the one reduced buffer, then the loss sums and the
    // stop votes. Every process gets the same sums, so every process takes
    // the same decisions below.
    const auto exchange_start = Clock::now();
    exchange_->allreduce_sum(trainer_ ? trainer_->averaged_gradient() : grad_, state_.arch.parameter_count);
    double small[4] = {sums.loss, static_cast<double>(sums.correct), votes->interrupt ? 1.0 : 0.0,
                       votes->stop ? 1.0 : 0.0};
    exchange_->allreduce_sum(small, 4);
    exchange_seconds_ += seconds_since(exchange_start);
    sums.loss = small[0];
    sums.correct = static_cast<std::size_t>(small[1]);
    votes->interrupt = small[2] > 0.0;
    votes->stop = small[3] > 0.0;
  }
  const double mean = sums.loss / static_cast<double>(global_rows);
  std::unique_ptr<AccessGuard::Write> write;
  if (lock_) write = std::make_unique<AccessGuard::Write>(state_.guard, true, operation_);
  if (one_row) {
    checked_one_row_update(operation_, mean, state_.config.optimizer, state_.arch, state_.params.data(), *one_row,
                           learning_rate, state_.optimizer);
  } else {
    check_step_is_finite(operation_, mean, state_.config.optimizer, state_.arch, state_.params.data(),
                         trainer_ ? trainer_->averaged_gradient() : grad_, learning_rate, state_.optimizer);
    if (trainer_) {
      // A write between our gradient phase and this update (locked mode lets
      // other trainers in) leaves replicas to be re-synced first.
      if (state_.version.load() != expected_version_) trainer_->resync();
      trainer_->update(learning_rate);
    } else {
      apply_update(state_.config.optimizer, state_.arch, state_.params.data(), grad_, learning_rate,
                   state_.optimizer);
    }
  }
  state_.published_write();
  expected_version_ = state_.version.load();
  ++steps_;
  return sums;
}

LossSums TrainingSession::evaluate(const float* inputs, TargetRows targets, std::size_t rows, std::size_t chunk,
                                   LossType loss) {
  AccessGuard::Read shared(state_.guard, lock_, operation_);
  if (trainer_) return trainer_->evaluate(inputs, targets, rows, chunk, loss);
  ComputeScope scope(state_.arch.forward_work(chunk));
  LossSums sums;
  const std::size_t in = state_.arch.inputs();
  const std::size_t out = state_.arch.outputs();
  for (std::size_t start = 0; start < rows; start += chunk) {
    const std::size_t n = std::min(chunk, rows - start);
    sums += loss_rows_split(state_.arch, state_.params.data(), inputs + start * in, targets.offset(start, out), n, loss);
  }
  return sums;
}

void TrainingSession::restore(const std::vector<float>& parameters) {
  AccessGuard::Write write(state_.guard, lock_, operation_);
  if (trainer_) {
    trainer_->restore(parameters);
  } else {
    std::copy(parameters.begin(), parameters.end(), state_.params.begin());
  }
  state_.published_write();
  expected_version_ = state_.version.load();
}

std::vector<float> TrainingSession::parameters() {
  AccessGuard::Read shared(state_.guard, lock_, operation_);
  return std::vector<float>(state_.params.begin(), state_.params.end());
}

BatchGatherer::BatchGatherer(std::span<const float> inputs, TargetRows targets, std::size_t in, std::size_t out,
                             std::size_t max_rows)
    : inputs_(inputs), targets_(targets), in_(in), out_(out) {
  input_buffer_.resize(checked_mul(max_rows, in, "batch_size x input_size"));
  if (targets.values != nullptr) {
    value_buffer_.resize(checked_mul(max_rows, out, "batch_size x output_size"));
  } else {
    label_buffer_.resize(max_rows);
  }
}

BatchView BatchGatherer::take(const std::vector<std::size_t>* order, std::size_t start, std::size_t rows) {
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
  const TargetRows t = targets_.values != nullptr ? TargetRows{value_buffer_.data(), nullptr}
                                                  : TargetRows{nullptr, label_buffer_.data()};
  return {input_buffer_.data(), t};
}

void shuffle_order(std::vector<std::size_t>& order, std::mt19937_64& engine) {
  for (std::size_t i = order.size(); i > 1; --i) {
    const auto j = static_cast<std::size_t>(engine() % i);
    std::swap(order[i - 1], order[j]);
  }
}

}  // namespace kortexdl::detail
