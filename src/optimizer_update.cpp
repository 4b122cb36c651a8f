#include "optimizer_update.hpp"

#include <omp.h>

#include <cmath>
#include <string>

#include "kortexdl/error.hpp"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(KORTEX_NO_TARGET_CLONES)
#define KORTEX_KERNEL __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define KORTEX_KERNEL
#endif

namespace kortexdl::detail {

namespace {

constexpr std::size_t kParallelElements = std::size_t{1} << 16;

struct Segment {
  std::size_t offset;
  std::size_t count;
  float decay;
};

KORTEX_KERNEL void sgd_segment(float* p, const float* g, std::size_t n, float lr, float decay) {
#pragma omp simd
  for (std::size_t i = 0; i < n; ++i) p[i] -= lr * (g[i] + decay * p[i]);
}

KORTEX_KERNEL void momentum_segment(float* p, const float* g, float* v, std::size_t n, float lr, float decay,
                                    float mu, bool nesterov) {
  if (nesterov) {
#pragma omp simd
    for (std::size_t i = 0; i < n; ++i) {
      const float grad = g[i] + decay * p[i];
      v[i] = mu * v[i] + grad;
      p[i] -= lr * (grad + mu * v[i]);
    }
  } else {
#pragma omp simd
    for (std::size_t i = 0; i < n; ++i) {
      v[i] = mu * v[i] + g[i] + decay * p[i];
      p[i] -= lr * v[i];
    }
  }
}

// PyTorch's formulation: p -= lr / bc1 * m / (sqrt(v) / sqrt(bc2) + eps).
KORTEX_KERNEL void adam_segment(float* p, const float* g, float* m, float* v, std::size_t n, float step_size,
                                float inv_sqrt_bc2, float decay, float b1, float b2, float eps) {
#pragma omp simd
  for (std::size_t i = 0; i < n; ++i) {
    const float grad = g[i] + decay * p[i];
    m[i] = b1 * m[i] + (1.0f - b1) * grad;
    v[i] = b2 * v[i] + (1.0f - b2) * grad * grad;
    p[i] -= step_size * m[i] / (std::sqrt(v[i]) * inv_sqrt_bc2 + eps);
  }
}

void check_finite_in_range(float value, const char* name, float low, float high, bool high_inclusive) {
  const bool ok = std::isfinite(value) && value >= low && (high_inclusive ? value <= high : value < high);
  if (!ok) {
    throw InvalidArgumentError(std::string(name) + ": must be in [" + std::to_string(low) + ", " +
                               std::to_string(high) + (high_inclusive ? "]" : ")") + ", got " +
                               std::to_string(value));
  }
}

}  // namespace

std::size_t optimizer_buffer_count(OptimizerKind kind) {
  switch (kind) {
    case OptimizerKind::SGD:
      return 0;
    case OptimizerKind::Momentum:
      return 1;
    case OptimizerKind::Adam:
      return 2;
  }
  return 0;
}

void validate_optimizer(const OptimizerConfig& config) {
  check_finite_in_range(config.weight_decay, "weight_decay", 0.0f, 1.0f, true);
  switch (config.kind) {
    case OptimizerKind::SGD:
      break;
    case OptimizerKind::Momentum:
      check_finite_in_range(config.momentum, "momentum", 0.0f, 1.0f, false);
      break;
    case OptimizerKind::Adam:
      check_finite_in_range(config.beta1, "beta1", 0.0f, 1.0f, false);
      check_finite_in_range(config.beta2, "beta2", 0.0f, 1.0f, false);
      if (!(std::isfinite(config.epsilon) && config.epsilon > 0.0f)) {
        throw InvalidArgumentError("epsilon: must be a finite number > 0, got " + std::to_string(config.epsilon));
      }
      break;
  }
}

Network::OptimizerState make_optimizer_state(const OptimizerConfig& config, std::size_t parameter_count) {
  Network::OptimizerState state;
  state.buffers.assign(optimizer_buffer_count(config.kind), std::vector<float>(parameter_count, 0.0f));
  state.step = 0;
  return state;
}

void apply_update(const OptimizerConfig& config, const Architecture& arch, float* params, const float* grad,
                  float learning_rate, Network::OptimizerState& state) {
  ++state.step;
  float step_size = learning_rate;
  float inv_sqrt_bc2 = 1.0f;
  if (config.kind == OptimizerKind::Adam) {
    const double t = static_cast<double>(state.step);
    const double bc1 = 1.0 - std::pow(static_cast<double>(config.beta1), t);
    const double bc2 = 1.0 - std::pow(static_cast<double>(config.beta2), t);
    step_size = static_cast<float>(learning_rate / bc1);
    inv_sqrt_bc2 = static_cast<float>(1.0 / std::sqrt(bc2));
  }
  // Each layer is two segments: weights (decayed) and biases (not). Large
  // segments are split across the calling thread's team; element-wise
  // updates give the same result whatever the split.
  const bool parallel = arch.parameter_count >= kParallelElements && omp_get_max_threads() > 1;
  auto run = [&](std::size_t offset, std::size_t count, float decay) {
    float* p = params + offset;
    const float* g = grad + offset;
    switch (config.kind) {
      case OptimizerKind::SGD:
        sgd_segment(p, g, count, learning_rate, decay);
        break;
      case OptimizerKind::Momentum:
        momentum_segment(p, g, state.buffers[0].data() + offset, count, learning_rate, decay, config.momentum,
                         config.nesterov);
        break;
      case OptimizerKind::Adam:
        adam_segment(p, g, state.buffers[0].data() + offset, state.buffers[1].data() + offset, count, step_size,
                     inv_sqrt_bc2, decay, config.beta1, config.beta2, config.epsilon);
        break;
    }
  };
  const std::size_t n_layers = arch.layers.size();
#pragma omp parallel if (parallel)
  {
    const auto threads = static_cast<std::size_t>(omp_get_num_threads());
    const auto me = static_cast<std::size_t>(omp_get_thread_num());
    for (std::size_t l = 0; l < n_layers; ++l) {
      const LayerLayout& layer = arch.layers[l];
      const std::size_t weights = layer.inputs * layer.outputs;
      const std::size_t begin = weights * me / threads;
      const std::size_t end = weights * (me + 1) / threads;
      if (begin < end) run(layer.weights_offset + begin, end - begin, config.weight_decay);
      if (me == 0) run(layer.biases_offset, layer.outputs, 0.0f);
    }
  }
}

}  // namespace kortexdl::detail
