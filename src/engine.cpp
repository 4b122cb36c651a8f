#include "engine.hpp"

#include <omp.h>

#include <algorithm>
#include <exception>
#include <optional>
#include <utility>
#include <vector>

#include "backend/gemm.hpp"
#include "backend/kernels.hpp"
#include "checked_math.hpp"
#include "workspace.hpp"

namespace kortexdl::detail {

namespace {

// z = a_prev * W (rows x out), bias and activation applied by the caller.
void dense(const LayerLayout& layer, const float* params, const float* a_prev, std::size_t rows, float* z) {
  backend::sgemm(false, false, rows, layer.outputs, layer.inputs, 1.0f, a_prev, layer.inputs,
                 params + layer.weights_offset, layer.outputs, 0.0f, z, layer.outputs);
}

// Runs the hidden layers, leaving the last hidden activation in the returned
// pointer (inputs itself when there are no hidden layers).
const float* hidden_forward(const Architecture& arch, const float* params, const float* inputs, std::size_t rows,
                            float* ping, float* pong) {
  const float* current = inputs;
  for (std::size_t l = 0; l + 1 < arch.layers.size(); ++l) {
    const LayerLayout& layer = arch.layers[l];
    float* next = (current == ping) ? pong : ping;
    dense(layer, params, current, rows, next);
    backend::bias_activation(arch.hidden_activation, next, params + layer.biases_offset, rows, layer.outputs,
                             nullptr);
    current = next;
  }
  return current;
}

// Does the loss work on logits z (fused) rather than on f(z)?
bool loss_on_logits(LossType loss) { return loss != LossType::MSE; }

LossSums output_loss(const Architecture& arch, const float* final_values, TargetRows targets, std::size_t rows,
                     LossType loss, float grad_scale, float* grad) {
  const std::size_t cols = arch.outputs();
  LossSums sums;
  switch (loss) {
    case LossType::CrossEntropy:
      sums.loss = backend::softmax_cross_entropy(final_values, targets.values, targets.labels, rows, cols,
                                                 grad_scale, grad, &sums.correct);
      break;
    case LossType::BinaryCrossEntropy:
      sums.loss = backend::sigmoid_binary_cross_entropy(final_values, targets.values, rows, cols, grad_scale, grad,
                                                        &sums.correct);
      break;
    case LossType::MSE:
      sums.loss = backend::mean_squared_error(final_values, targets.values, rows, cols, grad_scale, grad);
      break;
  }
  return sums;
}

std::size_t scratch_rows(std::size_t rows, std::size_t width) { return checked_mul(rows, width, "batch_size x width"); }

}  // namespace

Evaluation to_evaluation(const LossSums& sums, std::size_t rows, std::size_t outputs, LossType loss) {
  Evaluation result;
  result.samples = rows;
  result.loss = sums.loss / static_cast<double>(rows);
  if (loss == LossType::CrossEntropy) {
    result.accuracy = static_cast<double>(sums.correct) / static_cast<double>(rows);
  } else if (loss == LossType::BinaryCrossEntropy) {
    result.accuracy = static_cast<double>(sums.correct) / (static_cast<double>(rows) * static_cast<double>(outputs));
  }
  return result;
}

std::size_t evaluation_chunk(std::size_t batch_size, std::size_t rows) {
  constexpr std::size_t kDefaultChunk = 4096;  // bounds scratch memory when no batch size is given
  return std::min(batch_size == 0 ? kDefaultChunk : batch_size, rows);
}

void forward_rows(const Architecture& arch, const float* params, const float* inputs, std::size_t rows,
                  float* outputs) {
  const std::size_t hidden = arch.layers.size() > 1 ? scratch_rows(rows, arch.max_width) : 0;
  auto lease = Workspace::local().acquire(2 * Workspace::padded_floats(hidden));
  float* ping = lease.take(hidden);
  float* pong = lease.take(hidden);
  const float* last_hidden = hidden_forward(arch, params, inputs, rows, ping, pong);
  const LayerLayout& out = arch.layers.back();
  dense(out, params, last_hidden, rows, outputs);
  backend::bias_activation(arch.output_activation, outputs, params + out.biases_offset, rows, out.outputs, nullptr);
}

LossSums loss_rows(const Architecture& arch, const float* params, const float* inputs, TargetRows targets,
                   std::size_t rows, LossType loss) {
  const std::size_t hidden = arch.layers.size() > 1 ? scratch_rows(rows, arch.max_width) : 0;
  const std::size_t final_floats = scratch_rows(rows, arch.outputs());
  auto lease = Workspace::local().acquire(2 * Workspace::padded_floats(hidden) + Workspace::padded_floats(final_floats));
  float* ping = lease.take(hidden);
  float* pong = lease.take(hidden);
  float* final_values = lease.take(final_floats);
  const float* last_hidden = hidden_forward(arch, params, inputs, rows, ping, pong);
  const LayerLayout& out = arch.layers.back();
  dense(out, params, last_hidden, rows, final_values);
  backend::bias_activation(loss_on_logits(loss) ? Activation::Linear : arch.output_activation, final_values,
                           params + out.biases_offset, rows, out.outputs, nullptr);
  return output_loss(arch, final_values, targets, rows, loss, 0.0f, nullptr);
}

namespace {

// Below this many rows per thread a block's GEMMs get too thin to pay for
// the split.
constexpr std::size_t kMinRowsPerThread = 4;
// Blocks per split: bounds the per-block results kept on the stack.
constexpr std::size_t kMaxBlocks = 256;

// Runs body(block, begin, end) on contiguous row blocks, one per thread of
// the calling thread's team (inside, every thread's own team is one thread).
// Returns the number of blocks, or 0 when the rows were not worth splitting.
template <class Body>
std::size_t split_rows(std::size_t rows, Body body) {
  const auto team = static_cast<std::size_t>(omp_get_max_threads());
  const std::size_t threads = std::min({team, rows / kMinRowsPerThread, kMaxBlocks});
  if (threads <= 1 || omp_in_parallel()) return 0;
  std::exception_ptr failure;
#pragma omp parallel num_threads(static_cast<int>(threads))
  {
    omp_set_num_threads(1);
    const auto me = static_cast<std::size_t>(omp_get_thread_num());
    const auto count = static_cast<std::size_t>(omp_get_num_threads());
    const std::size_t begin = rows * me / count;
    const std::size_t end = rows * (me + 1) / count;
    try {
      if (begin < end) body(me, begin, end);
    } catch (...) {
#pragma omp critical(kortex_split_rows_failure)
      if (!failure) failure = std::current_exception();
    }
  }
  if (failure) std::rethrow_exception(failure);
  return threads;
}

}  // namespace

void forward_rows_split(const Architecture& arch, const float* params, const float* inputs, std::size_t rows,
                        float* outputs) {
  const std::size_t in = arch.inputs();
  const std::size_t out = arch.outputs();
  const std::size_t blocks = split_rows(rows, [&](std::size_t, std::size_t begin, std::size_t end) {
    forward_rows(arch, params, inputs + begin * in, end - begin, outputs + begin * out);
  });
  if (blocks == 0) forward_rows(arch, params, inputs, rows, outputs);
}

LossSums loss_rows_split(const Architecture& arch, const float* params, const float* inputs, TargetRows targets,
                         std::size_t rows, LossType loss) {
  const std::size_t in = arch.inputs();
  const std::size_t out = arch.outputs();
  // Per-block sums added in block order, so the result does not depend on
  // which thread finishes first.
  LossSums parts[kMaxBlocks];
  const std::size_t blocks = split_rows(rows, [&](std::size_t block, std::size_t begin, std::size_t end) {
    parts[block] = loss_rows(arch, params, inputs + begin * in, targets.offset(begin, out), end - begin, loss);
  });
  if (blocks == 0) return loss_rows(arch, params, inputs, targets, rows, loss);
  LossSums total;
  for (std::size_t b = 0; b < blocks; ++b) total += parts[b];
  return total;
}

namespace {

bool keeps_hidden_pre(const Architecture& arch) { return arch.hidden_activation == Activation::GELU; }
bool keeps_output_pre(const Architecture& arch, LossType loss) {
  return !loss_on_logits(loss) && arch.output_activation == Activation::GELU;
}

// Scratch for forward_keeping: every hidden activation (and pre-activation
// for GELU) and the output values.
std::size_t kept_forward_floats(const Architecture& arch, std::size_t rows, LossType loss) {
  std::size_t total = 0;
  for (std::size_t l = 0; l + 1 < arch.layers.size(); ++l) {
    const std::size_t floats = scratch_rows(rows, arch.layers[l].outputs);
    total = checked_add(total, Workspace::padded_floats(floats) * (keeps_hidden_pre(arch) ? 2 : 1), "scratch");
  }
  const std::size_t final_floats = scratch_rows(rows, arch.outputs());
  return checked_add(total, Workspace::padded_floats(final_floats) * (keeps_output_pre(arch, loss) ? 2 : 1),
                     "scratch");
}

struct KeptOutput {
  float* values;
  float* pre;  // GELU pre-activation when the loss works on outputs, else null
};

// Forward pass keeping what backpropagation needs: acts[l] is layer l's
// input (acts[0] = inputs) and pres[l] its GELU pre-activation.
KeptOutput forward_keeping(const Architecture& arch, const float* params, const float* inputs, std::size_t rows,
                           LossType loss, Workspace::Lease& lease, LayerPointers& acts, LayerPointers& pres) {
  const std::size_t n_layers = arch.layers.size();
  acts[0] = inputs;
  for (std::size_t l = 0; l + 1 < n_layers; ++l) {
    const LayerLayout& layer = arch.layers[l];
    float* a = lease.take(rows * layer.outputs);
    float* z = keeps_hidden_pre(arch) ? lease.take(rows * layer.outputs) : nullptr;
    dense(layer, params, acts[l], rows, a);
    backend::bias_activation(arch.hidden_activation, a, params + layer.biases_offset, rows, layer.outputs, z);
    acts[l + 1] = a;
    pres[l + 1] = z;
  }
  const LayerLayout& out = arch.layers.back();
  KeptOutput kept{lease.take(rows * out.outputs),
                  keeps_output_pre(arch, loss) ? lease.take(rows * out.outputs) : nullptr};
  dense(out, params, acts[n_layers - 1], rows, kept.values);
  backend::bias_activation(loss_on_logits(loss) ? Activation::Linear : arch.output_activation, kept.values,
                           params + out.biases_offset, rows, out.outputs, kept.pre);
  return kept;
}

// The loss sums and the output layer's delta.
LossSums output_delta(const Architecture& arch, const KeptOutput& kept, TargetRows targets, std::size_t rows,
                      LossType loss, float grad_scale, float* delta) {
  const LossSums sums = output_loss(arch, kept.values, targets, rows, loss, grad_scale, delta);
  if (!loss_on_logits(loss)) {
    backend::activation_backward(arch.output_activation, delta, kept.values, kept.pre, rows, arch.outputs());
  }
  return sums;
}

// delta_prev = (delta W^T) * f'(z_prev): layer l's delta carried to layer
// l - 1 (l > 0).
void delta_to_previous(const Architecture& arch, const float* params, std::size_t l, const float* delta,
                       std::size_t rows, const LayerPointers& acts, const LayerPointers& pres, float* delta_prev) {
  const LayerLayout& layer = arch.layers[l];
  backend::sgemm(false, true, rows, layer.inputs, layer.outputs, 1.0f, delta, layer.outputs,
                 params + layer.weights_offset, layer.outputs, 0.0f, delta_prev, layer.inputs);
  backend::activation_backward(arch.hidden_activation, delta_prev, acts[l], pres[l], rows, layer.inputs);
}

}  // namespace

LossSums gradient_rows(const Architecture& arch, const float* params, const float* inputs, TargetRows targets,
                       std::size_t rows, LossType loss, float grad_scale, float* grad) {
  const std::size_t n_layers = arch.layers.size();
  const std::size_t delta_floats = scratch_rows(rows, arch.max_width);
  const std::size_t total = checked_add(kept_forward_floats(arch, rows, loss),
                                        2 * Workspace::padded_floats(delta_floats), "scratch");
  auto lease = Workspace::local().acquire(total);
  LayerPointers acts(n_layers + 1);
  LayerPointers pres(n_layers + 1);
  const KeptOutput kept = forward_keeping(arch, params, inputs, rows, loss, lease, acts, pres);

  float* delta = lease.take(delta_floats);
  float* delta_prev = lease.take(delta_floats);
  const LossSums sums = output_delta(arch, kept, targets, rows, loss, grad_scale, delta);
  for (std::size_t l = n_layers; l-- > 0;) {
    const LayerLayout& layer = arch.layers[l];
    // dW = a_prev^T delta, db = column sums of delta.
    backend::sgemm(true, false, layer.inputs, layer.outputs, rows, 1.0f, acts[l], layer.inputs, delta, layer.outputs,
                   0.0f, grad + layer.weights_offset, layer.outputs);
    backend::column_sums(delta, rows, layer.outputs, grad + layer.biases_offset);
    if (l == 0) break;
    delta_to_previous(arch, params, l, delta, rows, acts, pres, delta_prev);
    std::swap(delta, delta_prev);
  }
  return sums;
}

namespace {

// Rows per block below which a step is not split: every extra block's
// gradient is a pass over the parameters to add, which pays only when the
// blocks' GEMMs are thick (docs/BENCHMARKS.md: blocks of 64 rows lost at
// 128 rows on 784-256-128-10, blocks of 16 at 32 rows on
// 1000-512-256-128-10).
constexpr std::size_t kMinRowsPerGradientBlock = 128;

}  // namespace

LossSums gradient_rows_split(const Architecture& arch, const float* params, const float* inputs, TargetRows targets,
                             std::size_t rows, LossType loss, float grad_scale, float* grad) {
  const auto team = static_cast<std::size_t>(omp_get_max_threads());
  const std::size_t wanted = std::min({team, rows / kMinRowsPerGradientBlock, kMaxBlocks});
  if (wanted <= 1 || omp_in_parallel()) {
    return gradient_rows(arch, params, inputs, targets, rows, loss, grad_scale, grad);
  }
  const std::size_t in = arch.inputs();
  const std::size_t out = arch.outputs();
  const std::size_t count = arch.parameter_count;
  LossSums parts[kMaxBlocks];
  float* partial[kMaxBlocks] = {};
  std::size_t blocks = 0;
  std::exception_ptr failure;
#pragma omp parallel num_threads(static_cast<int>(wanted))
  {
    omp_set_num_threads(1);
    const auto me = static_cast<std::size_t>(omp_get_thread_num());
    const auto threads = static_cast<std::size_t>(omp_get_num_threads());
#pragma omp single nowait
    blocks = threads;
    // Block 0 writes the caller's buffer; the others their own thread's
    // scratch. A lease's release only rewinds its thread's arena, and the
    // thread does nothing more before the region's closing barrier, so the
    // others may still read its buffer after it has left this block.
    std::optional<Workspace::Lease> scratch;
    try {
      float* mine = grad;
      if (me > 0) {
        scratch.emplace(Workspace::local().acquire(Workspace::padded_floats(count)));
        mine = scratch->take(count);
      }
      partial[me] = mine;
      const std::size_t begin = rows * me / threads;
      const std::size_t end = rows * (me + 1) / threads;
      parts[me] = gradient_rows(arch, params, inputs + begin * in, targets.offset(begin, out), end - begin, loss,
                                grad_scale, mine);
    } catch (...) {
#pragma omp critical(kortex_gradient_split_failure)
      if (!failure) failure = std::current_exception();
    }
    // Every thread arrives here, also after a failure, so nobody waits forever.
#pragma omp barrier
    if (!failure) {
      // Whole cache lines per thread, so no two threads write the same line.
      constexpr std::size_t kLine = 16;
      const std::size_t lines = (count + kLine - 1) / kLine;
      const std::size_t first = std::min(count, lines * me / threads * kLine);
      const std::size_t last = std::min(count, lines * (me + 1) / threads * kLine);
      for (std::size_t b = 1; b < threads; ++b) backend::add_into(grad + first, partial[b] + first, last - first);
    }
  }
  if (failure) std::rethrow_exception(failure);
  LossSums total;
  for (std::size_t b = 0; b < blocks; ++b) total += parts[b];
  return total;
}

namespace {

std::size_t one_row_floats(const Architecture& arch, LossType loss) {
  std::size_t total = kept_forward_floats(arch, 1, loss);
  for (const LayerLayout& layer : arch.layers) {
    total = checked_add(total, Workspace::padded_floats(layer.outputs), "scratch");
  }
  return total;
}

}  // namespace

OneRowGradient::OneRowGradient(const Architecture& arch)
    : arch_(arch),
      // Sized for the lossiest case (GELU output kept), so construction does
      // not depend on the loss.
      lease_(Workspace::local().acquire(one_row_floats(arch, LossType::MSE))),
      inputs_(arch.layers.size() + 1),
      deltas_(arch.layers.size()) {}

LossSums OneRowGradient::compute(const float* params, const float* inputs, TargetRows targets, LossType loss,
                                 float grad_scale) {
  const std::size_t n_layers = arch_.layers.size();
  LayerPointers pres(n_layers + 1);
  const KeptOutput kept = forward_keeping(arch_, params, inputs, 1, loss, lease_, inputs_, pres);
  float* delta = lease_.take(arch_.outputs());
  const LossSums sums = output_delta(arch_, kept, targets, 1, loss, grad_scale, delta);
  deltas_[n_layers - 1] = delta;
  for (std::size_t l = n_layers - 1; l > 0; --l) {
    float* delta_prev = lease_.take(arch_.layers[l].inputs);
    delta_to_previous(arch_, params, l, delta, 1, inputs_, pres, delta_prev);
    deltas_[l - 1] = delta_prev;
    delta = delta_prev;
  }
  return sums;
}

void OneRowGradient::expand(float* grad) const {
  for (std::size_t l = 0; l < arch_.layers.size(); ++l) {
    const LayerLayout& layer = arch_.layers[l];
    backend::outer_product(grad + layer.weights_offset, inputs_[l], deltas_[l], layer.inputs, layer.outputs);
    std::copy_n(deltas_[l], layer.outputs, grad + layer.biases_offset);
  }
}

}  // namespace kortexdl::detail
