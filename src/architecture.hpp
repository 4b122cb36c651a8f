#pragma once
// The shape of a network, separate from its parameters so several parameter
// replicas (data-parallel training) can share one description.
#include <cstddef>
#include <vector>

#include "kortexdl/activation.hpp"
#include "kortexdl/network.hpp"

namespace kortexdl::detail {

struct Architecture {
  std::vector<std::size_t> sizes;
  std::vector<LayerLayout> layers;
  Activation hidden_activation = Activation::ReLU;
  Activation output_activation = Activation::Linear;
  std::size_t parameter_count = 0;
  std::size_t max_width = 0;          // widest layer, inputs included
  std::size_t hidden_floats = 0;      // sum of hidden layer widths
  double forward_flops_per_row = 0;   // 2 * sum(in * out)

  // Validates sizes and activations and lays out the flat parameter buffer:
  // per layer, weights (inputs x outputs) then biases, back to back.
  static Architecture make(const std::vector<std::size_t>& sizes, Activation hidden, Activation output);

  std::size_t inputs() const { return sizes.front(); }
  std::size_t outputs() const { return sizes.back(); }
  double forward_flops(std::size_t rows) const { return forward_flops_per_row * static_cast<double>(rows); }
  // forward + dW for every layer + dX for all but the first.
  double training_flops(std::size_t rows) const;

  // Work estimates that decide how many threads a call gets: flops plus
  // the parameter traffic (in flop-equivalents), which dominates small
  // batches: a batch-1 forward pass of a 2.7 MB network runs 2.3x faster on
  // two threads although it is only 1.35 MFLOP.
  double forward_work(std::size_t rows) const;
  double training_work(std::size_t rows) const;  // gradient and optimizer update
  double update_work() const;
};

}  // namespace kortexdl::detail
