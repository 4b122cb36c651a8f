// Data-parallel training against plain training, side by side in one run:
// the same epochs over the same batches through
//   (a) a train_batch loop,
//   (b) train_parallel_numa on 1 node,
//   (c) train_parallel_numa on N virtual nodes (default 2),
// interleaved round by round so load from elsewhere hits all three alike.
// Reports medians (and min-max) of the time per step, the ratio of (b) and
// (c) to (a), and for (c) the time spent averaging gradients per step.
//
//   kortexdl_bench_data_parallel [--config medium] [--batch 1000] [--steps 30] [--rounds 7] [--nodes 2]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kortexdl/kortexdl.hpp"

namespace {

using Clock = std::chrono::steady_clock;

struct Stats {
  double median, low, high;
};

Stats stats(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return {v[v.size() / 2], v.front(), v.back()};
}

std::vector<std::size_t> config_sizes(const std::string& name) {
  if (name == "small") return {100, 50, 10};
  if (name == "medium") return {784, 256, 128, 10};
  if (name == "large") return {1000, 512, 256, 128, 10};
  std::fprintf(stderr, "unknown config %s (small, medium, large)\n", name.c_str());
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  std::string config = "medium";
  std::size_t batch = 1000, steps = 30, rounds = 7, nodes = 2;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    const std::string value = argv[i + 1];
    if (flag == "--config") config = value;
    else if (flag == "--batch") batch = std::stoul(value);
    else if (flag == "--steps") steps = std::stoul(value);
    else if (flag == "--rounds") rounds = std::stoul(value);
    else if (flag == "--nodes") nodes = std::stoul(value);
    else {
      std::fprintf(stderr, "unknown option %s\n", flag.c_str());
      return 2;
    }
  }
  const auto sizes = config_sizes(config);
  const std::size_t in = sizes.front(), out = sizes.back(), rows = batch * steps;
  std::mt19937 rng(1);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(rows * in);
  for (auto& v : x) v = normal(rng);
  std::vector<std::int32_t> y(rows);
  for (auto& v : y) v = static_cast<std::int32_t>(rng() % out);

  kortexdl::NetworkConfig net_config;
  net_config.output_activation = kortexdl::Activation::Softmax;
  net_config.optimizer = kortexdl::OptimizerConfig::adam();
  net_config.seed = 1;
  const float lr = 1e-4f;
  const auto loss = kortexdl::LossType::CrossEntropy;

  std::vector<double> plain, one_node, many_nodes, reduce_share, reduce_ms;
  kortexdl::Network a(sizes, net_config), b(sizes, net_config), c(sizes, net_config);
  for (std::size_t round = 0; round <= rounds; ++round) {  // round 0 warms up
    auto t0 = Clock::now();
    for (std::size_t s = 0; s < steps; ++s) {
      a.train_batch(std::span<const float>(x.data() + s * batch * in, batch * in),
                    std::span<const std::int32_t>(y.data() + s * batch, batch), loss, lr, batch);
    }
    const double ta = std::chrono::duration<double>(Clock::now() - t0).count() / static_cast<double>(steps);
    kortexdl::DataParallelOptions options;
    options.batch_size = batch;
    options.numa_nodes = 1;
    t0 = Clock::now();
    kortexdl::train_parallel_numa(b, x, y, loss, lr, options);
    const double tb = std::chrono::duration<double>(Clock::now() - t0).count() / static_cast<double>(steps);
    options.numa_nodes = nodes;
    t0 = Clock::now();
    const auto result = kortexdl::train_parallel_numa(c, x, y, loss, lr, options);
    const double tc = std::chrono::duration<double>(Clock::now() - t0).count() / static_cast<double>(steps);
    if (round == 0) continue;
    plain.push_back(ta * 1e3);
    one_node.push_back(tb * 1e3);
    many_nodes.push_back(tc * 1e3);
    reduce_ms.push_back(result.reduce_seconds / static_cast<double>(result.steps) * 1e3);
    reduce_share.push_back(result.reduce_seconds / result.seconds * 100.0);
  }
  const Stats sa = stats(plain), sb = stats(one_node), sc = stats(many_nodes), sr = stats(reduce_ms),
              ss = stats(reduce_share);
  std::printf("config %s, batch %zu, %zu steps x %zu rounds, Adam, %zu threads\n", config.c_str(), batch, steps, rounds,
              kortexdl::get_num_threads());
  std::printf("%-34s %10s %18s %10s\n", "path", "ms/step", "min-max", "vs plain");
  std::printf("%-34s %10.3f %8.3f-%-9.3f %10.3f\n", "train_batch loop", sa.median, sa.low, sa.high, 1.0);
  std::printf("%-34s %10.3f %8.3f-%-9.3f %10.3f\n", "train_parallel_numa, 1 node", sb.median, sb.low, sb.high,
              sb.median / sa.median);
  const std::string label = "train_parallel_numa, " + std::to_string(nodes) + " virtual nodes";
  std::printf("%-34s %10.3f %8.3f-%-9.3f %10.3f\n", label.c_str(), sc.median, sc.low, sc.high, sc.median / sa.median);
  std::printf("gradient averaging with %zu nodes: %.3f ms per step (%.3f-%.3f), %.1f%% of step time (%.1f-%.1f%%)\n",
              nodes, sr.median, sr.low, sr.high, ss.median, ss.low, ss.high);
  return 0;
}
