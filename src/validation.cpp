#include "validation.hpp"

#include <cmath>
#include <string>

#include "backend/kernels.hpp"
#include "checked_math.hpp"
#include "format.hpp"
#include "kortexdl/error.hpp"

namespace kortexdl::detail {

namespace {
std::string num(std::size_t v) { return std::to_string(v); }

}  // namespace

void check_batch_size(std::size_t batch_size, const char* argument) {
  if (batch_size == 0) throw InvalidArgumentError(std::string(argument) + ": must be at least 1, got 0");
}

void check_inputs_exact(std::span<const float> inputs, std::size_t batch_size, std::size_t width) {
  check_batch_size(batch_size);
  const std::size_t expected = checked_mul(batch_size, width, "batch_size x input_size");
  if (inputs.size() != expected) {
    throw ShapeError("inputs: expected batch_size x input_size = " + num(batch_size) + " x " + num(width) + " = " +
                     num(expected) + " floats, got " + num(inputs.size()));
  }
}

std::size_t rows_of(std::span<const float> inputs, std::size_t width, const char* argument) {
  if (inputs.empty()) {
    throw ShapeError(std::string(argument) + ": expected at least one row of " + num(width) + " floats, got none");
  }
  if (inputs.size() % width != 0) {
    throw ShapeError(std::string(argument) + ": length " + num(inputs.size()) + " is not a multiple of input_size " +
                     num(width));
  }
  return inputs.size() / width;
}

void check_outputs(std::span<const float> outputs, std::size_t rows, std::size_t width) {
  const std::size_t expected = checked_mul(rows, width, "rows x output_size");
  if (outputs.size() != expected) {
    throw ShapeError("outputs: expected rows x output_size = " + num(rows) + " x " + num(width) + " = " +
                     num(expected) + " floats, got " + num(outputs.size()));
  }
}

void check_learning_rate(float learning_rate) {
  if (!(std::isfinite(learning_rate) && learning_rate > 0.0f)) {
    throw InvalidArgumentError("learning_rate: must be a finite number > 0, got " +
                               format_number(learning_rate));
  }
}

void check_loss_matches_output(LossType loss, Activation output) {
  if (loss == LossType::CrossEntropy && output != Activation::Softmax && output != Activation::Linear) {
    throw InvalidArgumentError(std::string("loss_type: CrossEntropy needs a softmax or linear (logits) output layer, "
                                           "the network's output activation is ") +
                               std::string(to_string(output)));
  }
  if (loss == LossType::BinaryCrossEntropy && output != Activation::Sigmoid && output != Activation::Linear) {
    throw InvalidArgumentError(std::string("loss_type: BinaryCrossEntropy needs a sigmoid or linear (logits) output "
                                           "layer, the network's output activation is ") +
                               std::string(to_string(output)));
  }
}

void check_finite(std::span<const float> values, const char* argument) {
  if (backend::all_finite(values.data(), values.size())) return;
  for (std::size_t i = 0; i < values.size(); ++i) {
    if (!std::isfinite(values[i])) {
      throw InvalidArgumentError(std::string(argument) + ": every value must be finite, got " +
                                 format_number(values[i]) + " at index " + num(i));
    }
  }
}

TargetRows check_targets(const Targets& targets, LossType loss, std::size_t rows, std::size_t outputs) {
  if (targets.is_labels()) {
    if (loss != LossType::CrossEntropy) {
      throw InvalidArgumentError("targets: integer class labels need LossType.CrossEntropy; for " +
                                 std::string(to_string(loss)) + " pass float targets (rows x outputs)");
    }
    const auto labels = targets.labels();
    if (labels.size() != rows) {
      throw ShapeError("targets: expected one label per row = " + num(rows) + " labels, got " + num(labels.size()));
    }
    for (std::size_t i = 0; i < labels.size(); ++i) {
      if (labels[i] < 0 || static_cast<std::size_t>(labels[i]) >= outputs) {
        throw InvalidArgumentError("targets: label " + std::to_string(labels[i]) + " at index " + num(i) +
                                   " is out of range [0, " + num(outputs) + ")");
      }
    }
    return TargetRows{nullptr, labels.data()};
  }
  const auto values = targets.values();
  const std::size_t expected = checked_mul(rows, outputs, "rows x output_size");
  if (values.size() != expected) {
    std::string hint;
    if (loss == LossType::CrossEntropy && values.size() == rows) {
      hint = " (for class labels pass an integer array)";
    }
    throw ShapeError("targets: expected rows x output_size = " + num(rows) + " x " + num(outputs) + " = " +
                     num(expected) + " floats, got " + num(values.size()) + hint);
  }
  check_finite(values, "targets");
  if (loss == LossType::BinaryCrossEntropy || loss == LossType::CrossEntropy) {
    for (std::size_t i = 0; i < values.size(); ++i) {
      const bool ok = values[i] >= 0.0f && (loss == LossType::CrossEntropy || values[i] <= 1.0f);
      if (!ok) {
        throw InvalidArgumentError(std::string("targets: ") + std::string(to_string(loss)) + " targets must be " +
                                   (loss == LossType::CrossEntropy ? "non-negative" : "in [0, 1]") + ", got " +
                                   format_number(values[i]) + " at index " + num(i));
      }
    }
  }
  return TargetRows{values.data(), nullptr};
}

}  // namespace kortexdl::detail
