#pragma once
// The arithmetic of a network: forward, loss and gradients for a block of
// rows, on any parameter buffer laid out by an Architecture. No locking and
// no validation here: callers (Network, the data-parallel trainer) validate
// arguments and hold the right access first. Scratch comes from the calling
// thread's Workspace.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "architecture.hpp"
#include "kortexdl/evaluation.hpp"
#include "kortexdl/loss.hpp"
#include "workspace.hpp"

namespace kortexdl::detail {

// Targets for a block of rows: exactly one pointer is set.
struct TargetRows {
  const float* values = nullptr;       // rows x outputs
  const std::int32_t* labels = nullptr;  // rows
  TargetRows offset(std::size_t rows, std::size_t outputs) const {
    return values != nullptr ? TargetRows{values + rows * outputs, nullptr} : TargetRows{nullptr, labels + rows};
  }
};

struct LossSums {
  double loss = 0.0;        // sum of per-sample losses
  std::size_t correct = 0;  // CE: samples; BCE: output elements
  LossSums& operator+=(const LossSums& other) {
    loss += other.loss;
    correct += other.correct;
    return *this;
  }
};

// evaluate()'s result from loss sums over `rows` samples.
Evaluation to_evaluation(const LossSums& sums, std::size_t rows, std::size_t outputs, LossType loss);
// Rows per evaluation chunk: batch_size, or a bounded default when it is 0.
std::size_t evaluation_chunk(std::size_t batch_size, std::size_t rows);

// outputs = network(inputs), rows x outputs.
void forward_rows(const Architecture& arch, const float* params, const float* inputs, std::size_t rows,
                  float* outputs);

// The same results, with the rows split into one block per thread of the
// calling thread's OpenMP team, each block computed single-threaded: one
// fork/join per call instead of one per GEMM and kernel, and every GEMM keeps
// its full width. Falls back to the single-threaded versions for one thread
// or few rows.
void forward_rows_split(const Architecture& arch, const float* params, const float* inputs, std::size_t rows,
                        float* outputs);
// forward_rows on one thread, with every row's outputs bit for bit what
// forward_rows gives for that row alone (one thread): each layer's rows go
// through backend::rows_times_matrix. Row i's last layer applies
// last_activations[i] (the network's output activation when null), so rows
// of forward calls and of evaluations (final_activation) share one pass.
// Only where rows_compute_as_alone(); elsewhere (no AVX-512, or a GEMM
// library that adds in another order) nothing can promise that, and it
// throws std::logic_error.
void forward_rows_as_alone(const Architecture& arch, const float* params, const float* inputs, std::size_t rows,
                           float* outputs, const Activation* last_activations = nullptr);
bool rows_compute_as_alone();
// forward_rows_as_alone over any number of rows, split into one block per
// thread of the calling thread's team like forward_rows_split: the results
// of chunks of one row (forward_batch with batch_size 1) without reading
// every weight once per row.
void forward_rows_as_alone_split(const Architecture& arch, const float* params, const float* inputs, std::size_t rows,
                                 float* outputs);

LossSums loss_rows_split(const Architecture& arch, const float* params, const float* inputs, TargetRows targets,
                         std::size_t rows, LossType loss);

// What the last layer applies before `loss` reads its values: nothing for
// the losses computed on logits (their activation is fused into them).
Activation final_activation(const Architecture& arch, LossType loss);
// Loss sums of rows whose last layer's values (through final_activation)
// are known.
LossSums loss_of_final_values(const Architecture& arch, const float* final_values, TargetRows targets,
                              std::size_t rows, LossType loss);

// Loss sums without gradients (evaluation).
LossSums loss_rows(const Architecture& arch, const float* params, const float* inputs, TargetRows targets,
                   std::size_t rows, LossType loss);

// Loss sums and grad = grad_scale * d(sum of losses)/d(params); grad_scale is
// 1 / rows of the whole batch so the gradients of shards of a batch add up to
// the gradient of its mean loss.
LossSums gradient_rows(const Architecture& arch, const float* params, const float* inputs, TargetRows targets,
                       std::size_t rows, LossType loss, float grad_scale, float* grad);

// The same loss sums and gradient (up to rounding: the blocks' gradients are
// added in block order) with the rows split into one block per thread of
// the calling thread's team, each block computed single-threaded into a
// buffer of its own, after which the threads add the buffers up, each over
// its part of the parameters (the same region: split_rows in engine.cpp). A
// step is one parallel region instead of one per GEMM and kernel: on a
// virtual machine every region whose team has gone to sleep costs a wake-up
// (docs/BENCHMARKS.md). Falls back to
// gradient_rows for one thread or few rows. For a given team size the result
// is deterministic.
LossSums gradient_rows_split(const Architecture& arch, const float* params, const float* inputs, TargetRows targets,
                             std::size_t rows, LossType loss, float grad_scale, float* grad);

// One pointer per layer (or per layer boundary): on the stack for typical
// depths, so a call allocates nothing.
class LayerPointers {
 public:
  explicit LayerPointers(std::size_t count) : heap_(count > kInline ? count : 0) {}
  const float*& operator[](std::size_t l) { return heap_.empty() ? inline_[l] : heap_[l]; }
  const float* operator[](std::size_t l) const { return heap_.empty() ? inline_[l] : heap_[l]; }

 private:
  static constexpr std::size_t kInline = 17;
  const float* inline_[kInline] = {};
  std::vector<const float*> heap_;
};

// The gradient of a one-row step, kept as factors: layer l's weight gradient
// is the outer product input(l) x delta(l) (inputs x outputs, the weights'
// layout) and its bias gradient is delta(l). Written out, that outer product
// is a full parameter-sized buffer that the finite check and the update read
// back: three passes over the parameters' bytes, at batch 1 more than half of
// a large network's step. The one-row update (apply_one_row_update) forms
// each row of it in L1 instead. Scratch stays leased while the object lives.
class OneRowGradient {
 public:
  explicit OneRowGradient(const Architecture& arch);
  // The same loss sums and, expanded, the same gradient as gradient_rows
  // for one row.
  LossSums compute(const float* params, const float* inputs, TargetRows targets, LossType loss, float grad_scale);
  const float* input(std::size_t layer) const { return inputs_[layer]; }
  const float* delta(std::size_t layer) const { return deltas_[layer]; }
  // Writes the gradient out in gradient_rows' layout (for the rare steps
  // that need the full check).
  void expand(float* grad) const;

 private:
  const Architecture& arch_;
  Workspace::Lease lease_;
  LayerPointers inputs_;  // inputs_[l]: layer l's input row
  LayerPointers deltas_;  // deltas_[l]: d(loss)/d(layer l's pre-activation), times grad_scale
};

}  // namespace kortexdl::detail
