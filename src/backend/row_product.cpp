#include "backend/row_product.hpp"

#include <algorithm>
#include <array>
#include <utility>

#if defined(__x86_64__) && defined(__GNUC__)
#if !defined(__clang__)
// GCC 12's AVX-512 headers seed their shuffles with a self-initialised
// variable, which -Wuninitialized reports wherever they inline (GCC bug
// 105593, fixed in 13).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>
#define KORTEX_ROW_KERNELS 1
#define KORTEX_AVX512 __attribute__((target("avx512f")))
#else
#define KORTEX_ROW_KERNELS 0
#endif

namespace kortexdl::backend {

#if KORTEX_ROW_KERNELS
namespace {

constexpr std::size_t kLanes = 16;
// Vectors of y per pass over x (256 columns): each is a chain of dependent
// multiply-adds, and 8 or more chains (2 FMA units x 4 cycles) keep the
// units busy; 16 leave registers for the loads.
constexpr int kMaxVectors = 16;

// The lanes of a row's last, partial vector. Masked loads never touch the
// lanes left out, so no read goes past a row or the matrix.
KORTEX_AVX512 inline __mmask16 first_lanes(std::size_t count) {
  return count >= kLanes ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << count) - 1u);
}

// y = alpha * sum + beta * y on `lanes`; with beta == 0, y is not read.
KORTEX_AVX512 inline void store(float* y, __m512 sum, float alpha, float beta, __mmask16 lanes) {
  __m512 out = _mm512_mul_ps(_mm512_set1_ps(alpha), sum);
  if (beta != 0.0f) out = _mm512_fmadd_ps(_mm512_set1_ps(beta), _mm512_maskz_loadu_ps(lanes, y), out);
  _mm512_mask_storeu_ps(y, lanes, out);
}

// acc += xi * the V x 16 values of `row`, the last vector limited to `last`.
// No software prefetch: the hardware's keeps up with one row after the
// other, and a prefetch per cache line took load slots from the loads (the
// 784x256 and 512x256 products 5-10% slower with one two rows ahead).
template <int V>
KORTEX_AVX512 inline __attribute__((always_inline)) void add_row(__m512 (&acc)[V], float xi, const float* row,
                                                                 __mmask16 last) {
  const __m512 scale = _mm512_set1_ps(xi);
  for (int v = 0; v + 1 < V; ++v) acc[v] = _mm512_fmadd_ps(scale, _mm512_loadu_ps(row + kLanes * v), acc[v]);
  acc[V - 1] = _mm512_fmadd_ps(scale, _mm512_maskz_loadu_ps(last, row + kLanes * (V - 1)), acc[V - 1]);
}

// y[0, 16V), the last vector limited to `last` lanes: x times the V x 16
// columns of B starting at b, one row of B after the other. Each column
// adds its products in row order, one chain, as oneDNN's one-row product
// does (and its few-row products when k is small), so the outputs are
// oneDNN's bit for bit and a row comes out the same alone or in a batch
// (tests/test_row_product.cpp, tests/test_known_answers.cpp). Dealing the
// rows to several chains would hide the FMA latency on narrow layers, at
// the price of those bits.
template <int V>
KORTEX_AVX512 void columns_block(std::size_t k, const float* x, const float* b, std::size_t ldb, __mmask16 last,
                                 float alpha, float beta, float* y) {
  // The loops over acc are unrolled, so that every index is a constant: with
  // a variable one GCC 12 kept acc in memory and stored all V vectors to the
  // stack after every row of B (784-256-128-10's first layer at batch 1: 9.0
  // us, unrolled 6.3).
  __m512 acc[V];
#pragma GCC unroll 16
  for (int v = 0; v < V; ++v) acc[v] = _mm512_setzero_ps();
  for (std::size_t i = 0; i < k; ++i) add_row<V>(acc, x[i], b + i * ldb, last);
#pragma GCC unroll 16
  for (int v = 0; v < V; ++v) store(y + kLanes * v, acc[v], alpha, beta, v + 1 == V ? last : first_lanes(kLanes));
}

using ColumnsBlock = void (*)(std::size_t, const float*, const float*, std::size_t, __mmask16, float, float, float*);

template <int... Less>
constexpr std::array<ColumnsBlock, sizeof...(Less)> columns_blocks(std::integer_sequence<int, Less...>) {
  return {&columns_block<Less + 1>...};
}

// Calls block(j, vectors, last) for n columns in blocks of at most
// max_vectors vectors: columns [j, j + 16 * vectors), the last vector
// limited to `last`'s lanes.
template <class Block>
KORTEX_AVX512 inline __attribute__((always_inline)) void for_column_blocks(std::size_t n, std::size_t max_vectors,
                                                                           Block&& block) {
  const std::size_t block_columns = kLanes * max_vectors;
  for (std::size_t j = 0; j < n; j += block_columns) {
    const std::size_t columns = std::min(block_columns, n - j);
    const std::size_t vectors = (columns + kLanes - 1) / kLanes;
    block(j, vectors, first_lanes(columns - kLanes * (vectors - 1)));
  }
}

KORTEX_AVX512 void row_times_columns(std::size_t n, std::size_t k, float alpha, const float* x, const float* b,
                                     std::size_t ldb, float beta, float* y) {
  static constexpr auto blocks = columns_blocks(std::make_integer_sequence<int, kMaxVectors>{});
  for_column_blocks(n, kMaxVectors, [&](std::size_t j, std::size_t vectors, __mmask16 last) {
    blocks[vectors - 1](k, x, b + j, ldb, last, alpha, beta, y + j);
  });
}

// columns_block for R rows of x at once: each column of each row adds its
// products in the same order, one chain, so every row's outputs are
// columns_block's bit for bit, while each vector of B loaded serves R rows.
template <int R, int V>
KORTEX_AVX512 void rows_columns_block(std::size_t k, const float* x, std::size_t ldx, const float* b,
                                      std::size_t ldb, __mmask16 last, float alpha, float beta, float* y,
                                      std::size_t ldy) {
  __m512 acc[R][V];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 16
    for (int v = 0; v < V; ++v) acc[r][v] = _mm512_setzero_ps();
  }
  for (std::size_t i = 0; i < k; ++i) {
    const float* row = b + i * ldb;
    __m512 columns[V];
#pragma GCC unroll 16
    for (int v = 0; v < V; ++v) {
      columns[v] = v + 1 == V ? _mm512_maskz_loadu_ps(last, row + kLanes * v) : _mm512_loadu_ps(row + kLanes * v);
    }
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      const __m512 scale = _mm512_set1_ps(x[r * ldx + i]);
#pragma GCC unroll 16
      for (int v = 0; v < V; ++v) acc[r][v] = _mm512_fmadd_ps(scale, columns[v], acc[r][v]);
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 16
    for (int v = 0; v < V; ++v) {
      store(y + r * ldy + kLanes * v, acc[r][v], alpha, beta, v + 1 == V ? last : first_lanes(kLanes));
    }
  }
}

// Four vectors of B per pass: 16 accumulators for four rows of x, leaving
// registers for B's vectors. Measured on the 1000x512 layer against four
// rows x six vectors and three x eight (kortexdl_bench_row_product rows/,
// three alternating rounds): eight rows 123-129 us, 116-123 us and
// 163-195 us; the loops must unroll fully, or GCC keeps acc in memory.
constexpr int kRowsPerPass = 4;
constexpr int kVectorsPerPass = 4;

// Y's columns [j, j + 16V) for all m rows, four rows of X at a time: the
// k x 16V block of B (256 KB for k = 1000) stays in L2 for every pass after
// the first.
template <int V>
KORTEX_AVX512 void rows_columns(std::size_t m, std::size_t k, float alpha, const float* x, std::size_t ldx,
                                const float* b, std::size_t ldb, __mmask16 last, float beta, float* y,
                                std::size_t ldy) {
  std::size_t r = 0;
  for (; r + kRowsPerPass <= m; r += kRowsPerPass) {
    rows_columns_block<kRowsPerPass, V>(k, x + r * ldx, ldx, b, ldb, last, alpha, beta, y + r * ldy, ldy);
  }
  switch (m - r) {
    case 1: rows_columns_block<1, V>(k, x + r * ldx, ldx, b, ldb, last, alpha, beta, y + r * ldy, ldy); break;
    case 2: rows_columns_block<2, V>(k, x + r * ldx, ldx, b, ldb, last, alpha, beta, y + r * ldy, ldy); break;
    case 3: rows_columns_block<3, V>(k, x + r * ldx, ldx, b, ldb, last, alpha, beta, y + r * ldy, ldy); break;
    default: break;
  }
}

using RowsColumns = void (*)(std::size_t, std::size_t, float, const float*, std::size_t, const float*, std::size_t,
                            __mmask16, float, float*, std::size_t);

template <int... Less>
constexpr std::array<RowsColumns, sizeof...(Less)> rows_columns_table(std::integer_sequence<int, Less...>) {
  return {&rows_columns<Less + 1>...};
}

KORTEX_AVX512 void rows_times_columns(std::size_t m, std::size_t n, std::size_t k, float alpha, const float* x,
                                      std::size_t ldx, const float* b, std::size_t ldb, float beta, float* y,
                                      std::size_t ldy) {
  static constexpr auto blocks = rows_columns_table(std::make_integer_sequence<int, kVectorsPerPass>{});
  for_column_blocks(n, kVectorsPerPass, [&](std::size_t j, std::size_t vectors, __mmask16 last) {
    blocks[vectors - 1](m, k, alpha, x, ldx, b + j, ldb, last, beta, y + j, ldy);
  });
}

// acc[r]: the lane-wise partial sums of x . B[r, 0:k), for R rows of B
// starting at b.
template <int R>
KORTEX_AVX512 inline __attribute__((always_inline)) void dot_rows(std::size_t k, const float* x, const float* b,
                                                                  std::size_t ldb, __m512 (&acc)[R]) {
  for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_ps();
  std::size_t j = 0;
  for (; j + kLanes <= k; j += kLanes) {
    const __m512 xv = _mm512_loadu_ps(x + j);
    for (int r = 0; r < R; ++r) acc[r] = _mm512_fmadd_ps(_mm512_loadu_ps(b + r * ldb + j), xv, acc[r]);
  }
  if (j < k) {
    const __mmask16 lanes = first_lanes(k - j);
    const __m512 xv = _mm512_maskz_loadu_ps(lanes, x + j);
    for (int r = 0; r < R; ++r) acc[r] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(lanes, b + r * ldb + j), xv, acc[r]);
  }
}

// Lane r of the result: the sum of acc[r]'s lanes. Halving 16 vectors
// together takes 15 additions where summing each alone takes 64.
KORTEX_AVX512 inline __m512 lane_sums(const __m512 (&acc)[kLanes]) {
  __m512 halves[8];  // quarters: row 2i's two halves added, then row 2i+1's
  for (int i = 0; i < 8; ++i) {
    halves[i] = _mm512_add_ps(_mm512_shuffle_f32x4(acc[2 * i], acc[2 * i + 1], 0x44),
                              _mm512_shuffle_f32x4(acc[2 * i], acc[2 * i + 1], 0xEE));
  }
  __m512 quarters[4];  // quarter q: row 4i + q's four partial sums
  for (int i = 0; i < 4; ++i) {
    quarters[i] = _mm512_add_ps(_mm512_shuffle_f32x4(halves[2 * i], halves[2 * i + 1], 0x88),
                                _mm512_shuffle_f32x4(halves[2 * i], halves[2 * i + 1], 0xDD));
  }
  // Within each quarter q: rows q, 4 + q (then 8 + q, 12 + q), two partials each.
  const __m512 low = _mm512_add_ps(_mm512_unpacklo_ps(quarters[0], quarters[1]),
                                   _mm512_unpackhi_ps(quarters[0], quarters[1]));
  const __m512 high = _mm512_add_ps(_mm512_unpacklo_ps(quarters[2], quarters[3]),
                                    _mm512_unpackhi_ps(quarters[2], quarters[3]));
  // Quarter q: the sums of rows q, 8 + q, 4 + q, 12 + q.
  const __m512 sums = _mm512_add_ps(_mm512_unpacklo_ps(low, high), _mm512_unpackhi_ps(low, high));
  return _mm512_permutexvar_ps(_mm512_setr_epi32(0, 4, 8, 12, 2, 6, 10, 14, 1, 5, 9, 13, 3, 7, 11, 15), sums);
}

KORTEX_AVX512 void row_times_rows(std::size_t n, std::size_t k, float alpha, const float* x, const float* b,
                                  std::size_t ldb, float beta, float* y) {
  std::size_t r = 0;
  for (; r + kLanes <= n; r += kLanes) {
    __m512 acc[kLanes];
    dot_rows<kLanes>(k, x, b + r * ldb, ldb, acc);
    store(y + r, lane_sums(acc), alpha, beta, first_lanes(kLanes));
  }
  for (; r < n; ++r) {
    __m512 acc[1];
    dot_rows<1>(k, x, b + r * ldb, ldb, acc);
    store(y + r, _mm512_set1_ps(_mm512_reduce_add_ps(acc[0])), alpha, beta, first_lanes(1));
  }
}

}  // namespace

bool row_kernels_available() {
  static const bool available = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") != 0;
  }();
  return available;
}

bool row_times_matrix(bool transpose_b, std::size_t n, std::size_t k, float alpha, const float* x, const float* b,
                      std::size_t ldb, float beta, float* y) {
  if (alpha == 0.0f || !row_kernels_available()) return false;
  if (transpose_b) {
    row_times_rows(n, k, alpha, x, b, ldb, beta, y);
  } else {
    row_times_columns(n, k, alpha, x, b, ldb, beta, y);
  }
  return true;
}

bool rows_times_matrix(std::size_t m, std::size_t n, std::size_t k, float alpha, const float* x, std::size_t ldx,
                       const float* b, std::size_t ldb, float beta, float* y, std::size_t ldy) {
  if (alpha == 0.0f || !row_kernels_available()) return false;
  rows_times_columns(m, n, k, alpha, x, ldx, b, ldb, beta, y, ldy);
  return true;
}

#else

bool row_kernels_available() { return false; }

bool rows_times_matrix(std::size_t, std::size_t, std::size_t, float, const float*, std::size_t, const float*,
                       std::size_t, float, float*, std::size_t) {
  return false;
}

bool row_times_matrix(bool, std::size_t, std::size_t, float, const float*, const float*, std::size_t, float, float*) {
  return false;
}

#endif

}  // namespace kortexdl::backend
