#include "engine.hpp"

#include <omp.h>

#include <algorithm>
#include <exception>
#include <stdexcept>
#include <type_traits>
#include <utility>
#include <vector>

#include "backend/gemm.hpp"
#include "backend/kernels.hpp"
#include "backend/row_product.hpp"
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

bool rows_compute_as_alone() {
  return backend::library_matches_row_kernels() && backend::row_kernels_available();
}

void forward_rows_as_alone(const Architecture& arch, const float* params, const float* inputs, std::size_t rows,
                           float* outputs, const Activation* last_activations) {
  if (!rows_compute_as_alone()) {
    throw std::logic_error("forward_rows_as_alone: rows do not compute as alone with this CPU and GEMM library");
  }
  const std::size_t hidden = arch.layers.size() > 1 ? scratch_rows(rows, arch.max_width) : 0;
  auto lease = Workspace::local().acquire(2 * Workspace::padded_floats(hidden));
  float* ping = lease.take(hidden);
  float* pong = lease.take(hidden);
  const float* current = inputs;
  for (std::size_t l = 0; l < arch.layers.size(); ++l) {
    const LayerLayout& layer = arch.layers[l];
    const bool last = l + 1 == arch.layers.size();
    float* next = last ? outputs : (current == ping ? pong : ping);
    backend::rows_times_matrix(rows, layer.outputs, layer.inputs, 1.0f, current, layer.inputs,
                               params + layer.weights_offset, layer.outputs, 0.0f, next, layer.outputs);
    if (last && last_activations != nullptr) {
      // The activations work row by row, so each row gets the bits it would get in a block.
      for (std::size_t r = 0; r < rows; ++r) {
        backend::bias_activation(last_activations[r], next + r * layer.outputs, params + layer.biases_offset, 1,
                                 layer.outputs, nullptr);
      }
    } else {
      backend::bias_activation(last ? arch.output_activation : arch.hidden_activation, next,
                               params + layer.biases_offset, rows, layer.outputs, nullptr);
    }
    current = next;
  }
}

Activation final_activation(const Architecture& arch, LossType loss) {
  return loss_on_logits(loss) ? Activation::Linear : arch.output_activation;
}

LossSums loss_of_final_values(const Architecture& arch, const float* final_values, TargetRows targets,
                              std::size_t rows, LossType loss) {
  return output_loss(arch, final_values, targets, rows, loss, 0.0f, nullptr);
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
  backend::bias_activation(final_activation(arch, loss), final_values, params + out.biases_offset, rows, out.outputs,
                           nullptr);
  return loss_of_final_values(arch, final_values, targets, rows, loss);
}

namespace {

// Below this many rows per thread a block's GEMMs get too thin to pay for
// the split.
constexpr std::size_t kMinRowsPerThread = 4;
// Blocks per split: bounds the per-block results kept on the stack.
constexpr std::size_t kMaxBlocks = 256;

// Threads a split of `rows` into blocks of at least `min_rows` rows would
// use, one block each: 0 when it is not worth splitting (a team of one, too
// few rows) or when the caller already runs inside a parallel region.
std::size_t split_threads(std::size_t rows, std::size_t min_rows) {
  const auto team = static_cast<std::size_t>(omp_get_max_threads());
  const std::size_t threads = std::min({team, rows / min_rows, kMaxBlocks});
  return threads <= 1 || omp_in_parallel() ? 0 : threads;
}

struct NothingAfter {
  void operator()(std::size_t, std::size_t) const {}
};

// Runs body(block, begin, end) on contiguous row blocks of at least
// `min_rows` rows, one per thread of the calling thread's team (inside, every
// thread's own team is one thread); then, in the same region and once every
// block has succeeded, after(block, blocks) on every thread (it must not
// throw). Returns the number of blocks, or 0 when the rows were not worth
// splitting.
template <class Body, class After = NothingAfter>
std::size_t split_rows(std::size_t rows, std::size_t min_rows, Body body, After after = {}) {
  const std::size_t threads = split_threads(rows, min_rows);
  if (threads == 0) return 0;
  std::size_t blocks = threads;
  // One slot per block instead of an `omp critical`: nothing to contend, the
  // first block's failure is the one rethrown whatever the timing, and no
  // lock of the OpenMP runtime (with a tool attached, as TSan attaches one,
  // LLVM's libomp before llvm-project PR 169826 read a released critical's
  // return address from OpenMP thread 0's record, which is gone once the
  // thread that first used OpenMP has exited: a crash; docs/RELIABILITY.md).
  std::exception_ptr failures[kMaxBlocks];
  const auto first_failure = [&failures](std::size_t count) {
    for (std::size_t b = 0; b < count; ++b)
      if (failures[b]) return failures[b];
    return std::exception_ptr{};
  };
#pragma omp parallel num_threads(static_cast<int>(threads))
  {
    omp_set_num_threads(1);
    const auto me = static_cast<std::size_t>(omp_get_thread_num());
    const auto count = static_cast<std::size_t>(omp_get_num_threads());
    if (me == 0) blocks = count;
    const std::size_t begin = rows * me / count;
    const std::size_t end = rows * (me + 1) / count;
    try {
      if (begin < end) body(me, begin, end);
    } catch (...) {
      failures[me] = std::current_exception();
    }
    if constexpr (!std::is_same_v<After, NothingAfter>) {
      // Every thread arrives here, also after a failure, so nobody waits
      // for ever.
#pragma omp barrier
      if (!first_failure(count)) after(me, count);
    }
  }
  if (const std::exception_ptr failure = first_failure(blocks)) std::rethrow_exception(failure);
  return blocks;
}

}  // namespace

void forward_rows_split(const Architecture& arch, const float* params, const float* inputs, std::size_t rows,
                        float* outputs) {
  const std::size_t in = arch.inputs();
  const std::size_t out = arch.outputs();
  const std::size_t blocks = split_rows(rows, kMinRowsPerThread, [&](std::size_t, std::size_t begin, std::size_t end) {
    forward_rows(arch, params, inputs + begin * in, end - begin, outputs + begin * out);
  });
  if (blocks == 0) forward_rows(arch, params, inputs, rows, outputs);
}

void forward_rows_as_alone_split(const Architecture& arch, const float* params, const float* inputs, std::size_t rows,
                                 float* outputs) {
  // Passes of up to 64 rows bound the scratch (64 rows of the widest layer)
  // whatever the rows; within a pass each row of weights is read once for
  // four rows instead of once for each.
  constexpr std::size_t kRowsPerPass = 64;
  const std::size_t in = arch.inputs();
  const std::size_t out = arch.outputs();
  const auto passes = [&](std::size_t, std::size_t begin, std::size_t end) {
    for (std::size_t start = begin; start < end; start += kRowsPerPass) {
      const std::size_t n = std::min(kRowsPerPass, end - start);
      forward_rows_as_alone(arch, params, inputs + start * in, n, outputs + start * out);
    }
  };
  if (split_rows(rows, kMinRowsPerThread, passes) == 0) passes(0, 0, rows);
}

LossSums loss_rows_split(const Architecture& arch, const float* params, const float* inputs, TargetRows targets,
                         std::size_t rows, LossType loss) {
  const std::size_t in = arch.inputs();
  const std::size_t out = arch.outputs();
  // Per-block sums added in block order, so the result does not depend on
  // which thread finishes first.
  LossSums parts[kMaxBlocks];
  const std::size_t blocks = split_rows(rows, kMinRowsPerThread, [&](std::size_t block, std::size_t begin,
                                                                     std::size_t end) {
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
  const std::size_t threads = split_threads(rows, kMinRowsPerGradientBlock);
  if (threads == 0) return gradient_rows(arch, params, inputs, targets, rows, loss, grad_scale, grad);
  const std::size_t in = arch.inputs();
  const std::size_t out = arch.outputs();
  const std::size_t count = arch.parameter_count;
  // Block 0 writes the caller's buffer, the others one each of this scratch.
  auto lease =
      Workspace::local().acquire(checked_mul(threads - 1, Workspace::padded_floats(count), "gradient blocks"));
  float* partial[kMaxBlocks] = {grad};
  for (std::size_t b = 1; b < threads; ++b) partial[b] = lease.take(count);
  LossSums parts[kMaxBlocks];
  const std::size_t blocks = split_rows(
      rows, kMinRowsPerGradientBlock,
      [&](std::size_t block, std::size_t begin, std::size_t end) {
        parts[block] = gradient_rows(arch, params, inputs + begin * in, targets.offset(begin, out), end - begin,
                                     loss, grad_scale, partial[block]);
      },
      [&](std::size_t me, std::size_t threads_run) {
        // Whole cache lines per thread, so no two threads write the same line.
        constexpr std::size_t kLine = 16;
        const std::size_t lines = (count + kLine - 1) / kLine;
        const std::size_t first = std::min(count, lines * me / threads_run * kLine);
        const std::size_t last = std::min(count, lines * (me + 1) / threads_run * kLine);
        for (std::size_t b = 1; b < threads_run; ++b) {
          backend::add_into(grad + first, partial[b] + first, last - first);
        }
      });
  if (blocks == 0) return gradient_rows(arch, params, inputs, targets, rows, loss, grad_scale, grad);
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
