#pragma once
// A fully-connected network of dense layers over row-major fp32 batches.
//
// Concurrency contract (docs/CONCURRENCY.md):
//  * forward / forward_batch / evaluate only read the parameters; any number
//    of threads may run them at once, on one network, at any time.
//  * train_batch reads (gradient phase) then writes (update). With
//    enable_thread_safety(true) the parameters are guarded by a
//    writer-preferring reader-writer lock: reads and gradient phases share
//    it, only the update holds it exclusively, so readers always see whole
//    updates. Concurrent steps of up to 8 rows (and any step while calls
//    outnumber the CPUs) are instead run whole, one after another, by one
//    of their callers (serializable). Without it, a training call that
//    overlaps any other call on the same network is refused with
//    ConcurrencyError before it changes anything.
//  * The *_thread_safe variants take the lock for that call whatever the flag.
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <span>
#include <vector>

#include "kortexdl/evaluation.hpp"
#include "kortexdl/loss.hpp"
#include "kortexdl/network_config.hpp"
#include "kortexdl/targets.hpp"

namespace kortexdl {

namespace detail {
class NetworkState;
}

// Where one layer's weights and biases sit inside the flat parameter buffer.
// Weights are stored inputs x outputs, row-major (y = x W + b).
struct LayerLayout {
  std::size_t inputs = 0;
  std::size_t outputs = 0;
  std::size_t weights_offset = 0;
  std::size_t biases_offset = 0;
};

class Network {
 public:
  // sizes = {inputs, hidden..., outputs}: sizes.size() - 1 dense layers.
  explicit Network(std::vector<std::size_t> sizes, NetworkConfig config = {});
  ~Network();
  Network(Network&&) noexcept;
  Network& operator=(Network&&) noexcept;
  Network(const Network&) = delete;
  Network& operator=(const Network&) = delete;

  // A deep copy: parameters, optimizer state, configuration. Thread safety
  // starts disabled on the copy.
  Network clone() const;

  // ---- architecture ------------------------------------------------------
  const std::vector<std::size_t>& sizes() const;
  std::size_t input_size() const;
  std::size_t output_size() const;
  std::size_t num_layers() const;
  std::size_t parameter_count() const;
  const std::vector<LayerLayout>& layers() const;
  const NetworkConfig& config() const;
  std::uint64_t seed() const;  // the seed the weights were drawn from

  // ---- inference ---------------------------------------------------------
  // inputs: batch_size x input_size floats; outputs: batch_size x output_size.
  void forward(std::span<const float> inputs, std::size_t batch_size, std::span<float> outputs) const;
  std::vector<float> forward(std::span<const float> inputs, std::size_t batch_size) const;
  // Any number of rows (inputs.size() / input_size), computed in chunks of
  // batch_size rows so scratch memory stays bounded by one chunk.
  void forward_batch(std::span<const float> inputs, std::size_t batch_size, std::span<float> outputs) const;
  std::vector<float> forward_batch(std::span<const float> inputs, std::size_t batch_size) const;

  // ---- training ----------------------------------------------------------
  // One optimizer step on the whole batch; returns the batch's mean loss
  // before the step.
  float train_batch(std::span<const float> inputs, const Targets& targets, LossType loss,
                    float learning_rate, std::size_t batch_size);

  // The gradient of the batch's mean loss w.r.t. every parameter (same
  // layout as parameters()), without changing anything: a read, like
  // forward. With apply_gradients it splits train_batch in two, for custom
  // training loops and gradient averaging across processes.
  struct Gradients {
    float loss = 0.0f;
    std::vector<float> values;
  };
  Gradients compute_gradients(std::span<const float> inputs, const Targets& targets, LossType loss,
                              std::size_t batch_size) const;
  // One optimizer step with the given gradient (finite, parameter_count long).
  void apply_gradients(std::span<const float> gradient, float learning_rate);

  // Loss (and accuracy for classification) over all rows, in chunks of
  // batch_size rows (0 = all at once).
  Evaluation evaluate(std::span<const float> inputs, const Targets& targets, LossType loss,
                      std::size_t batch_size = 0) const;

  // ---- the same calls, locked for this call whatever the flag says -------
  void forward_thread_safe(std::span<const float> inputs, std::size_t batch_size, std::span<float> outputs) const;
  std::vector<float> forward_thread_safe(std::span<const float> inputs, std::size_t batch_size) const;
  void forward_batch_thread_safe(std::span<const float> inputs, std::size_t batch_size,
                                 std::span<float> outputs) const;
  std::vector<float> forward_batch_thread_safe(std::span<const float> inputs, std::size_t batch_size) const;
  float train_batch_thread_safe(std::span<const float> inputs, const Targets& targets, LossType loss,
                                float learning_rate, std::size_t batch_size);
  Evaluation evaluate_thread_safe(std::span<const float> inputs, const Targets& targets, LossType loss,
                                  std::size_t batch_size = 0) const;

  // ---- concurrency -------------------------------------------------------
  void enable_thread_safety(bool enabled = true);
  bool thread_safety_enabled() const;
  // Number of optimizer updates and parameter writes applied so far.
  std::uint64_t version() const;
  // Called after every parameter write, while the write lock is held, with
  // the new parameters and version. Must not call back into this network.
  // With thread safety on, concurrent small training steps are run by one of
  // their callers, so the observer may run on another caller's thread.
  using UpdateObserver = std::function<void(std::span<const float> parameters, std::uint64_t version)>;
  void set_update_observer(UpdateObserver observer);

  // ---- parameters --------------------------------------------------------
  std::vector<float> parameters() const;
  // Replaces all parameters (length parameter_count(), all finite). Counts as
  // a write. Optimizer state is kept.
  void set_parameters(std::span<const float> parameters);
  std::vector<float> weights(std::size_t layer) const;  // inputs x outputs
  std::vector<float> biases(std::size_t layer) const;
  void set_layer(std::size_t layer, std::span<const float> weights, std::span<const float> biases);

  // Optimizer state: empty for SGD, one buffer (velocity) for Momentum, two
  // (first and second moments) for Adam, each parameter_count() long, plus
  // the step count.
  struct OptimizerState {
    std::vector<std::vector<float>> buffers;
    std::uint64_t step = 0;
  };
  OptimizerState optimizer_state() const;
  void set_optimizer_state(const OptimizerState& state);
  void reset_optimizer();

  // ---- model files (docs/model-format.md) ---------------------------------
  // Writes the architecture, configuration, parameters and (optionally) the
  // optimizer state; atomic: a temporary file is renamed over `path`, so a
  // crash never leaves a half-written model. Throws IoError.
  void save(const std::string& path, bool include_optimizer_state = true) const;
  // Reads a file written by save(). Every length is checked before anything
  // is allocated: a truncated, corrupted, oversized or foreign file throws
  // FormatError, never crashes or allocates without bound. Bit-exact.
  static Network load(const std::string& path);
  // The same format in memory (pickling, sending over a network).
  std::vector<std::uint8_t> to_bytes(bool include_optimizer_state = true) const;
  static Network from_bytes(std::span<const std::uint8_t> bytes);

  // Internal: used by data-parallel trainers, the model-file reader and the
  // bindings; not part of the stable API.
  detail::NetworkState& state() const { return *state_; }

 private:
  explicit Network(std::unique_ptr<detail::NetworkState> state);
  std::unique_ptr<detail::NetworkState> state_;
};

}  // namespace kortexdl
