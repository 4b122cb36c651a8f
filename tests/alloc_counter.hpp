#pragma once
// Counts the calling thread's heap allocations made through operator new
// (the test binary replaces the global operator new; see alloc_counter.cpp).
// The library is a shared object, so its allocations are counted too.
#include <cstddef>

namespace kortex_test {

struct AllocationCount {
  std::size_t calls = 0;
  std::size_t bytes = 0;
};

// False when the replacement is compiled out (sanitizer builds bring their
// own allocator); tests that rely on the counter then skip.
bool allocation_counting_available();
AllocationCount thread_allocations();

}  // namespace kortex_test
