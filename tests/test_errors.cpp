// Every error path of the public API: the exception's exact type, a message
// that names the argument and the expected vs actual value, and (for calls
// on an existing network) nothing modified: parameters bitwise equal,
// version() and the optimizer state unchanged.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <limits>
#include <string>
#include <typeinfo>
#include <vector>

#include "alloc_counter.hpp"
#include "kortexdl/kortexdl.hpp"
#include "test_support.hpp"

namespace {

using kortexdl::Activation;
using kortexdl::LossType;
using kortexdl::Network;
using kortexdl::NetworkConfig;
using kortexdl::OptimizerConfig;
using kortex_test::BitwiseEqual;

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

// Runs f and checks that it throws exactly E (not a subclass, not a base)
// with a message containing every fragment.
template <class E>
::testing::AssertionResult Throws(const std::function<void()>& f, std::initializer_list<std::string> fragments) {
  try {
    f();
  } catch (const std::exception& e) {
    if (typeid(e) != typeid(E)) {
      return ::testing::AssertionFailure() << "threw " << typeid(e).name() << " instead of " << typeid(E).name()
                                           << ": " << e.what();
    }
    const std::string message = e.what();
    for (const auto& fragment : fragments) {
      if (message.find(fragment) == std::string::npos) {
        return ::testing::AssertionFailure() << "message lacks \"" << fragment << "\": " << message;
      }
    }
    return ::testing::AssertionSuccess();
  } catch (...) {
    return ::testing::AssertionFailure() << "threw something that is not a std::exception";
  }
  return ::testing::AssertionFailure() << "did not throw";
}

struct Snapshot {
  std::vector<float> parameters;
  std::uint64_t version;
  Network::OptimizerState optimizer;
  explicit Snapshot(const Network& net)
      : parameters(net.parameters()), version(net.version()), optimizer(net.optimizer_state()) {}
};

::testing::AssertionResult Unchanged(const Network& net, const Snapshot& before) {
  if (net.version() != before.version) {
    return ::testing::AssertionFailure() << "version changed from " << before.version << " to " << net.version();
  }
  auto params = BitwiseEqual(net.parameters(), before.parameters);
  if (!params) return ::testing::AssertionFailure() << "parameters changed: " << params.message();
  const auto optimizer = net.optimizer_state();
  if (optimizer.step != before.optimizer.step) return ::testing::AssertionFailure() << "optimizer step changed";
  if (optimizer.buffers.size() != before.optimizer.buffers.size()) {
    return ::testing::AssertionFailure() << "optimizer buffers changed";
  }
  for (std::size_t i = 0; i < optimizer.buffers.size(); ++i) {
    auto same = BitwiseEqual(optimizer.buffers[i], before.optimizer.buffers[i]);
    if (!same) return ::testing::AssertionFailure() << "optimizer buffer " << i << " changed: " << same.message();
  }
  return ::testing::AssertionSuccess();
}

// A trained-a-little network (non-zero optimizer state) with 4 inputs and 3
// outputs, and a valid batch of 2 for it.
class NetworkErrors : public ::testing::Test {
 protected:
  NetworkErrors() : net_(make()) {
    net_.train_batch(x_, t_, LossType::MSE, 0.01f, 2);
  }
  static Network make(Activation output = Activation::Linear) {
    NetworkConfig config;
    config.hidden_activation = Activation::Tanh;
    config.output_activation = output;
    config.optimizer = OptimizerConfig::adam();
    config.seed = 5;
    return Network({4, 5, 3}, config);
  }
  // Checks that call throws E naming fragments and leaves net_ untouched.
  template <class E>
  void expect_rejected(const std::function<void()>& call, std::initializer_list<std::string> fragments) {
    const Snapshot before(net_);
    EXPECT_TRUE(Throws<E>(call, fragments));
    EXPECT_TRUE(Unchanged(net_, before));
  }

  Network net_;
  std::vector<float> x_ = {0.1f, 0.2f, 0.3f, 0.4f, -0.5f, 0.6f, -0.7f, 0.8f};
  std::vector<float> t_ = {1.0f, 0.0f, -1.0f, 0.5f, 0.5f, 0.0f};
  std::vector<std::int32_t> labels_ = {0, 2};
};

using kortexdl::ConcurrencyError;
using kortexdl::InvalidArgumentError;
using kortexdl::NumericalError;
using kortexdl::ResourceLimitError;
using kortexdl::ShapeError;

// ---- construction ----------------------------------------------------------

TEST(ConstructionErrors, SizesNeedTwoEntries) {
  EXPECT_TRUE(Throws<InvalidArgumentError>([] { Network net(std::vector<std::size_t>{}); },
                                           {"sizes", "at least 2", "got 0"}));
  EXPECT_TRUE(Throws<InvalidArgumentError>([] { Network net({5}); }, {"sizes", "at least 2", "got 1"}));
}

TEST(ConstructionErrors, SizesMustBePositive) {
  EXPECT_TRUE(Throws<InvalidArgumentError>([] { Network net({3, 0, 2}); }, {"sizes[1]", "at least 1", "got 0"}));
  EXPECT_TRUE(Throws<InvalidArgumentError>([] { Network net({0, 2}); }, {"sizes[0]", "got 0"}));
  EXPECT_TRUE(Throws<InvalidArgumentError>([] { Network net({4, 2, 0}); }, {"sizes[2]", "got 0"}));
}

TEST(ConstructionErrors, SoftmaxIsOutputOnly) {
  NetworkConfig config;
  config.hidden_activation = Activation::Softmax;
  EXPECT_TRUE(Throws<InvalidArgumentError>([&] { Network net({4, 3, 2}, config); },
                                           {"hidden_activation", "softmax", "output layer"}));
}

TEST(ConstructionErrors, OptimizerConfigurationIsChecked) {
  auto with = [](OptimizerConfig c, auto change) {
    change(c);
    return c;
  };
  const std::vector<std::pair<OptimizerConfig, std::vector<std::string>>> cases = {
      {OptimizerConfig::adam(1.0f), {"beta1", "[0, 1)", "got 1"}},
      {OptimizerConfig::adam(-0.5f), {"beta1", "got -0.5"}},
      {OptimizerConfig::adam(0.9f, 1.0f), {"beta2", "got 1"}},
      {OptimizerConfig::adam(0.9f, 0.999f, 0.0f), {"epsilon", "> 0", "got 0"}},
      {OptimizerConfig::adam(0.9f, 0.999f, kNaN), {"epsilon", "got nan"}},
      {OptimizerConfig::with_momentum(-1.0f), {"momentum", "[0, 1)", "got -1"}},
      {OptimizerConfig::with_momentum(1.0f), {"momentum", "got 1"}},
      {OptimizerConfig::sgd(-0.1f), {"weight_decay", "[0, 1]", "got -0.1"}},
      {OptimizerConfig::sgd(kInf), {"weight_decay", "got inf"}},
      {with(OptimizerConfig::adam(), [](OptimizerConfig& c) { c.weight_decay = 2.0f; }),
       {"weight_decay", "got 2"}},
  };
  for (const auto& [optimizer, fragments] : cases) {
    NetworkConfig config;
    config.optimizer = optimizer;
    SCOPED_TRACE(fragments.front());
    try {
      Network net({3, 2}, config);
      ADD_FAILURE() << "accepted";
    } catch (const InvalidArgumentError& e) {
      EXPECT_EQ(typeid(e), typeid(InvalidArgumentError));
      for (const auto& f : fragments) EXPECT_NE(std::string(e.what()).find(f), std::string::npos) << e.what();
    }
  }
  // Settings of the optimizers not chosen are not checked.
  NetworkConfig config;
  config.optimizer = OptimizerConfig::sgd();
  config.optimizer.beta1 = 5.0f;
  EXPECT_NO_THROW(Network({3, 2}, config));
}

TEST(ConstructionErrors, HugeLayerIsRefusedBeforeAllocating) {
  const auto allocations_before = kortex_test::thread_allocations();
  const auto start = std::chrono::steady_clock::now();
  EXPECT_TRUE(Throws<ResourceLimitError>([] { Network net({1000000, 1000000}); },
                                         {"sizes", "parameters", "1000000 x 1000000"}));
  const auto elapsed = std::chrono::steady_clock::now() - start;
  EXPECT_LT(elapsed, std::chrono::seconds(5));  // allocating and zeroing 4 TB would take far longer
  if (kortex_test::allocation_counting_available()) {
    const auto after = kortex_test::thread_allocations();
    EXPECT_LT(after.bytes - allocations_before.bytes, std::size_t{1} << 20) << "allocated before refusing";
  }
  // Sizes whose product overflows size_t.
  const std::size_t big = std::size_t{1} << 40;
  EXPECT_TRUE(Throws<ResourceLimitError>([&] { Network net({big, big}); }, {"sizes", "overflows"}));
  // A deep stack of modest layers that adds up past the limit.
  EXPECT_TRUE(Throws<ResourceLimitError>(
      [] { Network net({50000, 50000, 50000}); }, {"sizes", "layer 1", "50000 x 50000"}));
}

TEST(ConstructionErrors, ParseFunctionsListTheChoices) {
  EXPECT_TRUE(Throws<InvalidArgumentError>([] { (void)kortexdl::parse_activation("foo"); },
                                           {"activation", "'foo'", "relu", "tanh", "sigmoid", "gelu", "linear",
                                            "softmax"}));
  EXPECT_TRUE(Throws<InvalidArgumentError>([] { (void)kortexdl::parse_activation("foo", "hidden_activation"); },
                                           {"hidden_activation: unknown value 'foo'"}));
  EXPECT_TRUE(Throws<InvalidArgumentError>([] { (void)kortexdl::parse_loss("hinge"); },
                                           {"loss_type", "'hinge'", "mse", "cross_entropy", "binary_cross_entropy"}));
  EXPECT_TRUE(Throws<InvalidArgumentError>([] { (void)kortexdl::parse_optimizer("rmsprop"); },
                                           {"optimizer", "'rmsprop'", "sgd", "momentum", "adam"}));
  EXPECT_TRUE(Throws<InvalidArgumentError>([] { (void)kortexdl::parse_init("zeros"); },
                                           {"init", "'zeros'", "auto", "he_normal", "xavier_uniform"}));
  // The accepted spellings (case-insensitive, underscores optional).
  EXPECT_EQ(kortexdl::parse_activation("ReLU"), Activation::ReLU);
  EXPECT_EQ(kortexdl::parse_activation("GELU"), Activation::GELU);
  EXPECT_EQ(kortexdl::parse_loss("CrossEntropy"), LossType::CrossEntropy);
  EXPECT_EQ(kortexdl::parse_loss("binary_cross_entropy"), LossType::BinaryCrossEntropy);
  EXPECT_EQ(kortexdl::parse_optimizer("Adam"), kortexdl::OptimizerKind::Adam);
  EXPECT_EQ(kortexdl::parse_init("he_normal"), kortexdl::WeightInit::HeNormal);
  for (const Activation a : {Activation::ReLU, Activation::Tanh, Activation::Sigmoid, Activation::GELU,
                             Activation::Linear, Activation::Softmax}) {
    EXPECT_EQ(kortexdl::parse_activation(kortexdl::to_string(a)), a);
  }
}

TEST(ConstructionErrors, ThreadBudgetAbove4096IsRefused) {
  const std::size_t before = kortexdl::get_num_threads();
  EXPECT_TRUE(Throws<InvalidArgumentError>([] { kortexdl::set_num_threads(5000); },
                                           {"num_threads", "4096", "got 5000"}));
  EXPECT_EQ(kortexdl::get_num_threads(), before);
}

// ---- learning rate, batch size, shapes ------------------------------------

TEST_F(NetworkErrors, LearningRateMustBeFinitePositive) {
  for (const auto& [rate, text] : std::vector<std::pair<float, std::string>>{
           {0.0f, "got 0"}, {-0.5f, "got -0.5"}, {kNaN, "got nan"}, {kInf, "got inf"}, {-kInf, "got -inf"}}) {
    SCOPED_TRACE(text);
    const float lr = rate;  // lambdas cannot capture structured bindings in clang 14
    expect_rejected<InvalidArgumentError>([&] { net_.train_batch(x_, t_, LossType::MSE, lr, 2); },
                                          {"learning_rate", "> 0", text});
    expect_rejected<InvalidArgumentError>([&] { net_.train_batch_thread_safe(x_, t_, LossType::MSE, lr, 2); },
                                          {"learning_rate", text});
    const std::vector<float> g(net_.parameter_count(), 0.1f);
    expect_rejected<InvalidArgumentError>([&] { net_.apply_gradients(g, lr); }, {"learning_rate", text});
  }
}

TEST_F(NetworkErrors, LearningRateMessageShowsSmallValues) {
  // Messages show the value the caller passed, however small.
  expect_rejected<InvalidArgumentError>([&] { net_.train_batch(x_, t_, LossType::MSE, -1e-9f, 2); },
                                        {"learning_rate", "e-09"});
  NetworkConfig config;
  config.optimizer = OptimizerConfig::adam(0.9f, 0.999f, -1e-12f);
  EXPECT_TRUE(Throws<InvalidArgumentError>([&] { Network net({3, 2}, config); }, {"epsilon", "e-12"}));
}

TEST_F(NetworkErrors, BatchSizeZero) {
  expect_rejected<InvalidArgumentError>([&] { net_.train_batch(x_, t_, LossType::MSE, 0.1f, 0); },
                                        {"batch_size", "at least 1", "got 0"});
  expect_rejected<InvalidArgumentError>([&] { (void)net_.forward(x_, 0); }, {"batch_size", "got 0"});
  expect_rejected<InvalidArgumentError>([&] { (void)net_.forward_batch(x_, 0); }, {"batch_size", "got 0"});
  expect_rejected<InvalidArgumentError>([&] { (void)net_.compute_gradients(x_, t_, LossType::MSE, 0); },
                                        {"batch_size", "got 0"});
  std::vector<float> out(6);
  expect_rejected<InvalidArgumentError>([&] { net_.forward_batch_thread_safe(x_, 0, out); }, {"batch_size"});
}

TEST_F(NetworkErrors, InputsLengthMustBeBatchTimesWidth) {
  const std::vector<float> seven(7, 0.1f);
  expect_rejected<ShapeError>([&] { net_.train_batch(seven, t_, LossType::MSE, 0.1f, 2); },
                              {"inputs", "batch_size x input_size = 2 x 4 = 8", "got 7"});
  expect_rejected<ShapeError>([&] { net_.train_batch(x_, t_, LossType::MSE, 0.1f, 3); },
                              {"inputs", "3 x 4 = 12", "got 8"});
  expect_rejected<ShapeError>([&] { (void)net_.forward(seven, 2); }, {"inputs", "= 8", "got 7"});
  expect_rejected<ShapeError>([&] { (void)net_.forward_thread_safe(seven, 2); }, {"inputs", "got 7"});
  expect_rejected<ShapeError>([&] { (void)net_.compute_gradients(seven, t_, LossType::MSE, 2); },
                              {"inputs", "got 7"});
  // forward_batch / evaluate take any whole number of rows, but not a partial one or none.
  expect_rejected<ShapeError>([&] { (void)net_.forward_batch(seven, 2); },
                              {"inputs", "length 7", "not a multiple of input_size 4"});
  expect_rejected<ShapeError>([&] { (void)net_.evaluate(seven, t_, LossType::MSE); }, {"inputs", "length 7"});
  expect_rejected<ShapeError>([&] { (void)net_.evaluate(std::vector<float>{}, t_, LossType::MSE); },
                              {"inputs", "at least one row of 4 floats", "got none"});
}

TEST_F(NetworkErrors, OutputsSpanMustMatch) {
  std::vector<float> five(5);
  expect_rejected<ShapeError>([&] { net_.forward(x_, 2, five); },
                              {"outputs", "rows x output_size = 2 x 3 = 6", "got 5"});
  expect_rejected<ShapeError>([&] { net_.forward_batch(x_, 1, five); }, {"outputs", "= 6", "got 5"});
}

// ---- targets ---------------------------------------------------------------

TEST_F(NetworkErrors, TargetsLengthMustMatch) {
  const std::vector<float> five(5, 0.0f);
  expect_rejected<ShapeError>([&] { net_.train_batch(x_, five, LossType::MSE, 0.1f, 2); },
                              {"targets", "rows x output_size = 2 x 3 = 6", "got 5"});
  expect_rejected<ShapeError>([&] { (void)net_.evaluate(x_, five, LossType::MSE); }, {"targets", "got 5"});
  const std::vector<std::int32_t> three_labels = {0, 1, 2};
  expect_rejected<ShapeError>(
      [&] { net_.train_batch(x_, three_labels, LossType::CrossEntropy, 0.1f, 2); },
      {"targets", "one label per row = 2", "got 3"});
  // CE given one float per row: hint at integer labels.
  const std::vector<float> per_row = {0.0f, 2.0f};
  expect_rejected<ShapeError>([&] { net_.train_batch(x_, per_row, LossType::CrossEntropy, 0.1f, 2); },
                              {"targets", "got 2", "integer"});
}

TEST_F(NetworkErrors, LabelsMustBeInRange) {
  for (const auto& [bad, text] :
       std::vector<std::pair<std::int32_t, std::string>>{{-1, "label -1 at index 1"}, {3, "label 3 at index 1"}}) {
    const std::vector<std::int32_t> labels = {0, bad};
    expect_rejected<InvalidArgumentError>(
        [&] { net_.train_batch(x_, labels, LossType::CrossEntropy, 0.1f, 2); }, {"targets", text, "[0, 3)"});
    expect_rejected<InvalidArgumentError>([&] { (void)net_.evaluate(x_, labels, LossType::CrossEntropy); },
                                          {"targets", text});
    expect_rejected<InvalidArgumentError>(
        [&] { (void)net_.compute_gradients(x_, labels, LossType::CrossEntropy, 2); }, {"targets", text});
  }
}

TEST_F(NetworkErrors, LabelsNeedCrossEntropy) {
  expect_rejected<InvalidArgumentError>([&] { net_.train_batch(x_, labels_, LossType::MSE, 0.1f, 2); },
                                        {"targets", "labels", "CrossEntropy", "mse"});
  expect_rejected<InvalidArgumentError>(
      [&] { net_.train_batch(x_, labels_, LossType::BinaryCrossEntropy, 0.1f, 2); },
      {"targets", "CrossEntropy", "binary_cross_entropy"});
}

TEST(LossOutputErrors, LossMustSuitTheOutputActivation) {
  NetworkConfig config;
  config.output_activation = Activation::Sigmoid;
  config.seed = 1;
  Network sigmoid_net({2, 3}, config);
  const std::vector<float> x = {0.5f, -0.5f};
  const std::vector<std::int32_t> label = {1};
  const Snapshot before(sigmoid_net);
  EXPECT_TRUE(Throws<InvalidArgumentError>(
      [&] { sigmoid_net.train_batch(x, label, LossType::CrossEntropy, 0.1f, 1); },
      {"loss_type", "CrossEntropy", "softmax or linear", "output activation is sigmoid"}));
  EXPECT_TRUE(Throws<InvalidArgumentError>(
      [&] { (void)sigmoid_net.evaluate(x, label, LossType::CrossEntropy); }, {"loss_type", "sigmoid"}));
  EXPECT_TRUE(Unchanged(sigmoid_net, before));

  config.output_activation = Activation::Softmax;
  Network softmax_net({2, 3}, config);
  const std::vector<float> t = {0.0f, 1.0f, 0.0f};
  const Snapshot before_softmax(softmax_net);
  EXPECT_TRUE(Throws<InvalidArgumentError>(
      [&] { softmax_net.train_batch(x, t, LossType::BinaryCrossEntropy, 0.1f, 1); },
      {"loss_type", "BinaryCrossEntropy", "sigmoid or linear", "output activation is softmax"}));
  EXPECT_TRUE(Unchanged(softmax_net, before_softmax));
}

TEST(LossOutputErrors, BinaryCrossEntropyTargetsInUnitInterval) {
  NetworkConfig config;
  config.output_activation = Activation::Sigmoid;
  config.seed = 1;
  Network net({2, 2}, config);
  const std::vector<float> x = {0.5f, -0.5f, 1.0f, 2.0f};
  for (const auto& [bad, text] : std::vector<std::pair<float, std::string>>{{1.5f, "got 1.5"}, {-0.1f, "got -0.1"}}) {
    const std::vector<float> t = {0.0f, 1.0f, bad, 0.0f};
    const Snapshot before(net);
    EXPECT_TRUE(Throws<InvalidArgumentError>([&] { net.train_batch(x, t, LossType::BinaryCrossEntropy, 0.1f, 2); },
                                             {"targets", "in [0, 1]", text, "index 2"}));
    EXPECT_TRUE(Throws<InvalidArgumentError>([&] { (void)net.evaluate(x, t, LossType::BinaryCrossEntropy); },
                                             {"targets", "in [0, 1]"}));
    EXPECT_TRUE(Unchanged(net, before));
  }
}

TEST_F(NetworkErrors, CrossEntropyTargetsNonNegative) {
  const std::vector<float> t = {0.5f, 0.5f, 0.0f, -0.2f, 1.0f, 0.2f};
  expect_rejected<InvalidArgumentError>([&] { net_.train_batch(x_, t, LossType::CrossEntropy, 0.1f, 2); },
                                        {"targets", "non-negative", "got -0.2", "index 3"});
}

TEST_F(NetworkErrors, NonFiniteInputsAndTargetsAreRefusedByTraining) {
  for (const float bad : {kNaN, kInf, -kInf}) {
    SCOPED_TRACE(bad);
    std::vector<float> x = x_;
    x[5] = bad;
    const std::string value = std::isnan(bad) ? "nan" : (bad > 0 ? "inf" : "-inf");
    expect_rejected<InvalidArgumentError>([&] { net_.train_batch(x, t_, LossType::MSE, 0.1f, 2); },
                                          {"inputs", "finite", "got " + value, "index 5"});
    expect_rejected<InvalidArgumentError>([&] { net_.train_batch_thread_safe(x, t_, LossType::MSE, 0.1f, 2); },
                                          {"inputs", "finite"});
    std::vector<float> t = t_;
    t[4] = bad;
    expect_rejected<InvalidArgumentError>([&] { net_.train_batch(x_, t, LossType::MSE, 0.1f, 2); },
                                          {"targets", "finite", "got " + value, "index 4"});
  }
}

// ---- parameters and optimizer state ---------------------------------------

TEST_F(NetworkErrors, SetParametersChecksLengthAndFiniteness) {
  const std::size_t n = net_.parameter_count();
  const std::vector<float> short_params(n - 1, 0.0f);
  expect_rejected<ShapeError>([&] { net_.set_parameters(short_params); },
                              {"parameters", "parameter_count = " + std::to_string(n), "got " + std::to_string(n - 1)});
  std::vector<float> with_nan = net_.parameters();
  with_nan[7] = kNaN;
  expect_rejected<InvalidArgumentError>([&] { net_.set_parameters(with_nan); },
                                        {"parameters", "finite", "nan", "index 7"});
}

TEST_F(NetworkErrors, SetLayerChecksIndexAndShapes) {
  const std::vector<float> w(4 * 5, 0.1f), b(5, 0.0f);
  expect_rejected<InvalidArgumentError>([&] { net_.set_layer(2, w, b); }, {"layer", "number of layers 2", "got 2"});
  expect_rejected<InvalidArgumentError>([&] { (void)net_.weights(2); }, {"layer", "got 2"});
  expect_rejected<InvalidArgumentError>([&] { (void)net_.biases(9); }, {"layer", "got 9"});
  expect_rejected<ShapeError>([&] { net_.set_layer(1, w, b); }, {"weights", "5 x 3 = 15", "got 20"});
  const std::vector<float> w1(15, 0.1f), b_wrong(5, 0.0f);
  expect_rejected<ShapeError>([&] { net_.set_layer(1, w1, b_wrong); }, {"biases", "expected 3", "got 5"});
  std::vector<float> w_nan = w;
  w_nan[3] = kInf;
  expect_rejected<InvalidArgumentError>([&] { net_.set_layer(0, w_nan, b); }, {"weights", "finite", "index 3"});
}

TEST_F(NetworkErrors, ApplyGradientsChecksLengthAndFiniteness) {
  const std::size_t n = net_.parameter_count();
  expect_rejected<ShapeError>([&] { net_.apply_gradients(std::vector<float>(n + 1, 0.0f), 0.1f); },
                              {"gradient", "parameter_count = " + std::to_string(n), "got " + std::to_string(n + 1)});
  std::vector<float> g(n, 0.0f);
  g[2] = kNaN;
  expect_rejected<InvalidArgumentError>([&] { net_.apply_gradients(g, 0.1f); }, {"gradient", "finite", "index 2"});
}

TEST_F(NetworkErrors, OptimizerStateChecksShape) {
  auto state = net_.optimizer_state();
  ASSERT_EQ(state.buffers.size(), 2u);
  auto one_buffer = state;
  one_buffer.buffers.pop_back();
  expect_rejected<ShapeError>([&] { net_.set_optimizer_state(one_buffer); }, {"optimizer_state", "adam", "2", "got 1"});
  auto short_buffer = state;
  short_buffer.buffers[1].pop_back();
  expect_rejected<ShapeError>([&] { net_.set_optimizer_state(short_buffer); },
                              {"optimizer_state", "buffer 1", "parameter_count"});
  auto nan_buffer = state;
  nan_buffer.buffers[0][0] = kNaN;
  expect_rejected<InvalidArgumentError>([&] { net_.set_optimizer_state(nan_buffer); },
                                        {"optimizer_state", "finite"});
}

// ---- numerical failure ------------------------------------------------------

TEST(NumericalErrors, OverflowingForwardPassRaisesNumericalError) {
  // Inputs near FLT_MAX with all-positive weights and a ReLU hidden layer:
  // the sums overflow to inf in float, so the loss is not finite and the
  // step must be refused.
  NetworkConfig config;
  config.hidden_activation = Activation::ReLU;
  config.optimizer = OptimizerConfig::with_momentum();
  config.seed = 2;
  Network net({4, 5, 3}, config);
  net.set_parameters(std::vector<float>(net.parameter_count(), 0.5f));
  const std::vector<float> x(8, 3e38f);
  const std::vector<float> t(6, 0.0f);
  const std::vector<std::int32_t> labels = {0, 1};
  const Snapshot before(net);
  EXPECT_TRUE(Throws<NumericalError>([&] { net.train_batch(x, t, LossType::MSE, 0.01f, 2); },
                                     {"train_batch", "loss", "not applied"}));
  EXPECT_TRUE(Throws<NumericalError>([&] { net.train_batch_thread_safe(x, labels, LossType::CrossEntropy, 0.01f, 2); },
                                     {"train_batch_thread_safe", "loss"}));
  net.enable_thread_safety(true);
  EXPECT_TRUE(Throws<NumericalError>([&] { net.train_batch(x, t, LossType::MSE, 0.01f, 2); }, {"loss"}));
  EXPECT_TRUE(Unchanged(net, before));
  // The network is still usable.
  const std::vector<float> small(8, 0.1f);
  EXPECT_TRUE(std::isfinite(net.train_batch(small, t, LossType::MSE, 0.01f, 2)));
  EXPECT_EQ(net.version(), before.version + 1);
}

TEST_F(NetworkErrors, LossOverflowingFloatRaisesNumericalError) {
  // Inputs of 1e30 give output errors ~1e30 whose squares (~1e60) are finite
  // in double and inf in float: the step must be refused, not applied.
  NetworkConfig config;
  config.output_activation = Activation::Linear;
  config.seed = 3;
  Network net({3, 1}, config);
  const std::vector<float> x = {1e30f, 1e30f, 1e30f, 1e30f, -1e30f, 1e30f};
  const std::vector<float> t = {0.0f, 0.0f};
  const Snapshot before(net);
  EXPECT_TRUE(Throws<NumericalError>([&] { net.train_batch(x, t, LossType::MSE, 0.01f, 2); }, {"loss"}));
  EXPECT_TRUE(Unchanged(net, before));
  EXPECT_TRUE(kortex_test::all_finite(net.parameters()));
}

TEST_F(NetworkErrors, DivergingLearningRateRaisesNumericalError) {
  // With learning_rate = 1e30 the first step is legitimate (finite loss);
  // a later one overflows and must be refused with the parameters finite.
  NetworkConfig config;
  config.hidden_activation = Activation::Tanh;
  config.seed = 5;
  Network net({3, 8, 1}, config);
  const std::vector<float> x = {1, 2, 3, -1, 0.5f, 2};
  const std::vector<float> t = {1, -1};
  bool refused = false;
  for (int step = 0; step < 10 && !refused; ++step) {
    const Snapshot before(net);
    try {
      const float loss = net.train_batch(x, t, LossType::MSE, 1e30f, 2);
      EXPECT_TRUE(std::isfinite(loss)) << "step " << step << " returned a non-finite loss without throwing";
      EXPECT_TRUE(kortex_test::all_finite(net.parameters())) << "step " << step << " left non-finite parameters";
    } catch (const NumericalError&) {
      refused = true;
      EXPECT_TRUE(Unchanged(net, before));
    }
  }
  EXPECT_TRUE(refused);
  EXPECT_TRUE(kortex_test::all_finite(net.parameters()));
}

// Batch-1 steps check finiteness from the gradient's factors (never written
// out); every refusal must still come with the same message and no change.
TEST_F(NetworkErrors, OneRowStepsRefuseWhatLargerBatchesRefuse) {
  NetworkConfig config;
  config.hidden_activation = Activation::ReLU;
  config.output_activation = Activation::Linear;
  config.seed = 2;
  Network net({4, 5, 3}, config);
  net.set_parameters(std::vector<float>(net.parameter_count(), 0.5f));
  const Snapshot before(net);
  const std::vector<float> t(3, 0.0f);
  // The forward pass overflows: the loss is not finite.
  EXPECT_TRUE(Throws<NumericalError>([&] { net.train_batch(std::vector<float>(4, 3e38f), t, LossType::MSE, 0.01f, 1); },
                                     {"train_batch", "loss", "not applied"}));
  // Finite loss, the gradient overflows: a linear layer with zero weights
  // misses targets of 1e10 (loss 1e20), and inputs of 1e30 make the weight
  // gradient about 1e40.
  Network linear({4, 3}, config);
  linear.set_parameters(std::vector<float>(linear.parameter_count(), 0.0f));
  const Snapshot linear_before(linear);
  EXPECT_TRUE(Throws<NumericalError>(
      [&] { linear.train_batch(std::vector<float>(4, 1e30f), std::vector<float>(3, 1e10f), LossType::MSE, 0.01f, 1); },
      {"train_batch", "gradient overflowed", "not applied"}));
  EXPECT_TRUE(Unchanged(linear, linear_before));
  // Finite gradient, the update overflows.
  EXPECT_TRUE(Throws<NumericalError>(
      [&] { net.train_batch(std::vector<float>(4, 1e3f), t, LossType::MSE, 3e37f, 1); },
      {"train_batch", "overflow", "not applied"}));
  EXPECT_TRUE(Unchanged(net, before));
  EXPECT_TRUE(std::isfinite(net.train_batch(std::vector<float>(4, 0.1f), t, LossType::MSE, 0.01f, 1)));
  EXPECT_EQ(net.version(), before.version + 1);
}

}  // namespace
