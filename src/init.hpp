#pragma once
#include <cstdint>

#include "architecture.hpp"
#include "kortexdl/init.hpp"

namespace kortexdl::detail {

// He-normal for ReLU/GELU layers, Xavier-uniform otherwise, unless the
// config names one; biases start at zero. Deterministic in the seed.
WeightInit resolve_init(WeightInit init, Activation activation);
void initialize_parameters(const Architecture& arch, WeightInit init, std::uint64_t seed, float* params);

}  // namespace kortexdl::detail
