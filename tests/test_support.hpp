#pragma once
// Small helpers shared by the test files (header-only, test code only).
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "kortexdl/kortexdl.hpp"

namespace kortex_test {

// Built with AddressSanitizer or ThreadSanitizer (GCC and clang spell it
// differently). Their runtimes are not fork-safe while other threads
// allocate, so the tests that fork beside computing threads skip there.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
inline constexpr bool kSanitized = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
inline constexpr bool kSanitized = true;
#else
inline constexpr bool kSanitized = false;
#endif
#else
inline constexpr bool kSanitized = false;
#endif

// Forks; the child runs `body` under an alarm of `seconds` (so a hang ends
// it with SIGALRM instead of hanging the suite) and exits with what it
// returns. The child's wait status, or nothing if fork or waitpid failed.
template <class Body>
std::optional<int> status_of_forked_child(unsigned seconds, Body body) {
  const pid_t child = fork();
  if (child == 0) {
    alarm(seconds);
    _exit(body());
  }
  int status = 0;
  if (child < 0 || waitpid(child, &status, 0) != child) return std::nullopt;
  return status;
}

// Polls `done()` until it holds or `timeout` has passed (a state another
// thread reaches: a waiter counted, a queue filled); whether it held.
template <class Done>
bool eventually(Done done, std::chrono::steady_clock::duration timeout = std::chrono::seconds(10)) {
  const auto until = std::chrono::steady_clock::now() + timeout;
  while (!done()) {
    if (std::chrono::steady_clock::now() > until) return false;
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
  return true;
}

// Failures collected on worker threads, reported from the main thread (a
// gtest assertion on another thread cannot stop the test).
class Failures {
 public:
  void add(std::string what) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (list_.size() < 20) list_.push_back(std::move(what));
    ++count_;
  }
  std::size_t count() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return count_;
  }
  std::string summary() const {
    std::lock_guard<std::mutex> lock(mutex_);
    std::string s;
    for (const auto& f : list_) s += f + "\n";
    return s;
  }

 private:
  mutable std::mutex mutex_;
  std::vector<std::string> list_;
  std::size_t count_ = 0;
};

// Sets the process-wide thread budget for one test and restores the default
// (set_num_threads(0)) afterwards, even when an assertion fails.
class ThreadBudget {
 public:
  explicit ThreadBudget(std::size_t n) { kortexdl::set_num_threads(n); }
  ~ThreadBudget() { kortexdl::set_num_threads(0); }
  ThreadBudget(const ThreadBudget&) = delete;
  ThreadBudget& operator=(const ThreadBudget&) = delete;
};

inline std::uint32_t bits_of(float v) {
  std::uint32_t b = 0;
  std::memcpy(&b, &v, sizeof b);
  return b;
}

inline std::vector<std::uint32_t> bits_of(const std::vector<float>& values) {
  std::vector<std::uint32_t> out(values.size());
  if (!values.empty()) std::memcpy(out.data(), values.data(), values.size() * sizeof(float));
  return out;
}

// Bitwise comparison (so -0.0 != 0.0 and NaN payloads count); reports the
// first difference.
inline ::testing::AssertionResult BitwiseEqual(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) {
    return ::testing::AssertionFailure() << "sizes differ: " << a.size() << " vs " << b.size();
  }
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (bits_of(a[i]) != bits_of(b[i])) {
      return ::testing::AssertionFailure() << "first difference at index " << i << ": " << a[i] << " vs " << b[i]
                                           << " (" << a.size() << " values)";
    }
  }
  return ::testing::AssertionSuccess();
}

inline bool all_finite(const std::vector<float>& values) {
  for (float v : values) {
    if (!std::isfinite(v)) return false;
  }
  return true;
}

inline std::vector<float> normal_floats(std::size_t n, std::uint32_t seed, float stddev = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, stddev);
  std::vector<float> out(n);
  for (auto& v : out) v = normal(rng);
  return out;
}

// A one-shot latch whose waits give up after a timeout, so a bug that keeps a
// thread from arriving fails the test instead of hanging it.
class TimedLatch {
 public:
  explicit TimedLatch(std::size_t count) : count_(count) {}
  void count_down() {
    std::lock_guard<std::mutex> lock(mutex_);
    if (count_ > 0 && --count_ == 0) cv_.notify_all();
  }
  // Returns false on timeout.
  bool wait(std::chrono::milliseconds timeout = std::chrono::seconds(20)) {
    std::unique_lock<std::mutex> lock(mutex_);
    return cv_.wait_for(lock, timeout, [&] { return count_ == 0; });
  }
  bool arrive_and_wait(std::chrono::milliseconds timeout = std::chrono::seconds(20)) {
    count_down();
    return wait(timeout);
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  std::size_t count_;
};

// Tests for library bugs that are not fixed yet are skipped so the suite
// stays green; KORTEX_RUN_PENDING_FIXES=1 runs them (and shows them failing).
inline bool run_pending_fixes() {
  const char* v = std::getenv("KORTEX_RUN_PENDING_FIXES");
  return v != nullptr && std::string_view(v) == "1";
}

}  // namespace kortex_test

// Use as the first statement of a test that documents an open library bug.
#define KORTEX_PENDING_FIX(description)                                          \
  do {                                                                           \
    if (!::kortex_test::run_pending_fixes()) GTEST_SKIP() << "pending fix: " << description; \
  } while (false)
