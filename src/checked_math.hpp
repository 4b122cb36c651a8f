#pragma once
// Size arithmetic that cannot wrap: every product of user-controlled sizes
// (layer widths, batch sizes, sizes read from files) goes through these.
#include <cstddef>
#include <string>

#include "kortexdl/error.hpp"

namespace kortexdl::detail {

inline std::size_t checked_mul(std::size_t a, std::size_t b, const char* what) {
  std::size_t result = 0;
  if (__builtin_mul_overflow(a, b, &result)) {
    throw ResourceLimitError(std::string(what) + ": " + std::to_string(a) + " x " + std::to_string(b) +
                             " overflows the size type");
  }
  return result;
}

inline std::size_t checked_add(std::size_t a, std::size_t b, const char* what) {
  std::size_t result = 0;
  if (__builtin_add_overflow(a, b, &result)) {
    throw ResourceLimitError(std::string(what) + ": " + std::to_string(a) + " + " + std::to_string(b) +
                             " overflows the size type");
  }
  return result;
}

// Upper bounds that keep a request from allocating absurd memory: checked
// before any allocation so the failure is immediate and nothing is touched.
inline constexpr std::size_t kMaxParameters = std::size_t{1} << 32;        // 16 GiB of fp32
inline constexpr std::size_t kMaxWorkspaceFloats = std::size_t{1} << 32;   // 16 GiB of scratch per call

}  // namespace kortexdl::detail
