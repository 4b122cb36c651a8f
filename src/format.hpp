#pragma once
// Numbers in error messages: the shortest text that reads back as the same
// value (1e-09, not 0.000000), with nan and inf spelled out.
#include <charconv>
#include <string>

namespace kortexdl::detail {

template <class T>
std::string format_shortest(T value) {
  char buffer[64];
  const auto result = std::to_chars(buffer, buffer + sizeof(buffer), value);
  return std::string(buffer, result.ptr);
}

inline std::string format_number(float value) { return format_shortest(value); }
inline std::string format_number(double value) { return format_shortest(value); }

}  // namespace kortexdl::detail
