#pragma once
#include <string_view>

namespace kortexdl {

enum class OptimizerKind { SGD, Momentum, Adam };

// The learning rate is not part of the configuration: every training call
// passes its own, as the Python API does.
struct OptimizerConfig {
  OptimizerKind kind = OptimizerKind::SGD;
  float momentum = 0.9f;        // Momentum only
  bool nesterov = false;        // Momentum only
  float beta1 = 0.9f;           // Adam only
  float beta2 = 0.999f;         // Adam only
  float epsilon = 1e-8f;        // Adam only
  float weight_decay = 0.0f;    // L2 penalty on weights (not biases), all kinds

  static OptimizerConfig sgd(float weight_decay = 0.0f);
  static OptimizerConfig with_momentum(float momentum = 0.9f, bool nesterov = false,
                                       float weight_decay = 0.0f);
  static OptimizerConfig adam(float beta1 = 0.9f, float beta2 = 0.999f, float epsilon = 1e-8f,
                              float weight_decay = 0.0f);
};

std::string_view to_string(OptimizerKind kind);
OptimizerKind parse_optimizer(std::string_view name, std::string_view argument = "optimizer");

}  // namespace kortexdl
