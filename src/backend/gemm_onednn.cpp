#include <dnnl.h>

#include <string>

#include "backend/gemm.hpp"
#include "kortexdl/error.hpp"

namespace kortexdl::backend {

void library_sgemm(bool transpose_a, bool transpose_b, std::size_t m, std::size_t n, std::size_t k, float alpha,
                   const float* a, std::size_t lda, const float* b, std::size_t ldb, float beta, float* c,
                   std::size_t ldc) {
  const dnnl_status_t status =
      dnnl_sgemm(transpose_a ? 'T' : 'N', transpose_b ? 'T' : 'N', static_cast<dnnl_dim_t>(m),
                 static_cast<dnnl_dim_t>(n), static_cast<dnnl_dim_t>(k), alpha, a, static_cast<dnnl_dim_t>(lda), b,
                 static_cast<dnnl_dim_t>(ldb), beta, c, static_cast<dnnl_dim_t>(ldc));
  if (status != dnnl_success) {
    throw InternalError("dnnl_sgemm failed with status " + std::to_string(static_cast<int>(status)) + " for m=" +
                        std::to_string(m) + " n=" + std::to_string(n) + " k=" + std::to_string(k));
  }
}

// Its one-row product adds each column's terms in row order, one FMA chain,
// as the row kernels do.
bool library_matches_row_kernels() { return true; }

std::string_view gemm_name() { return "onednn"; }

}  // namespace kortexdl::backend
