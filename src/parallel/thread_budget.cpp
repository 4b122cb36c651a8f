#include "thread_budget.hpp"

#include <omp.h>
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <string>

#include "kortexdl/error.hpp"
#include "kortexdl/threading.hpp"

namespace kortexdl {
namespace {

std::size_t env_threads(const char* name) {
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0') return 0;
  char* end = nullptr;
  const unsigned long parsed = std::strtoul(value, &end, 10);
  // OMP_NUM_THREADS may be a list ("4,2"): its first entry is the top level.
  if (end == value || parsed == 0 || parsed > 4096) return 0;
  return static_cast<std::size_t>(parsed);
}

std::size_t default_threads() {
  if (auto n = env_threads("KORTEX_NUM_THREADS")) return n;
  if (auto n = env_threads("OMP_NUM_THREADS")) return n;
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    const int count = CPU_COUNT(&set);
    if (count > 0) return static_cast<std::size_t>(count);
  }
  return static_cast<std::size_t>(std::max(1, omp_get_num_procs()));
}

std::atomic<std::size_t>& budget() {
  static std::atomic<std::size_t> value{default_threads()};
  return value;
}

std::atomic<std::size_t> in_flight{0};

}  // namespace

void set_num_threads(std::size_t n) {
  if (n > 4096) {
    throw InvalidArgumentError("num_threads: must be between 0 (default) and 4096, got " + std::to_string(n));
  }
  budget().store(n == 0 ? default_threads() : n);
}

std::size_t get_num_threads() { return budget().load(); }

std::size_t calls_in_flight() { return in_flight.load(); }

namespace detail {

std::size_t share_for(double flops) {
  const std::size_t total = budget().load(std::memory_order_relaxed);
  const std::size_t callers = std::max<std::size_t>(1, in_flight.load(std::memory_order_relaxed));
  const std::size_t share = std::max<std::size_t>(1, total / callers);
  const auto useful = static_cast<std::size_t>(std::max(1.0, flops / kMinFlopsPerExtraThread));
  return std::min(share, useful);
}

ComputeScope::ComputeScope(double flops) {
  in_flight.fetch_add(1, std::memory_order_relaxed);
  threads_ = share_for(flops);
  previous_ = omp_get_max_threads();
  if (previous_ != static_cast<int>(threads_)) omp_set_num_threads(static_cast<int>(threads_));
}

ComputeScope::~ComputeScope() {
  if (previous_ != static_cast<int>(threads_)) omp_set_num_threads(previous_);
  in_flight.fetch_sub(1, std::memory_order_relaxed);
}

}  // namespace detail
}  // namespace kortexdl
