#pragma once
// The steady clock as plain nanoseconds: what the thread budget and the step
// combiner keep in atomics and running averages.
#include <chrono>
#include <cstdint>

namespace kortexdl::detail {

inline std::int64_t steady_now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace kortexdl::detail
