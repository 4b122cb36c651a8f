// Names of the enums, as the bindings, the CLI and model files spell them.
#include <algorithm>
#include <array>
#include <cctype>
#include <string>
#include <utility>

#include "kortexdl/activation.hpp"
#include "kortexdl/error.hpp"
#include "kortexdl/init.hpp"
#include "kortexdl/loss.hpp"
#include "kortexdl/optimizer.hpp"

namespace kortexdl {

namespace {

std::string lowercase(std::string_view text) {
  std::string out(text);
  std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return std::tolower(c); });
  out.erase(std::remove(out.begin(), out.end(), '_'), out.end());
  return out;
}

template <class Enum, std::size_t N>
Enum parse(std::string_view name, std::string_view argument, const std::array<std::pair<Enum, std::string_view>, N>& table) {
  const std::string wanted = lowercase(name);
  std::string choices;
  for (const auto& [value, text] : table) {
    if (lowercase(text) == wanted) return value;
    choices += choices.empty() ? "" : ", ";
    choices += text;
  }
  throw InvalidArgumentError(std::string(argument) + ": unknown value '" + std::string(name) + "'; expected one of " +
                             choices);
}

template <class Enum, std::size_t N>
std::string_view name_of(Enum value, const std::array<std::pair<Enum, std::string_view>, N>& table) {
  for (const auto& [v, text] : table) {
    if (v == value) return text;
  }
  return "unknown";
}

constexpr std::array<std::pair<Activation, std::string_view>, 6> kActivations{{
    {Activation::ReLU, "relu"},
    {Activation::Tanh, "tanh"},
    {Activation::Sigmoid, "sigmoid"},
    {Activation::GELU, "gelu"},
    {Activation::Linear, "linear"},
    {Activation::Softmax, "softmax"},
}};

constexpr std::array<std::pair<LossType, std::string_view>, 3> kLosses{{
    {LossType::MSE, "mse"},
    {LossType::CrossEntropy, "cross_entropy"},
    {LossType::BinaryCrossEntropy, "binary_cross_entropy"},
}};

constexpr std::array<std::pair<OptimizerKind, std::string_view>, 3> kOptimizers{{
    {OptimizerKind::SGD, "sgd"},
    {OptimizerKind::Momentum, "momentum"},
    {OptimizerKind::Adam, "adam"},
}};

constexpr std::array<std::pair<WeightInit, std::string_view>, 3> kInits{{
    {WeightInit::Auto, "auto"},
    {WeightInit::HeNormal, "he_normal"},
    {WeightInit::XavierUniform, "xavier_uniform"},
}};

}  // namespace

std::string_view to_string(Activation activation) { return name_of(activation, kActivations); }
Activation parse_activation(std::string_view name, std::string_view argument) {
  return parse(name, argument, kActivations);
}

std::string_view to_string(LossType loss) { return name_of(loss, kLosses); }
LossType parse_loss(std::string_view name, std::string_view argument) { return parse(name, argument, kLosses); }

std::string_view to_string(OptimizerKind kind) { return name_of(kind, kOptimizers); }
OptimizerKind parse_optimizer(std::string_view name, std::string_view argument) {
  return parse(name, argument, kOptimizers);
}

std::string_view to_string(WeightInit init) { return name_of(init, kInits); }
WeightInit parse_init(std::string_view name, std::string_view argument) { return parse(name, argument, kInits); }

OptimizerConfig OptimizerConfig::sgd(float weight_decay) {
  OptimizerConfig config;
  config.kind = OptimizerKind::SGD;
  config.weight_decay = weight_decay;
  return config;
}

OptimizerConfig OptimizerConfig::with_momentum(float momentum, bool nesterov, float weight_decay) {
  OptimizerConfig config;
  config.kind = OptimizerKind::Momentum;
  config.momentum = momentum;
  config.nesterov = nesterov;
  config.weight_decay = weight_decay;
  return config;
}

OptimizerConfig OptimizerConfig::adam(float beta1, float beta2, float epsilon, float weight_decay) {
  OptimizerConfig config;
  config.kind = OptimizerKind::Adam;
  config.beta1 = beta1;
  config.beta2 = beta2;
  config.epsilon = epsilon;
  config.weight_decay = weight_decay;
  return config;
}

}  // namespace kortexdl
