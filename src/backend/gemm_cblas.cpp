#include <cblas.h>

#include <climits>
#include <string>

#include "backend/gemm.hpp"
#include "kortexdl/error.hpp"

namespace kortexdl::backend {

namespace {
int as_blas_int(std::size_t value, const char* what) {
  if (value > static_cast<std::size_t>(INT_MAX)) {
    throw ResourceLimitError(std::string("CBLAS backend: ") + what + " = " + std::to_string(value) +
                             " exceeds the 32-bit BLAS limit; use a smaller batch_size or the oneDNN backend");
  }
  return static_cast<int>(value);
}
}  // namespace

// OpenBLAS's threaded builds serialise concurrent level-3 calls behind one
// lock; single-threaded per call, under our budget of concurrent callers,
// they scale instead.
static void make_single_threaded() {
  static const bool once = [] {
    openblas_set_num_threads(1);
    return true;
  }();
  (void)once;
}

void library_sgemm(bool transpose_a, bool transpose_b, std::size_t m, std::size_t n, std::size_t k, float alpha,
                   const float* a, std::size_t lda, const float* b, std::size_t ldb, float beta, float* c,
                   std::size_t ldc) {
  make_single_threaded();
  cblas_sgemm(CblasRowMajor, transpose_a ? CblasTrans : CblasNoTrans, transpose_b ? CblasTrans : CblasNoTrans,
              as_blas_int(m, "m"), as_blas_int(n, "n"), as_blas_int(k, "k"), alpha, a, as_blas_int(lda, "lda"), b,
              as_blas_int(ldb, "ldb"), beta, c, as_blas_int(ldc, "ldc"));
}

// OpenBLAS's kernels for a few rows add in another order than the row
// kernels, so a row alone would not match the same row in a batch.
bool library_matches_row_kernels() { return false; }

std::string_view gemm_name() { return "cblas"; }

}  // namespace kortexdl::backend
