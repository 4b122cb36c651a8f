#pragma once
// The one GEMM the engine needs, row-major: C = alpha * op(A) * op(B) + beta * C.
// Computed by oneDNN's dnnl_sgemm (default) or CBLAS (KORTEX_BACKEND=cblas),
// except, with oneDNN, one-row products on a single thread, which run on our
// own kernels (row_product.hpp: the library's per-call cost exceeds their
// arithmetic).
// Thread count: the calling thread's OpenMP setting (see ComputeScope).
#include <cstddef>
#include <string_view>

namespace kortexdl::backend {

void sgemm(bool transpose_a, bool transpose_b, std::size_t m, std::size_t n, std::size_t k, float alpha,
           const float* a, std::size_t lda, const float* b, std::size_t ldb, float beta, float* c,
           std::size_t ldc);

// The library's GEMM alone, for every shape (gemm_onednn.cpp or gemm_cblas.cpp).
void library_sgemm(bool transpose_a, bool transpose_b, std::size_t m, std::size_t n, std::size_t k, float alpha,
                   const float* a, std::size_t lda, const float* b, std::size_t ldb, float beta, float* c,
                   std::size_t ldc);

// Whether one-row products may go to the row kernels: only if the library
// computes a one-row forward product bit for bit as they do, so that a row
// gives the same outputs alone as within a batch (tests/test_known_answers.cpp,
// tests/test_row_product.cpp). oneDNN does; OpenBLAS adds in another order.
bool library_matches_row_kernels();

std::string_view gemm_name();

}  // namespace kortexdl::backend
