// Trains XOR with an installed KortexDL and exits 0 if it learned it.
#include <cstdio>
#include <vector>

#include <kortexdl/kortexdl.hpp>

int main() {
  kortexdl::NetworkConfig config;
  config.hidden_activation = kortexdl::Activation::Tanh;
  config.output_activation = kortexdl::Activation::Sigmoid;
  config.optimizer = kortexdl::OptimizerConfig::adam();
  config.seed = 1;
  kortexdl::Network net({2, 8, 1}, config);
  const std::vector<float> x{0, 0, 0, 1, 1, 0, 1, 1};
  const std::vector<float> y{0, 1, 1, 0};
  for (int step = 0; step < 2000; ++step) net.train_batch(x, y, kortexdl::LossType::BinaryCrossEntropy, 0.05f, 4);
  const auto result = net.evaluate(x, y, kortexdl::LossType::BinaryCrossEntropy);
  std::printf("xor: loss %.4f accuracy %.2f\n", result.loss, result.accuracy.value_or(0));
  return result.accuracy.value_or(0) == 1.0 ? 0 : 1;
}
