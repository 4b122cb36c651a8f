// Step time of data-parallel training in one process or over MPI ranks, for
// docs/distributed.md (run by bench_distributed.sh, which alternates the
// configurations in one run and takes medians).
//
//   kortexdl_distributed_bench STEPS            # under mpirun or alone
//
// The medium configuration: 784-256-128-10, ReLU, softmax + cross-entropy,
// SGD, a global batch of 1000 rows per step, split evenly across the ranks
// (and, with KORTEX_NUMA_NODES, across in-process replicas). Prints, on rank
// 0, one line per measured step: "step <seconds> <allreduce seconds>", the
// step time taken between successive should_stop polls (one poll per step)
// and the allreduce time from the communicator's counter over the same step;
// then, over MPI, "allreduce <seconds>" lines: the gradient's allreduce
// alone after a barrier.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "kortexdl/data_parallel.hpp"
#include "kortexdl/distributed.hpp"
#include "kortexdl/kortexdl.hpp"

int main(int argc, char** argv) {
  const std::size_t steps = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 20;
  const std::size_t warmup = 3;
  namespace dist = kortexdl::distributed;
  auto& comm = dist::init();
  const std::size_t world = comm.world_size();
  const std::size_t global_batch = 1000;
  const std::size_t batch = global_batch / world;
  const std::size_t rows = batch * (steps + warmup + 1);  // the last step has no poll after it

  std::mt19937 rng(static_cast<unsigned>(comm.rank()) + 1);
  std::normal_distribution<float> normal;
  std::vector<float> x(rows * 784);
  for (auto& v : x) v = normal(rng);
  std::vector<std::int32_t> y(rows);
  for (std::size_t i = 0; i < rows; ++i) y[i] = static_cast<std::int32_t>(i % 10);

  kortexdl::NetworkConfig config;
  config.seed = 1;
  config.output_activation = kortexdl::Activation::Softmax;
  kortexdl::Network net({784, 256, 128, 10}, config);

  std::vector<double> step_times;
  std::vector<double> allreduce_times;
  auto last = std::chrono::steady_clock::now();
  double last_allreduce = comm.allreduce_seconds();
  std::size_t polls = 0;
  kortexdl::DataParallelOptions options;
  options.batch_size = batch;
  options.epochs = 1;
  options.distributed = world > 1 ? &comm : nullptr;
  options.should_stop = [&] {
    const auto now = std::chrono::steady_clock::now();
    const double allreduce = comm.allreduce_seconds();
    if (polls > warmup) {  // poll k (k >= 1) ends step k
      step_times.push_back(std::chrono::duration<double>(now - last).count());
      allreduce_times.push_back(allreduce - last_allreduce);
    }
    ++polls;
    last = now;
    last_allreduce = allreduce;
    return false;
  };
  const auto result = kortexdl::train_parallel_numa(net, x, y, kortexdl::LossType::CrossEntropy, 0.01f, options);
  if (comm.rank() == 0) {
    std::printf("# world %zu, per-rank batch %zu, threads %zu, nodes %zu, %s\n", world, batch,
                kortexdl::get_num_threads(), result.nodes, comm.description().c_str());
    for (std::size_t i = 0; i < step_times.size(); ++i) {
      std::printf("step %.9f %.9f %.9f\n", step_times[i], allreduce_times[i],
                  result.reduce_seconds / static_cast<double>(result.steps));
    }
  }
  if (world > 1) {
    // The allreduce alone, every rank ready (a barrier first): its transfer
    // cost without the waiting for a slower rank that the step's share holds.
    std::vector<float> gradient(net.parameter_count(), 1.0f);
    for (std::size_t i = 0; i < steps; ++i) {
      comm.barrier();
      const auto start = std::chrono::steady_clock::now();
      comm.allreduce_sum(gradient.data(), gradient.size());
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      if (comm.rank() == 0) std::printf("allreduce %.9f\n", seconds);
    }
  }
  return 0;
}
