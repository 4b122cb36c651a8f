// Concurrency torture test (docs/RELIABILITY.md, "Torture test").
//
// 16 threads share ONE network and mix every compute call (forward,
// forward_batch, evaluate, train_batch, compute_gradients/apply_gradients and
// the *_thread_safe variants) for a fixed number of iterations each, while a
// 17th thread snapshots the model every way there is (save + load, to_bytes +
// from_bytes, clone, parameters). The whole thing runs for several rounds.
// Checks:
//   * no crash, no sanitizer report (this file also runs under ASan+UBSan and
//     ThreadSanitizer, see scripts/sanitizers.sh);
//   * no exception but the documented ones: none at all with thread safety
//     on; only ConcurrencyError with it off (plain writes overlapping other
//     calls are refused; the *_thread_safe calls still lock);
//   * no torn reads: every forward/evaluate result, and every snapshot, equals
//     the result of one whole published parameter version. Every version is
//     recorded through Network::set_update_observer (which runs under the
//     write lock) as a fingerprint: the bits of the output for a fixed probe
//     row, computed single-threaded (set_num_threads(1)), hence
//     deterministically, on a reference copy holding those parameters;
//   * one observer call per successful write, versions 1..N in order;
//   * the final parameters and optimizer state are finite;
//   * progress: every round publishes a write (without thread safety a round
//     runs on past its calls until one lands, see kFirstWriteGrace);
//   * memory is stable: RSS after the last round is within a small margin of
//     RSS after the first (not checked under sanitizers, whose allocators
//     quarantine freed memory on purpose; LeakSanitizer covers leaks there).
//
// Sizes: KORTEX_TORTURE_ITERATIONS (calls per thread per round, default 150)
// and KORTEX_TORTURE_ROUNDS (default 3). The CI run takes about a second
// (several under TSan); for a long run:
//   KORTEX_TORTURE_ITERATIONS=20000 KORTEX_TORTURE_ROUNDS=10 (environment), then
//     ./kortexdl_reliability_tests --gtest_filter='Torture.*'
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "kortexdl/kortexdl.hpp"
#include "reliability_support.hpp"
#include "test_support.hpp"

namespace {

using kortexdl::ConcurrencyError;
using kortexdl::LossType;
using kortexdl::Network;
using kortexdl::NetworkConfig;
using kortexdl::OptimizerConfig;
using Bits = std::vector<std::uint32_t>;
using kortex_reliability::env_size;
using kortex_test::Failures;
using kortex_reliability::resident_bytes;
using kortex_reliability::under_sanitizer;

constexpr std::size_t kIn = 24, kHidden = 48, kOut = 6;
constexpr int kWorkers = 16;

// Every published state's fingerprints: forward bits and evaluate loss bits
// for the probe row. record() is only called by the observer (under the write
// lock) and between rounds; lookups come from every thread. Each round starts
// from the state the previous one ended with (restart()), so the bookkeeping
// does not grow from round to round and the RSS check measures the library.
class Versions {
 public:
  Versions(const Network& like, std::vector<float> probe, std::vector<float> probe_target)
      : reference_(like.clone()), probe_(std::move(probe)), probe_target_(std::move(probe_target)) {}

  void record(std::span<const float> parameters, std::uint64_t version) {
    reference_.set_parameters(parameters);
    Bits fp = kortex_test::bits_of(reference_.forward(probe_, 1));
    const double loss = reference_.evaluate(probe_, probe_target_, LossType::MSE).loss;
    std::lock_guard<std::mutex> lock(mutex_);
    forward_.insert(std::move(fp));
    losses_.insert(bits(loss));
    if (version != last_version_ + 1) ++out_of_order_;
    last_version_ = version;
    ++recorded_;
  }
  // Forgets every state but the current one (no threads may be running).
  void restart(std::span<const float> parameters, std::uint64_t version) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      std::set<Bits>().swap(forward_);
      std::set<std::uint64_t>().swap(losses_);
    }
    reference_.set_parameters(parameters);
    std::lock_guard<std::mutex> lock(mutex_);
    forward_.insert(kortex_test::bits_of(reference_.forward(probe_, 1)));
    losses_.insert(bits(reference_.evaluate(probe_, probe_target_, LossType::MSE).loss));
    last_version_ = version;
  }
  bool known_forward(const std::vector<float>& out) const {
    const Bits fp = kortex_test::bits_of(out);
    std::lock_guard<std::mutex> lock(mutex_);
    return forward_.count(fp) != 0;
  }
  bool known_loss(double loss) const {
    std::lock_guard<std::mutex> lock(mutex_);
    return losses_.count(bits(loss)) != 0;
  }
  // Observer calls (versions 1..N, each once, in order, is what must happen).
  std::size_t recorded() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return recorded_;
  }
  std::size_t out_of_order() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return out_of_order_;
  }
  std::uint64_t last_version() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return last_version_;
  }
  std::size_t distinct_forward_this_round() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return forward_.size();
  }
  const std::vector<float>& probe() const { return probe_; }
  const std::vector<float>& probe_target() const { return probe_target_; }

 private:
  static std::uint64_t bits(double v) {
    std::uint64_t b = 0;
    std::memcpy(&b, &v, sizeof b);
    return b;
  }
  Network reference_;  // only touched by record() and restart(), never concurrently
  std::vector<float> probe_;
  std::vector<float> probe_target_;
  mutable std::mutex mutex_;
  std::set<Bits> forward_;
  std::set<std::uint64_t> losses_;
  std::uint64_t last_version_ = 0;
  std::size_t recorded_ = 0;
  std::size_t out_of_order_ = 0;
};

struct Data {
  std::vector<float> x;  // kRows x kIn
  std::vector<float> t;  // kRows x kOut
  static constexpr std::size_t kRows = 40;
  Data() : x(kortex_test::normal_floats(kRows * kIn, 71)) {
    t.resize(kRows * kOut);
    for (std::size_t i = 0; i < kRows; ++i) {
      for (std::size_t j = 0; j < kOut; ++j) t[i * kOut + j] = 0.5f * std::tanh(x[i * kIn + j] - x[i * kIn + j + 1]);
    }
  }
  std::span<const float> rows(std::size_t first, std::size_t n) const { return {x.data() + first * kIn, n * kIn}; }
  std::span<const float> targets(std::size_t first, std::size_t n) const {
    return {t.data() + first * kOut, n * kOut};
  }
};

struct Counters {
  std::atomic<std::size_t> calls{0}, checked_reads{0}, writes{0}, refused{0}, snapshots{0};
};

enum class Mode { ThreadSafetyOn, ThreadSafetyOff };

// How long a round may run on past its `iterations` calls waiting for its
// first write. Without thread safety most writes are refused as overlapping,
// and how many get through depends on how the scheduler interleaves 16
// threads: under ThreadSanitizer on a loaded machine a whole round once had
// none (3 writes in 7200 calls over three rounds).
constexpr auto kFirstWriteGrace = std::chrono::seconds(60);

// One worker's loop: `iterations` calls chosen by a seeded generator, reads
// three times as often as writes; then more, until the round has published a
// write (counters.writes past `writes_before_round`) or its grace runs out.
void worker(Network& net, const Versions& versions, const Data& data, Mode mode, int id, std::size_t iterations,
            std::size_t writes_before_round, Counters& counters, Failures& failures) {
  std::mt19937 rng(static_cast<std::uint32_t>(1000 + id));
  std::uniform_int_distribution<int> pick(0, 15);
  std::vector<float> out(16 * kOut);
  std::vector<float> probe_out(kOut);
  const auto give_up = std::chrono::steady_clock::now() + kFirstWriteGrace;
  const auto keep_going = [&](std::size_t i) {
    if (i < iterations) return true;
    return counters.writes.load() == writes_before_round && std::chrono::steady_clock::now() < give_up;
  };
  for (std::size_t i = 0; keep_going(i); ++i) {
    const int op = pick(rng);
    const std::size_t first = static_cast<std::size_t>(rng() % 24);
    try {
      switch (op) {
        case 0:
        case 1:
          net.forward(versions.probe(), 1, probe_out);
          if (!versions.known_forward(probe_out)) failures.add("torn read: forward");
          ++counters.checked_reads;
          break;
        case 2:
          net.forward_batch(versions.probe(), 1, probe_out);
          if (!versions.known_forward(probe_out)) failures.add("torn read: forward_batch");
          ++counters.checked_reads;
          break;
        case 3:
          net.forward_thread_safe(versions.probe(), 1, probe_out);
          if (!versions.known_forward(probe_out)) failures.add("torn read: forward_thread_safe");
          ++counters.checked_reads;
          break;
        case 4:
          net.forward_batch_thread_safe(versions.probe(), 1, probe_out);
          if (!versions.known_forward(probe_out)) failures.add("torn read: forward_batch_thread_safe");
          ++counters.checked_reads;
          break;
        case 5: {
          const double loss = net.evaluate(versions.probe(), versions.probe_target(), LossType::MSE).loss;
          if (!versions.known_loss(loss)) failures.add("torn read: evaluate");
          ++counters.checked_reads;
          break;
        }
        case 6: {
          const double loss = net.evaluate_thread_safe(versions.probe(), versions.probe_target(), LossType::MSE).loss;
          if (!versions.known_loss(loss)) failures.add("torn read: evaluate_thread_safe");
          ++counters.checked_reads;
          break;
        }
        case 7:
          net.forward(data.rows(first, 16), 16, out);
          if (!kortex_test::all_finite(out)) failures.add("forward: non-finite output");
          break;
        case 8: {
          const auto all = net.forward_batch(data.rows(0, Data::kRows), 7);
          if (all.size() != Data::kRows * kOut || !kortex_test::all_finite(all)) failures.add("forward_batch: bad output");
          break;
        }
        case 9: {
          const auto e = net.evaluate(data.rows(0, Data::kRows), data.targets(0, Data::kRows), LossType::MSE, 9);
          if (!std::isfinite(e.loss) || e.samples != Data::kRows) failures.add("evaluate: bad result");
          break;
        }
        case 10: {
          const auto g = net.compute_gradients(data.rows(first, 8), data.targets(first, 8), LossType::MSE, 8);
          if (!std::isfinite(g.loss) || !kortex_test::all_finite(g.values)) failures.add("compute_gradients: bad result");
          break;
        }
        case 11:
        case 12: {
          const float loss = net.train_batch(data.rows(first, 16), data.targets(first, 16), LossType::MSE, 1e-3f, 16);
          ++counters.writes;
          if (!std::isfinite(loss)) failures.add("train_batch: non-finite loss");
          break;
        }
        case 13:
        case 14: {
          const float loss =
              net.train_batch_thread_safe(data.rows(first, 16), data.targets(first, 16), LossType::MSE, 1e-3f, 16);
          ++counters.writes;
          if (!std::isfinite(loss)) failures.add("train_batch_thread_safe: non-finite loss");
          break;
        }
        default: {
          // compute_gradients + apply_gradients: a custom training step.
          const auto g = net.compute_gradients(data.rows(first, 8), data.targets(first, 8), LossType::MSE, 8);
          net.apply_gradients(g.values, 1e-3f);
          ++counters.writes;
          break;
        }
      }
    } catch (const ConcurrencyError& e) {
      // Documented only without thread safety, and never for the locked
      // *_thread_safe reads... except that a *_thread_safe call can meet a
      // plain (unlocked) write, which the access guard refuses too.
      if (mode == Mode::ThreadSafetyOn) failures.add(std::string("ConcurrencyError with thread safety on: ") + e.what());
      if (std::string(e.what()).find("enable_thread_safety") == std::string::npos) {
        failures.add(std::string("ConcurrencyError without the fix in its message: ") + e.what());
      }
      ++counters.refused;
    } catch (const std::exception& e) {
      failures.add("op " + std::to_string(op) + ": undocumented exception: " + e.what());
    }
    ++counters.calls;
  }
}

// Snapshots the model every way there is and checks each one is a whole
// published version.
void snapshotter(const Network& net, Network& checker, const Versions& versions, Mode mode, const std::string& path,
                 const std::atomic<int>& running, Counters& counters, Failures& failures) {
  std::size_t round = 0;
  std::vector<float> out(kOut);
  while (running.load() > 0 || round < 4) {
    try {
      switch (round++ % 4) {
        case 0: {
          net.save(path, round % 8 == 1);
          const Network loaded = Network::load(path);
          loaded.forward(versions.probe(), 1, out);
          if (!versions.known_forward(out)) failures.add("torn snapshot: save/load");
          break;
        }
        case 1: {
          const Network copy = Network::from_bytes(net.to_bytes());
          copy.forward(versions.probe(), 1, out);
          if (!versions.known_forward(out)) failures.add("torn snapshot: to_bytes/from_bytes");
          break;
        }
        case 2: {
          const Network copy = net.clone();
          copy.forward(versions.probe(), 1, out);
          if (!versions.known_forward(out)) failures.add("torn snapshot: clone");
          break;
        }
        default: {
          checker.set_parameters(net.parameters());
          checker.forward(versions.probe(), 1, out);
          if (!versions.known_forward(out)) failures.add("torn snapshot: parameters");
          break;
        }
      }
      ++counters.snapshots;
    } catch (const ConcurrencyError& e) {
      if (mode == Mode::ThreadSafetyOn) failures.add(std::string("snapshot: ConcurrencyError with thread safety on: ") + e.what());
      ++counters.refused;
      std::this_thread::yield();
    } catch (const std::exception& e) {
      failures.add(std::string("snapshot: undocumented exception: ") + e.what());
    }
  }
}

void run_torture(Mode mode) {
  kortex_test::ThreadBudget budget(1);  // single-threaded calls: deterministic forward
  const std::size_t iterations = env_size("KORTEX_TORTURE_ITERATIONS", 150);
  const std::size_t rounds = std::max<std::size_t>(2, env_size("KORTEX_TORTURE_ROUNDS", 3));

  NetworkConfig config;
  config.hidden_activation = kortexdl::Activation::Tanh;
  config.optimizer = OptimizerConfig::adam();  // every parameter moves on every step
  config.seed = 17;
  Network net({kIn, kHidden, kHidden, kOut}, config);
  if (mode == Mode::ThreadSafetyOn) net.enable_thread_safety(true);
  const Data data;
  Versions versions(net, kortex_test::normal_floats(kIn, 72), std::vector<float>(kOut, 0.25f));
  versions.restart(net.parameters(), 0);
  net.set_update_observer([&](std::span<const float> p, std::uint64_t v) { versions.record(p, v); });

  const std::string path = (std::filesystem::temp_directory_path() /
                            ("kortex_torture_" + std::to_string(::getpid()) + ".kdl"))
                               .string();
  Counters counters;
  Failures failures;
  std::vector<std::size_t> rss;
  Network checker = net.clone();  // the snapshotter's: parameters() snapshots are evaluated on it
  std::size_t rounds_without_update = 0;
  for (std::size_t round = 0; round < rounds; ++round) {
    if (round > 0) versions.restart(net.parameters(), net.version());
    const std::size_t writes_before_round = counters.writes.load();
    std::atomic<int> running{kWorkers};
    kortex_test::TimedLatch start(kWorkers + 1);
    std::vector<std::thread> threads;
    for (int id = 0; id < kWorkers; ++id) {
      threads.emplace_back([&, id] {
        if (!start.arrive_and_wait()) return failures.add("start latch timed out");
        worker(net, versions, data, mode, id + 100 * static_cast<int>(round), iterations, writes_before_round,
               counters, failures);
        --running;
      });
    }
    threads.emplace_back([&] {
      if (!start.arrive_and_wait()) return failures.add("start latch timed out");
      snapshotter(net, checker, versions, mode, path, running, counters, failures);
    });
    for (auto& t : threads) t.join();
    if (versions.distinct_forward_this_round() < 2) ++rounds_without_update;
    rss.push_back(resident_bytes());
  }
  net.set_update_observer(nullptr);
  std::filesystem::remove(path);

  EXPECT_EQ(failures.count(), 0u) << failures.summary();
  // Every successful write was published exactly once, in order.
  EXPECT_EQ(versions.recorded(), counters.writes.load());
  EXPECT_EQ(versions.out_of_order(), 0u) << "observer versions out of order";
  EXPECT_EQ(versions.last_version(), counters.writes.load());
  EXPECT_EQ(net.version(), counters.writes.load());
  EXPECT_EQ(net.optimizer_state().step, counters.writes.load());
  EXPECT_TRUE(kortex_test::all_finite(net.parameters()));
  for (const auto& buffer : net.optimizer_state().buffers) EXPECT_TRUE(kortex_test::all_finite(buffer));
  EXPECT_GT(counters.checked_reads.load(), iterations) << "too few checked reads";
  EXPECT_GE(counters.snapshots.load(), 4u);
  if (mode == Mode::ThreadSafetyOn) {
    EXPECT_EQ(counters.refused.load(), 0u);
    EXPECT_GT(counters.writes.load(), iterations) << "training made too little progress";
  } else {
    EXPECT_GT(counters.writes.load(), 0u) << "every write was refused";
  }
  EXPECT_EQ(rounds_without_update, 0u) << "rounds that published no update (of " << rounds << ")";
  EXPECT_EQ(kortexdl::calls_in_flight(), 0u);

  std::printf("torture (%s): %d threads + 1 snapshotter x %zu rounds x %zu calls: %zu calls, %zu writes, "
              "%zu checked reads, %zu snapshots, %zu refused (ConcurrencyError)\n",
              mode == Mode::ThreadSafetyOn ? "thread safety on" : "thread safety off", kWorkers, rounds, iterations,
              counters.calls.load(), counters.writes.load(), counters.checked_reads.load(),
              counters.snapshots.load(), counters.refused.load());
  std::printf("RSS after each round (MiB):");
  for (const std::size_t r : rss) std::printf(" %.1f", static_cast<double>(r) / (1 << 20));
  std::printf("\n");
  if (!under_sanitizer()) {
    // Round 1 grows the thread arenas and the model files' buffers; later
    // rounds must reuse them. A leak of one snapshot (a network) per save
    // would add megabytes per round.
    constexpr std::size_t kSlack = std::size_t{4} << 20;
    EXPECT_LE(rss.back(), rss.front() + kSlack) << "RSS grew across rounds";
  }
}

TEST(Torture, SixteenThreadsShareOneNetworkWithThreadSafety) { run_torture(Mode::ThreadSafetyOn); }

TEST(Torture, SixteenThreadsShareOneNetworkWithoutThreadSafety) { run_torture(Mode::ThreadSafetyOff); }

// Calls that run OpenMP teams inside concurrent calls: a budget of 4 threads
// shared by 2 callers gives each call a team of 2, and the layers are wide
// enough for the element-wise kernels to open parallel regions. Mainly for
// ThreadSanitizer (libomp + Archer): the team code under concurrency.
TEST(Torture, OpenMpTeamsInsideConcurrentCalls) {
  kortex_test::ThreadBudget budget(4);
  NetworkConfig config;
  config.hidden_activation = kortexdl::Activation::GELU;
  config.optimizer = OptimizerConfig::with_momentum();
  config.seed = 23;
  Network net({64, 256, 256, 8}, config);
  net.enable_thread_safety(true);
  constexpr std::size_t kRows = 128;  // 128 x 256 elements: above the kernels' parallel threshold
  const std::vector<float> x = kortex_test::normal_floats(kRows * 64, 73);
  std::vector<float> t(kRows * 8, 0.1f);
  const std::size_t steps = std::max<std::size_t>(2, env_size("KORTEX_TORTURE_ITERATIONS", 150) / 30);
  Failures failures;
  std::atomic<std::size_t> writes{0};
  std::vector<std::thread> threads;
  for (int id = 0; id < 2; ++id) {
    threads.emplace_back([&, id] {
      std::vector<float> out(kRows * 8);
      for (std::size_t s = 0; s < steps; ++s) {
        try {
          if ((s + static_cast<std::size_t>(id)) % 2 == 0) {
            net.forward(x, kRows, out);
            if (!kortex_test::all_finite(out)) failures.add("non-finite forward");
          } else {
            net.train_batch(x, t, LossType::MSE, 1e-3f, kRows);
            ++writes;
          }
        } catch (const std::exception& e) {
          failures.add(e.what());
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.count(), 0u) << failures.summary();
  EXPECT_EQ(net.version(), writes.load());
  EXPECT_TRUE(kortex_test::all_finite(net.parameters()));
}

}  // namespace

#ifdef KORTEX_INSTRUMENTED_GEMM
// The ThreadSanitizer build interposes an instrumented cblas_sgemm
// (instrumented_gemm.cpp); check the interposition really took effect.
extern "C" unsigned long kortex_instrumented_gemm_calls();
namespace {
TEST(Torture, ThreadSanitizerBuildUsesTheInstrumentedGemm) {
  const unsigned long before = kortex_instrumented_gemm_calls();
  kortexdl::NetworkConfig config;
  config.seed = 1;
  const kortexdl::Network net({3, 4, 2}, config);
  (void)net.forward(std::vector<float>(3, 0.5f), 1);
  EXPECT_EQ(kortex_instrumented_gemm_calls(), before + 2) << "libkortexdl's GEMMs did not reach the instrumented one";
}
}  // namespace
#endif

#ifdef KORTEX_TSAN_BUILD
// Without Archer (LLVM libomp's ThreadSanitizer tool) TSan does not see the
// synchronisation at OpenMP fork/join and reports false races inside every
// parallel region; with it, reports in OpenMP code are real. libomp loads it
// with dlopen at start-up, which can silently fail (run path), so check.
#include <link.h>
namespace {
TEST(Torture, ArcherIsLoadedUnderThreadSanitizer) {
  kortexdl::NetworkConfig config;
  config.seed = 1;
  (void)kortexdl::Network({2, 2}, config).forward(std::vector<float>(2, 1.0f), 1);  // initialises libomp
  bool found = false;
  dl_iterate_phdr(
      [](struct dl_phdr_info* info, std::size_t, void* data) {
        if (info->dlpi_name != nullptr && std::strstr(info->dlpi_name, "libarcher") != nullptr) {
          *static_cast<bool*>(data) = true;
        }
        return 0;
      },
      &found);
  EXPECT_TRUE(found) << "libarcher.so is not loaded: set OMP_TOOL_LIBRARIES=/usr/lib/llvm-14/lib/libarcher.so";
}
}  // namespace
#endif
