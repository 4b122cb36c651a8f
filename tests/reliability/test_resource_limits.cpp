// Resource limits (docs/RELIABILITY.md): a request that would need absurd
// memory fails fast with a clear, documented error before anything is
// allocated, and size arithmetic never wraps.
//
// Every case runs in a child process whose address space is capped at what it
// already uses plus 512 MiB (RLIMIT_AS): a call that tried to allocate what a
// hostile size asks for would get std::bad_alloc (reported as a failure)
// instead of the documented error. Under ASan (which reserves terabytes of
// shadow memory, so RLIMIT_AS is unusable) the cases run in-process; ASan's
// allocator then reports any allocation above its 1 TiB-ish maximum as an
// error, which fails the test just the same.
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <typeinfo>
#include <vector>

#include "checked_math.hpp"
#include "io/model_file.hpp"
#include "kortexdl/kortexdl.hpp"
#include "reliability_support.hpp"
#include "test_support.hpp"

namespace {

using namespace kortexdl;
namespace mf = kortexdl::detail::model_file;

enum class Expect { Throws, Succeeds };

struct Case {
  std::string name;
  std::function<void()> call;
  Expect expect;
  // For Throws: the exception's class must be this one (or derived), and its
  // message must contain every fragment.
  std::function<bool(const std::exception&)> is_expected_class;
  std::vector<std::string> fragments;
};

template <class E>
std::function<bool(const std::exception&)> of() {
  return [](const std::exception& e) { return dynamic_cast<const E*>(&e) != nullptr; };
}

constexpr std::size_t k2to40 = std::size_t{1} << 40;

std::vector<std::uint8_t> model_file_claiming(std::uint64_t inputs, std::uint64_t outputs) {
  // A valid 1x1 model, then the sizes patched and the checksum repaired: only
  // the value checks behind the checksum can refuse it.
  NetworkConfig config;
  config.seed = 1;
  std::vector<std::uint8_t> bytes = Network({1, 1}, config).to_bytes(false);
  for (int i = 0; i < 8; ++i) {
    bytes[mf::kSizesOffset + i] = static_cast<std::uint8_t>(inputs >> (8 * i));
    bytes[mf::kSizesOffset + 8 + i] = static_cast<std::uint8_t>(outputs >> (8 * i));
  }
  const std::uint32_t crc = mf::checksum(std::span<const std::uint8_t>(bytes.data(), bytes.size() - 4));
  for (int i = 0; i < 4; ++i) bytes[bytes.size() - 4 + i] = static_cast<std::uint8_t>(crc >> (8 * i));
  return bytes;
}

std::string temp_file(const std::string& name) {
  return (std::filesystem::temp_directory_path() / ("kortex_limits_" + std::to_string(::getpid()) + "_" + name))
      .string();
}

void write_bytes(const std::string& path, const std::vector<unsigned char>& bytes) {
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

std::vector<Case> cases() {
  NetworkConfig config;
  config.seed = 5;
  // Shared by the calls below; each case only reads it or trains on it.
  static Network net({4, 8, 2}, config);
  static const std::vector<float> x(12, 0.5f);  // 3 rows
  static const std::vector<float> t(6, 0.25f);
  static const std::vector<std::int32_t> labels{0, 1, 1};

  std::vector<Case> list;
  auto throws = [&](std::string name, std::function<void()> call, std::function<bool(const std::exception&)> cls,
                    std::vector<std::string> fragments) {
    list.push_back({std::move(name), std::move(call), Expect::Throws, std::move(cls), std::move(fragments)});
  };
  auto succeeds = [&](std::string name, std::function<void()> call) {
    list.push_back({std::move(name), std::move(call), Expect::Succeeds, nullptr, {}});
  };

  // ---- absurd layers
  throws("10^6 x 10^6 layer", [] { Network n({1000000, 1000000}); }, of<ResourceLimitError>(),
         {"sizes", "1000000 x 1000000", "parameters"});
  throws("2^40 x 2^40 layer (the product overflows size_t)", [] { Network n({k2to40, k2to40}); },
         of<ResourceLimitError>(), {"sizes", "overflows"});
  throws("2^64-1 inputs", [] { Network n({SIZE_MAX, 2}); }, of<ResourceLimitError>(), {"sizes"});
  throws("4097 layers of 1024 x 1024 (each fine, the sum is not)",
         [] { Network n(std::vector<std::size_t>(4097, 1024)); }, of<ResourceLimitError>(), {"sizes", "parameters"});

  // ---- absurd batches with the data that is really there
  throws("forward, batch_size 2^40", [] { (void)net.forward(x, k2to40); }, of<ShapeError>(),
         {"inputs", "batch_size x input_size"});
  throws("forward, batch_size 2^62 (batch x width overflows)", [] { (void)net.forward(x, std::size_t{1} << 62); },
         of<ResourceLimitError>(), {"batch_size x input_size", "overflows"});
  throws("forward_thread_safe, batch_size 2^40", [] { (void)net.forward_thread_safe(x, k2to40); }, of<ShapeError>(),
         {"inputs"});
  throws("train_batch, batch_size 2^40", [] { net.train_batch(x, t, LossType::MSE, 0.1f, k2to40); },
         of<ShapeError>(), {"inputs"});
  throws("train_batch_thread_safe, batch_size 2^40",
         [] { net.train_batch_thread_safe(x, t, LossType::MSE, 0.1f, k2to40); }, of<ShapeError>(), {"inputs"});
  throws("compute_gradients, batch_size 2^40", [] { (void)net.compute_gradients(x, t, LossType::MSE, k2to40); },
         of<ShapeError>(), {"inputs"});
  throws("train_parallel_numa, batch_size 2^40",
         [] {
           DataParallelOptions o;
           o.batch_size = k2to40;
           train_parallel_numa(net, x, t, LossType::MSE, 0.1f, o);
         },
         of<InvalidArgumentError>(), {"batch_size"});
  // A batch size is a chunk size for these: a huge one means "all rows at once".
  succeeds("forward_batch, batch_size 2^40", [] { (void)net.forward_batch(x, k2to40); });
  succeeds("forward_batch_thread_safe, batch_size 2^40", [] { (void)net.forward_batch_thread_safe(x, k2to40); });
  succeeds("evaluate, batch_size 2^40", [] { (void)net.evaluate(x, t, LossType::MSE, k2to40); });
  succeeds("evaluate_thread_safe, batch_size 2^40", [] { (void)net.evaluate_thread_safe(x, t, LossType::MSE, k2to40); });
  succeeds("evaluate_parallel_numa, batch_size 2^40",
           [] { (void)evaluate_parallel_numa(net, x, t, LossType::MSE, k2to40); });
  succeeds("predict, batch_size 2^40", [] { (void)predict(net, x, k2to40); });
  succeeds("predict_classes, batch_size 2^40", [] { (void)predict_classes(net, x, k2to40); });
  succeeds("score, batch_size 2^40", [] { (void)score(net, x, labels, k2to40); });
  succeeds("fit, batch_size 2^40", [] {
    FitOptions o;
    o.epochs = 1;
    o.batch_size = k2to40;
    o.learning_rate = 0.01f;
    (void)fit(net, x, t, LossType::MSE, o);
  });

  // ---- a real batch whose scratch memory would be absurd
  throws("2^21 rows through a 4096-wide layer (32 GiB of scratch)",
         [] {
           const Network wide({4, 4096, 1}, NetworkConfig{});
           const std::size_t rows = std::size_t{1} << 21;
           const std::vector<float> big(rows * 4, 0.5f);
           (void)wide.forward(big, rows);
         },
         of<ResourceLimitError>(), {"scratch memory", "smaller batch_size"});

  // ---- sizes read from files and byte streams
  throws("model bytes claiming a 10^6 x 10^6 layer",
         [] { (void)Network::from_bytes(model_file_claiming(1000000, 1000000)); }, of<FormatError>(), {});
  throws("model bytes claiming a 2^63 x 2^63 layer",
         [] { (void)Network::from_bytes(model_file_claiming(std::uint64_t{1} << 63, std::uint64_t{1} << 63)); },
         of<FormatError>(), {});
  throws("npy header with shape (2^40, 2^40)",
         [] {
           const std::string path = temp_file("huge.npy");
           std::string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (1099511627776, 1099511627776), }";
           while ((10 + dict.size() + 1) % 64 != 0) dict += ' ';
           dict += '\n';
           std::vector<unsigned char> bytes = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0,
                                               static_cast<unsigned char>(dict.size() & 0xff),
                                               static_cast<unsigned char>(dict.size() >> 8)};
           bytes.insert(bytes.end(), dict.begin(), dict.end());
           bytes.resize(bytes.size() + 64, 0);
           write_bytes(path, bytes);
           struct Remove {
             std::string p;
             ~Remove() { std::filesystem::remove(p); }
           } remove{path};
           (void)datasets::read_npy(path);
         },
         of<FormatError>(), {});
  throws("IDX images header with 2^31 x 2^31 x 2^31 dimensions",
         [] {
           const std::string images = temp_file("huge-images.idx");
           const std::string labels_path = temp_file("huge-labels.idx");
           write_bytes(images, {0, 0, 8, 3, 0x80, 0, 0, 0, 0x80, 0, 0, 0, 0x80, 0, 0, 0, 1, 2, 3});
           write_bytes(labels_path, {0, 0, 8, 1, 0, 0, 0, 1, 0});
           struct Remove {
             std::string a, b;
             ~Remove() {
               std::filesystem::remove(a);
               std::filesystem::remove(b);
             }
           } remove{images, labels_path};
           (void)datasets::read_idx(images, labels_path);
         },
         of<FormatError>(), {});

  // ---- settings
  throws("set_num_threads(2^40)", [] { set_num_threads(k2to40); }, of<InvalidArgumentError>(), {"num_threads"});
  return list;
}

// Runs every case; returns a description of each one that misbehaved.
std::vector<std::string> run_cases() {
  std::vector<std::string> problems;
  for (const Case& c : cases()) {
    const auto start = std::chrono::steady_clock::now();
    std::string outcome;
    try {
      c.call();
      if (c.expect == Expect::Throws) outcome = "did not throw";
    } catch (const std::exception& e) {
      if (c.expect == Expect::Succeeds) {
        outcome = std::string("threw ") + typeid(e).name() + ": " + e.what();
      } else if (!c.is_expected_class(e)) {
        outcome = std::string("threw the wrong class ") + typeid(e).name() + ": " + e.what();
      } else {
        for (const auto& f : c.fragments) {
          if (std::string(e.what()).find(f) == std::string::npos) outcome = "message lacks '" + f + "': " + e.what();
        }
      }
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    // "Fast": well under a second even under sanitizers (the slowest case
    // fills a 32 MiB input first).
    if (outcome.empty() && seconds > 5.0) outcome = "took " + std::to_string(seconds) + " s";
    if (!outcome.empty()) problems.push_back(c.name + ": " + outcome);
  }
  return problems;
}

TEST(ResourceLimits, AbsurdRequestsFailFastBeforeAllocating) {
  if (kortex_reliability::under_sanitizer()) {
    const auto problems = run_cases();
    for (const auto& p : problems) ADD_FAILURE() << p;
    return;
  }
  int pipe_fds[2];
  ASSERT_EQ(::pipe(pipe_fds), 0);
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::close(pipe_fds[0]);
    std::ifstream statm("/proc/self/statm");
    std::size_t pages = 0;
    statm >> pages;
    const rlim_t limit = static_cast<rlim_t>(pages) * static_cast<rlim_t>(::sysconf(_SC_PAGESIZE)) + (512u << 20);
    struct rlimit rl {limit, limit};
    if (::setrlimit(RLIMIT_AS, &rl) != 0) ::_exit(2);
    std::string report;
    try {
      for (const auto& p : run_cases()) report += p + "\n";
    } catch (...) {
      report += "the harness itself threw\n";
    }
    if (!report.empty()) (void)!::write(pipe_fds[1], report.data(), report.size());
    ::close(pipe_fds[1]);
    ::_exit(report.empty() ? 0 : 1);
  }
  ::close(pipe_fds[1]);
  std::string report;
  char buffer[4096];
  for (ssize_t n; (n = ::read(pipe_fds[0], buffer, sizeof buffer)) > 0;) report.append(buffer, static_cast<std::size_t>(n));
  ::close(pipe_fds[0]);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status)) << "the child died (signal " << (WIFSIGNALED(status) ? WTERMSIG(status) : 0) << ")";
  EXPECT_EQ(WEXITSTATUS(status), 0) << report;
}

// The checked helpers themselves: every product and sum that could wrap
// throws ResourceLimitError naming what was being computed.
TEST(ResourceLimits, CheckedArithmeticNeverWraps) {
  using kortexdl::detail::checked_add;
  using kortexdl::detail::checked_mul;
  EXPECT_EQ(checked_mul(std::size_t{1} << 31, std::size_t{1} << 32, "x"), std::size_t{1} << 63);
  EXPECT_EQ(checked_mul(0, SIZE_MAX, "x"), 0u);
  EXPECT_EQ(checked_add(SIZE_MAX - 1, 1, "x"), SIZE_MAX);
  for (const auto& [a, b] : std::vector<std::pair<std::size_t, std::size_t>>{
           {std::size_t{1} << 32, std::size_t{1} << 32}, {SIZE_MAX, 2}, {3, SIZE_MAX / 2}}) {
    try {
      (void)checked_mul(a, b, "rows x width");
      ADD_FAILURE() << a << " x " << b << " did not throw";
    } catch (const ResourceLimitError& e) {
      EXPECT_NE(std::string(e.what()).find("rows x width"), std::string::npos) << e.what();
    }
  }
  EXPECT_THROW((void)checked_add(SIZE_MAX, 1, "x"), ResourceLimitError);
}

// A refused request leaves the network as it was and usable.
TEST(ResourceLimits, RefusedRequestsLeaveTheNetworkUsable) {
  NetworkConfig config;
  config.seed = 9;
  Network net({4, 8, 2}, config);
  const std::vector<float> x(8, 0.5f), t(4, 0.25f);
  const std::vector<float> before = net.parameters();
  EXPECT_THROW(net.train_batch(x, t, LossType::MSE, 0.1f, k2to40), ShapeError);
  EXPECT_THROW((void)net.forward(x, std::size_t{1} << 62), ResourceLimitError);
  EXPECT_TRUE(kortex_test::BitwiseEqual(net.parameters(), before));
  EXPECT_EQ(net.version(), 0u);
  EXPECT_EQ(calls_in_flight(), 0u);
  EXPECT_TRUE(std::isfinite(net.train_batch(x, t, LossType::MSE, 0.1f, 2)));
  EXPECT_EQ(net.version(), 1u);
}

}  // namespace
