#include "init.hpp"

#include <cmath>
#include <random>

namespace kortexdl::detail {

namespace {

// Our own transforms of mt19937_64's (standardised) output, so the weights
// for a seed are the same with every standard library.
double uniform01(std::mt19937_64& engine) {
  return static_cast<double>(engine() >> 11) * (1.0 / 9007199254740992.0);  // [0, 1)
}

double standard_normal(std::mt19937_64& engine) {
  // Box-Muller; 1 - u keeps the logarithm's argument in (0, 1].
  const double u1 = 1.0 - uniform01(engine);
  const double u2 = uniform01(engine);
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
}

}  // namespace

WeightInit resolve_init(WeightInit init, Activation activation) {
  if (init != WeightInit::Auto) return init;
  return (activation == Activation::ReLU || activation == Activation::GELU) ? WeightInit::HeNormal
                                                                            : WeightInit::XavierUniform;
}

void initialize_parameters(const Architecture& arch, WeightInit init, std::uint64_t seed, float* params) {
  std::mt19937_64 engine(seed);
  for (std::size_t l = 0; l < arch.layers.size(); ++l) {
    const LayerLayout& layer = arch.layers[l];
    const bool is_output = l + 1 == arch.layers.size();
    const Activation activation = is_output ? arch.output_activation : arch.hidden_activation;
    const WeightInit kind = resolve_init(init, activation);
    const double fan_in = static_cast<double>(layer.inputs);
    const double fan_out = static_cast<double>(layer.outputs);
    float* w = params + layer.weights_offset;
    const std::size_t count = layer.inputs * layer.outputs;
    if (kind == WeightInit::HeNormal) {
      const double stddev = std::sqrt(2.0 / fan_in);
      for (std::size_t i = 0; i < count; ++i) w[i] = static_cast<float>(stddev * standard_normal(engine));
    } else {
      const double limit = std::sqrt(6.0 / (fan_in + fan_out));
      for (std::size_t i = 0; i < count; ++i) w[i] = static_cast<float>(limit * (2.0 * uniform01(engine) - 1.0));
    }
    float* b = params + layer.biases_offset;
    for (std::size_t j = 0; j < layer.outputs; ++j) b[j] = 0.0f;
  }
}

}  // namespace kortexdl::detail
