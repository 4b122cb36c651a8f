// fit(): epochs, validation, schedules, early stopping, callbacks, interrupts.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "kortexdl/kortexdl.hpp"

namespace {

using kortexdl::LossType;

struct Blobs {
  std::vector<float> x;
  std::vector<std::int32_t> y;
};

Blobs blobs(std::size_t rows, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> noise(0.0f, 0.6f);
  Blobs b;
  for (std::size_t i = 0; i < rows; ++i) {
    const auto label = static_cast<std::int32_t>(i % 3);
    b.y.push_back(label);
    for (std::size_t j = 0; j < 6; ++j) b.x.push_back((j % 3 == static_cast<std::size_t>(label) ? 1.5f : 0.0f) + noise(rng));
  }
  return b;
}

kortexdl::Network classifier(std::uint64_t seed = 5) {
  kortexdl::NetworkConfig config;
  config.output_activation = kortexdl::Activation::Softmax;
  config.optimizer = kortexdl::OptimizerConfig::adam();
  config.seed = seed;
  return kortexdl::Network({6, 16, 3}, config);
}

TEST(Fit, HistoryHasOneRecordPerEpochAndLearns) {
  const Blobs data = blobs(300, 1);
  auto net = classifier();
  kortexdl::FitOptions options;
  options.epochs = 6;
  options.batch_size = 32;
  options.learning_rate = 0.01f;
  options.validation_split = 0.2;
  const auto history = kortexdl::fit(net, data.x, data.y, LossType::CrossEntropy, options);
  ASSERT_EQ(history.epochs.size(), 6u);
  EXPECT_FALSE(history.stopped_early);
  EXPECT_EQ(history.steps, 6u * ((240 + 31) / 32));
  for (std::size_t e = 0; e < 6; ++e) {
    const auto& r = history.epochs[e];
    EXPECT_EQ(r.epoch, e + 1);
    ASSERT_TRUE(r.accuracy.has_value());
    ASSERT_TRUE(r.validation_loss.has_value());
    ASSERT_TRUE(r.validation_accuracy.has_value());
    EXPECT_GT(r.seconds, 0.0);
  }
  EXPECT_LT(history.epochs.back().loss, history.epochs.front().loss);
  EXPECT_GT(*history.epochs.back().validation_accuracy, 0.9);
  // The held-out rows are the last 20%: evaluating them gives the last record.
  const std::span<const float> held_x(data.x.data() + 240 * 6, 60 * 6);
  const std::span<const std::int32_t> held_y(data.y.data() + 240, 60);
  const auto check = net.evaluate(held_x, held_y, LossType::CrossEntropy);
  EXPECT_NEAR(check.loss, *history.epochs.back().validation_loss, 1e-9);
}

TEST(Fit, ExplicitValidationData) {
  const Blobs train = blobs(200, 2);
  const Blobs valid = blobs(50, 3);
  auto net = classifier();
  kortexdl::FitOptions options;
  options.epochs = 2;
  options.validation_inputs = valid.x;
  options.validation_targets = kortexdl::Targets(valid.y);
  const auto history = kortexdl::fit(net, train.x, train.y, LossType::CrossEntropy, options);
  const auto check = net.evaluate(valid.x, valid.y, LossType::CrossEntropy);
  EXPECT_NEAR(*history.epochs.back().validation_loss, check.loss, 1e-9);
}

TEST(Fit, SameSeedSameRun) {
  const Blobs data = blobs(150, 4);
  kortexdl::set_num_threads(1);
  kortexdl::FitOptions options;
  options.epochs = 3;
  options.seed = 17;
  auto a = classifier();
  auto b = classifier();
  const auto ha = kortexdl::fit(a, data.x, data.y, LossType::CrossEntropy, options);
  const auto hb = kortexdl::fit(b, data.x, data.y, LossType::CrossEntropy, options);
  kortexdl::set_num_threads(0);
  EXPECT_EQ(a.parameters(), b.parameters());
  for (std::size_t e = 0; e < 3; ++e) EXPECT_EQ(ha.epochs[e].loss, hb.epochs[e].loss);
  options.seed = 18;
  auto c = classifier();
  kortexdl::fit(c, data.x, data.y, LossType::CrossEntropy, options);
  EXPECT_NE(a.parameters(), c.parameters());
}

TEST(Fit, EarlyStoppingRestoresTheBestEpoch) {
  const Blobs data = blobs(120, 5);
  auto net = classifier();
  std::vector<std::vector<float>> after_epoch;
  kortexdl::FitOptions options;
  options.epochs = 20;
  options.early_stopping_patience = 2;
  // No later epoch can beat the first by this much, so patience runs out.
  options.min_delta = 1e9;
  options.on_epoch_end = [&](const kortexdl::EpochRecord&) {
    after_epoch.push_back(net.parameters());  // the network is free between steps
    return true;
  };
  const auto history = kortexdl::fit(net, data.x, data.y, LossType::CrossEntropy, options);
  EXPECT_TRUE(history.stopped_early);
  EXPECT_EQ(history.epochs.size(), 3u);
  EXPECT_EQ(history.best_epoch, 1u);
  EXPECT_TRUE(history.restored_best);
  ASSERT_EQ(after_epoch.size(), 3u);
  EXPECT_EQ(net.parameters(), after_epoch[0]);
}

TEST(Fit, CallbacksCanStopAndAreCalled) {
  const Blobs data = blobs(128, 6);
  auto net = classifier();
  kortexdl::FitOptions options;
  options.epochs = 5;
  options.batch_size = 16;
  options.batch_callback_every = 2;
  std::vector<std::pair<std::size_t, std::size_t>> batches;
  options.on_batch_end = [&](std::size_t epoch, std::size_t step, double loss) {
    EXPECT_TRUE(std::isfinite(loss));
    batches.emplace_back(epoch, step);
    return true;
  };
  std::size_t epochs_seen = 0;
  options.on_epoch_end = [&](const kortexdl::EpochRecord& r) {
    ++epochs_seen;
    return r.epoch < 2;  // stop after the second epoch
  };
  const auto history = kortexdl::fit(net, data.x, data.y, LossType::CrossEntropy, options);
  EXPECT_EQ(epochs_seen, 2u);
  EXPECT_EQ(history.epochs.size(), 2u);
  EXPECT_TRUE(history.stopped_early);
  ASSERT_EQ(batches.size(), 8u);  // 8 steps per epoch, every 2nd, two epochs
  EXPECT_EQ(batches.front(), std::make_pair(std::size_t{1}, std::size_t{2}));
  EXPECT_EQ(batches.back(), std::make_pair(std::size_t{2}, std::size_t{8}));
}

TEST(Fit, InterruptLeavesAUsableNetwork) {
  const Blobs data = blobs(128, 7);
  auto net = classifier();
  kortexdl::FitOptions options;
  options.epochs = 3;
  options.batch_size = 16;
  int polls = 0;
  options.should_stop = [&] { return ++polls > 5; };
  EXPECT_THROW(kortexdl::fit(net, data.x, data.y, LossType::CrossEntropy, options), kortexdl::InterruptedError);
  EXPECT_EQ(net.version(), 5u);
  EXPECT_GT(kortexdl::score(net, data.x, data.y), 0.0);
}

TEST(Fit, SchedulesFollowTheirFormulas) {
  const auto step = kortexdl::LearningRateSchedule::step(2, 0.5f);
  EXPECT_FLOAT_EQ(step.at(0.1f, 0, 0, 100), 0.1f);
  EXPECT_FLOAT_EQ(step.at(0.1f, 1, 10, 100), 0.1f);
  EXPECT_FLOAT_EQ(step.at(0.1f, 2, 20, 100), 0.05f);
  EXPECT_FLOAT_EQ(step.at(0.1f, 5, 50, 100), 0.025f);
  const auto cosine = kortexdl::LearningRateSchedule::cosine(0.01f);
  EXPECT_FLOAT_EQ(cosine.at(0.1f, 0, 0, 100), 0.1f);
  EXPECT_NEAR(cosine.at(0.1f, 5, 50, 100), 0.055f, 1e-6);
  EXPECT_NEAR(cosine.at(0.1f, 9, 100, 100), 0.01f, 1e-6);
  EXPECT_THROW(kortexdl::LearningRateSchedule::step(0, 0.5f), kortexdl::InvalidArgumentError);
  EXPECT_THROW(kortexdl::LearningRateSchedule::cosine(-1.0f), kortexdl::InvalidArgumentError);
}

TEST(Fit, BadOptionsAreRejectedBeforeTraining) {
  const Blobs data = blobs(30, 8);
  auto net = classifier();
  const auto before = net.parameters();
  kortexdl::FitOptions options;
  options.epochs = 0;
  EXPECT_THROW(kortexdl::fit(net, data.x, data.y, LossType::CrossEntropy, options), kortexdl::InvalidArgumentError);
  options.epochs = 1;
  options.validation_split = 1.0;
  EXPECT_THROW(kortexdl::fit(net, data.x, data.y, LossType::CrossEntropy, options), kortexdl::InvalidArgumentError);
  options.validation_split = 0.01;  // 0 of 30 rows
  EXPECT_THROW(kortexdl::fit(net, data.x, data.y, LossType::CrossEntropy, options), kortexdl::InvalidArgumentError);
  options.validation_split = 0.0;
  options.learning_rate = -1.0f;
  EXPECT_THROW(kortexdl::fit(net, data.x, data.y, LossType::CrossEntropy, options), kortexdl::InvalidArgumentError);
  options.learning_rate = 0.01f;
  std::vector<std::int32_t> bad = data.y;
  bad[3] = 7;
  EXPECT_THROW(kortexdl::fit(net, data.x, bad, LossType::CrossEntropy, options), kortexdl::InvalidArgumentError);
  EXPECT_EQ(net.parameters(), before);
  EXPECT_EQ(net.version(), 0u);
}

TEST(Fit, DataParallelFitMatchesPlainFit) {
  const Blobs data = blobs(200, 9);
  kortexdl::FitOptions options;
  options.epochs = 2;
  options.batch_size = 20;
  options.learning_rate = 0.01f;
  auto plain = classifier();
  kortexdl::fit(plain, data.x, data.y, LossType::CrossEntropy, options);
  options.numa_nodes = 2;
  auto sharded = classifier();
  kortexdl::fit(sharded, data.x, data.y, LossType::CrossEntropy, options);
  const auto a = plain.parameters();
  const auto b = sharded.parameters();
  for (std::size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], 1e-4 * std::max(1.0f, std::fabs(a[i])));
}

TEST(Predict, ClassesAndScore) {
  const Blobs data = blobs(90, 10);
  auto net = classifier();
  kortexdl::FitOptions options;
  options.epochs = 15;
  options.learning_rate = 0.02f;
  kortexdl::fit(net, data.x, data.y, LossType::CrossEntropy, options);
  const auto classes = kortexdl::predict_classes(net, data.x, 7);
  ASSERT_EQ(classes.size(), 90u);
  const auto outputs = kortexdl::predict(net, data.x, 7);
  std::size_t hits = 0;
  for (std::size_t i = 0; i < 90; ++i) {
    const float* row = outputs.data() + i * 3;
    const auto best = static_cast<std::int32_t>(std::max_element(row, row + 3) - row);
    EXPECT_EQ(classes[i], best);
    hits += classes[i] == data.y[i] ? 1 : 0;
  }
  EXPECT_DOUBLE_EQ(kortexdl::score(net, data.x, data.y), static_cast<double>(hits) / 90.0);
  EXPECT_GT(kortexdl::score(net, data.x, data.y), 0.9);
  std::vector<std::int32_t> short_labels(data.y.begin(), data.y.end() - 1);
  EXPECT_THROW(kortexdl::score(net, data.x, short_labels), kortexdl::ShapeError);
}

}  // namespace
