#pragma once
// The one GEMM the engine needs, row-major: C = alpha * op(A) * op(B) + beta * C.
// Implemented by oneDNN's dnnl_sgemm (default) or CBLAS (KORTEX_BACKEND=cblas).
// Thread count: the calling thread's OpenMP setting (see ComputeScope).
#include <cstddef>
#include <string_view>

namespace kortexdl::backend {

void sgemm(bool transpose_a, bool transpose_b, std::size_t m, std::size_t n, std::size_t k, float alpha,
           const float* a, std::size_t lda, const float* b, std::size_t ldb, float beta, float* c,
           std::size_t ldc);

std::string_view gemm_name();

}  // namespace kortexdl::backend
