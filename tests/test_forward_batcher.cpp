// Concurrent one-row forward and evaluate calls computed together
// (src/parallel/forward_batcher.hpp). What must hold:
//  * a batch of rows gives every row bit for bit the outputs of that row
//    alone, for every activation and width (engine.hpp, forward_rows_as_alone),
//    also when its rows end in different activations (forward rows and
//    evaluation rows, which stop at the logits), and so does forward_batch
//    in chunks of one row, which computes its rows together;
//  * every caller gets its own row's result, also when its row was computed
//    by another thread in a batch with others';
//  * an exception thrown while computing a batch reaches every caller whose
//    row was in it, and the line keeps working afterwards;
//  * threads sharing a network get the outputs and evaluations a single
//    thread gets, and their rows are batched once they outnumber the CPUs.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <memory>
#include <cstddef>
#include <cstring>
#include <span>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "architecture.hpp"
#include "engine.hpp"
#include "kortexdl/kortexdl.hpp"
#include "network_state.hpp"
#include "parallel/affinity.hpp"
#include "parallel/forward_batcher.hpp"
#include "parallel/thread_budget.hpp"
#include "test_support.hpp"

namespace {

using kortexdl::Activation;
using kortexdl::detail::Architecture;
using kortexdl::detail::ForwardBatcher;

struct OneOpenMPThread {
  int before = omp_get_max_threads();
  OneOpenMPThread() { omp_set_num_threads(1); }
  ~OneOpenMPThread() { omp_set_num_threads(before); }
};

TEST(ForwardRowsAsAlone, EveryRowIsBitForBitTheRowAlone) {
  if (!kortexdl::detail::rows_compute_as_alone()) {
    GTEST_SKIP() << "rows do not run on the row kernels here (no AVX-512 or a CBLAS build): nothing is batched";
  }
  const OneOpenMPThread one_thread;
  const std::vector<std::vector<std::size_t>> shapes = {{7, 33, 5}, {100, 70, 10}, {784, 256, 128, 10}, {20, 3}};
  const Activation hidden[] = {Activation::ReLU, Activation::Tanh, Activation::Sigmoid, Activation::GELU,
                               Activation::Linear};
  const Activation output[] = {Activation::Linear, Activation::Softmax, Activation::Sigmoid};
  std::uint32_t seed = 1;
  for (const auto& sizes : shapes) {
    for (const Activation h : hidden) {
      for (const Activation o : output) {
        const Architecture arch = Architecture::make(sizes, h, o);
        const std::vector<float> params = kortex_test::normal_floats(arch.parameter_count, seed++);
        for (const std::size_t rows : {1, 2, 3, 4, 5, 8, 9, 16}) {
          const std::vector<float> inputs = kortex_test::normal_floats(rows * arch.inputs(), seed++);
          std::vector<float> together(rows * arch.outputs() + 1, -7.0f);
          ASSERT_NO_THROW(
              kortexdl::detail::forward_rows_as_alone(arch, params.data(), inputs.data(), rows, together.data()));
          EXPECT_EQ(together.back(), -7.0f) << "wrote past the outputs";
          for (std::size_t r = 0; r < rows; ++r) {
            std::vector<float> alone(arch.outputs());
            kortexdl::detail::forward_rows(arch, params.data(), inputs.data() + r * arch.inputs(), 1, alone.data());
            const std::vector<float> row(together.begin() + static_cast<std::ptrdiff_t>(r * arch.outputs()),
                                         together.begin() + static_cast<std::ptrdiff_t>((r + 1) * arch.outputs()));
            ASSERT_TRUE(kortex_test::BitwiseEqual(row, alone))
                << "layers " << sizes.size() << " first " << sizes.front() << " hidden " << static_cast<int>(h)
                << " output " << static_cast<int>(o) << " rows " << rows << " row " << r;
          }
          // Every other row stops at the logits, as an evaluation's row does:
          // those give what the same network with a linear output gives
          // (the parameters are laid out alike), the others what it gives.
          const Architecture logits = Architecture::make(sizes, h, Activation::Linear);
          std::vector<Activation> last(rows);
          for (std::size_t r = 0; r < rows; ++r) last[r] = r % 2 == 1 ? Activation::Linear : o;
          std::vector<float> mixed(rows * arch.outputs());
          kortexdl::detail::forward_rows_as_alone(arch, params.data(), inputs.data(), rows, mixed.data(), last.data());
          for (std::size_t r = 0; r < rows; ++r) {
            std::vector<float> alone(arch.outputs());
            kortexdl::detail::forward_rows(last[r] == o ? arch : logits, params.data(),
                                           inputs.data() + r * arch.inputs(), 1, alone.data());
            const std::vector<float> row(mixed.begin() + static_cast<std::ptrdiff_t>(r * arch.outputs()),
                                         mixed.begin() + static_cast<std::ptrdiff_t>((r + 1) * arch.outputs()));
            ASSERT_TRUE(kortex_test::BitwiseEqual(row, alone))
                << "mixed: layers " << sizes.size() << " hidden " << static_cast<int>(h) << " output "
                << static_cast<int>(o) << " rows " << rows << " row " << r;
          }
        }
      }
    }
  }
}

TEST(ForwardRowsAsAlone, ForwardBatchInChunksOfOneRowGivesEveryRowAlone) {
  // forward_batch with batch_size 1 computes its rows together on the row
  // kernels (passes of up to 64 rows, one block per thread of the team):
  // every row must still come out bit for bit as a forward of that row
  // alone, for every row count and team size. Where the rows do not compute
  // as alone, the chunks go one row at a time and this holds as well.
  kortexdl::NetworkConfig config;
  config.hidden_activation = Activation::GELU;
  config.output_activation = Activation::Softmax;
  config.seed = 5;
  const kortexdl::Network net({200, 256, 64, 10}, config);
  for (const std::size_t budget : {1, 2, 3}) {
    const kortex_test::ThreadBudget threads(budget);
    for (const std::size_t rows : {2, 5, 8, 63, 64, 65, 130, 301}) {
      const std::vector<float> inputs =
          kortex_test::normal_floats(rows * net.input_size(), 11 + static_cast<std::uint32_t>(rows));
      const std::vector<float> together = net.forward_batch(inputs, 1);
      ASSERT_EQ(together.size(), rows * net.output_size());
      for (std::size_t r = 0; r < rows; ++r) {
        const std::vector<float> alone =
            net.forward(std::span<const float>(inputs).subspan(r * net.input_size(), net.input_size()), 1);
        const std::vector<float> row(together.begin() + static_cast<std::ptrdiff_t>(r * net.output_size()),
                                     together.begin() + static_cast<std::ptrdiff_t>((r + 1) * net.output_size()));
        ASSERT_TRUE(kortex_test::BitwiseEqual(row, alone)) << "budget " << budget << " rows " << rows << " row " << r;
      }
    }
  }
}

// out[j] = in[0] * (j + 1) + in[1], so every caller can check its own row;
// without in[1] for a row whose last activation is Linear, so every caller
// can check that its row's activation came with it.
struct Doubling {
  static constexpr std::size_t kIn = 2;
  static constexpr std::size_t kOut = 3;
  std::chrono::microseconds pause{0};
  std::atomic<bool>* fail = nullptr;
  std::atomic<std::size_t>* widest = nullptr;
  void operator()(const float* in, std::size_t rows, float* out, const Activation* last) const {
    if (widest != nullptr) {
      std::size_t seen = widest->load();
      while (seen < rows && !widest->compare_exchange_weak(seen, rows)) {
      }
    }
    if (pause.count() > 0) std::this_thread::sleep_for(pause);
    if (fail != nullptr && fail->load()) throw std::runtime_error("batch failed on purpose");
    for (std::size_t r = 0; r < rows; ++r) {
      const float shift = last[r] == Activation::Linear ? 0.0f : in[r * kIn + 1];
      for (std::size_t j = 0; j < kOut; ++j) out[r * kOut + j] = in[r * kIn] * static_cast<float>(j + 1) + shift;
    }
  }
};

TEST(ForwardBatcher, EveryCallerGetsItsOwnRowWhileOneLeaderBatchesTheRest) {
  ForwardBatcher batcher(1);
  std::atomic<std::size_t> widest{0};
  std::atomic<std::size_t> wrong{0};
  constexpr int kThreads = 8;
  constexpr int kCalls = 200;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      Doubling compute;
      compute.pause = std::chrono::microseconds(50);  // long enough for a line to form
      compute.widest = &widest;
      for (int c = 0; c < kCalls; ++c) {
        const float in[Doubling::kIn] = {static_cast<float>(t), static_cast<float>(c)};
        float out[Doubling::kOut] = {-1.0f, -1.0f, -1.0f};
        const Activation last = (t + c) % 2 == 0 ? Activation::Linear : Activation::Softmax;
        batcher.run(in, Doubling::kIn, out, Doubling::kOut, last, compute);
        const float shift = last == Activation::Linear ? 0.0f : in[1];
        for (std::size_t j = 0; j < Doubling::kOut; ++j) {
          if (out[j] != in[0] * static_cast<float>(j + 1) + shift) wrong.fetch_add(1);
        }
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(wrong.load(), 0u);
  EXPECT_GT(widest.load(), 1u) << "one leader and eight callers: rows must have been computed together";
  EXPECT_LE(widest.load(), ForwardBatcher::kMaxRows);
  EXPECT_GT(batcher.rows_batched(), 0u);
}

TEST(ForwardBatcher, AFailedBatchThrowsToItsCallersAndTheLineGoesOn) {
  ForwardBatcher batcher(1);
  std::atomic<bool> fail{true};
  std::atomic<std::size_t> failed{0};
  std::atomic<std::size_t> wrong{0};
  std::atomic<int> ready{0};
  constexpr int kThreads = 6;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      Doubling compute;
      compute.pause = std::chrono::microseconds(200);
      compute.fail = &fail;
      const float in[Doubling::kIn] = {static_cast<float>(t), 1.0f};
      float out[Doubling::kOut] = {-1.0f, -1.0f, -1.0f};
      try {
        batcher.run(in, Doubling::kIn, out, Doubling::kOut, Activation::Softmax, compute);
      } catch (const std::runtime_error& e) {
        if (std::string(e.what()) == "batch failed on purpose") failed.fetch_add(1);
      }
      ready.fetch_add(1);
      while (fail.load()) std::this_thread::yield();  // until every first call has failed
      // Every call after the failure must succeed: no leader count or line
      // entry left behind by the failed batches.
      for (int c = 0; c < 20; ++c) {
        float again[Doubling::kOut] = {-1.0f, -1.0f, -1.0f};
        batcher.run(in, Doubling::kIn, again, Doubling::kOut, Activation::Softmax, compute);
        if (again[2] != in[0] * 3.0f + in[1]) wrong.fetch_add(1);
      }
    });
    if (t == 0) {
      // The first caller leads; the others queue behind its failing batch.
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }
  while (ready.load() < kThreads) std::this_thread::yield();
  fail.store(false);
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(failed.load(), static_cast<std::size_t>(kThreads)) << "every first call ran while batches failed";
  EXPECT_EQ(wrong.load(), 0u);
}

TEST(ForwardBatcher, TakesCallsOnlyWhileCallsFillTheCpusAndNotAfterAFork) {
  if (!kortexdl::detail::rows_compute_as_alone()) {
    GTEST_SKIP() << "rows do not run on the row kernels here: nothing is batched";
  }
  ForwardBatcher batcher(1);
  ASSERT_EQ(kortexdl::calls_in_flight(), 0u);
  EXPECT_FALSE(batcher.takes(1.0e9)) << "no other call in flight: the call computes alone";
  std::vector<std::unique_ptr<kortexdl::detail::ComputeScope>> others;
  for (std::size_t i = 0; i < kortexdl::detail::allowed_cpu_count(); ++i) {
    others.push_back(std::make_unique<kortexdl::detail::ComputeScope>(1.0));
  }
  EXPECT_TRUE(batcher.takes(1.0e9)) << "calls fill the CPUs";
  EXPECT_FALSE(batcher.takes(ForwardBatcher::kMinWork / 2)) << "too little work to be worth a line";
  batcher.stop_after_fork();
  EXPECT_FALSE(batcher.takes(1.0e9)) << "a forked child computes alone";
}

// Threads sharing one network, some calling forward and some evaluate:
// outputs and losses bit for bit those of one thread, and rows batched once
// the threads outnumber the CPUs (forward rows and evaluation rows, which
// stop at the logits, in the same batches).
TEST(ForwardBatcher, ThreadsSharingANetworkGetTheResultsOfOneThread) {
  if (!kortexdl::detail::rows_compute_as_alone()) {
    GTEST_SKIP() << "rows do not run on the row kernels here: nothing is batched";
  }
  // Large enough to be worth a line (ForwardBatcher::kMinWork).
  kortexdl::NetworkConfig config;
  config.output_activation = Activation::Softmax;
  const kortexdl::Network net({1000, 512, 256, 128, 10}, config);
  ASSERT_GE(net.state().arch.forward_work(1), ForwardBatcher::kMinWork);
  constexpr std::size_t kIn = 1000;
  constexpr std::size_t kRows = 32;
  const std::vector<float> inputs = kortex_test::normal_floats(kRows * kIn, 5);
  auto row = [&](std::size_t r) { return std::span<const float>(inputs.data() + r * kIn, kIn); };
  auto label = [](std::size_t r) { return std::vector<std::int32_t>{static_cast<std::int32_t>(r % 10)}; };
  // One core per call: a lone caller with the default budget computes on a
  // team, where oneDNN adds in another order than one core (up to 2e-6 on
  // this network), batched or not.
  const kortex_test::ThreadBudget one_core_per_call(1);
  std::vector<std::vector<float>> expected;
  std::vector<kortexdl::Evaluation> expected_evaluations;
  for (std::size_t r = 0; r < kRows; ++r) {
    expected.push_back(net.forward_thread_safe(row(r), 1));
    expected_evaluations.push_back(net.evaluate_thread_safe(row(r), label(r), kortexdl::LossType::CrossEntropy));
  }
  const std::size_t cpus = kortexdl::detail::allowed_cpu_count();
  const std::size_t thread_count = std::min<std::size_t>(64, std::max<std::size_t>(8, 3 * cpus));
  std::atomic<std::size_t> lined_up{0};
  std::atomic<std::size_t> evaluations_lined_up{0};
  std::atomic<std::size_t> wrong{0};
  // Until both kinds of call have been batched; on a loaded machine (the
  // ASan lane beside the TSan one) that may take far longer than usual.
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  auto seen_enough = [&] { return net.state().batcher.rows_batched() >= 500 && evaluations_lined_up.load() > 0; };
  std::vector<std::thread> threads;
  for (std::size_t t = 0; t < thread_count; ++t) {
    threads.emplace_back([&, t] {
      const bool evaluates = t % 2 == 1;
      for (std::size_t c = 0; !seen_enough() && std::chrono::steady_clock::now() < until; ++c) {
        const std::size_t r = (t + c) % kRows;
        if (evaluates) {
          const kortexdl::Evaluation e = net.evaluate_thread_safe(row(r), label(r), kortexdl::LossType::CrossEntropy);
          if (kortexdl::last_call_joined_a_batch()) evaluations_lined_up.fetch_add(1);
          const kortexdl::Evaluation& want = expected_evaluations[r];
          if (std::memcmp(&e.loss, &want.loss, sizeof e.loss) != 0 || e.accuracy != want.accuracy || e.samples != 1) {
            wrong.fetch_add(1);
          }
          continue;
        }
        const std::vector<float> out = net.forward_thread_safe(row(r), 1);
        if (kortexdl::last_call_joined_a_batch()) lined_up.fetch_add(1);
        if (!kortex_test::BitwiseEqual(out, expected[r])) wrong.fetch_add(1);
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(wrong.load(), 0u);
  EXPECT_GT(net.state().batcher.rows_batched(), 0u)
      << thread_count << " threads on " << cpus << " CPUs never had rows computed together";
  EXPECT_GT(evaluations_lined_up.load(), 0u) << "no evaluation went through the line";
  EXPECT_GE(lined_up.load() + evaluations_lined_up.load(), net.state().batcher.rows_batched())
      << "every batched row's caller went through the line";
  // A call that computes alone says so.
  ASSERT_EQ(kortexdl::calls_in_flight(), 0u);
  (void)net.forward_thread_safe(row(0), 1);
  EXPECT_FALSE(kortexdl::last_call_joined_a_batch());
  (void)net.evaluate_thread_safe(row(0), label(0), kortexdl::LossType::CrossEntropy);
  EXPECT_FALSE(kortexdl::last_call_joined_a_batch());
}

}  // namespace
