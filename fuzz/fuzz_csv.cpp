// libFuzzer target for the CSV reader (build: fuzz/README.md).
// Input: 1 byte of options (label column -3..3, regression flag), then the
// CSV text, parsed from memory. A FormatError is the only failure allowed,
// and a parsed dataset must be consistent.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "io/dataset_source.hpp"
#include "kortexdl/datasets.hpp"
#include "kortexdl/error.hpp"

namespace {

void check(bool ok) {
  if (!ok) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const int label_column = static_cast<int>(data[0] % 7) - 3;
  const bool regression = (data[0] & 0x80) != 0;
  const std::string_view text(reinterpret_cast<const char*>(data + 1), size - 1);
  try {
    const auto d = kortexdl::datasets::detail::parse_csv(text, label_column, regression, "fuzz.csv");
    check(d.rows >= 1 && d.features >= 1);
    check(d.inputs.size() == d.rows * d.features);
    for (const float v : d.inputs) check(std::isfinite(v));
    if (regression) {
      check(d.labels.empty() && d.classes == 0 && d.target_width == 1 && d.targets.size() == d.rows);
      for (const float v : d.targets) check(std::isfinite(v));
    } else {
      check(d.targets.empty() && d.target_width == 0 && d.labels.size() == d.rows && d.classes >= 1);
      for (const auto label : d.labels) check(label >= 0 && static_cast<std::size_t>(label) < d.classes);
    }
  } catch (const kortexdl::FormatError&) {
  }
  return 0;
}
