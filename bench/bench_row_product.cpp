// Batch-1 products: the row kernels (src/backend/row_product.hpp) against
// the library's GEMM on the layer shapes of the benchmark networks, on one
// thread and on two threads with data of their own (which shows what the
// library's per-call locking costs when threads call at once).
//
//   build/bench/kortexdl_bench_row_product --benchmark_filter=forward
//
// Names: {forward|backward}/<inputs>x<outputs>/{kernel|library}/threads:N;
// forward is one row times the layer's inputs x outputs weights, backward
// one delta row times them transposed (training at batch 1).
// rows/<inputs>x<outputs>/<m>/{kernel|library}: m rows times the weights,
// one thread (rows_times_matrix: concurrent one-row forward calls computed
// together, parallel/forward_batcher.hpp); items are rows.
#include <benchmark/benchmark.h>
#include <omp.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "backend/gemm.hpp"
#include "backend/row_product.hpp"
#include "bench_data.hpp"

namespace {

using kortexdl::bench::AlignedFloats;

struct Layer {
  std::size_t inputs, outputs;
};

// Every layer of 100-50-10, 784-256-128-10 and 1000-512-256-128-10.
constexpr Layer kLayers[] = {{100, 50}, {50, 10},   {784, 256}, {256, 128},
                             {128, 10}, {1000, 512}, {512, 256}};

void product(benchmark::State& state, Layer layer, bool backward, bool kernel) {
  omp_set_num_threads(1);  // as the engine's calls at batch 1: one thread each
  const std::size_t k = backward ? layer.outputs : layer.inputs;
  const std::size_t n = backward ? layer.inputs : layer.outputs;
  // Per benchmark thread: the threads share nothing but the code.
  const auto thread = static_cast<std::uint64_t>(state.thread_index());
  const AlignedFloats weights(layer.inputs * layer.outputs, 1 + thread);
  const AlignedFloats row(k, 2 + thread);
  AlignedFloats out(n);
  for (auto _ : state) {
    if (kernel) {
      kortexdl::backend::row_times_matrix(backward, n, k, 1.0f, row.get(), weights.get(), layer.outputs, 0.0f,
                                          out.get());
    } else {
      kortexdl::backend::library_sgemm(false, backward, 1, n, k, 1.0f, row.get(), k, weights.get(), layer.outputs,
                                       0.0f, out.get(), n);
    }
    benchmark::DoNotOptimize(out.get());
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations());
}

void rows_product(benchmark::State& state, Layer layer, std::size_t m, bool kernel) {
  omp_set_num_threads(1);
  const AlignedFloats weights(layer.inputs * layer.outputs, 1);
  const AlignedFloats rows(m * layer.inputs, 2);
  AlignedFloats out(m * layer.outputs);
  for (auto _ : state) {
    if (kernel) {
      kortexdl::backend::rows_times_matrix(m, layer.outputs, layer.inputs, 1.0f, rows.get(), layer.inputs,
                                           weights.get(), layer.outputs, 0.0f, out.get(), layer.outputs);
    } else {
      kortexdl::backend::library_sgemm(false, false, m, layer.outputs, layer.inputs, 1.0f, rows.get(), layer.inputs,
                                       weights.get(), layer.outputs, 0.0f, out.get(), layer.outputs);
    }
    benchmark::DoNotOptimize(out.get());
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(m));
}

void register_all() {
  if (!kortexdl::backend::row_kernels_available()) return;  // nothing to compare without AVX-512
  for (const Layer& layer : kLayers) {
    for (const bool backward : {false, true}) {
      for (const bool kernel : {true, false}) {
        const std::string name = std::string(backward ? "backward/" : "forward/") + std::to_string(layer.inputs) +
                                 "x" + std::to_string(layer.outputs) + (kernel ? "/kernel" : "/library");
        benchmark::RegisterBenchmark(name.c_str(), product, layer, backward, kernel)
            ->Threads(1)
            ->Threads(2)
            ->UseRealTime()
            ->MinTime(0.05);
      }
    }
    for (const std::size_t m : {1, 2, 4, 8, 16}) {
      for (const bool kernel : {true, false}) {
        const std::string name = "rows/" + std::to_string(layer.inputs) + "x" + std::to_string(layer.outputs) + "/" +
                                 std::to_string(m) + (kernel ? "/kernel" : "/library");
        benchmark::RegisterBenchmark(name.c_str(), rows_product, layer, m, kernel)->UseRealTime()->MinTime(0.05);
      }
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  register_all();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
