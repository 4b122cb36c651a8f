// Proves that the ThreadSanitizer build catches races in this setup (clang,
// LLVM libomp with Archer, the CBLAS backend with the instrumented GEMM, and
// TSAN_OPTIONS=ignore_noninstrumented_modules=1), and that it does not report
// race-free OpenMP code. Built only with KORTEX_SANITIZE=thread; run by ctest
// (tests/reliability/CMakeLists.txt) through check_tsan_report.sh, which
// expects a report for the race modes and none for the control.
//
//   tsan_planted_race openmp-clean    race-free OpenMP (parallel for with a
//                                     reduction, disjoint writes, barrier,
//                                     critical, atomic): NO report expected
//   tsan_planted_race openmp-race     two OpenMP team threads increment one
//                                     int without synchronisation: report
//   tsan_planted_race weights-race    a thread rewrites layer 0's weights,
//                                     bypassing the network's access guard,
//                                     while another runs forward: report (the
//                                     weights are read only inside the GEMM,
//                                     so this proves the GEMM is instrumented)
//   tsan_planted_race library-clean   the same two threads through the public
//                                     API with thread safety on (set_parameters
//                                     vs forward, plus forward with an OpenMP
//                                     team of 2): NO report expected
#include <omp.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "kortexdl/kortexdl.hpp"
#include "network_state.hpp"  // internal: to bypass the access guard on purpose

namespace {

int openmp_clean() {
  std::vector<double> data(1 << 16);
  double sum = 0.0;
  long hits = 0;
  std::atomic<long> atomic_hits{0};
#pragma omp parallel num_threads(4)
  {
#pragma omp for
    for (long i = 0; i < static_cast<long>(data.size()); ++i) data[static_cast<std::size_t>(i)] = 0.5 * static_cast<double>(i);
#pragma omp barrier
#pragma omp for reduction(+ : sum)
    for (long i = 0; i < static_cast<long>(data.size()); ++i) sum += data[static_cast<std::size_t>(i)];
#pragma omp critical
    ++hits;
    atomic_hits.fetch_add(1);
  }
  std::printf("openmp-clean: sum %.1f, %ld threads (%ld)\n", sum, hits, atomic_hits.load());
  return 0;
}

int openmp_race() {
  int counter = 0;
#pragma omp parallel num_threads(2)
  {
    for (int i = 0; i < 1000; ++i) counter = counter + 1;  // the planted race
  }
  std::printf("openmp-race: counter %d\n", counter);
  return 0;
}

kortexdl::NetworkConfig config() {
  kortexdl::NetworkConfig c;
  c.hidden_activation = kortexdl::Activation::Tanh;
  c.seed = 3;
  return c;
}

int weights_race() {
  kortexdl::set_num_threads(1);
  kortexdl::Network net({16, 32, 4}, config());
  const std::vector<float> x(8 * 16, 0.5f);
  std::atomic<bool> go{false};
  std::thread reader([&] {
    while (!go.load()) {
    }
    std::vector<float> out(8 * 4);
    for (int i = 0; i < 50; ++i) net.forward(x, 8, out);
  });
  // Layer 0's weights only (not its biases, which the element-wise kernels
  // read): the reader touches them only inside cblas_sgemm.
  float* weights = net.state().params.data() + net.layers()[0].weights_offset;
  const std::size_t count = net.layers()[0].inputs * net.layers()[0].outputs;
  go = true;
  for (int round = 0; round < 50; ++round) {
    for (std::size_t i = 0; i < count; ++i) weights[i] += 1e-6f;  // the planted race
  }
  reader.join();
  std::printf("weights-race: done\n");
  return 0;
}

int library_clean() {
  // A budget of 4 threads shared by two readers gives each forward a team
  // of 2 (the work is above the per-thread threshold and 128 x 256 outputs
  // are above the kernels' parallel threshold), while the main thread
  // writes new parameters through the public API.
  kortexdl::set_num_threads(4);
  kortexdl::Network net({64, 256, 256, 8}, config());
  net.enable_thread_safety(true);
  const std::vector<float> x(128 * 64, 0.5f);
  std::vector<std::thread> readers;
  for (int r = 0; r < 2; ++r) {
    readers.emplace_back([&] {
      std::vector<float> out(128 * 8);
      for (int i = 0; i < 4; ++i) net.forward(x, 128, out);
    });
  }
  std::vector<float> params = net.parameters();
  for (int round = 0; round < 4; ++round) {
    for (float& p : params) p *= 0.999f;
    net.set_parameters(params);
  }
  for (auto& r : readers) r.join();
  std::printf("library-clean: version %llu\n", static_cast<unsigned long long>(net.version()));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  if (mode == "openmp-clean") return openmp_clean();
  if (mode == "openmp-race") return openmp_race();
  if (mode == "weights-race") return weights_race();
  if (mode == "library-clean") return library_clean();
  std::fprintf(stderr, "usage: %s openmp-clean|openmp-race|weights-race|library-clean\n", argv[0]);
  return 2;
}
