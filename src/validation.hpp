#pragma once
// Argument checks shared by every entry point. Each throws before anything
// is touched, with a message naming the argument and expected vs actual.
#include <cstddef>
#include <span>

#include "architecture.hpp"
#include "engine.hpp"
#include "kortexdl/loss.hpp"
#include "kortexdl/targets.hpp"

namespace kortexdl::detail {

void check_batch_size(std::size_t batch_size, const char* argument = "batch_size");
// inputs must hold exactly batch_size rows.
void check_inputs_exact(std::span<const float> inputs, std::size_t batch_size, std::size_t width);
// inputs must hold a whole number (>= 1) of rows; returns it.
std::size_t rows_of(std::span<const float> inputs, std::size_t width, const char* argument = "inputs");
void check_outputs(std::span<const float> outputs, std::size_t rows, std::size_t width);
void check_learning_rate(float learning_rate);
void check_loss_matches_output(LossType loss, Activation output);
// Length, label range, finiteness, BCE range; returns the row view.
TargetRows check_targets(const Targets& targets, LossType loss, std::size_t rows, std::size_t outputs);
void check_finite(std::span<const float> values, const char* argument);

}  // namespace kortexdl::detail
