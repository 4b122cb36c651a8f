// Determinism: a seed fixes the initial weights and, on the same thread
// count, a whole training run, to the bit; forward gives the same bits from
// one thread or from many at once.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include "kortexdl/kortexdl.hpp"
#include "test_support.hpp"

namespace {

using kortexdl::Activation;
using kortexdl::LossType;
using kortexdl::Network;
using kortexdl::NetworkConfig;
using kortexdl::OptimizerConfig;
using kortexdl::WeightInit;
using kortex_test::BitwiseEqual;
using kortex_test::ThreadBudget;

NetworkConfig config_with(std::uint64_t seed, Activation hidden = Activation::ReLU,
                          WeightInit init = WeightInit::Auto) {
  NetworkConfig config;
  config.hidden_activation = hidden;
  config.init = init;
  config.seed = seed;
  return config;
}

TEST(Determinism, SameSeedGivesBitIdenticalInitialParameters) {
  for (const Activation hidden : {Activation::ReLU, Activation::Tanh, Activation::GELU, Activation::Sigmoid}) {
    SCOPED_TRACE(std::string(kortexdl::to_string(hidden)));
    const Network a({20, 30, 10}, config_with(1234, hidden));
    const Network b({20, 30, 10}, config_with(1234, hidden));
    EXPECT_EQ(a.seed(), 1234u);
    EXPECT_TRUE(BitwiseEqual(a.parameters(), b.parameters()));
  }
}

TEST(Determinism, DifferentSeedsGiveDifferentParameters) {
  const Network a({20, 30, 10}, config_with(1));
  const Network b({20, 30, 10}, config_with(2));
  const std::vector<float> pa = a.parameters();
  const std::vector<float> pb = b.parameters();
  std::size_t weights = 0, differing = 0;
  for (const auto& layer : a.layers()) {
    for (std::size_t i = 0; i < layer.inputs * layer.outputs; ++i) {
      ++weights;
      differing += pa[layer.weights_offset + i] != pb[layer.weights_offset + i] ? 1 : 0;
    }
  }
  // Independent draws: essentially every weight differs.
  EXPECT_GT(differing, weights * 99 / 100) << differing << " of " << weights;
}

TEST(Determinism, UnseededNetworksReportAReproducibleSeed) {
  const Network a({8, 5, 2});
  const Network b({8, 5, 2});
  EXPECT_NE(a.seed(), b.seed()) << "two unseeded networks drew the same seed";
  EXPECT_FALSE(BitwiseEqual(a.parameters(), b.parameters()));
  const Network again({8, 5, 2}, config_with(a.seed()));
  EXPECT_TRUE(BitwiseEqual(again.parameters(), a.parameters()));
}

TEST(Determinism, InitialisationFollowsTheDocumentedSchemes) {
  // Xavier uniform: |w| <= sqrt(6 / (fan_in + fan_out)); He normal: standard
  // deviation sqrt(2 / fan_in). Biases start at zero.
  const Network xavier({200, 100, 50}, config_with(5, Activation::Tanh));
  const Network he({200, 100, 50}, config_with(5, Activation::ReLU));
  const Network forced({200, 100, 50}, config_with(5, Activation::Tanh, WeightInit::HeNormal));
  EXPECT_TRUE(BitwiseEqual(he.weights(0), forced.weights(0))) << "HeNormal not honoured for tanh";
  for (std::size_t l = 0; l < 2; ++l) {
    const auto& layer = xavier.layers()[l];
    const double limit = std::sqrt(6.0 / static_cast<double>(layer.inputs + layer.outputs));
    double max_abs = 0.0;
    for (float w : xavier.weights(l)) max_abs = std::max(max_abs, double{std::fabs(w)});
    EXPECT_LE(max_abs, limit) << "layer " << l;
    EXPECT_GT(max_abs, 0.9 * limit) << "layer " << l << " does not span the Xavier range";
    for (float b : xavier.biases(l)) EXPECT_EQ(b, 0.0f);
  }
  // Hidden layer of `he` (ReLU): He normal. The output layer (linear) uses Xavier.
  const std::vector<float> w = he.weights(0);
  double sum = 0.0, sum_sq = 0.0;
  for (float v : w) {
    sum += v;
    sum_sq += double{v} * v;
  }
  const double n = static_cast<double>(w.size());
  const double stddev = std::sqrt(sum_sq / n - (sum / n) * (sum / n));
  EXPECT_NEAR(stddev, std::sqrt(2.0 / 200.0), 0.03 * std::sqrt(2.0 / 200.0));  // 20000 draws: ~0.5% noise
  EXPECT_NEAR(sum / n, 0.0, 0.005);
}

struct RunResult {
  std::vector<float> losses;
  std::vector<float> parameters;
  Network::OptimizerState optimizer;
};

RunResult train_adam(std::uint64_t seed, int steps) {
  NetworkConfig config = config_with(seed, Activation::GELU);
  config.output_activation = Activation::Softmax;
  config.optimizer = OptimizerConfig::adam(0.9f, 0.999f, 1e-8f, 1e-3f);
  Network net({32, 64, 48, 5}, config);
  constexpr std::size_t batch = 64;
  const std::vector<float> x = kortex_test::normal_floats(batch * 32, 77);
  std::vector<std::int32_t> labels(batch);
  for (std::size_t i = 0; i < batch; ++i) labels[i] = static_cast<std::int32_t>((i * 13) % 5);
  RunResult result;
  for (int s = 0; s < steps; ++s) {
    result.losses.push_back(net.train_batch(x, labels, LossType::CrossEntropy, 1e-2f, batch));
  }
  result.parameters = net.parameters();
  result.optimizer = net.optimizer_state();
  return result;
}

void expect_identical_runs(const RunResult& a, const RunResult& b) {
  EXPECT_TRUE(BitwiseEqual(a.losses, b.losses));
  EXPECT_TRUE(BitwiseEqual(a.parameters, b.parameters));
  ASSERT_EQ(a.optimizer.buffers.size(), b.optimizer.buffers.size());
  for (std::size_t i = 0; i < a.optimizer.buffers.size(); ++i) {
    EXPECT_TRUE(BitwiseEqual(a.optimizer.buffers[i], b.optimizer.buffers[i])) << "optimizer buffer " << i;
  }
  EXPECT_EQ(a.optimizer.step, b.optimizer.step);
}

TEST(Determinism, SameSeedAndThreadCountGiveBitIdenticalTraining) {
  {
    SCOPED_TRACE("default thread budget");
    const RunResult a = train_adam(99, 20);
    const RunResult b = train_adam(99, 20);
    expect_identical_runs(a, b);
    EXPECT_LT(a.losses.back(), a.losses.front()) << "the run did not train";
  }
  {
    SCOPED_TRACE("one thread");
    ThreadBudget budget(1);
    expect_identical_runs(train_adam(99, 20), train_adam(99, 20));
  }
  // Sanity: the comparison can fail.
  EXPECT_FALSE(BitwiseEqual(train_adam(99, 20).parameters, train_adam(100, 20).parameters));
}

TEST(Determinism, CloneContinuesTrainingIdentically) {
  NetworkConfig config = config_with(7, Activation::Tanh);
  config.optimizer = OptimizerConfig::with_momentum(0.9f, true);
  Network net({10, 16, 3}, config);
  const std::vector<float> x = kortex_test::normal_floats(16 * 10, 3);
  const std::vector<float> t = kortex_test::normal_floats(16 * 3, 4);
  for (int i = 0; i < 5; ++i) net.train_batch(x, t, LossType::MSE, 0.05f, 16);
  Network copy = net.clone();
  EXPECT_EQ(copy.version(), net.version());
  EXPECT_FALSE(copy.thread_safety_enabled());
  for (int i = 0; i < 5; ++i) {
    const float a = net.train_batch(x, t, LossType::MSE, 0.05f, 16);
    const float b = copy.train_batch(x, t, LossType::MSE, 0.05f, 16);
    EXPECT_EQ(kortex_test::bits_of(a), kortex_test::bits_of(b)) << "step " << i;
  }
  EXPECT_TRUE(BitwiseEqual(net.parameters(), copy.parameters()));
}

TEST(Determinism, ForwardIsIdenticalFromOneThreadAndFromEightAtOnce) {
  ThreadBudget budget(1);  // each call single-threaded, hence deterministic
  NetworkConfig config = config_with(11, Activation::GELU);
  config.output_activation = Activation::Softmax;
  const Network net({48, 96, 64, 10}, config);
  constexpr std::size_t batch = 16;
  const std::vector<float> x = kortex_test::normal_floats(batch * 48, 12);
  const std::vector<float> reference = net.forward(x, batch);

  constexpr int kThreads = 8;
  constexpr int kRepeats = 20;
  std::vector<std::vector<float>> results(kThreads * kRepeats);
  kortex_test::TimedLatch start(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      if (!start.arrive_and_wait()) return;
      for (int r = 0; r < kRepeats; ++r) {
        std::vector<float> out(batch * 10);
        net.forward(x, batch, out);
        results[static_cast<std::size_t>(t * kRepeats + r)] = std::move(out);
      }
    });
  }
  for (auto& th : threads) th.join();
  for (std::size_t i = 0; i < results.size(); ++i) {
    EXPECT_TRUE(BitwiseEqual(results[i], reference)) << "thread " << i / kRepeats << ", call " << i % kRepeats;
  }
  EXPECT_TRUE(BitwiseEqual(net.forward_batch(x, 5), reference));
}

}  // namespace
