#pragma once
// The arithmetic of a network: forward, loss and gradients for a block of
// rows, on any parameter buffer laid out by an Architecture. No locking and
// no validation here: callers (Network, the data-parallel trainer) validate
// arguments and hold the right access first. Scratch comes from the calling
// thread's Workspace.
#include <cstddef>
#include <cstdint>

#include "architecture.hpp"
#include "kortexdl/evaluation.hpp"
#include "kortexdl/loss.hpp"

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
LossSums loss_rows_split(const Architecture& arch, const float* params, const float* inputs, TargetRows targets,
                         std::size_t rows, LossType loss);

// Loss sums without gradients (evaluation).
LossSums loss_rows(const Architecture& arch, const float* params, const float* inputs, TargetRows targets,
                   std::size_t rows, LossType loss);

// Loss sums and grad = grad_scale * d(sum of losses)/d(params); grad_scale is
// 1 / rows of the whole batch so the gradients of shards of a batch add up to
// the gradient of its mean loss.
LossSums gradient_rows(const Architecture& arch, const float* params, const float* inputs, TargetRows targets,
                       std::size_t rows, LossType loss, float grad_scale, float* grad);

}  // namespace kortexdl::detail
