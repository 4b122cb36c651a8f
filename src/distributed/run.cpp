#include "distributed/run.hpp"

#include <algorithm>
#include <cstring>
#include <string>

#include "kortexdl/activation.hpp"
#include "kortexdl/error.hpp"
#include "kortexdl/optimizer.hpp"

namespace kortexdl::detail {

std::uint64_t fnv1a(const void* data, std::size_t bytes, std::uint64_t hash) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (std::size_t i = 0; i < bytes; ++i) {
    hash ^= p[i];
    hash *= 1099511628211ull;
  }
  return hash;
}

namespace {

// One rank's fingerprint: a row of doubles (every value an integer below
// 2^53, so summing rows that are zero elsewhere gathers them exactly).
constexpr std::size_t kMaxSizes = 16;
enum Field : std::size_t {
  kOk,
  kParams,
  kLayerSizes,  // number of entries in sizes
  kSizes,
  kArchHi = kSizes + kMaxSizes,
  kArchLo,
  kHidden,
  kOutput,
  kOptKind,
  kOptHi,
  kOptLo,
  kSetHi,
  kSetLo,
  kLoss,
  kBatch,
  kEpochs,
  kRows,
  kValidationRows,
  kFields
};

template <class T>
std::uint64_t mix(std::uint64_t hash, const T& value) {
  return fnv1a(&value, sizeof value, hash);
}

std::uint64_t architecture_hash(const Architecture& arch) {
  std::uint64_t h = fnv1a(nullptr, 0);
  for (std::size_t s : arch.sizes) h = mix(h, static_cast<std::uint64_t>(s));
  h = mix(h, static_cast<int>(arch.hidden_activation));
  return mix(h, static_cast<int>(arch.output_activation));
}

std::uint64_t optimizer_hash(const OptimizerConfig& c) {
  std::uint64_t h = fnv1a(nullptr, 0);
  h = mix(h, static_cast<int>(c.kind));
  h = mix(h, c.momentum);
  h = mix(h, static_cast<int>(c.nesterov));
  h = mix(h, c.beta1);
  h = mix(h, c.beta2);
  h = mix(h, c.epsilon);
  return mix(h, c.weight_decay);
}

void put_hash(std::vector<double>& row, std::size_t hi, std::uint64_t h) {
  row[hi] = static_cast<double>(h >> 32);
  row[hi + 1] = static_cast<double>(h & 0xffffffffull);
}

std::vector<double> fingerprint(const NetworkState& state, const RunSettings* settings, bool ok) {
  std::vector<double> row(kFields, 0.0);
  row[kOk] = ok ? 1.0 : 0.0;
  const Architecture& arch = state.arch;
  row[kParams] = static_cast<double>(arch.parameter_count);
  row[kLayerSizes] = static_cast<double>(arch.sizes.size());
  for (std::size_t i = 0; i < std::min(kMaxSizes, arch.sizes.size()); ++i) {
    row[kSizes + i] = static_cast<double>(arch.sizes[i]);
  }
  put_hash(row, kArchHi, architecture_hash(arch));
  row[kHidden] = static_cast<double>(static_cast<int>(arch.hidden_activation));
  row[kOutput] = static_cast<double>(static_cast<int>(arch.output_activation));
  row[kOptKind] = static_cast<double>(static_cast<int>(state.config.optimizer.kind));
  put_hash(row, kOptHi, optimizer_hash(state.config.optimizer));
  if (settings != nullptr) {
    std::uint64_t h = fnv1a(settings->operation, std::strlen(settings->operation));
    h = mix(h, static_cast<int>(settings->loss));
    h = mix(h, static_cast<std::uint64_t>(settings->batch_size));
    h = mix(h, static_cast<std::uint64_t>(settings->epochs));
    h = mix(h, settings->learning_rate);
    h = mix(h, static_cast<int>(settings->shuffle));
    h = mix(h, settings->extra);
    put_hash(row, kSetHi, h);
    row[kLoss] = static_cast<double>(static_cast<int>(settings->loss));
    row[kBatch] = static_cast<double>(settings->batch_size);
    row[kEpochs] = static_cast<double>(settings->epochs);
    row[kRows] = static_cast<double>(settings->rows);
    row[kValidationRows] = static_cast<double>(settings->validation_rows);
  }
  return row;
}

// Every rank's row, on every rank.
std::vector<double> gather(GradientExchange& exchange, const std::vector<double>& mine) {
  std::vector<double> all(mine.size() * exchange.world_size(), 0.0);
  std::copy(mine.begin(), mine.end(), all.begin() + static_cast<std::ptrdiff_t>(exchange.rank() * mine.size()));
  exchange.allreduce_sum(all.data(), all.size());
  return all;
}

std::size_t as_size(double v) { return static_cast<std::size_t>(v); }

std::string describe_network(const double* row) {
  std::string text;
  const std::size_t entries = as_size(row[kLayerSizes]);
  for (std::size_t i = 0; i < std::min(kMaxSizes, entries); ++i) {
    if (i > 0) text += "-";
    text += std::to_string(as_size(row[kSizes + i]));
  }
  if (entries > kMaxSizes) text += "-... (" + std::to_string(entries) + " sizes)";
  text += " (" + std::string(to_string(static_cast<Activation>(static_cast<int>(row[kHidden])))) + " hidden, " +
          std::string(to_string(static_cast<Activation>(static_cast<int>(row[kOutput])))) + " output, " +
          std::to_string(as_size(row[kParams])) + " parameters)";
  return text;
}

std::string describe_settings(const double* row) {
  return "loss " + std::string(to_string(static_cast<LossType>(static_cast<int>(row[kLoss])))) + ", batch_size " +
         std::to_string(as_size(row[kBatch])) + ", epochs " + std::to_string(as_size(row[kEpochs]));
}

// The ranks whose fields [first, last] differ from rank 0's, "rank 1: ..., rank 2: ...".
template <class Describe>
std::string differing(const std::vector<double>& all, std::size_t world, std::size_t first, std::size_t last,
                      Describe describe) {
  std::string text = "rank 0 has " + describe(all.data());
  std::size_t listed = 0;
  std::size_t more = 0;
  for (std::size_t r = 1; r < world; ++r) {
    const double* row = all.data() + r * kFields;
    if (std::equal(row + first, row + last + 1, all.data() + first)) continue;
    if (listed < 4) {
      text += ", rank " + std::to_string(r) + " has " + describe(row);
      ++listed;
    } else {
      ++more;
    }
  }
  if (more > 0) text += ", and " + std::to_string(more) + " more rank(s) differ";
  return text;
}

// The verdict, identical on every rank (it only reads the gathered rows).
void check_fingerprints(const std::vector<double>& all, std::size_t world, std::size_t me, const char* operation,
                        std::exception_ptr local_error, bool with_settings) {
  std::string failed;
  for (std::size_t r = 0; r < world; ++r) {
    if (all[r * kFields + kOk] == 0.0) failed += (failed.empty() ? "" : ", ") + std::to_string(r);
  }
  if (!failed.empty()) {
    if (local_error) std::rethrow_exception(local_error);
    throw InvalidArgumentError(std::string(operation) + ": rank(s) " + failed +
                               " rejected their arguments before training started (the error is in that rank's "
                               "output); no rank trained (this is rank " +
                               std::to_string(me) + ")");
  }
  auto mismatch = [&](std::size_t first, std::size_t last) {
    for (std::size_t r = 1; r < world; ++r) {
      const double* row = all.data() + r * kFields;
      if (!std::equal(row + first, row + last + 1, all.data() + first)) return true;
    }
    return false;
  };
  const std::string where = " (this is rank " + std::to_string(me) + " of " + std::to_string(world) + ")";
  if (mismatch(kParams, kOutput)) {
    throw InvalidArgumentError(std::string(operation) + ": the ranks have different networks: " +
                               differing(all, world, kParams, kOutput, describe_network) +
                               "; every rank must build the same architecture (the parameters themselves are "
                               "copied from rank 0)" +
                               where);
  }
  if (mismatch(kOptKind, kOptLo)) {
    auto describe = [](const double* row) {
      return std::string(to_string(static_cast<OptimizerKind>(static_cast<int>(row[kOptKind])))) +
             " (hyper-parameter hash " + std::to_string(as_size(row[kOptHi])) + ":" +
             std::to_string(as_size(row[kOptLo])) + ")";
    };
    throw InvalidArgumentError(std::string(operation) +
                               ": the ranks have different optimizers: " + differing(all, world, kOptKind, kOptLo, describe) +
                               "; every rank must configure the same optimizer with the same hyper-parameters" +
                               where);
  }
  if (with_settings && mismatch(kSetHi, kEpochs)) {
    throw InvalidArgumentError(std::string(operation) + ": the ranks called it with different settings: " +
                               differing(all, world, kSetHi, kEpochs, describe_settings) +
                               "; every rank must pass the same loss, batch_size, epochs, learning rate, shuffle, "
                               "schedule and validation settings (only the data differ)" +
                               where);
  }
}

void broadcast_state(GradientExchange& exchange, NetworkState& state, bool lock, const char* operation) {
  AccessGuard::Write write(state.guard, lock, operation);
  exchange.broadcast(state.params.data(), state.params.size() * sizeof(float), 0);
  for (auto& buffer : state.optimizer.buffers) exchange.broadcast(buffer.data(), buffer.size() * sizeof(float), 0);
  exchange.broadcast(&state.optimizer.step, sizeof state.optimizer.step, 0);
  state.published_write();
}

}  // namespace

DistributedRun::DistributedRun(GradientExchange& exchange, NetworkState& state, const RunSettings& settings,
                               std::exception_ptr local_error, bool lock)
    : exchange_(exchange) {
  const std::size_t world = exchange.world_size();
  const std::vector<double> all = gather(exchange, fingerprint(state, &settings, local_error == nullptr));
  check_fingerprints(all, world, exchange.rank(), settings.operation, local_error, true);
  for (std::size_t r = 0; r < world; ++r) {
    const std::size_t rows = as_size(all[r * kFields + kRows]);
    rows_.push_back(rows);
    global_rows_ += rows;
    max_rows_ = std::max(max_rows_, rows);
    global_validation_rows_ += as_size(all[r * kFields + kValidationRows]);
  }
  my_rows_ = rows_[exchange.rank()];
  broadcast_state(exchange, state, lock, settings.operation);
}

std::size_t DistributedRun::rows_at(std::size_t rows, std::size_t step, std::size_t batch) {
  const std::size_t start = step * batch;
  return start >= rows ? 0 : std::min(batch, rows - start);
}

std::size_t DistributedRun::global_rows(std::size_t step, std::size_t batch) const {
  std::size_t total = 0;
  for (std::size_t rows : rows_) total += rows_at(rows, step, batch);
  return total;
}

bool DistributedRun::any(bool flag) const {
  double value = flag ? 1.0 : 0.0;
  exchange_.allreduce_sum(&value, 1);
  return value > 0.0;
}

LossSums DistributedRun::sum(const LossSums& local) const {
  double values[2] = {local.loss, static_cast<double>(local.correct)};
  exchange_.allreduce_sum(values, 2);
  LossSums total;
  total.loss = values[0];
  total.correct = static_cast<std::size_t>(values[1]);
  return total;
}

void synchronize_state(GradientExchange& exchange, NetworkState& state, bool lock, const char* operation) {
  const std::vector<double> all = gather(exchange, fingerprint(state, nullptr, true));
  check_fingerprints(all, exchange.world_size(), exchange.rank(), operation, nullptr, false);
  broadcast_state(exchange, state, lock, operation);
}

}  // namespace kortexdl::detail
