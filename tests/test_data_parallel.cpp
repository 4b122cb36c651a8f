// train_parallel_numa / evaluate_parallel_numa: the same model as plain
// training on the same batches, for any number of (virtual) nodes.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <random>
#include <thread>
#include <vector>

#include "kortexdl/kortexdl.hpp"
#include "parallel/affinity.hpp"

namespace {

using kortexdl::LossType;

struct Data {
  std::vector<float> x;
  std::vector<std::int32_t> labels;
  std::vector<float> y;  // regression targets
};

Data make_data(std::size_t rows, std::size_t in, std::size_t classes, unsigned seed) {
  Data d;
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  d.x.resize(rows * in);
  for (auto& v : d.x) v = normal(rng);
  for (std::size_t i = 0; i < rows; ++i) {
    float s = 0.0f;
    for (std::size_t j = 0; j < in; ++j) s += d.x[i * in + j] * static_cast<float>((j % 3) + 1);
    d.labels.push_back(static_cast<std::int32_t>(std::fabs(s)) % static_cast<std::int32_t>(classes));
    for (std::size_t c = 0; c < classes; ++c) d.y.push_back(std::sin(s + static_cast<float>(c)));
  }
  return d;
}

kortexdl::Network make_net(kortexdl::OptimizerConfig optimizer) {
  kortexdl::NetworkConfig config;
  config.seed = 3;
  config.optimizer = optimizer;
  return kortexdl::Network({12, 16, 8, 4}, config);
}

// Plain training on the same batches, in order.
std::vector<float> reference_params(kortexdl::OptimizerConfig optimizer, const Data& d, std::size_t rows,
                                    std::size_t batch, std::size_t epochs, LossType loss, float lr) {
  auto net = make_net(optimizer);
  for (std::size_t e = 0; e < epochs; ++e) {
    for (std::size_t start = 0; start < rows; start += batch) {
      const std::size_t n = std::min(batch, rows - start);
      std::span<const float> x(d.x.data() + start * 12, n * 12);
      if (loss == LossType::CrossEntropy) {
        net.train_batch(x, std::span<const std::int32_t>(d.labels.data() + start, n), loss, lr, n);
      } else {
        net.train_batch(x, std::span<const float>(d.y.data() + start * 4, n * 4), loss, lr, n);
      }
    }
  }
  return net.parameters();
}

double max_relative_difference(const std::vector<float>& a, const std::vector<float>& b) {
  double worst = 0.0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const double scale = std::max(1e-2, static_cast<double>(std::fabs(b[i])));
    worst = std::max(worst, std::fabs(static_cast<double>(a[i]) - b[i]) / scale);
  }
  return worst;
}

struct EquivalenceCase {
  std::size_t nodes;
  std::size_t batch;
  kortexdl::OptimizerKind optimizer;
  LossType loss;
};

class Equivalence : public ::testing::TestWithParam<EquivalenceCase> {};

// Tolerance: shards change only the order of float additions inside the
// GEMMs and the gradient sum, so parameters agree to ~1e-6 relative per step;
// 1e-4 after a few epochs leaves room for accumulation but catches any
// mis-weighted shard (those are off by percent).
TEST_P(Equivalence, MatchesPlainTraining) {
  const auto c = GetParam();
  const std::size_t rows = 103;  // not a multiple of any batch used
  const Data d = make_data(rows, 12, 4, 5);
  kortexdl::OptimizerConfig optimizer;
  optimizer.kind = c.optimizer;
  const float lr = c.optimizer == kortexdl::OptimizerKind::Adam ? 0.01f : 0.05f;
  const auto expected = reference_params(optimizer, d, rows, c.batch, 3, c.loss, lr);

  auto net = make_net(optimizer);
  kortexdl::DataParallelOptions options;
  options.batch_size = c.batch;
  options.epochs = 3;
  options.numa_nodes = c.nodes;
  kortexdl::DataParallelResult result;
  if (c.loss == LossType::CrossEntropy) {
    result = kortexdl::train_parallel_numa(net, d.x, d.labels, c.loss, lr, options);
  } else {
    result = kortexdl::train_parallel_numa(net, d.x, d.y, c.loss, lr, options);
  }
  EXPECT_EQ(result.nodes, c.nodes);
  EXPECT_EQ(result.epoch_losses.size(), 3u);
  EXPECT_EQ(result.steps, 3 * ((rows + c.batch - 1) / c.batch));
  EXPECT_LT(result.epoch_losses.back(), result.epoch_losses.front());
  EXPECT_LT(max_relative_difference(net.parameters(), expected), 1e-4);
}

INSTANTIATE_TEST_SUITE_P(
    NodesBatchesOptimizers, Equivalence,
    ::testing::Values(EquivalenceCase{1, 16, kortexdl::OptimizerKind::SGD, LossType::CrossEntropy},
                      EquivalenceCase{2, 16, kortexdl::OptimizerKind::SGD, LossType::CrossEntropy},
                      EquivalenceCase{3, 16, kortexdl::OptimizerKind::SGD, LossType::CrossEntropy},
                      EquivalenceCase{3, 7, kortexdl::OptimizerKind::Momentum, LossType::MSE},
                      EquivalenceCase{2, 10, kortexdl::OptimizerKind::Adam, LossType::CrossEntropy},
                      EquivalenceCase{3, 2, kortexdl::OptimizerKind::Adam, LossType::MSE}));

// Every call ends by comparing every replica with the network's parameters
// (InternalError if any bit differs), so one-step calls check the replicas
// after every single step, here with Adam (whose state must stay identical
// too) on three uneven nodes.
TEST(DataParallel, ReplicasAreBitIdenticalAfterEveryStep) {
  const Data d = make_data(40, 12, 4, 12);
  auto net = make_net(kortexdl::OptimizerConfig::adam());
  kortexdl::DataParallelOptions options;
  options.batch_size = 40;  // one step per call
  options.numa_nodes = 3;
  for (int step = 0; step < 25; ++step) {
    ASSERT_NO_THROW(kortexdl::train_parallel_numa(net, d.x, d.labels, LossType::CrossEntropy, 0.01f, options))
        << "step " << step;
  }
  EXPECT_EQ(net.version(), 25u);
}

TEST(DataParallel, EvaluateMatchesEvaluate) {
  const Data d = make_data(211, 12, 4, 9);
  auto net = make_net({});
  const auto plain = net.evaluate(d.x, d.labels, LossType::CrossEntropy, 50);
  for (std::size_t nodes : {1u, 2u, 3u}) {
    const auto sharded = kortexdl::evaluate_parallel_numa(net, d.x, d.labels, LossType::CrossEntropy, 50, nodes);
    EXPECT_NEAR(sharded.loss, plain.loss, 1e-9 * std::fabs(plain.loss)) << nodes << " nodes";
    ASSERT_TRUE(sharded.accuracy.has_value());
    EXPECT_DOUBLE_EQ(*sharded.accuracy, *plain.accuracy);
    EXPECT_EQ(sharded.samples, 211u);
  }
}

TEST(DataParallel, BadInput) {
  const Data d = make_data(20, 12, 4, 1);
  auto net = make_net({});
  const auto before = net.parameters();
  kortexdl::DataParallelOptions options;
  options.epochs = 0;
  EXPECT_THROW(kortexdl::train_parallel_numa(net, d.x, d.labels, LossType::CrossEntropy, 0.1f, options),
               kortexdl::InvalidArgumentError);
  options.epochs = 1;
  options.batch_size = 21;
  try {
    kortexdl::train_parallel_numa(net, d.x, d.labels, LossType::CrossEntropy, 0.1f, options);
    FAIL() << "batch larger than the data was accepted";
  } catch (const kortexdl::InvalidArgumentError& e) {
    EXPECT_NE(std::string(e.what()).find("batch_size"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("20"), std::string::npos) << e.what();
  }
  options.batch_size = 4;
  std::vector<std::int32_t> short_labels(d.labels.begin(), d.labels.end() - 1);
  EXPECT_THROW(kortexdl::train_parallel_numa(net, d.x, short_labels, LossType::CrossEntropy, 0.1f, options),
               kortexdl::ShapeError);
  EXPECT_EQ(net.parameters(), before);
  EXPECT_EQ(net.version(), 0u);
}

TEST(DataParallel, InterruptStopsBetweenSteps) {
  const Data d = make_data(64, 12, 4, 2);
  auto net = make_net({});
  kortexdl::DataParallelOptions options;
  options.batch_size = 8;
  options.epochs = 5;
  options.numa_nodes = 2;
  int polls = 0;
  options.should_stop = [&polls] { return ++polls > 3; };
  EXPECT_THROW(kortexdl::train_parallel_numa(net, d.x, d.labels, LossType::CrossEntropy, 0.1f, options),
               kortexdl::InterruptedError);
  EXPECT_EQ(net.version(), 3u);  // three whole steps applied, then stopped
  for (float p : net.parameters()) ASSERT_TRUE(std::isfinite(p));
  // Still usable.
  EXPECT_NO_THROW(net.train_batch(std::span<const float>(d.x.data(), 8 * 12),
                                  std::span<const std::int32_t>(d.labels.data(), 8), LossType::CrossEntropy, 0.1f, 8));
}

TEST(DataParallel, ShuffleIsSeededAndStillLearns) {
  const Data d = make_data(96, 12, 4, 4);
  kortexdl::DataParallelOptions options;
  options.batch_size = 16;
  options.epochs = 4;
  options.shuffle = true;
  options.seed = 99;
  options.numa_nodes = 2;
  auto a = make_net({});
  auto b = make_net({});
  const auto ra = kortexdl::train_parallel_numa(a, d.x, d.labels, LossType::CrossEntropy, 0.1f, options);
  const auto rb = kortexdl::train_parallel_numa(b, d.x, d.labels, LossType::CrossEntropy, 0.1f, options);
  EXPECT_EQ(a.parameters(), b.parameters());
  EXPECT_EQ(ra.epoch_losses, rb.epoch_losses);
  EXPECT_LT(ra.epoch_losses.back(), ra.epoch_losses.front());
}

TEST(DataParallel, ForwardDuringParallelTrainingSeesWholeUpdates) {
  const Data d = make_data(256, 12, 4, 6);
  auto net = make_net({});
  net.enable_thread_safety(true);
  kortexdl::set_num_threads(1);
  // Outputs of the probe row for every published parameter version.
  auto shadow = make_net({});
  std::vector<std::vector<float>> seen_versions{net.forward(std::span<const float>(d.x.data(), 12), 1)};
  net.set_update_observer([&](std::span<const float> params, std::uint64_t) {
    shadow.set_parameters(params);
    seen_versions.push_back(shadow.forward(std::span<const float>(d.x.data(), 12), 1));
  });
  std::atomic<bool> done{false};
  std::vector<std::vector<float>> observed;
  std::thread reader([&] {
    while (!done.load()) observed.push_back(net.forward(std::span<const float>(d.x.data(), 12), 1));
  });
  kortexdl::DataParallelOptions options;
  options.batch_size = 8;
  options.epochs = 3;
  options.numa_nodes = 2;
  kortexdl::train_parallel_numa(net, d.x, d.labels, LossType::CrossEntropy, 0.05f, options);
  done = true;
  reader.join();
  net.set_update_observer(nullptr);
  kortexdl::set_num_threads(0);
  ASSERT_FALSE(observed.empty());
  for (const auto& out : observed) {
    bool whole = false;
    for (const auto& version : seen_versions) whole = whole || version == out;
    ASSERT_TRUE(whole) << "a forward call saw parameters between two updates";
  }
}

TEST(DataParallel, UnsafeOverlapIsRefused) {
  const Data d = make_data(512, 12, 4, 7);
  auto net = make_net({});
  std::atomic<bool> done{false};
  std::atomic<int> refused{0};
  std::thread reader([&] {
    while (!done.load()) {
      try {
        net.forward(std::span<const float>(d.x.data(), 12), 1);
      } catch (const kortexdl::ConcurrencyError&) {
        refused.fetch_add(1);
      }
    }
  });
  kortexdl::DataParallelOptions options;
  options.batch_size = 4;
  options.epochs = 20;
  options.numa_nodes = 2;
  bool trainer_refused = false;
  try {
    kortexdl::train_parallel_numa(net, d.x, d.labels, LossType::CrossEntropy, 0.05f, options);
  } catch (const kortexdl::ConcurrencyError&) {
    trainer_refused = true;
  }
  done = true;
  reader.join();
  EXPECT_TRUE(trainer_refused || refused.load() > 0) << "an unsafe overlap went unreported";
  for (float p : net.parameters()) ASSERT_TRUE(std::isfinite(p));
}

TEST(Numa, VirtualNodesSplitCpus) {
  for (std::size_t n : {1u, 2u, 3u}) {
    const auto topology = kortexdl::numa_topology(n);
    ASSERT_EQ(topology.nodes.size(), n);
    EXPECT_TRUE(topology.virtual_nodes);
    for (const auto& node : topology.nodes) EXPECT_FALSE(node.cpus.empty());
  }
  const auto machine = kortexdl::numa_topology();
  EXPECT_GE(machine.nodes.size(), 1u);
  EXPECT_FALSE(machine.note.empty());
}

TEST(Numa, WorkersArePinnedInsideTheirNode) {
  if (!kortexdl::detail::pinning_allowed()) GTEST_SKIP() << "this machine does not allow setting thread affinity";
  const Data d = make_data(32, 12, 4, 8);
  for (std::size_t nodes : {2u, 3u}) {
    const auto topology = kortexdl::numa_topology(nodes);
    auto net = make_net({});
    kortexdl::DataParallelOptions options;
    options.batch_size = 8;
    options.numa_nodes = nodes;
    const auto result = kortexdl::train_parallel_numa(net, d.x, d.labels, LossType::CrossEntropy, 0.1f, options);
    ASSERT_EQ(result.worker_cpus.size(), nodes);
    for (std::size_t k = 0; k < nodes; ++k) {
      ASSERT_FALSE(result.worker_cpus[k].empty());
      for (int cpu : result.worker_cpus[k]) {
        const auto& allowed = topology.nodes[k].cpus;
        EXPECT_NE(std::find(allowed.begin(), allowed.end(), cpu), allowed.end())
            << "worker " << k << " may run on CPU " << cpu << " outside its node";
      }
    }
  }
}

}  // namespace
