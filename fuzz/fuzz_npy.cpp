// libFuzzer target for the NPY reader and writer (build: fuzz/README.md).
// The input is a .npy file, parsed from memory and (differential check) from
// a file with read_npy; a parsed array must survive encode_npy -> parse_npy
// bit for bit. A FormatError is the only failure allowed.
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "io/dataset_source.hpp"
#include "kortexdl/datasets.hpp"
#include "kortexdl/error.hpp"

namespace {

namespace ds = kortexdl::datasets;

void check(bool ok) {
  if (!ok) __builtin_trap();
}

bool same(const ds::Array& a, const ds::Array& b) {
  return a.shape == b.shape && a.values.size() == b.values.size() &&
         (a.values.empty() || std::memcmp(a.values.data(), b.values.data(), a.values.size() * sizeof(float)) == 0);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const unsigned char> bytes(data, size);
  std::optional<ds::Array> from_memory;
  try {
    from_memory = ds::detail::parse_npy(bytes, "fuzz.npy");
  } catch (const kortexdl::FormatError&) {
  }
  if (from_memory) {
    std::size_t count = 1;
    for (const auto d : from_memory->shape) count *= d;
    check(from_memory->values.size() == count);
    const std::vector<unsigned char> encoded = ds::detail::encode_npy(from_memory->values, from_memory->shape);
    check(same(ds::detail::parse_npy(encoded, "re-encoded.npy"), *from_memory));
  }

  static const int fd = memfd_create("fuzz-npy", 0);
  static const std::string path = "/proc/self/fd/" + std::to_string(fd);
  if (fd < 0 || ftruncate(fd, 0) != 0) __builtin_trap();
  for (std::size_t done = 0; done < size;) {
    const ssize_t n = pwrite(fd, data + done, size - done, static_cast<off_t>(done));
    if (n <= 0) __builtin_trap();
    done += static_cast<std::size_t>(n);
  }
  std::optional<ds::Array> from_file;
  try {
    from_file = ds::read_npy(path);
  } catch (const kortexdl::FormatError&) {
  }
  check(from_memory.has_value() == from_file.has_value());
  if (from_memory) check(same(*from_memory, *from_file));
  return 0;
}
