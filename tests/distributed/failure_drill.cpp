// The program failure_test.sh runs under mpirun: 3 ranks train with rank 0
// writing a checkpoint after every epoch; after epoch 3 the last rank
// either dies (SIGKILL, "kill") or stops (SIGSTOP, "stall"). The test then
// checks that the job ended non-zero within the bound and that the model
// rank 0 wrote loads ("load <path>").
#include <csignal>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kortexdl/distributed.hpp"
#include "kortexdl/kortexdl.hpp"

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s kill|stall|load MODEL_PATH\n", argv[0]);
    return 2;
  }
  const std::string mode = argv[1];
  const std::string path = argv[2];
  if (mode == "load") {
    const auto net = kortexdl::Network::load(path);
    std::printf("loaded %s: %zu parameters, optimizer step %llu\n", path.c_str(), net.parameter_count(),
                static_cast<unsigned long long>(net.optimizer_state().step));
    return 0;
  }
  namespace dist = kortexdl::distributed;
  auto& comm = dist::init();
  const std::size_t victim = comm.world_size() - 1;

  std::mt19937 rng(static_cast<unsigned>(comm.rank()));
  std::normal_distribution<float> normal;
  const std::size_t rows = 256;
  std::vector<float> x(rows * 32);
  std::vector<std::int32_t> y(rows);
  for (auto& v : x) v = normal(rng);
  for (std::size_t i = 0; i < rows; ++i) y[i] = static_cast<std::int32_t>(i % 10);

  kortexdl::NetworkConfig config;
  config.seed = 1;
  config.output_activation = kortexdl::Activation::Softmax;
  kortexdl::Network net({32, 64, 10}, config);
  kortexdl::FitOptions fit;
  fit.epochs = 100000;  // never finishes by itself
  fit.batch_size = 32;
  fit.learning_rate = 0.01f;
  fit.on_epoch_end = [&](const kortexdl::EpochRecord& record) {
    if (comm.rank() == 0 && record.epoch == 1) std::printf("rank 0: training (%s)\n", comm.description().c_str());
    if (comm.rank() == victim && record.epoch == 3) {
      std::fprintf(stderr, "rank %zu: simulating a failure (%s) after epoch 3\n", comm.rank(), mode.c_str());
      std::fflush(nullptr);
      std::raise(mode == "kill" ? SIGKILL : SIGSTOP);
    }
    return true;
  };
  dist::DistributedOptions options;
  options.checkpoint_path = path;
  dist::train_distributed(net, x, y, kortexdl::LossType::CrossEntropy, fit, options);
  std::printf("rank %zu: training finished, which it must not\n", comm.rank());
  return 0;
}
