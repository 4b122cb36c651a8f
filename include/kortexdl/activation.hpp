#pragma once
#include <string>
#include <string_view>

namespace kortexdl {

enum class Activation {
  ReLU,
  Tanh,
  Sigmoid,
  GELU,     // exact (erf-based) GELU, as PyTorch's default
  Linear,
  Softmax,  // output layer only; fused with cross-entropy when training
};

std::string_view to_string(Activation activation);
// Accepts the names above case-insensitively ("relu", "gelu", ...); throws
// InvalidArgumentError naming `argument` for anything else.
Activation parse_activation(std::string_view name, std::string_view argument = "activation");

}  // namespace kortexdl
