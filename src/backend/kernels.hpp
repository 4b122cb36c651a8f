#pragma once
// Our fused, vectorised element-wise kernels (the GEMMs are the backend's).
// All matrices are row-major rows x cols. Loops parallelise with OpenMP when
// the calling thread's team size (set by ComputeScope) is above one and the
// work is large enough.
#include <cstddef>
#include <cstdint>

#include "kortexdl/activation.hpp"

namespace kortexdl::backend {

// data = f(data + bias) in place; when preactivation is not null it also
// receives data + bias (kept for the backward pass where f' needs it).
void bias_activation(Activation activation, float* data, const float* bias, std::size_t rows, std::size_t cols,
                     float* preactivation);

// delta *= f'(z), with f' computed from the layer's output (ReLU, tanh,
// sigmoid, linear) or its pre-activation (GELU). Softmax applies its full
// Jacobian row by row.
void activation_backward(Activation activation, float* delta, const float* output, const float* preactivation,
                         std::size_t rows, std::size_t cols);

// sums[j] = sum_i data[i][j]; a fixed summation order, so results do not
// depend on the thread count.
void column_sums(const float* data, std::size_t rows, std::size_t cols, float* sums);

// dst[i] += src[i] for i < count.
void add_into(float* dst, const float* src, std::size_t count);

// out[j][i] = a[j] * d[i] for j < rows, i < cols (row-major): a weight
// gradient at batch 1, rounded exactly as the GEMM with k = 1 rounds it.
void outer_product(float* out, const float* a, const float* d, std::size_t rows, std::size_t cols);

// Loss kernels. Each returns the SUM of per-sample losses over its rows and,
// when grad is not null, writes d(loss)/d(z or output) times grad_scale
// (1 / rows of the whole batch, so shards of one batch add up). Exactly one
// of target_values / labels is non-null. correct (when not null) receives
// the number of correctly classified samples (CE) or elements (BCE).

// Softmax cross-entropy on logits z; grad is w.r.t. z.
double softmax_cross_entropy(const float* logits, const float* target_values, const std::int32_t* labels,
                             std::size_t rows, std::size_t cols, float grad_scale, float* grad,
                             std::size_t* correct);
// Binary cross-entropy on logits z (sigmoid applied inside); grad w.r.t. z.
double sigmoid_binary_cross_entropy(const float* logits, const float* targets, std::size_t rows,
                                    std::size_t cols, float grad_scale, float* grad, std::size_t* correct);
// Mean squared error on outputs y; grad is w.r.t. y.
double mean_squared_error(const float* outputs, const float* targets, std::size_t rows, std::size_t cols,
                          float grad_scale, float* grad);

// Finite check over a buffer (all elements finite).
bool all_finite(const float* data, std::size_t count);

}  // namespace kortexdl::backend
