// An instrumented stand-in for OpenBLAS's cblas_sgemm, linked into the test
// programs of the ThreadSanitizer build only (tests/reliability/CMakeLists.txt).
//
// Why: the TSan build uses the CBLAS backend (Debian's oneDNN links libgomp,
// which TSan cannot see through), and OpenBLAS is not compiled with
// -fsanitize=thread. With TSAN_OPTIONS=ignore_noninstrumented_modules=1 the
// weight reads inside OpenBLAS's GEMM are invisible to TSan, and the GEMM is
// where forward, evaluate and the gradient phase read almost every parameter.
// Defining cblas_sgemm in the executable interposes it (the dynamic linker
// binds libkortexdl.so's reference to the executable's definition first), so
// in the TSan build every parameter read and every gradient write is done by
// instrumented code. It is a plain loop: slow, but the concurrency tests use
// small networks, and each output element is summed in the same order for
// any number of rows (so results do not depend on the batch size, as they do
// with OpenBLAS's blocked kernels).
#include <cblas.h>

#include <atomic>
#include <cstddef>
#include <vector>

namespace {
std::atomic<unsigned long> g_calls{0};

// Element (r, c) of a row-major matrix op(X) with leading dimension ld.
inline float at(const float* x, bool transposed, std::size_t ld, std::size_t r, std::size_t c) {
  return transposed ? x[c * ld + r] : x[r * ld + c];
}

void row_major_sgemm(bool ta, bool tb, std::size_t m, std::size_t n, std::size_t k, float alpha, const float* a,
                     std::size_t lda, const float* b, std::size_t ldb, float beta, float* c, std::size_t ldc) {
  std::vector<float> acc(n);
  for (std::size_t i = 0; i < m; ++i) {
    for (std::size_t j = 0; j < n; ++j) acc[j] = 0.0f;
    for (std::size_t p = 0; p < k; ++p) {
      const float aip = at(a, ta, lda, i, p);
      if (!tb) {
        const float* brow = b + p * ldb;
        for (std::size_t j = 0; j < n; ++j) acc[j] += aip * brow[j];
      } else {
        for (std::size_t j = 0; j < n; ++j) acc[j] += aip * b[j * ldb + p];
      }
    }
    float* crow = c + i * ldc;
    for (std::size_t j = 0; j < n; ++j) {
      // BLAS semantics: with beta == 0, C is written without being read.
      crow[j] = beta == 0.0f ? alpha * acc[j] : alpha * acc[j] + beta * crow[j];
    }
  }
}
}  // namespace

extern "C" {

void cblas_sgemm(OPENBLAS_CONST enum CBLAS_ORDER order, OPENBLAS_CONST enum CBLAS_TRANSPOSE trans_a,
                 OPENBLAS_CONST enum CBLAS_TRANSPOSE trans_b, OPENBLAS_CONST blasint m, OPENBLAS_CONST blasint n,
                 OPENBLAS_CONST blasint k, OPENBLAS_CONST float alpha, OPENBLAS_CONST float* a,
                 OPENBLAS_CONST blasint lda, OPENBLAS_CONST float* b, OPENBLAS_CONST blasint ldb,
                 OPENBLAS_CONST float beta, float* c, OPENBLAS_CONST blasint ldc) {
  g_calls.fetch_add(1, std::memory_order_relaxed);
  const bool ta = trans_a != CblasNoTrans;
  const bool tb = trans_b != CblasNoTrans;
  const auto z = [](blasint v) { return static_cast<std::size_t>(v); };
  if (order == CblasRowMajor) {
    row_major_sgemm(ta, tb, z(m), z(n), z(k), alpha, a, z(lda), b, z(ldb), beta, c, z(ldc));
  } else {
    // Column-major C = op(A) op(B) is row-major C^T = op(B)^T op(A)^T.
    row_major_sgemm(tb, ta, z(n), z(m), z(k), alpha, b, z(ldb), a, z(lda), beta, c, z(ldc));
  }
}

// How many GEMMs went through this file (tests check that the interposition
// took effect).
unsigned long kortex_instrumented_gemm_calls() { return g_calls.load(std::memory_order_relaxed); }

}  // extern "C"
