// A training step's gradient computed as one parallel region: the rows
// split into one block per thread, the blocks' gradients added in block
// order (src/engine.hpp, gradient_rows_split). What must hold:
//  * the same loss sums and, up to rounding, the same gradient as the
//    single-threaded computation, for even and uneven blocks;
//  * for a given team size, the same bits every time;
//  * few rows or one thread take the single-threaded path unchanged;
//  * a block that fails makes the call throw, and nobody waits for ever,
//    also once the thread that first used OpenMP has exited;
//  * training through it (a team of two) follows training on one thread.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <exception>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "architecture.hpp"
#include "engine.hpp"
#include "kortexdl/kortexdl.hpp"

namespace {

using kortexdl::Activation;
using kortexdl::LossType;
using kortexdl::detail::Architecture;
using kortexdl::detail::gradient_rows;
using kortexdl::detail::gradient_rows_split;
using kortexdl::detail::LossSums;
using kortexdl::detail::TargetRows;

struct Problem {
  Architecture arch;
  std::vector<float> params;
  std::vector<float> inputs;
  std::vector<std::int32_t> labels;
  std::size_t rows;
};

Problem make_problem(std::vector<std::size_t> sizes, std::size_t rows, Activation hidden = Activation::ReLU) {
  Problem p{Architecture::make(sizes, hidden, Activation::Linear), {}, {}, {}, rows};
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 0.3f);
  p.params.resize(p.arch.parameter_count);
  for (float& v : p.params) v = normal(rng);
  p.inputs.resize(rows * sizes.front());
  for (float& v : p.inputs) v = normal(rng);
  std::uniform_int_distribution<std::int32_t> label(0, static_cast<std::int32_t>(sizes.back()) - 1);
  p.labels.resize(rows);
  for (auto& v : p.labels) v = label(rng);
  return p;
}

// The gradient of p with `threads` in the calling thread's team.
std::vector<float> gradient(const Problem& p, int threads, bool split, LossSums* sums) {
  const int before = omp_get_max_threads();
  omp_set_num_threads(threads);
  std::vector<float> grad(p.arch.parameter_count, -1.0f);
  const TargetRows targets{nullptr, p.labels.data()};
  const float scale = 1.0f / static_cast<float>(p.rows);
  *sums = split ? gradient_rows_split(p.arch, p.params.data(), p.inputs.data(), targets, p.rows,
                                      LossType::CrossEntropy, scale, grad.data())
                : gradient_rows(p.arch, p.params.data(), p.inputs.data(), targets, p.rows, LossType::CrossEntropy,
                                scale, grad.data());
  omp_set_num_threads(before);
  return grad;
}

void expect_close(const std::vector<float>& a, const std::vector<float>& b) {
  ASSERT_EQ(a.size(), b.size());
  float largest = 0.0f;
  for (float v : b) largest = std::max(largest, std::fabs(v));
  for (std::size_t i = 0; i < a.size(); ++i) {
    ASSERT_NEAR(a[i], b[i], 1e-5f * largest + 1e-7f) << "parameter " << i;
  }
}

TEST(GradientSplit, MatchesTheSingleThreadedGradient) {
  // 2 and 3 blocks; 385 rows split 128 / 128 / 129.
  for (const auto& [rows, threads] : {std::pair<std::size_t, int>{256, 2}, {385, 3}, {1000, 3}}) {
    SCOPED_TRACE("rows " + std::to_string(rows) + ", threads " + std::to_string(threads));
    const Problem p = make_problem({40, 32, 16, 5}, rows, Activation::GELU);
    LossSums whole, split;
    const auto reference = gradient(p, 1, false, &whole);
    const auto blocks = gradient(p, threads, true, &split);
    expect_close(blocks, reference);
    EXPECT_NEAR(split.loss, whole.loss, 1e-9 * std::fabs(whole.loss));
    EXPECT_EQ(split.correct, whole.correct);
  }
}

TEST(GradientSplit, SameBitsEveryTimeForAGivenTeam) {
  const Problem p = make_problem({40, 32, 16, 5}, 300);
  LossSums first_sums, again_sums;
  const auto first = gradient(p, 2, true, &first_sums);
  for (int i = 0; i < 20; ++i) {
    const auto again = gradient(p, 2, true, &again_sums);
    ASSERT_EQ(again, first) << "call " << i;
    ASSERT_EQ(again_sums.loss, first_sums.loss);
  }
}

TEST(GradientSplit, FewRowsOrOneThreadTakeTheSingleThreadedPath) {
  // 255 rows on two threads: blocks of fewer than 128 rows are not split.
  for (const auto& [rows, threads] : {std::pair<std::size_t, int>{255, 2}, {512, 1}}) {
    SCOPED_TRACE("rows " + std::to_string(rows) + ", threads " + std::to_string(threads));
    const Problem p = make_problem({40, 32, 5}, rows);
    LossSums whole, split;
    EXPECT_EQ(gradient(p, threads, true, &split), gradient(p, threads, false, &whole));
    EXPECT_EQ(split.loss, whole.loss);
  }
}

// A gradient over 2^21 rows through a 4096-wide layer on a team of two:
// each block's scratch is over the per-call limit, so every block throws
// before allocating it. Returns what the call threw.
std::exception_ptr gradient_of_too_many_rows() {
  const Architecture arch = Architecture::make({4, 4096, 1}, Activation::ReLU, Activation::Linear);
  const std::size_t rows = std::size_t{1} << 21;
  const std::vector<float> params(arch.parameter_count, 0.01f);
  const std::vector<float> inputs(rows * 4, 0.5f);
  const std::vector<float> targets(rows, 1.0f);
  std::vector<float> grad(arch.parameter_count);
  const int before = omp_get_max_threads();
  omp_set_num_threads(2);
  std::exception_ptr thrown;
  try {
    (void)gradient_rows_split(arch, params.data(), inputs.data(), TargetRows{targets.data(), nullptr}, rows,
                              LossType::MSE, 1.0f / static_cast<float>(rows), grad.data());
  } catch (...) {
    thrown = std::current_exception();
  }
  omp_set_num_threads(before);
  return thrown;
}

void expect_the_scratch_limit(const std::exception_ptr& thrown) {
  ASSERT_TRUE(thrown) << "a gradient over 2^21 rows of a 4096-wide layer succeeded";
  try {
    std::rethrow_exception(thrown);
  } catch (const kortexdl::ResourceLimitError& e) {
    EXPECT_NE(std::string(e.what()).find("batch_size"), std::string::npos) << e.what();
  } catch (...) {
    ADD_FAILURE() << "threw something other than ResourceLimitError";
  }
}

TEST(GradientSplit, AFailingBlockThrowsAndNobodyHangs) {
  expect_the_scratch_limit(gradient_of_too_many_rows());
  // The team is usable afterwards.
  const Problem p = make_problem({40, 32, 5}, 256);
  LossSums whole, split;
  expect_close(gradient(p, 2, true, &split), gradient(p, 1, false, &whole));
}

TEST(GradientSplit, AFailingBlockThrowsAfterTheFirstOpenMPThreadHasExited) {
  // Under ctest this runs in a process of its own, so the thread below is
  // the first to use OpenMP: once it has exited, a failing block's way out
  // must not touch that thread's record in the runtime (with libomp and a
  // tool attached, as under TSan, a lock released there read it: a crash).
  std::thread first([] { (void)omp_get_max_threads(); });
  first.join();
  expect_the_scratch_limit(gradient_of_too_many_rows());
}

TEST(GradientSplit, TrainingOnATeamFollowsTrainingOnOneThread) {
  // The public path: train_batch at 256 rows with a budget of two threads
  // (split) and of one (not split), from the same start.
  kortexdl::NetworkConfig config;
  config.seed = 3;
  config.optimizer = kortexdl::OptimizerConfig::adam();
  // 52 MFLOP per step: worth two threads.
  kortexdl::Network one({256, 128, 10}, config);
  kortexdl::Network team({256, 128, 10}, config);
  const Problem data = make_problem({256, 128, 10}, 256);
  const std::size_t before = kortexdl::get_num_threads();
  for (int step = 0; step < 5; ++step) {
    kortexdl::set_num_threads(1);
    const float loss_one = one.train_batch(data.inputs, data.labels, LossType::CrossEntropy, 0.01f, 256);
    kortexdl::set_num_threads(2);
    const float loss_team = team.train_batch(data.inputs, data.labels, LossType::CrossEntropy, 0.01f, 256);
    EXPECT_NEAR(loss_team, loss_one, 1e-5f * std::fabs(loss_one)) << "step " << step;
  }
  kortexdl::set_num_threads(before);
  expect_close(team.parameters(), one.parameters());
}

}  // namespace
