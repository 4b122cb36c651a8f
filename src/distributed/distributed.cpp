// The distributed API that needs no MPI of its own: sharding, start-up
// synchronisation, train_distributed (fit over an exchange, checkpoints on
// rank 0), evaluate and save. Collectives go through GradientExchange.
#include <algorithm>
#include <exception>
#include <numeric>
#include <random>
#include <string>

#include "distributed/run.hpp"
#include "kortexdl/distributed.hpp"
#include "kortexdl/error.hpp"
#include "network_state.hpp"
#include "parallel/training_session.hpp"

namespace kortexdl::distributed {

std::vector<std::size_t> shard_indices(std::size_t rows, std::size_t rank, std::size_t world_size,
                                       std::optional<std::uint64_t> seed) {
  if (world_size == 0) throw InvalidArgumentError("world_size: must be at least 1, got 0");
  if (rank >= world_size) {
    throw InvalidArgumentError("rank: must be below world_size = " + std::to_string(world_size) + ", got " +
                               std::to_string(rank));
  }
  if (rows < world_size) {
    throw InvalidArgumentError("shard: " + std::to_string(rows) + " rows cannot give each of " +
                               std::to_string(world_size) + " ranks at least one row");
  }
  std::vector<std::size_t> order(rows);
  std::iota(order.begin(), order.end(), std::size_t{0});
  if (seed) {
    std::mt19937_64 engine(*seed);
    detail::shuffle_order(order, engine);
  }
  const std::size_t base = rows / world_size;
  const std::size_t extra = rows % world_size;
  const std::size_t begin = rank * base + std::min(rank, extra);
  const std::size_t count = base + (rank < extra ? 1 : 0);
  return {order.begin() + static_cast<std::ptrdiff_t>(begin),
          order.begin() + static_cast<std::ptrdiff_t>(begin + count)};
}

Targets Shard::targets() const {
  if (!labels.empty() || values.empty()) return Targets(std::span<const std::int32_t>(labels));
  return Targets(std::span<const float>(values));
}

Shard shard(std::span<const float> inputs, const Targets& targets, std::size_t input_size, std::size_t rank,
            std::size_t world_size, std::optional<std::uint64_t> seed) {
  if (input_size == 0) throw InvalidArgumentError("input_size: must be at least 1, got 0");
  if (inputs.size() % input_size != 0) {
    throw ShapeError("inputs: " + std::to_string(inputs.size()) + " floats are not whole rows of input_size = " +
                     std::to_string(input_size));
  }
  const std::size_t rows = inputs.size() / input_size;
  if (targets.size() == 0 || targets.size() % std::max<std::size_t>(rows, 1) != 0 ||
      (targets.is_labels() && targets.size() != rows)) {
    throw ShapeError("targets: expected one label or a whole row of values per input row (" + std::to_string(rows) +
                     " rows), got " + std::to_string(targets.size()) + " values");
  }
  const std::size_t width = targets.is_labels() ? 1 : targets.size() / rows;
  Shard part;
  const std::vector<std::size_t> rows_of_rank = shard_indices(rows, rank, world_size, seed);
  part.rows = rows_of_rank.size();
  part.inputs.resize(part.rows * input_size);
  if (targets.is_labels()) {
    part.labels.resize(part.rows);
  } else {
    part.values.resize(part.rows * width);
  }
  for (std::size_t i = 0; i < part.rows; ++i) {
    const std::size_t src = rows_of_rank[i];
    std::copy_n(inputs.data() + src * input_size, input_size, part.inputs.data() + i * input_size);
    if (targets.is_labels()) {
      part.labels[i] = targets.labels()[src];
    } else {
      std::copy_n(targets.values().data() + src * width, width, part.values.data() + i * width);
    }
  }
  return part;
}

void synchronize(Network& network, GradientExchange& exchange) {
  detail::NetworkState& s = network.state();
  detail::synchronize_state(exchange, s, s.guard.locking(), "synchronize");
}

std::uint64_t parameter_hash(const Network& network) {
  const std::vector<float> params = network.parameters();
  return detail::fnv1a(params.data(), params.size() * sizeof(float));
}

bool save(const Network& network, const std::string& path, const GradientExchange& exchange, bool all_ranks,
          bool include_optimizer_state) {
  const std::size_t r = exchange.rank();
  if (r != 0 && !all_ranks) return false;
  network.save(r == 0 ? path : path + ".rank" + std::to_string(r), include_optimizer_state);
  return true;
}

DistributedHistory train_distributed(Network& network, std::span<const float> inputs, const Targets& targets,
                                     LossType loss, FitOptions fit_options, const DistributedOptions& options) {
  const auto started = detail::Clock::now();
  GradientExchange& exchange = options.exchange != nullptr ? *options.exchange : communicator();
  auto* comm = dynamic_cast<Communicator*>(&exchange);
  const double allreduce_before = comm != nullptr ? comm->allreduce_seconds() : 0.0;
  const std::uint64_t calls_before = comm != nullptr ? comm->allreduce_calls() : 0;
  if (!options.checkpoint_path.empty() && options.checkpoint_every == 0) {
    throw InvalidArgumentError("checkpoint_every: must be at least 1, got 0");
  }

  DistributedHistory result;
  result.rank = exchange.rank();
  result.world_size = exchange.world_size();
  const bool writes = !options.checkpoint_path.empty() && (result.rank == 0 || options.save_on_all_ranks);
  std::uint64_t saved_version = 0;
  bool saved_any = false;
  // A checkpoint that cannot be written (disk full, bad path) must not
  // leave the other ranks waiting: the write error stops training on every
  // rank (the epoch's stop vote), and is rethrown after the final agreement.
  std::exception_ptr write_error;
  auto checkpoint = [&] {
    if (!writes || write_error) return;
    try {
      save(network, options.checkpoint_path, exchange, options.save_on_all_ranks, options.include_optimizer_state);
      saved_version = network.version();
      saved_any = true;
      ++result.checkpoints_written;
    } catch (...) {
      write_error = std::current_exception();
    }
  };
  auto user_epoch_end = fit_options.on_epoch_end;
  fit_options.on_epoch_end = [&](const EpochRecord& record) {
    bool keep = user_epoch_end ? user_epoch_end(record) : true;
    if (record.epoch % options.checkpoint_every == 0) checkpoint();
    return keep && !write_error;
  };
  fit_options.distributed = &exchange;

  const std::size_t local_rows = network.input_size() > 0 ? inputs.size() / network.input_size() : 0;
  result.history = kortexdl::fit(network, inputs, targets, loss, fit_options);
  if (!saved_any || saved_version != network.version()) checkpoint();  // the final parameters

  // One last agreement: every rank learns the global rows and whether a
  // rank failed to write its model file.
  double tail[2] = {write_error ? 1.0 : 0.0, static_cast<double>(local_rows)};
  exchange.allreduce_sum(tail, 2);
  result.global_rows = static_cast<std::size_t>(tail[1]);
  if (write_error) std::rethrow_exception(write_error);
  if (tail[0] > 0.0) {
    throw DistributedError("train_distributed: a rank could not write its model file (see its error); training "
                           "stopped on every rank");
  }
  result.seconds = detail::seconds_since(started);
  if (comm != nullptr) {
    result.allreduce_seconds = comm->allreduce_seconds() - allreduce_before;
    result.allreduces = comm->allreduce_calls() - calls_before;
  }
  return result;
}

Evaluation evaluate(const Network& network, std::span<const float> inputs, const Targets& targets, LossType loss,
                    GradientExchange& exchange, std::size_t batch_size) {
  // A rank whose evaluation fails still takes part, so nobody waits.
  std::exception_ptr local_error;
  Evaluation local;
  try {
    local = network.evaluate(inputs, targets, loss, batch_size);
  } catch (...) {
    local_error = std::current_exception();
  }
  const double samples = static_cast<double>(local.samples);
  double sums[4] = {local_error ? 1.0 : 0.0, local.loss * samples, local.accuracy.value_or(0.0) * samples, samples};
  exchange.allreduce_sum(sums, 4);
  if (local_error) std::rethrow_exception(local_error);
  if (sums[0] > 0.0) {
    throw InvalidArgumentError("evaluate: " + std::to_string(static_cast<std::size_t>(sums[0])) +
                               " rank(s) rejected their arguments (the error is in their output)");
  }
  Evaluation total;
  total.samples = static_cast<std::size_t>(sums[3]);
  total.loss = total.samples > 0 ? sums[1] / sums[3] : 0.0;
  if (local.accuracy && total.samples > 0) total.accuracy = sums[2] / sums[3];
  return total;
}

}  // namespace kortexdl::distributed
