#pragma once
// One row times a matrix: the products the engine makes at batch 1.
//
// At batch 1 every GEMM is a matrix-vector product of a few thousand to a
// few hundred thousand multiply-adds, and for the smaller ones the library's
// entry costs more than the arithmetic: oneDNN 2.6's dnnl_sgemm took 233 ns
// for a 1x50 by 50x10 product these kernels do in 50 ns, and on every call
// from a thread other than the process's first it locks a process-wide mutex
// (seen with gdb), so two threads making such calls on private data ran at
// 0.70-0.89x their combined single-thread rate. A 100-50-10 forward at batch
// 1 took 0.74 us in C++, nearly all of it in its two dnnl_sgemm calls; on
// these kernels 0.34 us. Layers read from L2 take them about two thirds of
// the library's time (784x256: 9.3 us in oneDNN, 7.3 here) and layers
// beyond L2 the same. docs/BENCHMARKS.md has the figures.
#include <cstddef>

namespace kortexdl::backend {

// y = alpha * x * op(B) + beta * y, x one row of k values, op(B) k x n
// (B row-major with leading dimension ldb: k x n, or n x k when transposed),
// y n values; with beta == 0, y is only written. Returns false, having done
// nothing, when this CPU lacks AVX-512 or alpha is 0 (BLAS then reads
// neither x nor B), so the caller uses the library's GEMM instead.
bool row_times_matrix(bool transpose_b, std::size_t n, std::size_t k, float alpha, const float* x, const float* b,
                      std::size_t ldb, float beta, float* y);

// Y = alpha * X * B + beta * Y for m rows of X (leading dimension ldx) and Y
// (ldy), B k x n row-major: every row of Y comes out bit for bit as
// row_times_matrix(false, ...) gives it for that row alone, with each row of
// B read once for up to four rows of X (concurrent one-row calls computed
// together, parallel/forward_batcher.hpp). Returns false, having done
// nothing, where row_times_matrix would.
bool rows_times_matrix(std::size_t m, std::size_t n, std::size_t k, float alpha, const float* x, std::size_t ldx,
                       const float* b, std::size_t ldb, float beta, float* y, std::size_t ldy);

// Whether row_times_matrix computes on this CPU (AVX-512F, probed once).
bool row_kernels_available();

}  // namespace kortexdl::backend
