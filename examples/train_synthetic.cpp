// Trains a classifier on generated data and prints the loss falling and the
// time per step: the smallest complete use of the C++ API.
//
//   train_synthetic [epochs] [batch_size]
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "kortexdl/kortexdl.hpp"

namespace {

// Gaussian blobs: `classes` centres in `features` dimensions (the same for
// every split: drawn from centre_seed), noisy samples drawn from seed.
struct Dataset {
  std::vector<float> x;
  std::vector<std::int32_t> y;
  std::size_t rows = 0;
};

Dataset make_blobs(std::size_t rows, std::size_t features, std::size_t classes, std::uint64_t seed) {
  std::mt19937_64 centre_rng(2024);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> centres(classes * features);
  for (auto& c : centres) c = 0.12f * normal(centre_rng);
  std::mt19937_64 rng(seed);
  Dataset d;
  d.rows = rows;
  d.x.resize(rows * features);
  d.y.resize(rows);
  for (std::size_t i = 0; i < rows; ++i) {
    const auto label = static_cast<std::size_t>(rng() % classes);
    d.y[i] = static_cast<std::int32_t>(label);
    for (std::size_t j = 0; j < features; ++j) d.x[i * features + j] = centres[label * features + j] + normal(rng);
  }
  return d;
}

}  // namespace

int main(int argc, char** argv) {
  const std::size_t epochs = argc > 1 ? std::strtoul(argv[1], nullptr, 10) : 8;
  const std::size_t batch = argc > 2 ? std::strtoul(argv[2], nullptr, 10) : 256;
  const std::size_t features = 784, classes = 10;
  const Dataset train = make_blobs(20000, features, classes, 1);
  const Dataset test = make_blobs(4000, features, classes, 2);

  kortexdl::NetworkConfig config;
  config.output_activation = kortexdl::Activation::Softmax;
  config.optimizer = kortexdl::OptimizerConfig::adam();
  config.seed = 42;
  kortexdl::Network net({features, 256, 128, classes}, config);
  std::printf("KortexDL %s (%s backend), %zu threads\n", std::string(kortexdl::kVersion).c_str(),
              std::string(kortexdl::backend_name()).c_str(), kortexdl::get_num_threads());
  std::printf("network 784-256-128-10, %zu parameters; %zu training rows, batch %zu\n\n", net.parameter_count(),
              train.rows, batch);
  std::printf("%5s %12s %12s %14s\n", "epoch", "train loss", "test acc", "ms per step");

  const float learning_rate = 1e-3f;
  for (std::size_t epoch = 1; epoch <= epochs; ++epoch) {
    double loss_sum = 0.0;
    std::size_t steps = 0;
    const auto start = std::chrono::steady_clock::now();
    for (std::size_t row = 0; row + batch <= train.rows; row += batch) {
      std::span<const float> x(train.x.data() + row * features, batch * features);
      std::span<const std::int32_t> y(train.y.data() + row, batch);
      loss_sum += net.train_batch(x, y, kortexdl::LossType::CrossEntropy, learning_rate, batch);
      ++steps;
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const auto eval = net.evaluate(test.x, test.y, kortexdl::LossType::CrossEntropy, 1000);
    std::printf("%5zu %12.4f %12.4f %14.3f\n", epoch, loss_sum / static_cast<double>(steps), eval.accuracy.value_or(0),
                1e3 * seconds / static_cast<double>(steps));
  }
  return 0;
}
