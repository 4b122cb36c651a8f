#include "optimizer_update.hpp"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>

#include "backend/kernels.hpp"
#include "format.hpp"
#include "kortexdl/error.hpp"
#include "parallel/team_split.hpp"

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

// Plain SGD on a one-row step's weight gradient a_j * d_i, formed in the
// loop instead of a buffer. The expression is sgd_segment's on
// outer_product's values, and -ffp-contract=off rounds the product to float
// before the sum, so the bits are those of the buffered path.
KORTEX_KERNEL void sgd_outer_rows(float* p, const float* a, const float* d, std::size_t rows, std::size_t cols,
                                  float lr, float decay) {
  for (std::size_t j = 0; j < rows; ++j) {
    float* row = p + j * cols;
    const float aj = a[j];
#pragma omp simd
    for (std::size_t i = 0; i < cols; ++i) row[i] -= lr * (aj * d[i] + decay * row[i]);
  }
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
    throw InvalidArgumentError(std::string(name) + ": must be in [" + format_number(low) + ", " + format_number(high) +
                               (high_inclusive ? "]" : ")") + ", got " + format_number(value));
  }
}

// Largest |g|, as float bits so the loop vectorises; a NaN or inf gives a
// value >= the bits of infinity.
KORTEX_KERNEL std::uint32_t max_abs_bits(const float* g, std::size_t n) {
  const auto* bits = reinterpret_cast<const std::uint32_t*>(g);
  std::uint32_t largest = 0;
#pragma omp simd reduction(max : largest)
  for (std::size_t i = 0; i < n; ++i) {
    const std::uint32_t magnitude = bits[i] & 0x7fffffffu;
    largest = magnitude > largest ? magnitude : largest;
  }
  return largest;
}

constexpr std::uint32_t kInfinityBits = 0x7f800000u;

float float_of_bits(std::uint32_t bits) {
  float value = 0.0f;
  std::memcpy(&value, &bits, sizeof(value));
  return value;
}

// Far from overflow the update cannot leave the float range; near it only a
// dry run of the update can tell.
bool update_plainly_finite(float largest_gradient, float learning_rate) {
  return static_cast<double>(largest_gradient) * learning_rate < 1e30 && largest_gradient < 1e18f;
}

// The step's result, computed and checked but not stored.
bool dry_run_is_finite(const OptimizerConfig& config, const Architecture& arch, const float* params,
                       const float* grad, float learning_rate, const Network::OptimizerState& state, float step_size,
                       float inv_sqrt_bc2) {
  for (const LayerLayout& layer : arch.layers) {
    const std::size_t weights = layer.inputs * layer.outputs;
    for (int part = 0; part < 2; ++part) {
      const std::size_t offset = part == 0 ? layer.weights_offset : layer.biases_offset;
      const std::size_t count = part == 0 ? weights : layer.outputs;
      const float decay = part == 0 ? config.weight_decay : 0.0f;
      for (std::size_t i = offset; i < offset + count; ++i) {
        const float g = grad[i] + decay * params[i];
        float p = params[i];
        float m = 0.0f, v = 0.0f;
        switch (config.kind) {
          case OptimizerKind::SGD:
            p -= learning_rate * g;
            break;
          case OptimizerKind::Momentum:
            m = config.momentum * state.buffers[0][i] + g;
            p -= learning_rate * (config.nesterov ? g + config.momentum * m : m);
            break;
          case OptimizerKind::Adam:
            m = config.beta1 * state.buffers[0][i] + (1.0f - config.beta1) * g;
            v = config.beta2 * state.buffers[1][i] + (1.0f - config.beta2) * g * g;
            p -= step_size * m / (std::sqrt(v) * inv_sqrt_bc2 + config.epsilon);
            break;
        }
        if (!(std::isfinite(p) && std::isfinite(m) && std::isfinite(v))) return false;
      }
    }
  }
  return true;
}

struct AdamScalars {
  float step_size;
  float inv_sqrt_bc2;
};

AdamScalars adam_scalars(const OptimizerConfig& config, float learning_rate, std::uint64_t step) {
  const double t = static_cast<double>(step);
  const double bc1 = 1.0 - std::pow(static_cast<double>(config.beta1), t);
  const double bc2 = 1.0 - std::pow(static_cast<double>(config.beta2), t);
  return {static_cast<float>(learning_rate / bc1), static_cast<float>(1.0 / std::sqrt(bc2))};
}

}  // namespace

void check_step_is_finite(const char* operation, double mean_loss, const OptimizerConfig& config,
                          const Architecture& arch, const float* params, const float* grad, float learning_rate,
                          const Network::OptimizerState& state) {
  if (!std::isfinite(static_cast<float>(mean_loss))) {
    throw NumericalError(std::string(operation) + ": the loss is " + format_number(mean_loss) +
                         ", not a finite float, so the step was not applied (the parameters are unchanged); lower "
                         "the learning rate or check the inputs' scale");
  }
  const std::size_t n = arch.parameter_count;
  std::uint32_t largest = 0;
  if (n >= kParallelElements && omp_get_max_threads() > 1) {
#pragma omp parallel for reduction(max : largest) schedule(static)
    for (std::size_t block = 0; block < n; block += 16384) {
      const std::uint32_t part = max_abs_bits(grad + block, std::min<std::size_t>(16384, n - block));
      largest = part > largest ? part : largest;
    }
  } else {
    largest = max_abs_bits(grad, n);
  }
  if (largest >= kInfinityBits) {
    throw NumericalError(std::string(operation) +
                         ": the gradient overflowed (it has non-finite values), so the step was not applied (the "
                         "parameters are unchanged); lower the learning rate or check the inputs' scale");
  }
  const float largest_gradient = float_of_bits(largest);
  if (update_plainly_finite(largest_gradient, learning_rate)) return;
  const AdamScalars adam = adam_scalars(config, learning_rate, state.step + 1);
  if (!dry_run_is_finite(config, arch, params, grad, learning_rate, state, adam.step_size, adam.inv_sqrt_bc2)) {
    throw NumericalError(std::string(operation) + ": this step would make parameters overflow (learning rate " +
                         format_number(learning_rate) + ", largest gradient " + format_number(largest_gradient) +
                         "), so it was not applied (the parameters are unchanged); lower the learning rate");
  }
}

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
        throw InvalidArgumentError("epsilon: must be a finite number > 0, got " + format_number(config.epsilon));
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

namespace {

// One optimizer step's constants.
struct UpdateStep {
  const OptimizerConfig& config;
  float learning_rate;
  float step_size = 0.0f;     // Adam
  float inv_sqrt_bc2 = 1.0f;  // Adam
};

UpdateStep begin_step(const OptimizerConfig& config, float learning_rate, Network::OptimizerState& state) {
  ++state.step;
  UpdateStep step{config, learning_rate};
  step.step_size = learning_rate;
  if (config.kind == OptimizerKind::Adam) {
    const AdamScalars adam = adam_scalars(config, learning_rate, state.step);
    step.step_size = adam.step_size;
    step.inv_sqrt_bc2 = adam.inv_sqrt_bc2;
  }
  return step;
}

// Parameters [offset, offset + count) with their gradient g (g[0] belongs to
// params[offset]).
void update_segment(const UpdateStep& step, Network::OptimizerState& state, float* params, const float* g,
                    std::size_t offset, std::size_t count, float decay) {
  const OptimizerConfig& config = step.config;
  float* p = params + offset;
  switch (config.kind) {
    case OptimizerKind::SGD:
      sgd_segment(p, g, count, step.learning_rate, decay);
      break;
    case OptimizerKind::Momentum:
      momentum_segment(p, g, state.buffers[0].data() + offset, count, step.learning_rate, decay, config.momentum,
                       config.nesterov);
      break;
    case OptimizerKind::Adam:
      adam_segment(p, g, state.buffers[0].data() + offset, state.buffers[1].data() + offset, count, step.step_size,
                   step.inv_sqrt_bc2, decay, config.beta1, config.beta2, config.epsilon);
      break;
  }
}

}  // namespace

void apply_update(const OptimizerConfig& config, const Architecture& arch, float* params, const float* grad,
                  float learning_rate, Network::OptimizerState& state) {
  const UpdateStep step = begin_step(config, learning_rate, state);
  // Each layer is two segments: weights (decayed) and biases (not). Large
  // segments are split across the calling thread's team; element-wise
  // updates give the same result whatever the split.
  split_over_team(arch.parameter_count >= kParallelElements, [&](std::size_t me, std::size_t threads) {
    for (const LayerLayout& layer : arch.layers) {
      const std::size_t weights = layer.inputs * layer.outputs;
      const std::size_t begin = weights * me / threads;
      const std::size_t end = weights * (me + 1) / threads;
      const std::size_t at = layer.weights_offset + begin;
      if (begin < end) update_segment(step, state, params, grad + at, at, end - begin, config.weight_decay);
      if (me == 0) {
        update_segment(step, state, params, grad + layer.biases_offset, layer.biases_offset, layer.outputs, 0.0f);
      }
    }
  });
}

namespace {

// Whether check_step_is_finite would take its fast path on the expanded
// gradient, judged from the factors alone.
bool one_row_step_plainly_finite(double mean_loss, const Architecture& arch, const OneRowGradient& gradient,
                                 float learning_rate) {
  if (!std::isfinite(static_cast<float>(mean_loss))) return false;
  float largest = 0.0f;
  for (std::size_t l = 0; l < arch.layers.size(); ++l) {
    const LayerLayout& layer = arch.layers[l];
    const std::uint32_t a = max_abs_bits(gradient.input(l), layer.inputs);
    const std::uint32_t d = max_abs_bits(gradient.delta(l), layer.outputs);
    if (a >= kInfinityBits || d >= kInfinityBits) return false;
    // Rounding is monotonic, so the largest |a_j * d_i| is the product of
    // the largest factors, rounded: the full gradient's largest element.
    const float product = float_of_bits(a) * float_of_bits(d);
    largest = std::max({largest, product, float_of_bits(d)});
  }
  return std::isfinite(largest) && update_plainly_finite(largest, learning_rate);
}

void apply_one_row_update(const OptimizerConfig& config, const Architecture& arch, float* params,
                          const OneRowGradient& gradient, float learning_rate, Network::OptimizerState& state) {
  const UpdateStep step = begin_step(config, learning_rate, state);
  // Rows of each weight matrix are split across the team. Plain SGD forms
  // the gradient inside its update loop; the other optimizers form it a few
  // rows at a time in a buffer that stays in L1 and hand it to the same
  // segment update apply_update uses: one call per 16 KiB, not per row, and
  // the same roundings.
  constexpr std::size_t kChunk = 4096;
  const std::size_t n_layers = arch.layers.size();
  split_over_team(arch.parameter_count >= kParallelElements, [&](std::size_t me, std::size_t threads) {
    alignas(64) float chunk[kChunk];
    for (std::size_t l = 0; l < n_layers; ++l) {
      const LayerLayout& layer = arch.layers[l];
      const float* a = gradient.input(l);
      const float* d = gradient.delta(l);
      const std::size_t cols = layer.outputs;
      const std::size_t begin = layer.inputs * me / threads;
      const std::size_t end = layer.inputs * (me + 1) / threads;
      if (config.kind == OptimizerKind::SGD) {
        // Two L1 passes per chunk were 28% of a 100-50-10 step's C++ time.
        sgd_outer_rows(params + layer.weights_offset + begin * cols, a + begin, d, end - begin, cols,
                       step.learning_rate, config.weight_decay);
      } else if (cols <= kChunk) {
        const std::size_t rows_per_chunk = kChunk / cols;
        for (std::size_t j = begin; j < end; j += rows_per_chunk) {
          const std::size_t rows = std::min(rows_per_chunk, end - j);
          backend::outer_product(chunk, a + j, d, rows, cols);
          update_segment(step, state, params, chunk, layer.weights_offset + j * cols, rows * cols,
                         config.weight_decay);
        }
      } else {
        for (std::size_t j = begin; j < end; ++j) {
          for (std::size_t i = 0; i < cols; i += kChunk) {
            const std::size_t n = std::min(kChunk, cols - i);
            backend::outer_product(chunk, a + j, d + i, 1, n);
            update_segment(step, state, params, chunk, layer.weights_offset + j * cols + i, n, config.weight_decay);
          }
        }
      }
      if (me == 0) update_segment(step, state, params, d, layer.biases_offset, cols, 0.0f);
    }
  });
}

}  // namespace

void checked_one_row_update(const char* operation, double mean_loss, const OptimizerConfig& config,
                            const Architecture& arch, float* params, const OneRowGradient& gradient,
                            float learning_rate, Network::OptimizerState& state) {
  if (one_row_step_plainly_finite(mean_loss, arch, gradient, learning_rate)) {
    apply_one_row_update(config, arch, params, gradient, learning_rate, state);
    return;
  }
  auto lease = Workspace::local().acquire(arch.parameter_count);
  float* grad = lease.take(arch.parameter_count);
  gradient.expand(grad);
  check_step_is_finite(operation, mean_loss, config, arch, params, grad, learning_rate, state);
  apply_update(config, arch, params, grad, learning_rate, state);
}

}  // namespace kortexdl::detail
