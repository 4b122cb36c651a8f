// libFuzzer target for the IDX reader (build: fuzz/README.md).
// Input: 2 bytes giving where to split, then the images file bytes and the
// labels file bytes (each plain or gzip). Parses them from memory and, as a
// differential check, from a file through zlib's gzread (read_idx): both
// must agree, and a FormatError is the only failure allowed.
#include <sys/mman.h>
#include <unistd.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string>

#include "io/dataset_source.hpp"
#include "kortexdl/datasets.hpp"
#include "kortexdl/error.hpp"

namespace {

namespace ds = kortexdl::datasets;

// An in-memory file with a path that zlib and stdio can open.
struct MemFile {
  explicit MemFile(const char* name) : fd(memfd_create(name, 0)), path("/proc/self/fd/" + std::to_string(fd)) {
    if (fd < 0) __builtin_trap();
  }
  void set(std::span<const unsigned char> bytes) {
    if (ftruncate(fd, 0) != 0) __builtin_trap();
    std::size_t done = 0;
    while (done < bytes.size()) {
      const ssize_t n = pwrite(fd, bytes.data() + done, bytes.size() - done, static_cast<off_t>(done));
      if (n <= 0) __builtin_trap();
      done += static_cast<std::size_t>(n);
    }
  }
  int fd;
  std::string path;
};

void check(bool ok) {
  if (!ok) __builtin_trap();
}

void check_dataset(const ds::Dataset& d) {
  check(d.rows >= 1 && d.features >= 1);
  check(d.inputs.size() == d.rows * d.features);
  check(d.labels.size() == d.rows);
  check(d.targets.empty() && d.target_width == 0);
  check(d.classes >= 1 && d.classes <= 256);
  for (const auto label : d.labels) check(label >= 0 && static_cast<std::size_t>(label) < d.classes);
  for (const float v : d.inputs) check(v >= 0.0f && v <= 1.0f);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  const std::size_t split_at = (std::size_t{data[0]} | (std::size_t{data[1]} << 8)) % (size - 1);
  const std::span<const unsigned char> images(data + 2, split_at);
  const std::span<const unsigned char> labels(data + 2 + split_at, size - 2 - split_at);

  std::optional<ds::Dataset> from_memory;
  try {
    from_memory = ds::detail::parse_idx(images, labels, 1.0f / 255.0f);
    check_dataset(*from_memory);
  } catch (const kortexdl::FormatError&) {
  }

  static MemFile image_file("fuzz-idx-images");
  static MemFile label_file("fuzz-idx-labels");
  image_file.set(images);
  label_file.set(labels);
  std::optional<ds::Dataset> from_file;
  try {
    from_file = ds::read_idx(image_file.path, label_file.path);
  } catch (const kortexdl::FormatError&) {
  }
  check(from_memory.has_value() == from_file.has_value());
  if (from_memory) {
    check(from_memory->rows == from_file->rows && from_memory->features == from_file->features);
    check(from_memory->inputs == from_file->inputs && from_memory->labels == from_file->labels);
    check(from_memory->classes == from_file->classes);
  }
  return 0;
}
