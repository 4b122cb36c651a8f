// Analytic gradients against central finite differences for every
// activation x loss pair the engine accepts.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "kortexdl/kortexdl.hpp"

namespace {

using kortexdl::Activation;
using kortexdl::LossType;

struct Case {
  Activation hidden;
  Activation output;
  LossType loss;
  bool labels;  // CrossEntropy: integer labels instead of probability rows
};

std::string name_of(const Case& c) {
  return std::string(kortexdl::to_string(c.hidden)) + "_" + std::string(kortexdl::to_string(c.output)) + "_" +
         std::string(kortexdl::to_string(c.loss)) + (c.labels ? "_labels" : "");
}

class GradientCheck : public ::testing::TestWithParam<Case> {};

double loss_at(const kortexdl::Network& net, const std::vector<float>& x, const kortexdl::Targets& t, LossType loss) {
  return net.evaluate(x, t, loss).loss;
}

TEST_P(GradientCheck, MatchesFiniteDifferences) {
  const Case c = GetParam();
  kortexdl::NetworkConfig config;
  config.hidden_activation = c.hidden;
  config.output_activation = c.output;
  config.seed = 7;
  const std::size_t batch = 5;
  kortexdl::Network net({4, 6, 5, 3}, config);

  std::mt19937 rng(11);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> unit(0.05f, 0.95f);
  std::vector<float> x(batch * 4);
  for (auto& v : x) v = normal(rng);
  // Small non-zero biases so ReLU kinks are unlikely to sit at a probe point.
  std::vector<float> params = net.parameters();
  for (const auto& layer : net.layers()) {
    for (std::size_t j = 0; j < layer.outputs; ++j) params[layer.biases_offset + j] = 0.1f * normal(rng);
  }
  net.set_parameters(params);

  std::vector<float> values(batch * 3);
  std::vector<std::int32_t> labels(batch);
  for (std::size_t i = 0; i < batch; ++i) {
    labels[i] = static_cast<std::int32_t>(i % 3);
    float row_sum = 0.0f;
    for (std::size_t j = 0; j < 3; ++j) {
      float v = c.loss == LossType::MSE ? normal(rng) : unit(rng);
      values[i * 3 + j] = v;
      row_sum += v;
    }
    if (c.loss == LossType::CrossEntropy) {
      for (std::size_t j = 0; j < 3; ++j) values[i * 3 + j] /= row_sum;
    }
  }
  const kortexdl::Targets targets = c.labels ? kortexdl::Targets(labels) : kortexdl::Targets(values);

  const auto analytic = net.compute_gradients(x, targets, c.loss, batch);
  EXPECT_NEAR(analytic.loss, loss_at(net, x, targets, c.loss), 1e-5);

  // A ReLU kink inside [p - eps, p + eps] makes the two one-sided slopes
  // disagree, and near one the central difference is off too. Each
  // parameter is probed with shrinking steps: it passes at the first step
  // where the one-sided slopes agree and the central difference matches; a
  // parameter whose slopes disagree at every step sits on a kink and is
  // skipped (the test fails if more than a tenth do, or any in a smooth net).
  const double l0 = loss_at(net, x, targets, c.loss);
  std::size_t checked = 0;
  std::size_t kinks = 0;
  for (std::size_t i = 0; i < params.size(); ++i) {
    bool matched = false;
    bool smooth_somewhere = false;
    double numeric = 0.0;
    for (const float eps : {1e-3f, 3e-4f, 1e-4f}) {
      std::vector<float> plus = params, minus = params;
      plus[i] += eps;
      minus[i] -= eps;
      net.set_parameters(plus);
      const double lp = loss_at(net, x, targets, c.loss);
      net.set_parameters(minus);
      const double lm = loss_at(net, x, targets, c.loss);
      const double step_up = static_cast<double>(plus[i]) - params[i];
      const double step_down = static_cast<double>(params[i]) - minus[i];
      const double right = (lp - l0) / step_up;
      const double left = (l0 - lm) / step_down;
      numeric = (lp - lm) / (step_up + step_down);
      // Float noise in the loss is ~1e-7 / eps; curvature adds ~eps.
      if (std::fabs(right - left) > 2e-7 / eps + 5e-3 + 0.1 * std::fabs(numeric)) continue;
      smooth_somewhere = true;
      if (std::fabs(analytic.values[i] - numeric) <= 1e-3 + 1e-2 * std::fabs(numeric)) {
        matched = true;
        break;
      }
    }
    if (!smooth_somewhere) {
      ++kinks;
      continue;
    }
    EXPECT_TRUE(matched) << "parameter " << i << " in " << name_of(c) << ": analytic " << analytic.values[i]
                         << ", numeric " << numeric;
    ++checked;
  }
  net.set_parameters(params);
  EXPECT_EQ(checked + kinks, net.parameter_count());
  EXPECT_LE(kinks * 10, net.parameter_count()) << kinks << " parameters sit on a kink in " << name_of(c);
  const bool smooth = c.hidden != Activation::ReLU && c.output != Activation::ReLU;
  if (smooth) {
    EXPECT_EQ(kinks, 0u) << name_of(c);
  }
}

std::vector<Case> all_cases() {
  std::vector<Case> cases;
  const Activation hidden[] = {Activation::ReLU, Activation::Tanh, Activation::Sigmoid, Activation::GELU,
                               Activation::Linear};
  const Activation mse_outputs[] = {Activation::Linear, Activation::Tanh, Activation::Sigmoid, Activation::GELU,
                                    Activation::Softmax, Activation::ReLU};
  for (Activation h : hidden) {
    for (Activation o : mse_outputs) cases.push_back({h, o, LossType::MSE, false});
    for (Activation o : {Activation::Softmax, Activation::Linear}) {
      cases.push_back({h, o, LossType::CrossEntropy, true});
      cases.push_back({h, o, LossType::CrossEntropy, false});
    }
    for (Activation o : {Activation::Sigmoid, Activation::Linear}) {
      cases.push_back({h, o, LossType::BinaryCrossEntropy, false});
    }
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(EveryActivationAndLoss, GradientCheck, ::testing::ValuesIn(all_cases()),
                         [](const ::testing::TestParamInfo<Case>& info) { return name_of(info.param); });

}  // namespace
