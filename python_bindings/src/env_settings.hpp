#pragma once
// What the bindings read about their machine and environment, once each.
// No Python here: gil_return_gate.cpp is also built into a C++ test.
#include <sched.h>

#include <cstdint>
#include <cstdlib>

namespace kortexdl::python {

// CPUs this process may run on (at least 1).
inline std::uint32_t usable_cpus() noexcept {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) != 0) return 1;
  const int count = CPU_COUNT(&set);
  return count > 0 ? static_cast<std::uint32_t>(count) : 1;
}

// The whole number in [0, max] that the environment variable `name` holds;
// `fallback` when it is unset, empty, or anything else.
inline std::uint32_t env_count(const char* name, std::uint32_t max, std::uint32_t fallback) noexcept {
  const char* value = std::getenv(name);
  if (value == nullptr || *value < '0' || *value > '9') return fallback;
  char* end = nullptr;
  const unsigned long parsed = std::strtoul(value, &end, 10);
  if (*end != '\0' || parsed > max) return fallback;
  return static_cast<std::uint32_t>(parsed);
}

}  // namespace kortexdl::python
