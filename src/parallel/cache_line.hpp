#pragma once
// A process-wide variable that threads write on every call gets a cache line
// of its own. The linker packs globals from different files next to each
// other, so a counter written by every call shared a line with values every
// call only reads (another counter, the thread budget, the "AVX-512 kernels
// available" flag): each read then missed while the other core had just
// written the line. docs/CONCURRENCY.md, "Per-call shared writes".
#include <cstddef>

namespace kortexdl::detail {

inline constexpr std::size_t kCacheLineBytes = 64;

template <class T>
struct alignas(kCacheLineBytes) OwnCacheLine {
  T value{};
};

}  // namespace kortexdl::detail
