// The main job in C++: train 784-256-128-10 on Fashion-MNIST, save the
// model, load it back, and serve the test set from 1, 2 and 4 threads.
//
//   fashion_mnist [epochs] [model path] [data directory]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "kortexdl/kortexdl.hpp"

namespace {

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Every thread answers requests of `batch` rows from the test set on the
// shared network; returns rows per second over all threads.
double serve(const kortexdl::Network& net, const kortexdl::datasets::Dataset& test, std::size_t threads,
             std::size_t batch, std::size_t rounds) {
  const std::size_t in = test.features;
  const std::size_t requests = test.rows / batch;
  const auto start = std::chrono::steady_clock::now();
  std::vector<std::thread> pool;
  for (std::size_t t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      std::vector<float> out(batch * net.output_size());
      for (std::size_t r = 0; r < rounds; ++r) {
        for (std::size_t q = t; q < requests; q += threads) {
          net.forward(std::span<const float>(test.inputs.data() + q * batch * in, batch * in), batch, out);
        }
      }
    });
  }
  for (auto& th : pool) th.join();
  return static_cast<double>(requests * batch * rounds) / seconds_since(start);
}

}  // namespace

int main(int argc, char** argv) {
  const std::size_t epochs = argc > 1 ? std::strtoul(argv[1], nullptr, 10) : 10;
  const std::string model_path = argc > 2 ? argv[2] : "fashion_mnist.kdl";
  const std::string data_dir = argc > 3 ? argv[3] : "/usr/share/datasets/fashion-mnist";

  try {
    const auto data = kortexdl::datasets::fashion_mnist(data_dir);
    std::printf("Fashion-MNIST: %zu training and %zu test images of %zu pixels, %zu classes\n", data.train.rows,
                data.test.rows, data.train.features, data.train.classes);

    kortexdl::NetworkConfig config;
    config.output_activation = kortexdl::Activation::Softmax;
    config.optimizer = kortexdl::OptimizerConfig::adam();
    config.seed = 1;
    kortexdl::Network net({784, 256, 128, 10}, config);

    kortexdl::FitOptions options;
    options.epochs = epochs;
    options.batch_size = 128;
    options.learning_rate = 1e-3f;
    options.schedule = kortexdl::LearningRateSchedule::cosine();
    options.seed = 1;
    options.validation_inputs = data.test.inputs;
    options.validation_targets = kortexdl::Targets(data.test.labels);
    options.on_epoch_end = [](const kortexdl::EpochRecord& r) {
      std::printf("epoch %2zu  loss %.4f  train acc %.4f  test loss %.4f  test acc %.4f  %.2f s\n", r.epoch, r.loss,
                  r.accuracy.value_or(0), r.validation_loss.value_or(0), r.validation_accuracy.value_or(0), r.seconds);
      std::fflush(stdout);
      return true;
    };
    const auto history = kortexdl::fit(net, data.train.inputs, data.train.labels, kortexdl::LossType::CrossEntropy,
                                       options);
    double total = 0;
    for (const auto& r : history.epochs) total += r.seconds;
    std::printf("trained %zu epochs in %.1f s (%.2f s per epoch)\n", history.epochs.size(), total,
                total / static_cast<double>(history.epochs.size()));

    net.save(model_path);
    const kortexdl::Network served = kortexdl::Network::load(model_path);
    const double accuracy = kortexdl::score(served, data.test.inputs, data.test.labels);
    std::printf("saved to %s and loaded back: test accuracy %.4f\n", model_path.c_str(), accuracy);

    std::printf("serving the test set in requests of 32 rows:\n");
    for (std::size_t threads : {1u, 2u, 4u}) {
      std::printf("  %zu thread(s): %9.0f rows/s\n", threads, serve(served, data.test, threads, 32, 3));
    }
    return accuracy >= 0.80 ? 0 : 1;
  } catch (const kortexdl::Error& e) {
    std::fprintf(stderr, "fashion_mnist: %s\n", e.what());
    return 2;
  }
}
