#include "backend/kernels.hpp"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "backend/vector_math.hpp"
#include "parallel/team_split.hpp"

// One build runs well on every x86-64: the hot loops are compiled for
// AVX-512, AVX2 and baseline, and the loader picks the best at start-up.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(KORTEX_NO_TARGET_CLONES)
#define KORTEX_KERNEL __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define KORTEX_KERNEL
#endif
#define KORTEX_INLINE inline __attribute__((always_inline))

namespace kortexdl::backend {

namespace {

// Elements below which a parallel region costs more than it saves.
constexpr std::size_t kParallelElements = std::size_t{1} << 15;

bool parallel_worth_it(std::size_t elements) {
  return elements >= kParallelElements && omp_get_max_threads() > 1;
}

constexpr float kInvSqrt2 = 0.70710678118654752f;
constexpr float kInvSqrt2Pi = 0.39894228040143268f;

KORTEX_INLINE float gelu(float z) { return 0.5f * z * (1.0f + erf_approx(z * kInvSqrt2)); }

KORTEX_INLINE float gelu_derivative(float z) {
  const float cdf = 0.5f * (1.0f + erf_approx(z * kInvSqrt2));
  const float pdf = kInvSqrt2Pi * exp_approx(-0.5f * z * z);
  return cdf + z * pdf;
}

// z = row + bias; pre = z (if kept); row = f(z).
template <class F>
KORTEX_INLINE void map_row(float* row, const float* bias, std::size_t cols, float* pre, F f) {
  if (pre != nullptr) {
#pragma omp simd
    for (std::size_t j = 0; j < cols; ++j) {
      const float z = row[j] + bias[j];
      pre[j] = z;
      row[j] = f(z);
    }
  } else {
#pragma omp simd
    for (std::size_t j = 0; j < cols; ++j) row[j] = f(row[j] + bias[j]);
  }
}

KORTEX_KERNEL void softmax_row(float* row, const float* bias, std::size_t cols, float* pre) {
  map_row(row, bias, cols, pre, [](float z) { return z; });
  float max_value = -std::numeric_limits<float>::infinity();
  for (std::size_t j = 0; j < cols; ++j) max_value = std::max(max_value, row[j]);
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (std::size_t j = 0; j < cols; ++j) {
    row[j] = exp_approx(row[j] - max_value);
    sum += row[j];
  }
  const float inv = 1.0f / sum;
#pragma omp simd
  for (std::size_t j = 0; j < cols; ++j) row[j] *= inv;
}

KORTEX_KERNEL void bias_activation_rows(Activation activation, float* data, const float* bias, std::size_t rows,
                                        std::size_t cols, float* pre) {
  for (std::size_t i = 0; i < rows; ++i) {
    float* row = data + i * cols;
    float* pre_row = pre != nullptr ? pre + i * cols : nullptr;
    switch (activation) {
      case Activation::ReLU:
        map_row(row, bias, cols, pre_row, [](float z) { return z > 0.0f ? z : 0.0f; });
        break;
      case Activation::Tanh:
        map_row(row, bias, cols, pre_row, [](float z) { return tanh_approx(z); });
        break;
      case Activation::Sigmoid:
        map_row(row, bias, cols, pre_row, [](float z) { return sigmoid_approx(z); });
        break;
      case Activation::GELU:
        map_row(row, bias, cols, pre_row, [](float z) { return gelu(z); });
        break;
      case Activation::Linear:
        map_row(row, bias, cols, pre_row, [](float z) { return z; });
        break;
      case Activation::Softmax:
        softmax_row(row, bias, cols, pre_row);
        break;
    }
  }
}

KORTEX_KERNEL void activation_backward_flat(Activation activation, float* delta, const float* y, const float* z,
                                            std::size_t n) {
  switch (activation) {
    case Activation::ReLU:
#pragma omp simd
      for (std::size_t i = 0; i < n; ++i) delta[i] = y[i] > 0.0f ? delta[i] : 0.0f;
      break;
    case Activation::Tanh:
#pragma omp simd
      for (std::size_t i = 0; i < n; ++i) delta[i] *= 1.0f - y[i] * y[i];
      break;
    case Activation::Sigmoid:
#pragma omp simd
      for (std::size_t i = 0; i < n; ++i) delta[i] *= y[i] * (1.0f - y[i]);
      break;
    case Activation::GELU:
#pragma omp simd
      for (std::size_t i = 0; i < n; ++i) delta[i] *= gelu_derivative(z[i]);
      break;
    case Activation::Linear:
    case Activation::Softmax:  // row-wise Jacobian, see softmax_backward_rows
      break;
  }
}

KORTEX_KERNEL void softmax_backward_rows(float* delta, const float* y, std::size_t rows, std::size_t cols) {
  for (std::size_t i = 0; i < rows; ++i) {
    float* d = delta + i * cols;
    const float* p = y + i * cols;
    float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
    for (std::size_t j = 0; j < cols; ++j) dot += d[j] * p[j];
#pragma omp simd
    for (std::size_t j = 0; j < cols; ++j) d[j] = p[j] * (d[j] - dot);
  }
}

KORTEX_KERNEL void add_rows(const float* data, std::size_t rows, std::size_t cols, float* sums) {
  for (std::size_t i = 0; i < rows; ++i) {
    const float* row = data + i * cols;
#pragma omp simd
    for (std::size_t j = 0; j < cols; ++j) sums[j] += row[j];
  }
}

// Splits [0, rows) into the calling thread's team, a contiguous block each.
template <class Body>
void for_row_blocks(std::size_t rows, std::size_t cols, Body body) {
  detail::split_over_team(rows * cols >= kParallelElements, [&](std::size_t me, std::size_t threads) {
    const std::size_t begin = rows * me / threads;
    const std::size_t end = rows * (me + 1) / threads;
    if (begin < end) body(begin, end);
  });
}

}  // namespace

KORTEX_KERNEL void add_into(float* dst, const float* src, std::size_t count) {
#pragma omp simd
  for (std::size_t i = 0; i < count; ++i) dst[i] += src[i];
}

void bias_activation(Activation activation, float* data, const float* bias, std::size_t rows, std::size_t cols,
                     float* preactivation) {
  for_row_blocks(rows, cols, [&](std::size_t begin, std::size_t end) {
    bias_activation_rows(activation, data + begin * cols, bias, end - begin, cols,
                         preactivation != nullptr ? preactivation + begin * cols : nullptr);
  });
}

void activation_backward(Activation activation, float* delta, const float* output, const float* preactivation,
                         std::size_t rows, std::size_t cols) {
  if (activation == Activation::Linear) return;
  for_row_blocks(rows, cols, [&](std::size_t begin, std::size_t end) {
    const std::size_t offset = begin * cols;
    if (activation == Activation::Softmax) {
      softmax_backward_rows(delta + offset, output + offset, end - begin, cols);
    } else {
      activation_backward_flat(activation, delta + offset, output + offset,
                               preactivation != nullptr ? preactivation + offset : nullptr, (end - begin) * cols);
    }
  });
}

void column_sums(const float* data, std::size_t rows, std::size_t cols, float* sums) {
  std::fill(sums, sums + cols, 0.0f);
  add_rows(data, rows, cols, sums);
}

KORTEX_KERNEL void outer_product(float* out, const float* a, const float* d, std::size_t rows, std::size_t cols) {
  for (std::size_t j = 0; j < rows; ++j) {
    float* row = out + j * cols;
    const float aj = a[j];
#pragma omp simd
    for (std::size_t i = 0; i < cols; ++i) row[i] = aj * d[i];
  }
}

namespace {

struct LossBlock {
  double loss = 0.0;
  std::size_t hits = 0;
};

// Rows [begin, end) of softmax cross-entropy. With a gradient buffer the
// exponentials are computed once, into it, then scaled in place.
KORTEX_KERNEL void softmax_cross_entropy_rows(const float* logits, const float* target_values,
                                              const std::int32_t* labels, std::size_t begin, std::size_t end,
                                              std::size_t cols, float grad_scale, float* grad, LossBlock* out) {
  double total = 0.0;
  std::size_t hits = 0;
  for (std::size_t i = begin; i < end; ++i) {
    const float* z = logits + i * cols;
    std::size_t best = 0;
    for (std::size_t j = 1; j < cols; ++j) {
      if (z[j] > z[best]) best = j;
    }
    const float max_value = z[best];
    float sum = 0.0f;
    float* g = grad != nullptr ? grad + i * cols : nullptr;
    if (g != nullptr) {
#pragma omp simd reduction(+ : sum)
      for (std::size_t j = 0; j < cols; ++j) {
        g[j] = exp_approx(z[j] - max_value);
        sum += g[j];
      }
    } else {
#pragma omp simd reduction(+ : sum)
      for (std::size_t j = 0; j < cols; ++j) sum += exp_approx(z[j] - max_value);
    }
    // log softmax_j = z_j - max - log_sum
    const double log_sum = std::log(static_cast<double>(sum));
    const float inv_sum = 1.0f / sum;
    if (labels != nullptr) {
      const auto label = static_cast<std::size_t>(labels[i]);
      total -= static_cast<double>(z[label] - max_value) - log_sum;
      hits += best == label ? 1 : 0;
      if (g != nullptr) {
        // The same arithmetic as the one-hot branch below, so labels and
        // one-hot rows give bit-identical gradients.
#pragma omp simd
        for (std::size_t j = 0; j < cols; ++j) g[j] = (g[j] * inv_sum - (j == label ? 1.0f : 0.0f)) * grad_scale;
      }
    } else {
      const float* t = target_values + i * cols;
      double row_loss = 0.0;
      float target_sum = 0.0f;
      std::size_t target_best = 0;
      for (std::size_t j = 0; j < cols; ++j) {
        if (t[j] != 0.0f) row_loss -= static_cast<double>(t[j]) * (static_cast<double>(z[j] - max_value) - log_sum);
        target_sum += t[j];
        if (t[j] > t[target_best]) target_best = j;
      }
      total += row_loss;
      hits += best == target_best ? 1 : 0;
      if (g != nullptr) {
        // d/dz of -sum_j t_j log p_j = p * sum(t) - t.
        const float scale = inv_sum * target_sum;  // == inv_sum for one-hot rows
#pragma omp simd
        for (std::size_t j = 0; j < cols; ++j) g[j] = (g[j] * scale - t[j]) * grad_scale;
      }
    }
  }
  out->loss = total;
  out->hits = hits;
}

}  // namespace

double softmax_cross_entropy(const float* logits, const float* target_values, const std::int32_t* labels,
                             std::size_t rows, std::size_t cols, float grad_scale, float* grad,
                             std::size_t* correct) {
  // An exponential costs about as much as a few dozen multiply-adds.
  constexpr std::size_t kBlockRows = 64;
  const std::size_t blocks = (rows + kBlockRows - 1) / kBlockRows;
  double total = 0.0;
  std::size_t hits = 0;
  const auto add_block = [&](std::size_t b, double& loss_sum, std::size_t& hit_sum) {
    LossBlock block;
    softmax_cross_entropy_rows(logits, target_values, labels, b * kBlockRows, std::min(rows, (b + 1) * kBlockRows),
                               cols, grad_scale, grad, &block);
    loss_sum += block.loss;
    hit_sum += block.hits;
  };
  // No region at all when serial: a false `if` clause still allocates a team.
  if (parallel_worth_it(rows * cols * 16)) {
#pragma omp parallel for reduction(+ : total, hits) schedule(static)
    for (std::size_t b = 0; b < blocks; ++b) add_block(b, total, hits);
  } else {
    for (std::size_t b = 0; b < blocks; ++b) add_block(b, total, hits);
  }
  if (correct != nullptr) *correct = hits;
  return total;
}

double sigmoid_binary_cross_entropy(const float* logits, const float* targets, std::size_t rows,
                                    std::size_t cols, float grad_scale, float* grad, std::size_t* correct) {
  const std::size_t n = rows * cols;
  const float element_scale = grad_scale / static_cast<float>(cols);
  double total = 0.0;
  std::size_t hits = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const double z = logits[i];
    const double t = targets[i];
    // Stable form of -(t log s(z) + (1 - t) log(1 - s(z))).
    total += std::max(z, 0.0) - z * t + std::log1p(std::exp(-std::fabs(z)));
    hits += ((z > 0.0) == (t > 0.5)) ? 1 : 0;
    if (grad != nullptr) grad[i] = (sigmoid_approx(logits[i]) - targets[i]) * element_scale;
  }
  if (correct != nullptr) *correct = hits;
  return total / static_cast<double>(cols);
}

double mean_squared_error(const float* outputs, const float* targets, std::size_t rows, std::size_t cols,
                          float grad_scale, float* grad) {
  const std::size_t n = rows * cols;
  const float element_scale = 2.0f * grad_scale / static_cast<float>(cols);
  double total = 0.0;
  for (std::size_t i = 0; i < n; ++i) {
    const float diff = outputs[i] - targets[i];
    total += static_cast<double>(diff) * diff;
    if (grad != nullptr) grad[i] = diff * element_scale;
  }
  return total / static_cast<double>(cols);
}

bool all_finite(const float* data, std::size_t count) {
  // Branch-free so the loop vectorises: x - x is 0 for finite x, NaN otherwise.
  float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
  for (std::size_t i = 0; i < count; ++i) acc += data[i] - data[i];
  return acc == 0.0f;
}

}  // namespace kortexdl::backend
