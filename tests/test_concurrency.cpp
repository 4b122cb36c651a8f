// The concurrency contract (DESIGN.md section 3, network.hpp):
//  (a) readers and trainers share a network safely with thread safety on;
//  (b) readers only ever see whole updates;
//  (c) without thread safety an overlapping write is refused with
//      ConcurrencyError, never silent corruption;
//  (d) the *_thread_safe variants lock whatever the flag says;
//  (e) a writer is not starved by a stream of readers.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <future>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "kortexdl/kortexdl.hpp"
#include "network_state.hpp"  // internal: only for the negative control below
#include "test_support.hpp"

namespace {

using kortexdl::Activation;
using kortexdl::ConcurrencyError;
using kortexdl::LossType;
using kortexdl::Network;
using kortexdl::NetworkConfig;
using kortexdl::OptimizerConfig;
using kortex_test::Failures;
using kortex_test::ThreadBudget;
using kortex_test::TimedLatch;
using Bits = std::vector<std::uint32_t>;

// A regression problem: rows x inputs features, targets a smooth function.
struct Data {
  std::size_t rows;
  std::size_t inputs;
  std::size_t outputs;
  std::vector<float> x;
  std::vector<float> t;
  Data(std::size_t rows_, std::size_t inputs_, std::size_t outputs_, std::uint32_t seed)
      : rows(rows_), inputs(inputs_), outputs(outputs_), x(kortex_test::normal_floats(rows_ * inputs_, seed)) {
    t.resize(rows * outputs);
    for (std::size_t i = 0; i < rows; ++i) {
      for (std::size_t j = 0; j < outputs; ++j) {
        t[i * outputs + j] = 0.5f * std::sin(x[i * inputs + j % inputs] + x[i * inputs + (j + 1) % inputs]);
      }
    }
  }
};

NetworkConfig tanh_config(std::uint64_t seed, OptimizerConfig optimizer = OptimizerConfig::adam()) {
  NetworkConfig config;
  config.hidden_activation = Activation::Tanh;
  config.optimizer = optimizer;
  config.seed = seed;
  return config;
}

void join_all(std::vector<std::thread>& threads) {
  for (auto& t : threads) t.join();
}

// ---- (a) ------------------------------------------------------------------

// The scheduler tends to run readers and trainers in bursts (with a
// writer-preferring lock, a burst of updates locks readers out for a while),
// so a fixed number of steps does not guarantee that reads overlap the
// training. Trainers therefore run their quota and then on until readers have
// made kMinOverlappingReads calls that saw a trained state while training was
// still going (or a cap is reached, which the assertions then report).
constexpr std::size_t kMinOverlappingReads = 50;
constexpr int kMaxSteps = 3000;

class Overlap {
 public:
  explicit Overlap(int trainers) : running_(trainers) {}
  bool training() const { return running_.load() > 0; }
  // After each successful read, with the network's version().
  void note_read(std::uint64_t version) {
    ++reads_;
    if (version > 0 && training()) ++overlapping_;
  }
  bool keep_training(int step, int quota) const {
    return step < quota || (overlapping_.load() < kMinOverlappingReads && step < kMaxSteps);
  }
  void trainer_done() { --running_; }
  std::size_t reads() const { return reads_.load(); }
  std::size_t overlapping_reads() const { return overlapping_.load(); }

 private:
  std::atomic<int> running_;
  std::atomic<std::size_t> reads_{0};
  std::atomic<std::size_t> overlapping_{0};
};

TEST(Concurrency, ReadersAndTrainersShareANetworkWithThreadSafety) {
  Network net({16, 48, 48, 4}, tanh_config(1));
  net.enable_thread_safety(true);
  EXPECT_TRUE(net.thread_safety_enabled());
  const Data data(64, 16, 4, 2);
  const double initial = net.evaluate(data.x, data.t, LossType::MSE).loss;

  constexpr int kReaders = 8, kTrainers = 2, kSteps = 60;
  Failures failures;
  Overlap overlap(kTrainers);
  std::atomic<std::size_t> total_steps{0};
  TimedLatch start(kReaders + kTrainers);
  std::vector<std::thread> threads;
  for (int r = 0; r < kReaders; ++r) {
    threads.emplace_back([&, r] {
      if (!start.arrive_and_wait()) return failures.add("start latch timed out");
      std::vector<float> out(8 * 4);
      const std::span<const float> rows(data.x.data(), 8 * 16);
      while (overlap.training()) {
        try {
          if (r % 4 == 3) {
            const auto eval = net.evaluate(data.x, data.t, LossType::MSE, 16);
            if (!std::isfinite(eval.loss)) failures.add("evaluate gave a non-finite loss");
          } else {
            net.forward(rows, 8, out);
            if (!kortex_test::all_finite(out)) failures.add("forward gave non-finite outputs");
          }
          overlap.note_read(net.version());
        } catch (const std::exception& e) {
          failures.add(std::string("reader: ") + e.what());
        }
      }
    });
  }
  for (int w = 0; w < kTrainers; ++w) {
    threads.emplace_back([&, w] {
      if (!start.arrive_and_wait()) return failures.add("start latch timed out");
      for (int s = 0; overlap.keep_training(s, kSteps); ++s) {
        ++total_steps;
        try {
          // Each trainer takes its own half of the data.
          const std::span<const float> x(data.x.data() + static_cast<std::size_t>(w) * 32 * 16, 32 * 16);
          const std::span<const float> t(data.t.data() + static_cast<std::size_t>(w) * 32 * 4, 32 * 4);
          const float loss = net.train_batch(x, t, LossType::MSE, 3e-3f, 32);
          if (!std::isfinite(loss)) failures.add("train_batch returned a non-finite loss");
        } catch (const std::exception& e) {
          failures.add(std::string("trainer: ") + e.what());
        }
      }
      overlap.trainer_done();
    });
  }
  join_all(threads);

  EXPECT_EQ(failures.count(), 0u) << failures.summary();
  EXPECT_GE(overlap.overlapping_reads(), kMinOverlappingReads) << "reads did not overlap the training";
  EXPECT_EQ(net.version(), total_steps.load());
  EXPECT_EQ(net.optimizer_state().step, total_steps.load());
  EXPECT_TRUE(kortex_test::all_finite(net.parameters()));
  const double final_loss = net.evaluate(data.x, data.t, LossType::MSE).loss;
  EXPECT_LT(final_loss, 0.7 * initial) << "initial " << initial;
}

// ---- (b) ------------------------------------------------------------------
//
// Every published parameter state (initial, and each version reported to the
// update observer) is turned into a fingerprint: the bits of the forward
// output for a fixed probe row, computed on a separate network holding a copy
// of those parameters. With one thread per call, forward is deterministic, so
// a reader that sees a whole state reproduces one of the fingerprints
// exactly. A reader that overlapped an update without the lock would read
// parameters partly from version v and partly from v + 1 (apply_update walks
// the ~35k parameters element by element): a state that was never published
// and whose probe output matches no fingerprint, because every parameter
// moves on every Adam step and every parameter influences the probe output.
// (Were the rwlock simply dropped, the access guard's atomics would instead
// make these readers throw ConcurrencyError, which fails the test too.)
// TornStatesAreDetected proves a mixed state is caught; the DISABLED_
// negative control shows real unguarded writes are caught.

class Fingerprints {
 public:
  Fingerprints(const Network& like, std::vector<float> probe)
      : reference_(like.clone()), probe_(std::move(probe)) {}
  // Records the state; returns its fingerprint.
  Bits record(std::span<const float> parameters) {
    reference_.set_parameters(parameters);
    Bits fp = kortex_test::bits_of(reference_.forward(probe_, 1));
    std::lock_guard<std::mutex> lock(mutex_);
    known_.insert(fp);
    return fp;
  }
  Bits fingerprint_of(std::span<const float> parameters) {
    reference_.set_parameters(parameters);
    return kortex_test::bits_of(reference_.forward(probe_, 1));
  }
  bool known(const Bits& fp) const {
    std::lock_guard<std::mutex> lock(mutex_);
    return known_.count(fp) != 0;
  }
  std::size_t size() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return known_.size();
  }
  const std::vector<float>& probe() const { return probe_; }

 private:
  Network reference_;  // used only by the thread holding the write access
  std::vector<float> probe_;
  mutable std::mutex mutex_;
  std::set<Bits> known_;
};

enum class LockMode { FlagOn, ThreadSafeMethods };

void run_whole_update_check(LockMode mode) {
  ThreadBudget budget(1);
  Network net({32, 128, 128, 8}, tanh_config(3));
  const Data data(64, 32, 8, 4);
  if (mode == LockMode::FlagOn) net.enable_thread_safety(true);

  Fingerprints fingerprints(net, kortex_test::normal_floats(32, 5));
  fingerprints.record(net.parameters());
  std::vector<std::uint64_t> versions;  // written under the write lock only
  net.set_update_observer([&](std::span<const float> params, std::uint64_t version) {
    fingerprints.record(params);
    versions.push_back(version);
  });

  constexpr int kTrainers = 2, kReaders = 6, kSteps = 40;
  Failures failures;
  Overlap overlap(kTrainers);
  std::vector<std::vector<Bits>> seen(kReaders);
  TimedLatch start(kTrainers + kReaders);
  std::vector<std::thread> threads;
  for (int r = 0; r < kReaders; ++r) {
    threads.emplace_back([&, r] {
      if (!start.arrive_and_wait()) return failures.add("start latch timed out");
      auto& mine = seen[static_cast<std::size_t>(r)];
      std::vector<float> out(8);
      while (overlap.training()) {
        try {
          if (mode == LockMode::FlagOn) {
            net.forward(fingerprints.probe(), 1, out);
          } else {
            net.forward_thread_safe(fingerprints.probe(), 1, out);
          }
          Bits fp = kortex_test::bits_of(out);
          if (mine.empty() || mine.back() != fp) mine.push_back(std::move(fp));
          overlap.note_read(net.version());
        } catch (const std::exception& e) {
          failures.add(std::string("reader: ") + e.what());
        }
      }
    });
  }
  for (int w = 0; w < kTrainers; ++w) {
    threads.emplace_back([&, w] {
      if (!start.arrive_and_wait()) return failures.add("start latch timed out");
      const std::span<const float> x(data.x.data() + static_cast<std::size_t>(w) * 32 * 32, 32 * 32);
      const std::span<const float> t(data.t.data() + static_cast<std::size_t>(w) * 32 * 8, 32 * 8);
      for (int s = 0; overlap.keep_training(s, kSteps); ++s) {
        try {
          if (mode == LockMode::FlagOn) {
            net.train_batch(x, t, LossType::MSE, 1e-3f, 32);
          } else {
            net.train_batch_thread_safe(x, t, LossType::MSE, 1e-3f, 32);
          }
        } catch (const std::exception& e) {
          failures.add(std::string("trainer: ") + e.what());
        }
      }
      overlap.trainer_done();
    });
  }
  join_all(threads);
  net.set_update_observer(nullptr);

  ASSERT_EQ(failures.count(), 0u) << failures.summary();
  EXPECT_GE(overlap.overlapping_reads(), kMinOverlappingReads) << "reads did not overlap the training";
  // One observer call per write, versions 1..N in order.
  ASSERT_GE(versions.size(), std::size_t{kTrainers * kSteps});
  for (std::size_t i = 0; i < versions.size(); ++i) ASSERT_EQ(versions[i], i + 1);
  EXPECT_EQ(net.version(), versions.size());
  EXPECT_EQ(fingerprints.size(), versions.size() + 1) << "two states share a fingerprint: the probe is too weak";

  std::size_t checked = 0, torn = 0;
  std::set<Bits> distinct;
  for (const auto& reader : seen) {
    for (const auto& fp : reader) {
      ++checked;
      distinct.insert(fp);
      if (!fingerprints.known(fp)) ++torn;
    }
  }
  EXPECT_EQ(torn, 0u) << torn << " of " << checked << " reads saw a state that was never published";
  // The readers saw trained states, not just the initial one.
  EXPECT_GE(distinct.size(), 2u);
}

TEST(Concurrency, ReadersSeeOnlyWholeUpdatesWithThreadSafetyFlag) { run_whole_update_check(LockMode::FlagOn); }

TEST(Concurrency, ReadersSeeOnlyWholeUpdatesWithThreadSafeMethods) {
  run_whole_update_check(LockMode::ThreadSafeMethods);
}

TEST(Concurrency, TornStatesAreDetected) {
  // The fingerprint check of the two tests above can fail: a state mixing
  // two consecutive versions (as an unlocked reader could see) matches
  // neither of them.
  ThreadBudget budget(1);
  Network net({32, 128, 128, 8}, tanh_config(3));
  const Data data(32, 32, 8, 4);
  Fingerprints fingerprints(net, kortex_test::normal_floats(32, 5));
  const std::vector<float> v0 = net.parameters();
  fingerprints.record(v0);
  net.train_batch(data.x, data.t, LossType::MSE, 1e-3f, 32);
  const std::vector<float> v1 = net.parameters();
  fingerprints.record(v1);
  for (const double fraction : {0.01, 0.25, 0.5, 0.99}) {
    std::vector<float> mixed = v0;
    const auto cut = static_cast<std::size_t>(fraction * static_cast<double>(v0.size()));
    std::copy(v1.begin(), v1.begin() + static_cast<std::ptrdiff_t>(cut), mixed.begin());
    EXPECT_FALSE(fingerprints.known(fingerprints.fingerprint_of(mixed))) << "cut at " << fraction;
  }
}

TEST(Concurrency, DISABLED_NegativeControl_UnguardedWritesAreDetected) {
  // Negative control, disabled by default because it races on purpose (it
  // is undefined behaviour and ThreadSanitizer would flag it): a writer
  // bypasses the access guard and overwrites the parameters element by
  // element while readers call forward. The fingerprint check must report
  // torn reads, i.e. the whole-update tests above would fail without the lock.
  // Run with --gtest_also_run_disabled_tests --gtest_filter='*NegativeControl*'.
  ThreadBudget budget(1);
  Network net({32, 128, 128, 8}, tanh_config(3));
  Fingerprints fingerprints(net, kortex_test::normal_floats(32, 5));
  std::vector<float> current = net.parameters();
  fingerprints.record(current);
  std::atomic<bool> stop{false};
  std::vector<std::vector<Bits>> seen(6);
  TimedLatch start(7);
  std::vector<std::thread> threads;
  for (std::size_t r = 0; r < seen.size(); ++r) {
    threads.emplace_back([&, r] {
      start.arrive_and_wait();
      std::vector<float> out(8);
      while (!stop.load()) {
        net.forward(fingerprints.probe(), 1, out);
        seen[r].push_back(kortex_test::bits_of(out));
      }
    });
  }
  threads.emplace_back([&] {
    start.arrive_and_wait();
    float* params = net.state().params.data();
    for (int step = 0; step < 300; ++step) {
      for (auto& p : current) p += (step % 2 == 0) ? 1e-3f : -0.9e-3f;
      fingerprints.record(current);  // published before it is written
      volatile float* out = params;
      for (std::size_t i = 0; i < current.size(); ++i) out[i] = current[i];
    }
    stop = true;
  });
  join_all(threads);
  std::size_t torn = 0, total = 0;
  for (const auto& reader : seen) {
    for (const auto& fp : reader) {
      ++total;
      if (!fingerprints.known(fp)) ++torn;
    }
  }
  EXPECT_GT(torn, 0u) << "no torn read among " << total << ": the check would not notice a missing lock";
  std::printf("negative control: %zu of %zu reads were torn\n", torn, total);
}

// ---- (c) ------------------------------------------------------------------

bool names_the_fix(const ConcurrencyError& e) {
  return std::string(e.what()).find("enable_thread_safety") != std::string::npos;
}

TEST(Concurrency, UnsafeConcurrentTrainingIsRefusedNotCorrupting) {
  Network net({64, 256, 256, 10}, tanh_config(6, OptimizerConfig::with_momentum()));
  ASSERT_FALSE(net.thread_safety_enabled());
  const Data data(256, 64, 10, 7);
  constexpr int kThreads = 4;
  std::atomic<std::size_t> successes{0}, refusals{0};
  Failures failures;
  int rounds = 0;
  // Repeat barrier-started rounds until an overlap has been seen (the first
  // round nearly always has one: each call takes milliseconds; on a loaded
  // machine a thread may finish its call within one time slice).
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (refusals.load() == 0 && (rounds < 20 || std::chrono::steady_clock::now() < give_up)) {
    ++rounds;
    TimedLatch start(kThreads);
    std::vector<std::thread> threads;
    for (int i = 0; i < kThreads; ++i) {
      threads.emplace_back([&] {
        if (!start.arrive_and_wait()) return failures.add("start latch timed out");
        try {
          const float loss = net.train_batch(data.x, data.t, LossType::MSE, 1e-3f, data.rows);
          if (!std::isfinite(loss)) failures.add("non-finite loss");
          ++successes;
        } catch (const ConcurrencyError& e) {
          if (!names_the_fix(e)) failures.add(std::string("message lacks enable_thread_safety: ") + e.what());
          if (std::string(e.what()).find("train_batch") == std::string::npos) {
            failures.add(std::string("message does not name the call: ") + e.what());
          }
          ++refusals;
        } catch (const std::exception& e) {
          failures.add(std::string("unexpected exception: ") + e.what());
        }
      });
    }
    join_all(threads);
  }
  EXPECT_EQ(failures.count(), 0u) << failures.summary();
  EXPECT_GE(refusals.load(), 1u) << "no overlapping call was refused in " << rounds << " rounds";
  EXPECT_GE(successes.load(), static_cast<std::size_t>(rounds)) << "a round where every call was refused";
  EXPECT_EQ(successes.load() + refusals.load(), static_cast<std::size_t>(rounds * kThreads));
  // Refused calls changed nothing: one write per successful call.
  EXPECT_EQ(net.version(), successes.load());
  EXPECT_EQ(net.optimizer_state().step, successes.load());
  EXPECT_TRUE(kortex_test::all_finite(net.parameters()));
  EXPECT_TRUE(kortex_test::all_finite(net.optimizer_state().buffers[0]));
  // Still usable.
  const std::uint64_t version = net.version();
  EXPECT_TRUE(std::isfinite(net.train_batch(data.x, data.t, LossType::MSE, 1e-3f, data.rows)));
  EXPECT_EQ(net.version(), version + 1);
  EXPECT_TRUE(kortex_test::all_finite(net.forward(data.x, data.rows)));
}

TEST(Concurrency, ForwardDuringUnsafeTrainingSucceedsOrIsRefused) {
  // Without thread safety a forward overlapping a train_batch is either
  // refused (ConcurrencyError) or, if it runs, sees a whole published state.
  ThreadBudget budget(1);
  Network net({32, 128, 128, 8}, tanh_config(8));
  const Data data(64, 32, 8, 9);
  Fingerprints fingerprints(net, kortex_test::normal_floats(32, 10));
  fingerprints.record(net.parameters());
  net.set_update_observer([&](std::span<const float> params, std::uint64_t) { fingerprints.record(params); });

  // Readers and the trainer each also work on a private network between
  // their calls on the shared one, so that both outcomes occur: calls that
  // overlap (refused) and calls that find the network free (succeed).
  constexpr int kReaders = 3;
  Failures failures;
  std::atomic<bool> stop{false};
  std::atomic<std::size_t> trained{0}, train_refused{0}, read_refused{0}, reads{0};
  std::vector<std::vector<Bits>> seen(kReaders);
  std::vector<Network> private_nets;
  for (int r = 0; r < kReaders + 1; ++r) private_nets.push_back(net.clone());
  TimedLatch start(kReaders + 1);
  std::vector<std::thread> threads;
  for (int r = 0; r < kReaders; ++r) {
    threads.emplace_back([&, r] {
      if (!start.arrive_and_wait()) return failures.add("start latch timed out");
      std::vector<float> out(8);
      std::vector<float> side_out(16 * 8);
      const std::span<const float> side_in(data.x.data(), 16 * 32);
      while (!stop.load()) {
        private_nets[static_cast<std::size_t>(r)].forward(side_in, 16, side_out);
        try {
          net.forward(fingerprints.probe(), 1, out);
          seen[static_cast<std::size_t>(r)].push_back(kortex_test::bits_of(out));
          ++reads;
        } catch (const ConcurrencyError& e) {
          if (!names_the_fix(e)) failures.add(std::string("message lacks enable_thread_safety: ") + e.what());
          ++read_refused;
        } catch (const std::exception& e) {
          failures.add(std::string("reader: unexpected exception: ") + e.what());
        }
      }
    });
  }
  threads.emplace_back([&] {
    if (!start.arrive_and_wait()) return failures.add("start latch timed out");
    // It goes on until every outcome has been seen a few times.
    Network& side = private_nets.back();
    std::vector<float> side_out(data.rows * 8);
    auto enough = [&] { return trained.load() >= 10 && reads.load() >= 20 && read_refused.load() >= 20; };
    for (int s = 0; s < 40 || (!enough() && s < kMaxSteps); ++s) {
      side.forward(data.x, data.rows, side_out);
      try {
        net.train_batch(data.x, data.t, LossType::MSE, 1e-3f, data.rows);
        ++trained;
      } catch (const ConcurrencyError& e) {
        if (!names_the_fix(e)) failures.add(std::string("message lacks enable_thread_safety: ") + e.what());
        ++train_refused;
      } catch (const std::exception& e) {
        failures.add(std::string("trainer: unexpected exception: ") + e.what());
      }
    }
    stop = true;
  });
  join_all(threads);
  net.set_update_observer(nullptr);

  EXPECT_EQ(failures.count(), 0u) << failures.summary();
  EXPECT_EQ(net.version(), trained.load());
  std::size_t torn = 0;
  for (const auto& reader : seen) {
    for (const auto& fp : reader) torn += fingerprints.known(fp) ? 0 : 1;
  }
  EXPECT_EQ(torn, 0u) << "a successful unsafe forward saw a half-written state";
  EXPECT_TRUE(kortex_test::all_finite(net.parameters()));
  EXPECT_GE(trained.load(), 10u) << "training was (almost) always refused";
  EXPECT_GE(reads.load(), 20u) << "no forward ran between training steps";
  EXPECT_GE(read_refused.load(), 20u) << "no forward overlapped a training step";
  std::printf("trained %zu, train refused %zu, reads %zu, reads refused %zu\n", trained.load(),
              train_refused.load(), reads.load(), read_refused.load());
}

// ---- (d) ------------------------------------------------------------------

TEST(Concurrency, ThreadSafeVariantsLockWithTheFlagOff) {
  Network net({16, 48, 48, 4}, tanh_config(12));
  ASSERT_FALSE(net.thread_safety_enabled());
  const Data data(64, 16, 4, 13);
  const double initial = net.evaluate_thread_safe(data.x, data.t, LossType::MSE).loss;

  constexpr int kTrainers = 2, kSteps = 50;
  Failures failures;
  Overlap overlap(kTrainers);
  std::atomic<std::size_t> steps{0};
  TimedLatch start(kTrainers + 3);
  std::vector<std::thread> threads;
  for (int w = 0; w < kTrainers; ++w) {
    threads.emplace_back([&] {
      if (!start.arrive_and_wait()) return failures.add("start latch timed out");
      for (int s = 0; overlap.keep_training(s, kSteps); ++s) {
        ++steps;
        try {
          net.train_batch_thread_safe(data.x, data.t, LossType::MSE, 3e-3f, data.rows);
        } catch (const std::exception& e) {
          failures.add(std::string("train_batch_thread_safe: ") + e.what());
        }
      }
      overlap.trainer_done();
    });
  }
  auto reader = [&](int kind) {
    if (!start.arrive_and_wait()) return failures.add("start latch timed out");
    std::vector<float> out(data.rows * 4);
    while (overlap.training()) {
      try {
        switch (kind) {
          case 0:
            net.forward_thread_safe(data.x, data.rows, out);
            break;
          case 1:
            net.forward_batch_thread_safe(data.x, 10, out);
            break;
          default:
            if (!std::isfinite(net.evaluate_thread_safe(data.x, data.t, LossType::MSE, 7).loss)) {
              failures.add("non-finite evaluation");
            }
            break;
        }
        overlap.note_read(net.version());
      } catch (const std::exception& e) {
        failures.add("reader " + std::to_string(kind) + ": " + e.what());
      }
    }
  };
  for (int k = 0; k < 3; ++k) threads.emplace_back(reader, k);
  join_all(threads);

  EXPECT_EQ(failures.count(), 0u) << failures.summary();
  EXPECT_FALSE(net.thread_safety_enabled()) << "the *_thread_safe methods must not flip the flag";
  EXPECT_EQ(net.version(), steps.load());
  EXPECT_GE(overlap.overlapping_reads(), kMinOverlappingReads) << "reads did not overlap the training";
  EXPECT_TRUE(kortex_test::all_finite(net.parameters()));
  EXPECT_LT(net.evaluate(data.x, data.t, LossType::MSE).loss, 0.7 * initial);
}

// ---- (e) ------------------------------------------------------------------

TEST(Concurrency, WriterIsNotStarvedByReaders) {
  // Eight readers call forward back to back, so that at almost every moment
  // some reader holds the shared lock. A reader-preferring lock would let
  // them starve the writer indefinitely; the writer-preferring one must let
  // 100 training steps through. Starvation is judged against the readers'
  // progress, not the clock: on a loaded machine (the sanitizer lanes beside
  // compilers) everything slows down alike, and in CI 30 s once saw only
  // 1876 reads and fewer than 100 steps. A step lets some 40-160 reads
  // through (release build, idle machine); a starved writer makes no
  // progress at all while the readers go on, so the test fails once the
  // readers make 50000 reads without a step. On failure the readers are
  // stopped so the test ends instead of hanging.
  Network net({32, 128, 128, 10}, tanh_config(14));
  net.enable_thread_safety(true);
  const Data data(32, 32, 10, 15);
  constexpr int kReaders = 8, kSteps = 100;
  std::atomic<bool> stop{false};
  std::atomic<std::size_t> reads{0};
  Failures failures;
  TimedLatch readers_running(kReaders);
  std::vector<std::thread> readers;
  for (int r = 0; r < kReaders; ++r) {
    readers.emplace_back([&] {
      std::vector<float> out(data.rows * 10);
      bool first = true;
      while (!stop.load()) {
        try {
          net.forward(data.x, data.rows, out);
          ++reads;
        } catch (const std::exception& e) {
          failures.add(e.what());
        }
        if (first) {
          readers_running.count_down();
          first = false;
        }
      }
      if (first) readers_running.count_down();
    });
  }
  ASSERT_TRUE(readers_running.wait()) << "readers did not start";
  const std::size_t reads_before = reads.load();
  const auto started = std::chrono::steady_clock::now();
  auto writer = std::async(std::launch::async, [&] {
    for (int s = 0; s < kSteps; ++s) net.train_batch_thread_safe(data.x, data.t, LossType::MSE, 1e-3f, data.rows);
  });
  constexpr std::size_t kReadsWithoutAStep = 50'000;
  std::uint64_t steps_seen = net.version();
  std::size_t reads_at_last_step = reads_before;
  bool finished = false;
  while (!(finished = writer.wait_for(std::chrono::milliseconds(10)) == std::future_status::ready) &&
         std::chrono::steady_clock::now() - started < std::chrono::seconds(240)) {
    const std::size_t reads_now = reads.load();
    if (net.version() != steps_seen) {
      steps_seen = net.version();
      reads_at_last_step = reads_now;
    } else if (reads_now - reads_at_last_step > kReadsWithoutAStep) {
      break;
    }
  }
  const auto elapsed = std::chrono::steady_clock::now() - started;
  const std::size_t reads_during = reads.load() - reads_before;
  stop = true;
  join_all(readers);
  writer.get();  // rethrows a writer exception, if any

  EXPECT_TRUE(finished) << "writer starvation: " << kReadsWithoutAStep << " reads of 8 readers without a step (after "
                        << steps_seen << " steps), or 100 steps took over 240 s";
  EXPECT_EQ(net.version(), std::uint64_t{kSteps});
  EXPECT_EQ(failures.count(), 0u) << failures.summary();
  EXPECT_GT(reads_during, std::size_t{kReaders}) << "the readers were not running during the writes";
  std::printf("100 writes alongside 8 readers took %.0f ms (%zu reads meanwhile)\n",
              std::chrono::duration<double, std::milli>(elapsed).count(), reads_during);
}

TEST(Concurrency, FlagAndCloneBasics) {
  Network net({4, 3, 2}, tanh_config(16));
  EXPECT_FALSE(net.thread_safety_enabled());
  net.enable_thread_safety();
  EXPECT_TRUE(net.thread_safety_enabled());
  const Network copy = net.clone();
  EXPECT_FALSE(copy.thread_safety_enabled()) << "clone() starts with thread safety disabled";
  net.enable_thread_safety(false);
  EXPECT_FALSE(net.thread_safety_enabled());
}

}  // namespace
