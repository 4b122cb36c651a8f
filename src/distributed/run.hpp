#pragma once
// What fit() and train_parallel_numa need to run one training call over
// several processes (a GradientExchange): the start-up agreement and the
// per-step row arithmetic. No MPI here; everything goes through the
// exchange's collectives.
#include <cstddef>
#include <cstdint>
#include <exception>
#include <vector>

#include "engine.hpp"
#include "kortexdl/distributed.hpp"
#include "kortexdl/loss.hpp"
#include "network_state.hpp"

namespace kortexdl::detail {

// The settings every rank must call a training call with.
struct RunSettings {
  const char* operation = "train";
  LossType loss = LossType::MSE;
  std::size_t batch_size = 0;
  std::size_t epochs = 0;
  float learning_rate = 0.0f;
  bool shuffle = false;
  std::uint64_t extra = 0;     // a hash of further settings (schedule, validation, ...)
  std::size_t rows = 0;        // this rank's training rows
  std::size_t validation_rows = 0;
};

// Collective start-up of a distributed call, in its constructor:
//  1. every rank contributes a fingerprint row (its architecture, optimizer,
//     settings, row counts, and whether its own argument checks passed);
//     every rank receives all of them, so every rank reaches the same verdict
//     and, on a mismatch or a failed rank, throws the same error. Nobody is
//     left waiting in a collective.
//  2. rank 0's parameters and optimizer state are broadcast (the network's
//     write access is held for it).
// `local_error` is this rank's own failure (argument checks), rethrown on
// this rank after the exchange; the others throw InvalidArgumentError
// naming the rank.
class DistributedRun {
 public:
  DistributedRun(GradientExchange& exchange, NetworkState& state, const RunSettings& settings,
                 std::exception_ptr local_error, bool lock);

  GradientExchange& exchange() const { return exchange_; }
  std::size_t world_size() const { return rows_.size(); }
  // Training rows over all ranks, the most any rank has, and the validation
  // rows over all ranks.
  std::size_t global_rows() const { return global_rows_; }
  std::size_t max_rows() const { return max_rows_; }
  std::size_t global_validation_rows() const { return global_validation_rows_; }

  // Every rank steps the same number of times per epoch: enough for the
  // rank with the most rows; a rank whose rows ran out contributes none.
  std::size_t steps_per_epoch(std::size_t batch) const { return (max_rows_ + batch - 1) / batch; }
  std::size_t local_rows(std::size_t step, std::size_t batch) const { return rows_at(my_rows_, step, batch); }
  std::size_t global_rows(std::size_t step, std::size_t batch) const;

  // Collective: true on every rank when any rank passes true.
  bool any(bool flag) const;
  // Collective: the sums over every rank.
  LossSums sum(const LossSums& local) const;

 private:
  static std::size_t rows_at(std::size_t rows, std::size_t step, std::size_t batch);

  GradientExchange& exchange_;
  std::vector<std::size_t> rows_;  // every rank's training rows
  std::size_t my_rows_ = 0;
  std::size_t global_rows_ = 0;
  std::size_t max_rows_ = 0;
  std::size_t global_validation_rows_ = 0;
};

// Checks the fingerprint only (no settings) and broadcasts: the public
// distributed::synchronize().
void synchronize_state(GradientExchange& exchange, NetworkState& state, bool lock, const char* operation);

// FNV-1a over bytes, chainable.
std::uint64_t fnv1a(const void* data, std::size_t bytes, std::uint64_t hash = 1469598103934665603ull);

}  // namespace kortexdl::detail
