#include "parallel/affinity.hpp"

#include <pthread.h>
#include <sched.h>
#include <unistd.h>

#include <thread>

namespace kortexdl::detail {

namespace {
std::vector<int> cpus_in(const cpu_set_t& set) {
  std::vector<int> cpus;
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
    if (CPU_ISSET(cpu, &set)) cpus.push_back(cpu);
  }
  return cpus;
}
}  // namespace

std::vector<int> allowed_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    auto cpus = cpus_in(set);
    if (!cpus.empty()) return cpus;
  }
  std::vector<int> cpus;
  const long count = sysconf(_SC_NPROCESSORS_ONLN);
  for (long cpu = 0; cpu < (count > 0 ? count : 1); ++cpu) cpus.push_back(static_cast<int>(cpu));
  return cpus;
}

std::size_t allowed_cpu_count() {
  static const std::size_t count = allowed_cpus().size();  // never empty
  return count;
}

std::vector<int> current_thread_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (pthread_getaffinity_np(pthread_self(), sizeof(set), &set) != 0) return {};
  return cpus_in(set);
}

bool pin_current_thread(const std::vector<int>& cpus) {
  if (cpus.empty()) return false;
  cpu_set_t set;
  CPU_ZERO(&set);
  for (int cpu : cpus) {
    if (cpu >= 0 && cpu < CPU_SETSIZE) CPU_SET(cpu, &set);
  }
  return pthread_setaffinity_np(pthread_self(), sizeof(set), &set) == 0;
}

bool pinning_allowed() {
  // Probe on a scratch thread so the caller's own affinity is never touched.
  static const bool allowed = [] {
    bool ok = false;
    std::thread probe([&ok] { ok = pin_current_thread(allowed_cpus()); });
    probe.join();
    return ok;
  }();
  return allowed;
}

}  // namespace kortexdl::detail
