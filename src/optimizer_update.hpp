#pragma once
// Applies one optimizer step to a flat parameter buffer.
#include <cstddef>
#include <vector>

#include "architecture.hpp"
#include "engine.hpp"
#include "kortexdl/network.hpp"
#include "kortexdl/optimizer.hpp"

namespace kortexdl::detail {

// Number of state buffers the optimizer keeps (0 SGD, 1 Momentum, 2 Adam).
std::size_t optimizer_buffer_count(OptimizerKind kind);

// Validates hyper-parameters (finite, in range); throws InvalidArgumentError.
void validate_optimizer(const OptimizerConfig& config);

// Allocates zeroed state for `parameter_count` parameters.
Network::OptimizerState make_optimizer_state(const OptimizerConfig& config, std::size_t parameter_count);

// Throws NumericalError (and changes nothing) when applying `grad` would
// not leave every parameter and optimizer state finite: a non-finite loss
// (as float), a non-finite gradient, or an update that overflows. The
// common case costs one pass over the gradient; the exact dry run of the
// update only runs when the gradient or the learning rate is huge.
void check_step_is_finite(const char* operation, double mean_loss, const OptimizerConfig& config,
                          const Architecture& arch, const float* params, const float* grad, float learning_rate,
                          const Network::OptimizerState& state);

// params -= step(grad); weight decay applies to weights, not biases. Every
// replica that applies the same grad to the same params and state gets
// bit-identical results.
void apply_update(const OptimizerConfig& config, const Architecture& arch, float* params, const float* grad,
                  float learning_rate, Network::OptimizerState& state);

// check_step_is_finite then apply_update for a one-row step's gradient
// (engine.hpp, OneRowGradient), with the same results bit for bit and the
// same errors, reading and writing each parameter once. When the factors
// show a finite loss and a gradient far from overflow (every ordinary step),
// the update forms the gradient row by row in cache; otherwise the gradient
// is written out and checked in full.
void checked_one_row_update(const char* operation, double mean_loss, const OptimizerConfig& config,
                            const Architecture& arch, float* params, const OneRowGradient& gradient,
                            float learning_rate, Network::OptimizerState& state);

}  // namespace kortexdl::detail
