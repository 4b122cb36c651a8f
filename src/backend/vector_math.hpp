#pragma once
// Branch-free float math that GCC and clang vectorise inside `omp simd`
// loops (glibc's vector expf is only declared under -ffast-math, which would
// also break the NaN handling the engine relies on).
#include <bit>
#include <cmath>
#include <cstdint>

namespace kortexdl::backend {

// exp(x) with ~2 ulp error on [-87, 88]; saturates outside it and
// propagates NaN. Range reduction x = n ln2 + r, |r| <= ln2/2 (n the
// nearest integer), then a
// degree-7 Taylor polynomial (truncation error < 6e-9 relative).
#pragma omp declare simd
inline float exp_approx(float x) {
  const bool is_nan = x != x;
  float clamped = is_nan ? 0.0f : x;
  clamped = clamped < -87.3f ? -87.3f : clamped;
  clamped = clamped > 88.3f ? 88.3f : clamped;
  // Round to nearest by adding and subtracting 1.5 * 2^23 (exact for
  // |y| < 2^22): std::floor would be a library call in the baseline build
  // and stop the loop from vectorising.
  constexpr float kRound = 12582912.0f;
  const float n = (clamped * 1.44269504088896341f + kRound) - kRound;
  // ln2 split in a part exact in float and a correction.
  const float r = (clamped - n * 0.693359375f) - n * -2.12194440e-4f;
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const auto exponent = static_cast<std::int32_t>(n) + 127;
  const float scale = std::bit_cast<float>(static_cast<std::uint32_t>(exponent) << 23);
  return is_nan ? x : p * scale;
}

#pragma omp declare simd
inline float sigmoid_approx(float x) { return 1.0f / (1.0f + exp_approx(-x)); }

// tanh from exp(-2|x|); a short odd polynomial near zero avoids the
// cancellation in 1 - e^{-2|x|}.
#pragma omp declare simd
inline float tanh_approx(float x) {
  const float ax = std::fabs(x);
  const float e = exp_approx(-2.0f * ax);
  const float far = (1.0f - e) / (1.0f + e);
  const float x2 = x * x;
  const float near = ax * (1.0f + x2 * (-1.0f / 3.0f + x2 * (2.0f / 15.0f + x2 * (-17.0f / 315.0f))));
  const float magnitude = ax < 0.125f ? near : far;
  return std::copysign(magnitude, x);
}

// erf by Abramowitz & Stegun 7.1.26 (absolute error < 1.5e-7).
#pragma omp declare simd
inline float erf_approx(float x) {
  const float ax = std::fabs(x);
  const float t = 1.0f / (1.0f + 0.3275911f * ax);
  float poly = 1.061405429f;
  poly = poly * t - 1.453152027f;
  poly = poly * t + 1.421413741f;
  poly = poly * t - 0.284496736f;
  poly = poly * t + 0.254829592f;
  poly = poly * t;
  const float magnitude = 1.0f - poly * exp_approx(-ax * ax);
  return std::copysign(magnitude, x);
}

}  // namespace kortexdl::backend
