#pragma once
#include <cstdint>
#include <optional>

#include "kortexdl/activation.hpp"
#include "kortexdl/init.hpp"
#include "kortexdl/optimizer.hpp"

namespace kortexdl {

struct NetworkConfig {
  Activation hidden_activation = Activation::ReLU;
  Activation output_activation = Activation::Linear;
  WeightInit init = WeightInit::Auto;
  // Same seed => bit-identical initial weights. Without one, a seed is drawn
  // from std::random_device and reported by Network::seed().
  std::optional<std::uint64_t> seed;
  OptimizerConfig optimizer;
};

}  // namespace kortexdl
