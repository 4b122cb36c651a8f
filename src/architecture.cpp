#include "architecture.hpp"

#include <algorithm>
#include <string>

#include "checked_math.hpp"
#include "kortexdl/error.hpp"

namespace kortexdl::detail {

Architecture Architecture::make(const std::vector<std::size_t>& sizes, Activation hidden, Activation output) {
  if (sizes.size() < 2) {
    throw InvalidArgumentError("sizes: need at least 2 entries (input size and output size), got " +
                               std::to_string(sizes.size()));
  }
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    if (sizes[i] == 0) {
      throw InvalidArgumentError("sizes[" + std::to_string(i) + "]: every layer needs at least 1 unit, got 0");
    }
  }
  if (hidden == Activation::Softmax) {
    throw InvalidArgumentError("hidden_activation: softmax is only valid for the output layer");
  }
  Architecture arch;
  arch.sizes = sizes;
  arch.hidden_activation = hidden;
  arch.output_activation = output;
  std::size_t offset = 0;
  double flops = 0;
  for (std::size_t l = 0; l + 1 < sizes.size(); ++l) {
    LayerLayout layer;
    layer.inputs = sizes[l];
    layer.outputs = sizes[l + 1];
    layer.weights_offset = offset;
    offset = checked_add(offset, checked_mul(layer.inputs, layer.outputs, "sizes (layer weights)"), "sizes");
    layer.biases_offset = offset;
    offset = checked_add(offset, layer.outputs, "sizes");
    if (offset > kMaxParameters) {
      throw ResourceLimitError("sizes: the network would have more than " + std::to_string(kMaxParameters) +
                               " parameters (limit " + std::to_string(kMaxParameters * sizeof(float) >> 30) +
                               " GiB); layer " + std::to_string(l) + " is " + std::to_string(layer.inputs) + " x " +
                               std::to_string(layer.outputs));
    }
    flops += 2.0 * static_cast<double>(layer.inputs) * static_cast<double>(layer.outputs);
    arch.layers.push_back(layer);
  }
  arch.parameter_count = offset;
  arch.max_width = *std::max_element(sizes.begin(), sizes.end());
  for (std::size_t l = 1; l + 1 < sizes.size(); ++l) arch.hidden_floats += sizes[l];
  arch.forward_flops_per_row = flops;
  return arch;
}

namespace {
// A byte moved costs about as much time as this many flops on a core.
constexpr double kFlopsPerByte = 4.0;
}  // namespace

double Architecture::forward_work(std::size_t rows) const {
  return forward_flops(rows) + kFlopsPerByte * sizeof(float) * static_cast<double>(parameter_count);
}

double Architecture::update_work() const {
  // Parameters, gradient and up to two optimizer buffers, read and written.
  return kFlopsPerByte * sizeof(float) * 6.0 * static_cast<double>(parameter_count);
}

double Architecture::training_work(std::size_t rows) const {
  // The GEMMs read the weights twice and write the gradient once.
  return training_flops(rows) + kFlopsPerByte * sizeof(float) * 3.0 * static_cast<double>(parameter_count) +
         update_work();
}

double Architecture::training_flops(std::size_t rows) const {
  const double first = 2.0 * static_cast<double>(layers.front().inputs) * static_cast<double>(layers.front().outputs);
  return (3.0 * forward_flops_per_row - first) * static_cast<double>(rows);
}

}  // namespace kortexdl::detail
