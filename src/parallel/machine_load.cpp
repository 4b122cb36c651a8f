#include "parallel/machine_load.hpp"

#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "parallel/affinity.hpp"

namespace kortexdl::detail {

namespace {

constexpr std::int64_t kWindowNs = 200'000'000;
// While others hold CPUs, the next window is shorter, so the team comes back
// soon after they stop: a sample's window runs from the previous sample, and
// after a pause in our calls it still holds the load of before. Measured in
// the GIL-release benchmark, whose workers take turns: with 200 ms only, a
// KortexDL timing that followed a busy PyTorch one ran on one core for most
// of its 0.2 s (docs/BENCHMARKS.md). 50 ms is five of /proc/stat's 10 ms
// ticks per CPU.
constexpr std::int64_t kRecheckNs = 50'000'000;
constexpr double kBusyEnoughToCount = 0.6;

std::atomic<bool>& adaptation() {
  static std::atomic<bool> enabled{[] {
    const char* value = std::getenv("KORTEX_ADAPT_TO_LOAD");
    return value == nullptr || std::strcmp(value, "0") != 0;
  }()};
  return enabled;
}

double clock_seconds(clockid_t clock) {
  timespec ts{};
  clock_gettime(clock, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

// Busy ticks of the CPUs this process may use, from /proc/stat's per-CPU
// lines: user nice system idle iowait irq softirq steal ...; false if the
// file cannot be read.
bool read_machine_busy(double* seconds) {
  static const std::vector<int> mine = allowed_cpus();
  static const long ticks_per_second = sysconf(_SC_CLK_TCK);
  FILE* stat = std::fopen("/proc/stat", "re");
  if (stat == nullptr || ticks_per_second <= 0) {
    if (stat != nullptr) std::fclose(stat);
    return false;
  }
  char line[512];
  unsigned long long busy = 0;
  bool any = false;
  while (std::fgets(line, sizeof line, stat) != nullptr) {
    if (std::strncmp(line, "cpu", 3) != 0) break;  // the cpu lines come first
    if (line[3] == ' ') continue;                    // the sum over all CPUs
    int cpu = -1;
    unsigned long long user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0;
    if (std::sscanf(line, "cpu%d %llu %llu %llu %llu %llu %llu %llu %llu", &cpu, &user, &nice, &system, &idle,
                    &iowait, &irq, &softirq, &steal) < 9) {
      continue;
    }
    if (!std::binary_search(mine.begin(), mine.end(), cpu)) continue;  // allowed_cpus() is ascending
    busy += user + nice + system + irq + softirq + steal;
    any = true;
  }
  std::fclose(stat);
  if (!any) return false;
  *seconds = static_cast<double>(busy) / static_cast<double>(ticks_per_second);
  return true;
}

std::atomic<std::int64_t> next_sample_ns{0};
std::atomic<bool> sampling{false};
std::atomic<std::size_t> taken_by_others{0};
std::atomic<std::uint64_t> samples_taken{0};
LoadSample last_sample;  // written only by the thread that holds `sampling`
bool have_last_sample = false;

void sample_now(double wall) {
  LoadSample now;
  now.wall = wall;
  now.own = clock_seconds(CLOCK_PROCESS_CPUTIME_ID);
  if (!read_machine_busy(&now.machine_busy)) return;
  samples_taken.fetch_add(1, std::memory_order_relaxed);
  if (have_last_sample) taken_by_others.store(cpus_taken(busy_elsewhere(last_sample, now)), std::memory_order_relaxed);
  last_sample = now;
  have_last_sample = true;
}

}  // namespace

double busy_elsewhere(const LoadSample& earlier, const LoadSample& later) {
  const double wall = later.wall - earlier.wall;
  // A forked child's CPU clock starts again from zero: no estimate.
  if (wall <= 0.0 || later.own < earlier.own) return 0.0;
  const double others = (later.machine_busy - earlier.machine_busy) - (later.own - earlier.own);
  return others > 0.0 ? others / wall : 0.0;
}

std::size_t cpus_taken(double others) {
  if (!(others > 0.0)) return 0;
  return static_cast<std::size_t>(std::floor(others + (1.0 - kBusyEnoughToCount)));
}

std::size_t team_left_by_others(std::size_t threads) {
  if (threads <= 1 || !adaptation().load(std::memory_order_relaxed)) return threads;
  const double wall = clock_seconds(CLOCK_MONOTONIC);
  const auto now_ns = static_cast<std::int64_t>(wall * 1e9);
  if (now_ns >= next_sample_ns.load(std::memory_order_relaxed) &&
      !sampling.exchange(true, std::memory_order_acquire)) {
    sample_now(wall);
    const bool others_hold_cpus = taken_by_others.load(std::memory_order_relaxed) > 0;
    next_sample_ns.store(now_ns + (others_hold_cpus ? kRecheckNs : kWindowNs), std::memory_order_relaxed);
    sampling.store(false, std::memory_order_release);
  }
  const std::size_t others = taken_by_others.load(std::memory_order_relaxed);
  return others >= threads ? 1 : threads - others;
}

std::uint64_t load_samples() { return samples_taken.load(std::memory_order_relaxed); }

bool load_adaptation_enabled() { return adaptation().load(std::memory_order_relaxed); }

void set_load_adaptation(bool enabled) { adaptation().store(enabled, std::memory_order_relaxed); }

}  // namespace kortexdl::detail
