#include "backend/gemm.hpp"

#include <omp.h>

#include "backend/fork_gate.hpp"
#include "backend/row_product.hpp"

namespace kortexdl::backend {

void sgemm(bool transpose_a, bool transpose_b, std::size_t m, std::size_t n, std::size_t k, float alpha,
           const float* a, std::size_t lda, const float* b, std::size_t ldb, float beta, float* c,
           std::size_t ldc) {
  // With a team, the library splits a one-row product's columns between the
  // threads, so each reads only its share of B (1000-512-256-128-10 forward
  // at batch 1: 26 us on two threads, 80 us on one; its weights overflow one
  // core's L2 but not two).
  const bool single_thread = omp_in_parallel() || omp_get_max_threads() == 1;
  if (m == 1 && !transpose_a && single_thread && library_matches_row_kernels() &&
      row_times_matrix(transpose_b, n, k, alpha, a, b, ldb, beta, c)) {
    return;
  }
  const LibraryCall inside;  // fork_gate.hpp: a fork waits for it to end
  library_sgemm(transpose_a, transpose_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

}  // namespace kortexdl::backend
