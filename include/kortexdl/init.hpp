#pragma once
#include <string_view>

namespace kortexdl {

enum class WeightInit {
  Auto,          // He for ReLU/GELU layers, Xavier for the others
  HeNormal,      // N(0, 2 / fan_in)
  XavierUniform, // U(-a, a), a = sqrt(6 / (fan_in + fan_out))
};

std::string_view to_string(WeightInit init);
WeightInit parse_init(std::string_view name, std::string_view argument = "init");

}  // namespace kortexdl
