#pragma once
// Data for the C++ benchmarks: seeded normal floats, and float buffers
// aligned as the engine's workspace and parameters are (64 bytes, a cache
// line), so that a benchmark's loads split no more cache lines than the
// engine's do (a 16-byte aligned 784x256 matrix made both our one-row
// kernel and oneDNN's read a third slower than the engine's aligned one).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <random>
#include <vector>

namespace kortexdl::bench {

inline std::vector<float> random_floats(std::size_t n, std::uint64_t seed, float scale = 1.0f) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> values(n);
  for (auto& v : values) v = dist(rng);
  return values;
}

class AlignedFloats {
 public:
  static constexpr std::size_t kAlignment = 64;

  // n random floats (random_floats(n, seed, scale)).
  explicit AlignedFloats(std::size_t n, std::uint64_t seed = 0, float scale = 0.1f)
      : data_(static_cast<float*>(::operator new(std::max<std::size_t>(n, 1) * sizeof(float),
                                                 std::align_val_t{kAlignment}))),
        size_(n) {
    const auto values = random_floats(n, seed, scale);
    std::copy(values.begin(), values.end(), data_.get());
  }

  float* get() const { return data_.get(); }
  std::size_t size() const { return size_; }

 private:
  struct Free {
    void operator()(float* p) const { ::operator delete(p, std::align_val_t{kAlignment}); }
  };
  std::unique_ptr<float[], Free> data_;
  std::size_t size_;
};

}  // namespace kortexdl::bench
