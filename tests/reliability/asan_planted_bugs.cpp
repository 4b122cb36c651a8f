// Proves the ASan+UBSan build reports what it should in this setup (Debian's
// GCC, LeakSanitizer on; LSan in particular silently does nothing where
// ptrace is restricted). Built only with KORTEX_SANITIZE containing
// "address"; each mode must produce its report (ctest checks the text).
//   asan_planted_bugs leak       a lost heap block        -> LeakSanitizer report
//   asan_planted_bugs overflow   a heap read past the end -> heap-buffer-overflow
//   asan_planted_bugs ubsan      signed integer overflow  -> UBSan runtime error
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace {
void* volatile g_sink;
}

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  if (mode == "leak") {
    g_sink = std::malloc(4096);
    g_sink = nullptr;  // the only pointer is gone
    std::puts("leaked 4096 bytes");
    return 0;
  }
  if (mode == "overflow") {
    char* p = static_cast<char*>(std::malloc(16));
    std::memset(p, 1, 16);
    char copy[32];
    std::memcpy(copy, p, 17 + static_cast<std::size_t>(argc) - 2);  // one byte past the block
    std::printf("%d\n", copy[0]);
    std::free(p);
    return 0;
  }
  if (mode == "ubsan") {
    volatile int big = 2147483647;
    std::printf("%d\n", big + argc);
    return 0;
  }
  std::fprintf(stderr, "usage: %s leak|overflow|ubsan\n", argv[0]);
  return 2;
}
