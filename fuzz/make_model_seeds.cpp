// Writes a seed corpus for fuzz_model_file: small valid model files for every
// optimizer, with and without optimizer state. Usage: make_model_seeds DIR
#include <cstdio>
#include <string>
#include <vector>

#include "kortexdl/kortexdl.hpp"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s DIR\n", argv[0]);
    return 2;
  }
  using namespace kortexdl;
  const std::string dir = argv[1];
  const OptimizerConfig optimizers[] = {OptimizerConfig::sgd(0.01f), OptimizerConfig::with_momentum(0.8f, true),
                                        OptimizerConfig::adam()};
  const std::vector<std::vector<std::size_t>> shapes = {{1, 1}, {3, 4, 2}, {2, 3, 3, 1}};
  int written = 0;
  for (const auto& optimizer : optimizers) {
    for (const auto& sizes : shapes) {
      NetworkConfig config;
      config.hidden_activation = Activation::Tanh;
      config.output_activation = sizes.back() > 1 ? Activation::Softmax : Activation::Sigmoid;
      config.seed = 1;
      config.optimizer = optimizer;
      Network net(sizes, config);
      const std::vector<float> x(4 * sizes.front(), 0.5f);
      const std::vector<float> t(4 * sizes.back(), 0.25f);
      net.train_batch(x, t, sizes.back() > 1 ? LossType::CrossEntropy : LossType::BinaryCrossEntropy, 0.1f, 4);
      for (const bool state : {false, true}) {
        const std::string name = dir + "/" + std::string(to_string(optimizer.kind)) + "_" +
                                 std::to_string(sizes.size()) + "layers" + (state ? "_state" : "") + ".kdl";
        net.save(name, state);
        ++written;
      }
    }
  }
  std::printf("wrote %d seeds to %s\n", written, dir.c_str());
  return 0;
}
