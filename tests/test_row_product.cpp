// The one-row kernels (backend/row_product.hpp) against a double-precision
// product, on shapes around every vector and block boundary. The matrices
// are sized exactly, so a read past one is an AddressSanitizer report in the
// sanitizer build; row padding holds NaN, so a read of it shows in y.
#include <gtest/gtest.h>

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "backend/gemm.hpp"
#include "backend/row_product.hpp"
#include "test_support.hpp"

namespace {

using kortexdl::backend::row_kernels_available;
using kortexdl::backend::row_times_matrix;
using kortexdl::backend::rows_times_matrix;

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kSentinel = -12345.0f;

struct Shape {
  bool transpose_b;
  std::size_t n, k, padding;
};

// B as the kernels see it: `rows` rows of `cols` values, ldb apart, NaN in
// the padding, and nothing allocated after the last value.
struct Matrix {
  std::size_t rows, cols, ldb;
  std::vector<float> values;
  Matrix(std::size_t r, std::size_t c, std::size_t padding, std::uint32_t seed)
      : rows(r), cols(c), ldb(c + padding), values(r == 0 ? 0 : (r - 1) * (c + padding) + c, kNaN) {
    const std::vector<float> random = kortex_test::normal_floats(r * c, seed);
    for (std::size_t i = 0; i < r; ++i) {
      for (std::size_t j = 0; j < c; ++j) values[i * ldb + j] = random[i * c + j];
    }
  }
  float at(std::size_t i, std::size_t j) const { return values[i * ldb + j]; }
};

std::string describe(const Shape& s, float alpha, float beta) {
  return std::string(s.transpose_b ? "x * B^T" : "x * B") + " n=" + std::to_string(s.n) + " k=" +
         std::to_string(s.k) + " padding=" + std::to_string(s.padding) + " alpha=" + std::to_string(alpha) +
         " beta=" + std::to_string(beta);
}

// Runs one product and checks every output against the double-precision
// result, and that nothing after y[n) was written.
void check_product(const Shape& s, float alpha, float beta, std::uint32_t seed) {
  const Matrix b = s.transpose_b ? Matrix(s.n, s.k, s.padding, seed) : Matrix(s.k, s.n, s.padding, seed);
  const std::vector<float> x = kortex_test::normal_floats(s.k, seed + 1);
  std::vector<float> y_before = kortex_test::normal_floats(s.n, seed + 2);
  if (beta == 0.0f) y_before.assign(s.n, kNaN);  // beta = 0: y must not be read
  std::vector<float> y = y_before;
  y.push_back(kSentinel);

  ASSERT_TRUE(row_times_matrix(s.transpose_b, s.n, s.k, alpha, x.data(), b.values.data(), b.ldb, beta, y.data()))
      << describe(s, alpha, beta);

  for (std::size_t j = 0; j < s.n; ++j) {
    double exact = 0.0;
    double magnitude = 0.0;
    for (std::size_t i = 0; i < s.k; ++i) {
      const double term = static_cast<double>(x[i]) * (s.transpose_b ? b.at(j, i) : b.at(i, j));
      exact += term;
      magnitude += std::fabs(term);
    }
    exact *= alpha;
    magnitude *= std::fabs(alpha);
    if (beta != 0.0f) {
      exact += static_cast<double>(beta) * y_before[j];
      magnitude += std::fabs(static_cast<double>(beta) * y_before[j]);
    }
    const double tolerance = 1e-6 * (static_cast<double>(s.k) + 2.0) * magnitude + 1e-30;
    ASSERT_TRUE(std::isfinite(y[j])) << describe(s, alpha, beta) << " y[" << j << "]";
    ASSERT_NEAR(y[j], exact, tolerance) << describe(s, alpha, beta) << " y[" << j << "]";
  }
  EXPECT_EQ(y[s.n], kSentinel) << describe(s, alpha, beta) << ": wrote past y";
}

TEST(RowProduct, MatchesTheExactProductAroundEveryBoundary) {
  if (!row_kernels_available()) GTEST_SKIP() << "no AVX-512 here: sgemm uses the library for every shape";
  // Columns: one lane, a vector and one more, the 16-vector block and one
  // more, two blocks and a tail; rows: none, one, a vector's worth and more.
  const std::size_t widths[] = {1, 5, 16, 17, 50, 128, 255, 256, 257, 300, 513};
  const std::size_t depths[] = {0, 1, 3, 16, 17, 100};
  std::uint32_t seed = 1;
  for (const bool transpose_b : {false, true}) {
    for (const std::size_t n : widths) {
      for (const std::size_t k : depths) {
        for (const std::size_t padding : {std::size_t{0}, std::size_t{3}}) {
          const Shape shape{transpose_b, n, k, padding};
          check_product(shape, 1.0f, 0.0f, seed++);
          check_product(shape, 2.0f, 0.5f, seed++);
          check_product(shape, -0.5f, 1.0f, seed++);
          if (HasFatalFailure()) return;
        }
      }
    }
  }
}

// Several rows at once (concurrent one-row calls computed together): every
// row of Y must come out exactly as that row alone, whatever the number of
// rows, and nothing outside the m x n block of Y may be written.
TEST(RowProduct, SeveralRowsGiveEachRowsOneRowResultBitForBit) {
  if (!row_kernels_available()) GTEST_SKIP() << "no AVX-512 here: sgemm uses the library for every shape";
  const std::size_t widths[] = {1, 5, 16, 17, 63, 64, 65, 130, 256, 513};
  const std::size_t depths[] = {0, 1, 3, 17, 100, 784};
  std::uint32_t seed = 1000;
  for (const std::size_t n : widths) {
    for (const std::size_t k : depths) {
      for (const std::size_t m : {1, 2, 3, 4, 5, 7, 8, 9, 16}) {
        for (const auto& [alpha, beta] : {std::pair<float, float>{1.0f, 0.0f}, {-0.5f, 1.0f}}) {
          const std::string shape = "m=" + std::to_string(m) + " n=" + std::to_string(n) + " k=" +
                                    std::to_string(k) + " alpha=" + std::to_string(alpha);
          const Matrix b(k, n, 3, seed++);
          const std::size_t ldx = k + 2;
          const std::size_t ldy = n + 5;
          std::vector<float> x = kortex_test::normal_floats(m * ldx, seed++);
          std::vector<float> y_before = kortex_test::normal_floats(m * ldy, seed++);
          for (std::size_t r = 0; r < m; ++r) {
            for (std::size_t j = n; j < ldy; ++j) y_before[r * ldy + j] = kSentinel;
          }
          if (beta == 0.0f) {
            for (std::size_t r = 0; r < m; ++r) std::fill_n(y_before.begin() + r * ldy, n, kNaN);
          }
          std::vector<float> y = y_before;
          ASSERT_TRUE(rows_times_matrix(m, n, k, alpha, x.data(), ldx, b.values.data(), b.ldb, beta, y.data(), ldy))
              << shape;
          for (std::size_t r = 0; r < m; ++r) {
            std::vector<float> alone(y_before.begin() + r * ldy, y_before.begin() + r * ldy + n);
            ASSERT_TRUE(row_times_matrix(false, n, k, alpha, x.data() + r * ldx, b.values.data(), b.ldb, beta,
                                         alone.data()));
            const std::vector<float> together(y.begin() + r * ldy, y.begin() + r * ldy + n);
            ASSERT_TRUE(kortex_test::BitwiseEqual(together, alone)) << shape << " row " << r;
            for (std::size_t j = n; j < ldy; ++j) ASSERT_EQ(y[r * ldy + j], kSentinel) << shape << ": wrote past a row";
          }
        }
      }
    }
  }
  std::vector<float> y(2, 7.0f);
  const std::vector<float> one(4, 1.0f);
  EXPECT_FALSE(rows_times_matrix(2, 1, 2, 0.0f, one.data(), 2, one.data(), 1, 1.0f, y.data(), 1))
      << "alpha = 0 is the library's to handle";
  EXPECT_EQ(y, (std::vector<float>{7.0f, 7.0f}));
}

TEST(RowProduct, DeclinesWithoutAVX512OrWithAZeroAlpha) {
  const std::vector<float> x = {1.0f, 2.0f};
  const std::vector<float> b = {1.0f, 2.0f, 3.0f, 4.0f};
  std::vector<float> y = {7.0f, 8.0f};
  // alpha = 0: BLAS reads neither x nor B (a NaN there must not show), which
  // the library does; the kernels leave it to the library.
  EXPECT_FALSE(row_times_matrix(false, 2, 2, 0.0f, x.data(), b.data(), 2, 1.0f, y.data()));
  EXPECT_EQ(y, (std::vector<float>{7.0f, 8.0f}));
  EXPECT_EQ(row_times_matrix(false, 2, 2, 1.0f, x.data(), b.data(), 2, 0.0f, y.data()), row_kernels_available());
}

// The engine's entry point on one thread: with oneDNN, one-row products go
// to the kernels (the transposed ones add in another order than the library,
// so they show which ran), and the forward product is the same bit for bit
// as oneDNN's: the kernels changed no forward output. With CBLAS, they go to
// the library. Either way they agree with the library's GEMM.
TEST(RowProduct, SgemmOfOneRowRunsTheKernelsAndAgreesWithTheLibrary) {
  using kortexdl::backend::library_sgemm;
  using kortexdl::backend::sgemm;
  if (!row_kernels_available()) GTEST_SKIP() << "no AVX-512 here: sgemm uses the library for every shape";
  const bool routed = kortexdl::backend::library_matches_row_kernels();
  struct OneThread {
    int before = omp_get_max_threads();
    OneThread() { omp_set_num_threads(1); }
    ~OneThread() { omp_set_num_threads(before); }
  } one_thread;
  for (const auto& [n, k] : {std::pair<std::size_t, std::size_t>{256, 784}, {10, 128}, {50, 100}, {512, 1000}}) {
    const std::vector<float> x = kortex_test::normal_floats(k, 7);
    const std::vector<float> w = kortex_test::normal_floats(k * n, 8);
    const std::vector<float> d = kortex_test::normal_floats(n, 9);
    std::vector<float> ours(n), library(n), ours_t(k), library_t(k), kernel_t(k);
    // Forward: one input row times the layer's k x n weights.
    sgemm(false, false, 1, n, k, 1.0f, x.data(), k, w.data(), n, 0.0f, ours.data(), n);
    library_sgemm(false, false, 1, n, k, 1.0f, x.data(), k, w.data(), n, 0.0f, library.data(), n);
    // Backward: one delta row times the weights transposed.
    sgemm(false, true, 1, k, n, 1.0f, d.data(), n, w.data(), n, 0.0f, ours_t.data(), k);
    library_sgemm(false, true, 1, k, n, 1.0f, d.data(), n, w.data(), n, 0.0f, library_t.data(), k);
    ASSERT_TRUE(row_times_matrix(true, k, n, 1.0f, d.data(), w.data(), n, 0.0f, kernel_t.data()));

    const std::string shape = "n=" + std::to_string(n) + " k=" + std::to_string(k);
    if (routed) {
      EXPECT_TRUE(kortex_test::BitwiseEqual(ours_t, kernel_t)) << shape << ": sgemm did not run the kernel";
      EXPECT_TRUE(kortex_test::BitwiseEqual(ours, library)) << shape << ": the library adds in another order";
    } else {
      EXPECT_TRUE(kortex_test::BitwiseEqual(ours_t, library_t)) << shape << ": sgemm did not run the library";
    }
    for (std::size_t j = 0; j < n; ++j) {
      ASSERT_NEAR(ours[j], library[j], 1e-4f * (1.0f + std::fabs(library[j]))) << shape;
    }
    for (std::size_t i = 0; i < k; ++i) {
      ASSERT_NEAR(ours_t[i], library_t[i], 1e-4f * (1.0f + std::fabs(library_t[i]))) << shape;
    }
  }
}

}  // namespace
