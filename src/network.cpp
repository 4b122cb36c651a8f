#include "kortexdl/network.hpp"

#include <algorithm>
#include <cmath>
#include <optional>
#include <random>
#include <string>

#include "backend/gemm.hpp"
#include "checked_math.hpp"
#include "engine.hpp"
#include "init.hpp"
#include "kortexdl/error.hpp"
#include "kortexdl/version.hpp"
#include "network_state.hpp"
#include "optimizer_update.hpp"
#include "parallel/thread_budget.hpp"
#include "validation.hpp"
#include "workspace.hpp"

namespace kortexdl {

using detail::AccessGuard;
using detail::ComputeScope;
using detail::NetworkState;

std::string_view backend_name() { return backend::gemm_name(); }

namespace {

std::uint64_t draw_seed() {
  std::random_device device;
  return (static_cast<std::uint64_t>(device()) << 32) ^ device();
}

void forward_chunked(const detail::Architecture& arch, const float* params, std::span<const float> inputs,
                     std::size_t rows, std::size_t chunk, std::span<float> outputs) {
  const std::size_t in = arch.inputs();
  const std::size_t out = arch.outputs();
  for (std::size_t start = 0; start < rows; start += chunk) {
    const std::size_t n = std::min(chunk, rows - start);
    detail::forward_rows_split(arch, params, inputs.data() + start * in, n, outputs.data() + start * out);
  }
}

}  // namespace

// ---- construction ----------------------------------------------------------

Network::Network(std::vector<std::size_t> sizes, NetworkConfig config) {
  auto arch = detail::Architecture::make(sizes, config.hidden_activation, config.output_activation);
  detail::validate_optimizer(config.optimizer);
  const std::uint64_t seed = config.seed.has_value() ? *config.seed : draw_seed();
  state_ = std::make_unique<NetworkState>(std::move(arch), std::move(config), seed);
  state_->params.resize(state_->arch.parameter_count);
  detail::initialize_parameters(state_->arch, state_->config.init, seed, state_->params.data());
  state_->optimizer = detail::make_optimizer_state(state_->config.optimizer, state_->arch.parameter_count);
}

Network::Network(std::unique_ptr<NetworkState> state) : state_(std::move(state)) {}
Network::~Network() = default;
Network::Network(Network&&) noexcept = default;
Network& Network::operator=(Network&&) noexcept = default;

Network Network::clone() const {
  AccessGuard::Read access(state_->guard, state_->guard.locking(), "clone");
  auto copy = std::make_unique<NetworkState>(state_->arch, state_->config, state_->seed);
  copy->params = state_->params;
  copy->optimizer = state_->optimizer;
  copy->version.store(state_->version.load());
  return Network(std::move(copy));
}

// ---- architecture ----------------------------------------------------------

const std::vector<std::size_t>& Network::sizes() const { return state_->arch.sizes; }
std::size_t Network::input_size() const { return state_->arch.inputs(); }
std::size_t Network::output_size() const { return state_->arch.outputs(); }
std::size_t Network::num_layers() const { return state_->arch.layers.size(); }
std::size_t Network::parameter_count() const { return state_->arch.parameter_count; }
const std::vector<LayerLayout>& Network::layers() const { return state_->arch.layers; }
const NetworkConfig& Network::config() const { return state_->config; }
std::uint64_t Network::seed() const { return state_->seed; }

// ---- inference -------------------------------------------------------------

namespace {

// One row through the network with the rows of other concurrent one-row
// calls (docs/CONCURRENCY.md), its last layer through `last_activation`;
// false if the call computes alone (s.batcher.takes).
bool one_row_with_others(NetworkState& s, const float* input, float* output, Activation last_activation, bool lock,
                         const char* operation) {
  const double work = s.arch.forward_work(1);
  if (!lock || !s.batcher.takes(work)) return false;
  ComputeScope scope(work);
  auto compute = [&](const float* rows_in, std::size_t rows, float* rows_out, const Activation* last) {
    AccessGuard::Read access(s.guard, true, operation);
    detail::forward_rows_as_alone(s.arch, s.params.data(), rows_in, rows, rows_out, last);  // takes() checked it may
  };
  s.batcher.run(input, s.arch.inputs(), output, s.arch.outputs(), last_activation, compute);
  return true;
}

void forward_impl(NetworkState& s, std::span<const float> inputs, std::size_t batch_size, std::span<float> outputs,
                  bool lock, const char* operation) {
  detail::check_inputs_exact(inputs, batch_size, s.arch.inputs());
  detail::check_outputs(outputs, batch_size, s.arch.outputs());
  if (batch_size == 1 &&
      one_row_with_others(s, inputs.data(), outputs.data(), s.arch.output_activation, lock, operation)) {
    return;
  }
  const double work = s.arch.forward_work(batch_size);
  AccessGuard::Read access(s.guard, lock, operation);
  ComputeScope scope(work);
  detail::forward_rows_split(s.arch, s.params.data(), inputs.data(), batch_size, outputs.data());
}

void forward_batch_impl(NetworkState& s, std::span<const float> inputs, std::size_t batch_size,
                        std::span<float> outputs, bool lock, const char* operation) {
  detail::check_batch_size(batch_size);
  const std::size_t rows = detail::rows_of(inputs, s.arch.inputs());
  detail::check_outputs(outputs, rows, s.arch.outputs());
  const std::size_t chunk = std::min(batch_size, rows);
  // Chunks of one row give each row its outputs alone, which the row kernels
  // give for several rows at once: one call over all the rows, worth a team.
  const bool rows_as_alone = chunk == 1 && rows > 1 && detail::rows_compute_as_alone();
  AccessGuard::Read access(s.guard, lock, operation);
  ComputeScope scope(s.arch.forward_work(rows_as_alone ? rows : chunk));
  if (rows_as_alone) {
    detail::forward_rows_as_alone_split(s.arch, s.params.data(), inputs.data(), rows, outputs.data());
  } else {
    forward_chunked(s.arch, s.params.data(), inputs, rows, chunk, outputs);
  }
}

std::size_t rows_for_forward_batch(const NetworkState& s, std::span<const float> inputs) {
  return detail::rows_of(inputs, s.arch.inputs());
}

}  // namespace

void Network::forward(std::span<const float> inputs, std::size_t batch_size, std::span<float> outputs) const {
  forward_impl(*state_, inputs, batch_size, outputs, state_->guard.locking(), "forward");
}

std::vector<float> Network::forward(std::span<const float> inputs, std::size_t batch_size) const {
  detail::check_inputs_exact(inputs, batch_size, input_size());
  std::vector<float> outputs(detail::checked_mul(batch_size, output_size(), "batch_size x output_size"));
  forward(inputs, batch_size, outputs);
  return outputs;
}

void Network::forward_batch(std::span<const float> inputs, std::size_t batch_size, std::span<float> outputs) const {
  forward_batch_impl(*state_, inputs, batch_size, outputs, state_->guard.locking(), "forward_batch");
}

std::vector<float> Network::forward_batch(std::span<const float> inputs, std::size_t batch_size) const {
  detail::check_batch_size(batch_size);
  std::vector<float> outputs(detail::checked_mul(rows_for_forward_batch(*state_, inputs), output_size(), "outputs"));
  forward_batch(inputs, batch_size, outputs);
  return outputs;
}

void Network::forward_thread_safe(std::span<const float> inputs, std::size_t batch_size,
                                  std::span<float> outputs) const {
  forward_impl(*state_, inputs, batch_size, outputs, true, "forward_thread_safe");
}

std::vector<float> Network::forward_thread_safe(std::span<const float> inputs, std::size_t batch_size) const {
  detail::check_inputs_exact(inputs, batch_size, input_size());
  std::vector<float> outputs(detail::checked_mul(batch_size, output_size(), "batch_size x output_size"));
  forward_thread_safe(inputs, batch_size, outputs);
  return outputs;
}

void Network::forward_batch_thread_safe(std::span<const float> inputs, std::size_t batch_size,
                                        std::span<float> outputs) const {
  forward_batch_impl(*state_, inputs, batch_size, outputs, true, "forward_batch_thread_safe");
}

std::vector<float> Network::forward_batch_thread_safe(std::span<const float> inputs, std::size_t batch_size) const {
  detail::check_batch_size(batch_size);
  std::vector<float> outputs(detail::checked_mul(rows_for_forward_batch(*state_, inputs), output_size(), "outputs"));
  forward_batch_thread_safe(inputs, batch_size, outputs);
  return outputs;
}

// ---- training --------------------------------------------------------------

namespace {

float train_impl(NetworkState& s, std::span<const float> inputs, const Targets& targets, LossType loss,
                 float learning_rate, std::size_t batch_size, bool lock, const char* operation) {
  detail::check_inputs_exact(inputs, batch_size, s.arch.inputs());
  detail::check_learning_rate(learning_rate);
  detail::check_loss_matches_output(loss, s.arch.output_activation);
  const detail::TargetRows rows = detail::check_targets(targets, loss, batch_size, s.arch.outputs());
  detail::check_finite(inputs, "inputs");

  // Before the step gate and the combiner, which a forked child could find
  // held by threads it does not have (parallel/fork_safety.hpp).
  s.guard.refuse_if_forked_mid_write(operation);
  const double work = s.arch.training_work(batch_size);
  // Locked, large steps run at most one per CPU at a time, the others asleep
  // in line (parallel/step_gate.hpp); admitted before the call counts as in
  // flight, so the budget is shared among the admitted ones only.
  const bool gated = lock && detail::StepGate::worth_gating(batch_size, work);
  std::optional<detail::StepGate::Admission> admission;
  if (gated) admission.emplace(s.gate);
  ComputeScope scope(work, detail::CallComputes::maybe);
  const float scale = 1.0f / static_cast<float>(batch_size);
  auto mean_of = [&](const detail::LossSums& sums) { return sums.loss / static_cast<double>(batch_size); };
  // Locked, small steps (and, while calls outnumber the CPUs, those the gate
  // does not take) are run one after another by one of the concurrent
  // callers (parallel/step_combiner.hpp); the others compute their gradients
  // under the shared lock and only the update is exclusive.
  // Unlocked, the whole step is one write.
  const bool combine = lock && !gated && detail::StepCombiner::worth_combining(batch_size);
  // A combined step may wait for another thread's team: it must not keep
  // the team owner to one thread.
  if (!combine) detail::note_computing_call();
  auto step = [&](auto compute_gradients, auto checked_update) {
    if (combine) {
      auto whole_step = [&] {
        const detail::LossSums sums = compute_gradients();
        checked_update(mean_of(sums));
        s.published_write();
        return static_cast<float>(mean_of(sums));
      };
      return s.combiner.run(s.guard, operation, work, s.bytes_written_per_step(), whole_step);
    }
    detail::LossSums sums;
    if (lock) {
      {
        AccessGuard::Read access(s.guard, true, operation);
        sums = compute_gradients();
      }
      AccessGuard::Write access(s.guard, true, operation);
      checked_update(mean_of(sums));
      s.published_write();
    } else {
      AccessGuard::Write access(s.guard, false, operation);
      sums = compute_gradients();
      checked_update(mean_of(sums));
      s.published_write();
    }
    return static_cast<float>(mean_of(sums));
  };

  if (batch_size == 1) {
    detail::OneRowGradient gradient(s.arch);
    return step([&] { return gradient.compute(s.params.data(), inputs.data(), rows, loss, scale); },
                [&](double mean_loss) {
                  detail::checked_one_row_update(operation, mean_loss, s.config.optimizer, s.arch, s.params.data(),
                                                 gradient, learning_rate, s.optimizer);
                });
  }
  auto lease = detail::Workspace::local().acquire(s.arch.parameter_count);
  float* grad = lease.take(s.arch.parameter_count);
  return step(
      [&] {
        return detail::gradient_rows_split(s.arch, s.params.data(), inputs.data(), rows, batch_size, loss, scale,
                                           grad);
      },
      [&](double mean_loss) {
        detail::check_step_is_finite(operation, mean_loss, s.config.optimizer, s.arch, s.params.data(), grad,
                                     learning_rate, s.optimizer);
        detail::apply_update(s.config.optimizer, s.arch, s.params.data(), grad, learning_rate, s.optimizer);
      });
}

Evaluation evaluate_impl(NetworkState& s, std::span<const float> inputs, const Targets& targets, LossType loss,
                         std::size_t batch_size, bool lock, const char* operation) {
  const std::size_t rows = detail::rows_of(inputs, s.arch.inputs());
  detail::check_loss_matches_output(loss, s.arch.output_activation);
  const detail::TargetRows target_rows = detail::check_targets(targets, loss, rows, s.arch.outputs());

  if (rows == 1) {
    auto lease = detail::Workspace::local().acquire(detail::Workspace::padded_floats(s.arch.outputs()));
    float* final_values = lease.take(s.arch.outputs());
    if (one_row_with_others(s, inputs.data(), final_values, detail::final_activation(s.arch, loss), lock,
                            operation)) {
      return detail::to_evaluation(detail::loss_of_final_values(s.arch, final_values, target_rows, 1, loss), 1,
                                   s.arch.outputs(), loss);
    }
  }

  const std::size_t chunk = detail::evaluation_chunk(batch_size, rows);
  AccessGuard::Read access(s.guard, lock, operation);
  ComputeScope scope(s.arch.forward_work(chunk));
  detail::LossSums sums;
  for (std::size_t start = 0; start < rows; start += chunk) {
    const std::size_t n = std::min(chunk, rows - start);
    sums += detail::loss_rows_split(s.arch, s.params.data(), inputs.data() + start * s.arch.inputs(),
                              target_rows.offset(start, s.arch.outputs()), n, loss);
  }
  return detail::to_evaluation(sums, rows, s.arch.outputs(), loss);
}

}  // namespace

float Network::train_batch(std::span<const float> inputs, const Targets& targets, LossType loss, float learning_rate,
                           std::size_t batch_size) {
  return train_impl(*state_, inputs, targets, loss, learning_rate, batch_size, state_->guard.locking(),
                    "train_batch");
}

float Network::train_batch_thread_safe(std::span<const float> inputs, const Targets& targets, LossType loss,
                                       float learning_rate, std::size_t batch_size) {
  return train_impl(*state_, inputs, targets, loss, learning_rate, batch_size, true, "train_batch_thread_safe");
}

Network::Gradients Network::compute_gradients(std::span<const float> inputs, const Targets& targets, LossType loss,
                                              std::size_t batch_size) const {
  NetworkState& s = *state_;
  detail::check_inputs_exact(inputs, batch_size, s.arch.inputs());
  detail::check_loss_matches_output(loss, s.arch.output_activation);
  const detail::TargetRows rows = detail::check_targets(targets, loss, batch_size, s.arch.outputs());
  Gradients result;
  result.values.resize(s.arch.parameter_count);
  AccessGuard::Read access(s.guard, s.guard.locking(), "compute_gradients");
  ComputeScope scope(s.arch.training_work(batch_size));
  const auto sums = detail::gradient_rows_split(s.arch, s.params.data(), inputs.data(), rows, batch_size, loss,
                                                1.0f / static_cast<float>(batch_size), result.values.data());
  result.loss = static_cast<float>(sums.loss / static_cast<double>(batch_size));
  return result;
}

void Network::apply_gradients(std::span<const float> gradient, float learning_rate) {
  NetworkState& s = *state_;
  if (gradient.size() != s.arch.parameter_count) {
    throw ShapeError("gradient: expected parameter_count = " + std::to_string(s.arch.parameter_count) +
                     " floats, got " + std::to_string(gradient.size()));
  }
  detail::check_learning_rate(learning_rate);
  detail::check_finite(gradient, "gradient");
  AccessGuard::Write access(s.guard, s.guard.locking(), "apply_gradients");
  ComputeScope scope(s.arch.update_work());
  detail::check_step_is_finite("apply_gradients", 0.0, s.config.optimizer, s.arch, s.params.data(), gradient.data(),
                               learning_rate, s.optimizer);
  detail::apply_update(s.config.optimizer, s.arch, s.params.data(), gradient.data(), learning_rate, s.optimizer);
  s.published_write();
}

Evaluation Network::evaluate(std::span<const float> inputs, const Targets& targets, LossType loss,
                             std::size_t batch_size) const {
  return evaluate_impl(*state_, inputs, targets, loss, batch_size, state_->guard.locking(), "evaluate");
}

Evaluation Network::evaluate_thread_safe(std::span<const float> inputs, const Targets& targets, LossType loss,
                                         std::size_t batch_size) const {
  return evaluate_impl(*state_, inputs, targets, loss, batch_size, true, "evaluate_thread_safe");
}

// ---- concurrency -----------------------------------------------------------

void Network::enable_thread_safety(bool enabled) { state_->guard.set_locking(enabled); }
bool Network::thread_safety_enabled() const { return state_->guard.locking(); }
std::uint64_t Network::version() const { return state_->version.load(std::memory_order_acquire); }

void Network::set_update_observer(UpdateObserver observer) {
  AccessGuard::Write access(state_->guard, true, "set_update_observer");
  state_->observer = std::move(observer);
}

// ---- parameters ------------------------------------------------------------

std::vector<float> Network::parameters() const {
  AccessGuard::Read access(state_->guard, state_->guard.locking(), "parameters");
  return std::vector<float>(state_->params.begin(), state_->params.end());
}

void Network::set_parameters(std::span<const float> parameters) {
  if (parameters.size() != parameter_count()) {
    throw ShapeError("parameters: expected parameter_count = " + std::to_string(parameter_count()) +
                     " floats, got " + std::to_string(parameters.size()));
  }
  detail::check_finite(parameters, "parameters");
  AccessGuard::Write access(state_->guard, state_->guard.locking(), "set_parameters");
  std::copy(parameters.begin(), parameters.end(), state_->params.begin());
  state_->published_write();
}

namespace {
void check_layer_index(std::size_t layer, std::size_t count) {
  if (layer >= count) {
    throw InvalidArgumentError("layer: must be below the number of layers " + std::to_string(count) + ", got " +
                               std::to_string(layer));
  }
}
}  // namespace

std::vector<float> Network::weights(std::size_t layer) const {
  check_layer_index(layer, num_layers());
  const LayerLayout& l = state_->arch.layers[layer];
  AccessGuard::Read access(state_->guard, state_->guard.locking(), "weights");
  const float* begin = state_->params.data() + l.weights_offset;
  return std::vector<float>(begin, begin + l.inputs * l.outputs);
}

std::vector<float> Network::biases(std::size_t layer) const {
  check_layer_index(layer, num_layers());
  const LayerLayout& l = state_->arch.layers[layer];
  AccessGuard::Read access(state_->guard, state_->guard.locking(), "biases");
  const float* begin = state_->params.data() + l.biases_offset;
  return std::vector<float>(begin, begin + l.outputs);
}

void Network::set_layer(std::size_t layer, std::span<const float> weights, std::span<const float> biases) {
  check_layer_index(layer, num_layers());
  const LayerLayout& l = state_->arch.layers[layer];
  if (weights.size() != l.inputs * l.outputs) {
    throw ShapeError("weights: expected inputs x outputs = " + std::to_string(l.inputs) + " x " +
                     std::to_string(l.outputs) + " = " + std::to_string(l.inputs * l.outputs) + " floats, got " +
                     std::to_string(weights.size()));
  }
  if (biases.size() != l.outputs) {
    throw ShapeError("biases: expected " + std::to_string(l.outputs) + " floats, got " +
                     std::to_string(biases.size()));
  }
  detail::check_finite(weights, "weights");
  detail::check_finite(biases, "biases");
  AccessGuard::Write access(state_->guard, state_->guard.locking(), "set_layer");
  std::copy(weights.begin(), weights.end(), state_->params.begin() + static_cast<std::ptrdiff_t>(l.weights_offset));
  std::copy(biases.begin(), biases.end(), state_->params.begin() + static_cast<std::ptrdiff_t>(l.biases_offset));
  state_->published_write();
}

Network::OptimizerState Network::optimizer_state() const {
  AccessGuard::Read access(state_->guard, state_->guard.locking(), "optimizer_state");
  return state_->optimizer;
}

void Network::set_optimizer_state(const OptimizerState& state) {
  const std::size_t expected = detail::optimizer_buffer_count(state_->config.optimizer.kind);
  if (state.buffers.size() != expected) {
    throw ShapeError("optimizer_state: " + std::string(to_string(state_->config.optimizer.kind)) + " keeps " +
                     std::to_string(expected) + " buffers, got " + std::to_string(state.buffers.size()));
  }
  for (std::size_t i = 0; i < state.buffers.size(); ++i) {
    if (state.buffers[i].size() != parameter_count()) {
      throw ShapeError("optimizer_state: buffer " + std::to_string(i) + " must hold parameter_count = " +
                       std::to_string(parameter_count()) + " floats, got " + std::to_string(state.buffers[i].size()));
    }
    detail::check_finite(state.buffers[i], "optimizer_state");
  }
  AccessGuard::Write access(state_->guard, state_->guard.locking(), "set_optimizer_state");
  state_->optimizer = state;
}

void Network::reset_optimizer() {
  auto fresh = detail::make_optimizer_state(state_->config.optimizer, parameter_count());
  AccessGuard::Write access(state_->guard, state_->guard.locking(), "reset_optimizer");
  state_->optimizer = std::move(fresh);
}

}  // namespace kortexdl
