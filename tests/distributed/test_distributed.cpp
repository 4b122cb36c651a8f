// Distributed training, run alone (a world of one) and under
// `mpirun -np 2` / `-np 3`. Every rank runs every test in the same order, so
// each test's collectives line up; a rank that fails an assertion still
// takes part in the rest (EXPECT_*, not ASSERT_*, around collectives).
//
// Equivalence tolerance: every parameter after K distributed steps is within
// |a - b| <= 1e-4 * |b| + 1e-6 of single-process training on the combined
// batches (the sums differ only in float summation order; measured max
// relative difference ~1e-6), and the parameter hash is equal on every rank.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "kortexdl/data_parallel.hpp"
#include "kortexdl/distributed.hpp"
#include "kortexdl/kortexdl.hpp"

namespace {

namespace dist = kortexdl::distributed;
using kortexdl::LossType;

constexpr std::size_t kIn = 12;
constexpr std::size_t kOut = 4;

dist::Communicator& comm() { return dist::communicator(); }
std::size_t rank() { return comm().rank(); }
std::size_t world() { return comm().world_size(); }

struct Data {
  std::vector<float> x;
  std::vector<std::int32_t> labels;
  std::vector<float> y;
  std::size_t rows = 0;
};

Data make_data(std::size_t rows, unsigned seed) {
  Data d;
  d.rows = rows;
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  d.x.resize(rows * kIn);
  for (auto& v : d.x) v = normal(rng);
  for (std::size_t i = 0; i < rows; ++i) {
    float s = 0.0f;
    for (std::size_t j = 0; j < kIn; ++j) s += d.x[i * kIn + j] * static_cast<float>((j % 3) + 1);
    d.labels.push_back(static_cast<std::int32_t>(std::fabs(s)) % static_cast<std::int32_t>(kOut));
    for (std::size_t c = 0; c < kOut; ++c) d.y.push_back(std::sin(s + static_cast<float>(c)));
  }
  return d;
}

// Rows [begin, begin + count) of d.
Data slice(const Data& d, std::size_t begin, std::size_t count) {
  Data s;
  s.rows = count;
  s.x.assign(d.x.begin() + static_cast<std::ptrdiff_t>(begin * kIn),
             d.x.begin() + static_cast<std::ptrdiff_t>((begin + count) * kIn));
  s.labels.assign(d.labels.begin() + static_cast<std::ptrdiff_t>(begin),
                  d.labels.begin() + static_cast<std::ptrdiff_t>(begin + count));
  s.y.assign(d.y.begin() + static_cast<std::ptrdiff_t>(begin * kOut),
             d.y.begin() + static_cast<std::ptrdiff_t>((begin + count) * kOut));
  return s;
}

kortexdl::Network make_net(kortexdl::OptimizerConfig optimizer, std::uint64_t seed,
                           std::vector<std::size_t> sizes = {kIn, 16, 8, kOut},
                           kortexdl::Activation output = kortexdl::Activation::Linear) {
  kortexdl::NetworkConfig config;
  config.seed = seed;
  config.optimizer = optimizer;
  config.output_activation = output;
  return kortexdl::Network(std::move(sizes), config);
}

// Every rank's rows: contiguous, sizes differing by at most one (rank r gets
// one more row while r < rows % world).
struct Partition {
  std::vector<std::size_t> begin, count;
};
Partition partition(std::size_t rows, std::size_t w) {
  Partition p;
  std::size_t at = 0;
  for (std::size_t r = 0; r < w; ++r) {
    const std::size_t n = rows / w + (r < rows % w ? 1 : 0);
    p.begin.push_back(at);
    p.count.push_back(n);
    at += n;
  }
  return p;
}

// Single-process training on the combined batches: step s trains on rank
// 0's rows of step s, then rank 1's, ... in one batch.
std::vector<float> reference(kortexdl::Network net, const Data& d, const Partition& p, std::size_t batch,
                             std::size_t epochs, LossType loss, float lr) {
  std::size_t max_rows = *std::max_element(p.count.begin(), p.count.end());
  const std::size_t steps = (max_rows + batch - 1) / batch;
  for (std::size_t e = 0; e < epochs; ++e) {
    for (std::size_t s = 0; s < steps; ++s) {
      std::vector<float> x;
      std::vector<std::int32_t> labels;
      std::vector<float> y;
      for (std::size_t r = 0; r < p.count.size(); ++r) {
        const std::size_t start = s * batch;
        if (start >= p.count[r]) continue;
        const std::size_t n = std::min(batch, p.count[r] - start);
        const Data part = slice(d, p.begin[r] + start, n);
        x.insert(x.end(), part.x.begin(), part.x.end());
        labels.insert(labels.end(), part.labels.begin(), part.labels.end());
        y.insert(y.end(), part.y.begin(), part.y.end());
      }
      const std::size_t rows = labels.size();
      if (loss == LossType::CrossEntropy) {
        net.train_batch(x, labels, loss, lr, rows);
      } else {
        net.train_batch(x, y, loss, lr, rows);
      }
    }
  }
  return net.parameters();
}

::testing::AssertionResult close(const std::vector<float>& got, const std::vector<float>& want) {
  if (got.size() != want.size()) return ::testing::AssertionFailure() << "sizes " << got.size() << " vs " << want.size();
  double worst = 0.0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    const double diff = std::fabs(static_cast<double>(got[i]) - want[i]);
    const double allowed = 1e-4 * std::fabs(want[i]) + 1e-6;
    worst = std::max(worst, diff / (std::fabs(want[i]) + 1e-6));
    if (diff > allowed) {
      return ::testing::AssertionFailure() << "parameter " << i << ": " << got[i] << " vs " << want[i];
    }
  }
  if (rank() == 0) std::printf("      max relative difference to single-process: %.3g\n", worst);
  return ::testing::AssertionSuccess();
}

// Every rank's hash, on every rank.
std::vector<double> all_hashes(const kortexdl::Network& net) {
  std::vector<double> h(world() * 2, 0.0);
  const std::uint64_t mine = dist::parameter_hash(net);
  h[rank() * 2] = static_cast<double>(mine >> 32);
  h[rank() * 2 + 1] = static_cast<double>(mine & 0xffffffffu);
  comm().allreduce_sum(h.data(), h.size());
  return h;
}

::testing::AssertionResult same_on_every_rank(const kortexdl::Network& net) {
  const std::vector<double> h = all_hashes(net);
  for (std::size_t r = 1; r < world(); ++r) {
    if (h[r * 2] != h[0] || h[r * 2 + 1] != h[1]) {
      return ::testing::AssertionFailure() << "rank " << r << "'s parameter hash differs from rank 0's";
    }
  }
  return ::testing::AssertionSuccess();
}

TEST(Distributed, FitEqualsSingleProcessOnCombinedBatches) {
  const std::size_t batch = 8;
  const std::size_t rows_per_rank = 40;  // 5 steps per epoch
  const Data d = make_data(rows_per_rank * world(), 7);
  const Partition p = partition(d.rows, world());
  const Data mine = slice(d, p.begin[rank()], p.count[rank()]);
  // Different seeds per rank: rank 0's initial parameters must win.
  auto net = make_net(kortexdl::OptimizerConfig::sgd(), 100 + rank(), {kIn, 16, 8, kOut},
                      kortexdl::Activation::Softmax);
  kortexdl::FitOptions o;
  o.epochs = 2;
  o.batch_size = batch;
  o.learning_rate = 0.1f;
  o.shuffle = false;
  o.distributed = &comm();
  const kortexdl::History h = kortexdl::fit(net, mine.x, mine.labels, LossType::CrossEntropy, o);
  EXPECT_EQ(h.steps, 10u);
  const auto want = reference(make_net(kortexdl::OptimizerConfig::sgd(), 100, {kIn, 16, 8, kOut},
                                       kortexdl::Activation::Softmax),
                              d, p, batch, 2, LossType::CrossEntropy, 0.1f);
  EXPECT_TRUE(close(net.parameters(), want));
  EXPECT_TRUE(same_on_every_rank(net));
}

TEST(Distributed, TrainParallelNumaWithTwoNodesPerRankAdamMse) {
  // Hierarchical: two (virtual) NUMA replicas inside every rank, then the
  // ranks; Adam's state must stay identical everywhere too.
  const std::size_t batch = 10;
  const Data d = make_data(30 * world(), 11);
  const Partition p = partition(d.rows, world());
  const Data mine = slice(d, p.begin[rank()], p.count[rank()]);
  auto net = make_net(kortexdl::OptimizerConfig::adam(), 5);
  kortexdl::DataParallelOptions o;
  o.batch_size = batch;
  o.epochs = 2;
  o.numa_nodes = 2;
  o.distributed = &comm();
  const auto result = kortexdl::train_parallel_numa(net, mine.x, mine.y, LossType::MSE, 0.01f, o);
  EXPECT_EQ(result.steps, 6u);
  EXPECT_EQ(result.nodes, 2u);
  const auto want = reference(make_net(kortexdl::OptimizerConfig::adam(), 5), d, p, batch, 2, LossType::MSE, 0.01f);
  EXPECT_TRUE(close(net.parameters(), want));
  EXPECT_TRUE(same_on_every_rank(net));
  EXPECT_EQ(net.optimizer_state().step, 6u);
}

TEST(Distributed, UnevenShardsMomentum) {
  // 3 * world + 1 rows... ranks differ by one row, so the last step of an
  // epoch has rows on some ranks only.
  const std::size_t batch = 4;
  const Data d = make_data(9 * world() + 1, 13);
  const Partition p = partition(d.rows, world());
  const Data mine = slice(d, p.begin[rank()], p.count[rank()]);
  auto net = make_net(kortexdl::OptimizerConfig::with_momentum(0.9f), 21);
  kortexdl::FitOptions o;
  o.epochs = 2;
  o.batch_size = batch;
  o.learning_rate = 0.05f;
  o.shuffle = false;
  o.distributed = &comm();
  const kortexdl::History h = kortexdl::fit(net, mine.x, mine.y, LossType::MSE, o);
  const auto want =
      reference(make_net(kortexdl::OptimizerConfig::with_momentum(0.9f), 21), d, p, batch, 2, LossType::MSE, 0.05f);
  EXPECT_TRUE(close(net.parameters(), want));
  EXPECT_TRUE(same_on_every_rank(net));
  // The epoch loss is over every rank's rows: the same number everywhere.
  double loss = h.epochs.back().loss;
  double total = loss;
  comm().allreduce_sum(&total, 1);
  EXPECT_EQ(total, loss * static_cast<double>(world()));
}

TEST(Distributed, ValidationAndEarlyStoppingAgreeAcrossRanks) {
  const Data d = make_data(60 * world(), 17);
  const Partition p = partition(d.rows, world());
  const Data mine = slice(d, p.begin[rank()], p.count[rank()]);
  auto net = make_net(kortexdl::OptimizerConfig::sgd(), 3, {kIn, 16, 8, kOut}, kortexdl::Activation::Softmax);
  kortexdl::FitOptions o;
  o.epochs = 6;
  o.batch_size = 16;
  o.learning_rate = 0.5f;  // large enough to bounce, so patience runs out
  o.validation_split = 0.25;
  o.early_stopping_patience = 1;
  o.seed = 9;
  o.distributed = &comm();
  const kortexdl::History h = kortexdl::fit(net, mine.x, mine.labels, LossType::CrossEntropy, o);
  ASSERT_FALSE(h.epochs.empty());
  ASSERT_TRUE(h.epochs.back().validation_loss.has_value());
  // Same history on every rank: epochs, best epoch, validation loss.
  double v[3] = {static_cast<double>(h.epochs.size()), static_cast<double>(h.best_epoch),
                 *h.epochs.back().validation_loss};
  double s[3] = {v[0], v[1], v[2]};
  comm().allreduce_sum(s, 3);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(s[i], v[i] * static_cast<double>(world())) << i;
  EXPECT_TRUE(same_on_every_rank(net));
}

TEST(Distributed, SynchronizeBroadcastsParametersAndOptimizerState) {
  auto net = make_net(kortexdl::OptimizerConfig::adam(), 1000 + rank());
  // Some optimizer state that differs by rank.
  const Data d = make_data(8, static_cast<unsigned>(rank()));
  net.train_batch(d.x, d.y, LossType::MSE, 0.01f, 8);
  const std::uint64_t before = dist::parameter_hash(net);
  double rank0_hash[2] = {0.0, 0.0};
  if (rank() == 0) {
    rank0_hash[0] = static_cast<double>(before >> 32);
    rank0_hash[1] = static_cast<double>(before & 0xffffffffu);
  }
  comm().allreduce_sum(rank0_hash, 2);
  dist::synchronize(net, comm());
  const std::uint64_t after = dist::parameter_hash(net);
  EXPECT_EQ(static_cast<double>(after >> 32), rank0_hash[0]);
  EXPECT_EQ(static_cast<double>(after & 0xffffffffu), rank0_hash[1]);
  const auto state = net.optimizer_state();
  double first_moment = state.buffers[0][3];
  double sum = first_moment;
  comm().allreduce_sum(&sum, 1);
  EXPECT_EQ(sum, first_moment * static_cast<double>(world()));
}

TEST(Distributed, MismatchedArchitecturesFailOnEveryRank) {
  if (world() < 2) GTEST_SKIP() << "needs 2 ranks";
  // The last rank builds a different network: every rank gets the same
  // clear error from the start-up check, nobody waits.
  const bool odd = rank() == world() - 1;
  auto net = odd ? make_net(kortexdl::OptimizerConfig::sgd(), 1, {kIn, 32, kOut})
                 : make_net(kortexdl::OptimizerConfig::sgd(), 1);
  const Data d = make_data(16, 1);
  kortexdl::FitOptions o;
  o.epochs = 1;
  o.batch_size = 8;
  o.distributed = &comm();
  try {
    kortexdl::fit(net, d.x, d.y, LossType::MSE, o);
    ADD_FAILURE() << "no error";
  } catch (const kortexdl::InvalidArgumentError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("different networks"), std::string::npos) << what;
    EXPECT_NE(what.find("12-16-8-4"), std::string::npos) << what;
    EXPECT_NE(what.find("12-32-4"), std::string::npos) << what;
    EXPECT_NE(what.find("rank " + std::to_string(world() - 1)), std::string::npos) << what;
  }
  EXPECT_TRUE(true);
}

TEST(Distributed, MismatchedOptimizerOrSettingsFailOnEveryRank) {
  if (world() < 2) GTEST_SKIP() << "needs 2 ranks";
  const bool odd = rank() == world() - 1;
  const Data d = make_data(16, 1);
  {
    auto net = make_net(odd ? kortexdl::OptimizerConfig::adam() : kortexdl::OptimizerConfig::sgd(), 1);
    kortexdl::DataParallelOptions o;
    o.batch_size = 8;
    o.distributed = &comm();
    try {
      kortexdl::train_parallel_numa(net, d.x, d.y, LossType::MSE, 0.1f, o);
      ADD_FAILURE() << "no error";
    } catch (const kortexdl::InvalidArgumentError& e) {
      EXPECT_NE(std::string(e.what()).find("different optimizers"), std::string::npos) << e.what();
    }
  }
  {
    auto net = make_net(kortexdl::OptimizerConfig::sgd(), 1);
    kortexdl::DataParallelOptions o;
    o.batch_size = odd ? 4 : 8;
    o.distributed = &comm();
    try {
      kortexdl::train_parallel_numa(net, d.x, d.y, LossType::MSE, 0.1f, o);
      ADD_FAILURE() << "no error";
    } catch (const kortexdl::InvalidArgumentError& e) {
      EXPECT_NE(std::string(e.what()).find("batch_size 4"), std::string::npos) << e.what();
    }
  }
}

TEST(Distributed, ARankRejectingItsArgumentsFailsEveryRank) {
  if (world() < 2) GTEST_SKIP() << "needs 2 ranks";
  const bool odd = rank() == world() - 1;
  Data d = make_data(16, 1);
  if (odd) d.x[5] = std::nanf("");
  auto net = make_net(kortexdl::OptimizerConfig::sgd(), 1);
  kortexdl::FitOptions o;
  o.epochs = 1;
  o.batch_size = 8;
  o.distributed = &comm();
  try {
    kortexdl::fit(net, d.x, d.y, LossType::MSE, o);
    ADD_FAILURE() << "no error";
  } catch (const kortexdl::InvalidArgumentError& e) {
    const std::string what = e.what();
    if (odd) {
      EXPECT_NE(what.find("inputs"), std::string::npos) << what;  // its own error
    } else {
      EXPECT_NE(what.find("rank(s) " + std::to_string(world() - 1) + " rejected"), std::string::npos) << what;
    }
  }
}

TEST(Distributed, ShouldStopOnOneRankStopsEveryRankAfterTheSameStep) {
  const Data d = make_data(64, 2);
  auto net = make_net(kortexdl::OptimizerConfig::sgd(), 4);
  kortexdl::FitOptions o;
  o.epochs = 3;
  o.batch_size = 8;
  o.distributed = &comm();
  int polls = 0;
  const bool asker = rank() == world() - 1;
  o.should_stop = [&] { return asker && ++polls == 3; };
  try {
    kortexdl::fit(net, d.x, d.y, LossType::MSE, o);
    ADD_FAILURE() << "not interrupted";
  } catch (const kortexdl::InterruptedError& e) {
    EXPECT_NE(std::string(e.what()).find("after 3 step"), std::string::npos) << e.what();
  }
  EXPECT_EQ(net.version(), 4u);  // the start-up broadcast + 3 steps
  EXPECT_TRUE(same_on_every_rank(net));
}

TEST(Distributed, CallbackStopOnOneRankStopsEveryRank) {
  const Data d = make_data(64, 2);
  auto net = make_net(kortexdl::OptimizerConfig::sgd(), 4);
  kortexdl::FitOptions o;
  o.epochs = 5;
  o.batch_size = 16;
  o.distributed = &comm();
  // Only the last rank has a callback (as a rank-0-only logger would be).
  if (rank() == world() - 1) {
    o.on_epoch_end = [](const kortexdl::EpochRecord& r) { return r.epoch < 2; };
  }
  const kortexdl::History h = kortexdl::fit(net, d.x, d.y, LossType::MSE, o);
  EXPECT_TRUE(h.stopped_early);
  EXPECT_EQ(h.epochs.size(), 2u);
  EXPECT_TRUE(same_on_every_rank(net));
}

TEST(Distributed, EvaluateCoversEveryRanksRows) {
  const Data d = make_data(20 * world() + 1, 23);
  const Partition p = partition(d.rows, world());
  const Data mine = slice(d, p.begin[rank()], p.count[rank()]);
  auto net = make_net(kortexdl::OptimizerConfig::sgd(), 8, {kIn, 16, kOut}, kortexdl::Activation::Softmax);
  const auto all = net.evaluate(d.x, d.labels, LossType::CrossEntropy);
  const auto ev = dist::evaluate(net, mine.x, mine.labels, LossType::CrossEntropy, comm());
  EXPECT_EQ(ev.samples, d.rows);
  EXPECT_NEAR(ev.loss, all.loss, 1e-6 * std::fabs(all.loss));
  ASSERT_TRUE(ev.accuracy.has_value());
  EXPECT_NEAR(*ev.accuracy, *all.accuracy, 1e-12);
}

TEST(Distributed, ShardIsDeterministicDisjointAndComplete) {
  const std::size_t rows = 103;
  for (std::size_t w : {1u, 2u, 3u, 5u}) {
    std::vector<int> seen(rows, 0);
    for (std::size_t r = 0; r < w; ++r) {
      const auto a = dist::shard_indices(rows, r, w, 42);
      EXPECT_EQ(a, dist::shard_indices(rows, r, w, 42));
      EXPECT_GE(a.size(), rows / w);
      EXPECT_LE(a.size(), rows / w + 1);
      for (auto i : a) ++seen[i];
    }
    for (int c : seen) EXPECT_EQ(c, 1);
  }
  EXPECT_NE(dist::shard_indices(rows, 0, 2, 1), dist::shard_indices(rows, 0, 2, 2));
  const auto plain = dist::shard_indices(10, 1, 3, std::nullopt);
  EXPECT_EQ(plain, (std::vector<std::size_t>{4, 5, 6}));
  EXPECT_THROW(dist::shard_indices(10, 3, 3), kortexdl::InvalidArgumentError);
  EXPECT_THROW(dist::shard_indices(2, 0, 3), kortexdl::InvalidArgumentError);

  const Data d = make_data(10, 1);
  const dist::Shard s = dist::shard(d.x, d.labels, kIn, 1, 3, std::nullopt);
  ASSERT_EQ(s.rows, 3u);
  EXPECT_EQ(s.labels[0], d.labels[4]);
  EXPECT_EQ(s.inputs[kIn], d.x[5 * kIn]);
  EXPECT_TRUE(s.targets().is_labels());
}

TEST(Distributed, TrainDistributedCheckpointsOnRankZeroOnly) {
  // One path for the whole group (rank 0 makes the name, every rank learns it).
  double pid = rank() == 0 ? static_cast<double>(::getpid()) : 0.0;
  comm().allreduce_sum(&pid, 1);
  const std::string path = "/tmp/kortexdl_distributed_test_" + std::to_string(static_cast<long>(pid)) + ".kdl";
  const Data d = make_data(32 * world(), 31);
  const auto part = dist::shard(d.x, d.y, kIn, rank(), world(), 5);
  auto net = make_net(kortexdl::OptimizerConfig::sgd(), 40 + rank());
  kortexdl::FitOptions o;
  o.epochs = 3;
  o.batch_size = 8;
  o.learning_rate = 0.05f;
  dist::DistributedOptions options;
  options.checkpoint_path = path;
  options.checkpoint_every = 1;
  const auto result = dist::train_distributed(net, part.inputs, part.targets(), LossType::MSE, o, options);
  EXPECT_EQ(result.world_size, world());
  EXPECT_EQ(result.global_rows, d.rows);
  EXPECT_EQ(result.checkpoints_written, rank() == 0 ? 3u : 0u);
  if (world() > 1) {
    EXPECT_GT(result.allreduces, 0u);
  }
  comm().barrier();  // rank 0 has written
  const auto loaded = kortexdl::Network::load(path);
  EXPECT_EQ(loaded.parameters(), net.parameters());
  EXPECT_FALSE(std::filesystem::exists(path + ".rank1"));
  comm().barrier();
  if (rank() == 0) std::filesystem::remove(path);
}

TEST(Distributed, WorldOfOneIsBitIdenticalToPlainFit) {
  if (world() != 1) GTEST_SKIP() << "single process only";
  const Data d = make_data(50, 3);
  kortexdl::FitOptions o;
  o.epochs = 2;
  o.batch_size = 8;
  o.learning_rate = 0.02f;
  o.seed = 4;
  auto plain = make_net(kortexdl::OptimizerConfig::adam(), 6);
  kortexdl::fit(plain, d.x, d.y, LossType::MSE, o);
  auto spread = make_net(kortexdl::OptimizerConfig::adam(), 6);
  o.distributed = &comm();
  kortexdl::fit(spread, d.x, d.y, LossType::MSE, o);
  EXPECT_EQ(plain.parameters(), spread.parameters());
}

}  // namespace

// Only rank 0 prints the usual progress; every rank prints its failures.
class FailuresOnly : public ::testing::EmptyTestEventListener {
 public:
  explicit FailuresOnly(std::size_t rank) : rank_(rank) {}
  void OnTestPartResult(const ::testing::TestPartResult& result) override {
    if (result.failed()) {
      std::fprintf(stderr, "[rank %zu] %s:%d: %s\n", rank_, result.file_name() ? result.file_name() : "?",
                   result.line_number(), result.summary());
    }
  }

 private:
  std::size_t rank_;
};

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  auto& c = kortexdl::distributed::init();
  if (c.rank() != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new FailuresOnly(c.rank()));
  } else {
    std::printf("%s\n", c.description().c_str());
  }
  const int local = RUN_ALL_TESTS();
  double failed = local != 0 ? 1.0 : 0.0;
  c.allreduce_sum(&failed, 1);
  kortexdl::distributed::finalize();
  return failed > 0.0 ? 1 : 0;
}
