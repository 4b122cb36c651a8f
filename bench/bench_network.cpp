// kortexdl_bench: the C++ engine against the machine's GEMM ceiling.
//
// Rows (benchmark names), every one in two thread modes:
//   mt = the library's default budget (all CPUs this process may use); the raw
//        dnnl_sgemm rows run with the same OpenMP thread count;
//   st = kortexdl::set_num_threads(1), and omp_set_num_threads(1) for the raw
//        dnnl_sgemm rows.
//
//   net/forward/<cfg>/<batch>/<mode>   Network::forward into a preallocated span
//   ceil/forward/<cfg>/<batch>/<mode>  the same GEMMs (X*W per layer) back to back
//                                      with dnnl_sgemm: the ceiling for that step
//   net/train/<cfg>/<batch>/<mode>     Network::train_batch (CrossEntropy on
//                                      integer labels, SGD, lr 0.01)
//   ceil/train/<cfg>/<batch>/<mode>    forward GEMMs + dW = X^T*delta per layer +
//                                      dX = delta*W^T for every layer but the first
//   sgemm/<TT>/<M>x<N>x<K>/<mode>      one raw dnnl_sgemm (the per-layer forward
//                                      shapes, 1000x256x784 and 1024^3)
// and, one core per call, from 1-16 threads (items_per_second = calls of all):
//   shared/train/<cfg>/<batch>         train_batch on one shared network
//   shared/forward/<cfg>/<batch>       forward on one shared network
//   own/forward/<cfg>/<batch>          forward on a network per thread
//
// Counters (in the console and the JSON):
//   GFLOP/s  flop per iteration / real time. A net row and its ceil row count
//            the same flop, so net GFLOP/s / ceil GFLOP/s is the fraction of the
//            ceiling (bench/summarize.py prints it).
//            forward flop = 2*batch*sum(in*out);
//            training flop = 2*batch*(3*sum(in*out) - in0*out0).
//   items_per_second  samples (rows) per second.
//   batch, flop       the row's batch size and flop per iteration.
//   other_cpu         CPU time other processes used during the measured
//                     run, in cores (0.5 = half a core busy on average; from
//                     /proc/stat and getrusage, 10 ms resolution).
//   runq_wait         time this process's threads were ready to run but
//                     waited for a CPU another task held, per second of the
//                     run (sum over threads of /proc/self/task/*/schedstat's
//                     run delay). Above ~0.02 the row was disturbed by other
//                     work: with two cores, an OpenMP team of two then waits
//                     for a descheduled thread and times blow up.
#include <benchmark/benchmark.h>
#include <dnnl.h>
#include <omp.h>
#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <random>
#include <span>
#include <stdexcept>
#include <string>
#include <utility>
#include <map>
#include <mutex>
#include <vector>

#include "bench_data.hpp"
#include "kortexdl/loss.hpp"
#include "kortexdl/network.hpp"
#include "kortexdl/network_config.hpp"
#include "kortexdl/targets.hpp"
#include "kortexdl/threading.hpp"

namespace {

// Short enough that the whole default run stays well under three minutes.
constexpr double kMinTime = 0.05;
constexpr double kWarmUp = 0.01;
constexpr float kLearningRate = 0.01f;
constexpr std::uint64_t kSeed = 42;

struct Config {
  const char* name;
  std::vector<std::size_t> sizes;
};

const std::vector<Config>& configs() {
  static const std::vector<Config> all = {
      {"small", {100, 50, 10}},
      {"medium", {784, 256, 128, 10}},
      {"large", {1000, 512, 256, 128, 10}},
  };
  return all;
}

const std::vector<std::size_t>& batches() {
  static const std::vector<std::size_t> all = {1, 32, 256, 1000};
  return all;
}

enum class Mode { MultiThread, SingleThread };
const char* mode_name(Mode m) { return m == Mode::MultiThread ? "mt" : "st"; }

double forward_flop(const std::vector<std::size_t>& sizes, std::size_t batch) {
  double sum = 0;
  for (std::size_t l = 0; l + 1 < sizes.size(); ++l) sum += static_cast<double>(sizes[l]) * sizes[l + 1];
  return 2.0 * static_cast<double>(batch) * sum;
}

double training_flop(const std::vector<std::size_t>& sizes, std::size_t batch) {
  double sum = 0;
  for (std::size_t l = 0; l + 1 < sizes.size(); ++l) sum += static_cast<double>(sizes[l]) * sizes[l + 1];
  const double first = static_cast<double>(sizes[0]) * sizes[1];
  return 2.0 * static_cast<double>(batch) * (3.0 * sum - first);
}

// Sets the thread mode for one benchmark run and restores the defaults after.
class ThreadMode {
 public:
  explicit ThreadMode(Mode mode) {
    kortexdl::set_num_threads(mode == Mode::SingleThread ? 1 : 0);
    omp_set_num_threads(static_cast<int>(kortexdl::get_num_threads()));
  }
  ~ThreadMode() {
    kortexdl::set_num_threads(0);
    omp_set_num_threads(static_cast<int>(kortexdl::get_num_threads()));
  }
  ThreadMode(const ThreadMode&) = delete;
  ThreadMode& operator=(const ThreadMode&) = delete;
};

// Busy CPU time of the whole machine and of this process, in seconds.
// Run-queue delay summed over this process's threads, in seconds.
double runqueue_delay() {
  double total = 0;
  DIR* dir = opendir("/proc/self/task");
  if (dir == nullptr) return 0;
  while (const dirent* entry = readdir(dir)) {
    if (entry->d_name[0] == '.') continue;
    std::ifstream f(std::string("/proc/self/task/") + entry->d_name + "/schedstat");
    double run_ns = 0, wait_ns = 0;
    if (f >> run_ns >> wait_ns) total += wait_ns * 1e-9;
  }
  closedir(dir);
  return total;
}

struct CpuSample {
  double machine_busy = 0;
  double self = 0;
  double wall = 0;
  double runq = 0;
  static CpuSample now() {
    CpuSample s;
    std::ifstream stat("/proc/stat");
    std::string cpu;
    double user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0;
    if (stat >> cpu >> user >> nice >> system >> idle >> iowait >> irq >> softirq >> steal) {
      s.machine_busy = (user + nice + system + irq + softirq + steal) / static_cast<double>(sysconf(_SC_CLK_TCK));
    }
    rusage usage{};
    getrusage(RUSAGE_SELF, &usage);
    s.self = static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
             1e-6 * static_cast<double>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec);
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    s.wall = static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
    s.runq = runqueue_delay();
    return s;
  }
};

void set_counters(benchmark::State& state, double flop_per_iteration, std::size_t rows, const CpuSample& start) {
  const CpuSample end = CpuSample::now();
  const double wall = end.wall - start.wall;
  if (wall > 0) {
    const double other = (end.machine_busy - start.machine_busy) - (end.self - start.self);
    state.counters["other_cpu"] = benchmark::Counter(std::max(0.0, other / wall));
    state.counters["runq_wait"] = benchmark::Counter(std::max(0.0, (end.runq - start.runq) / wall));
  }
  state.counters["GFLOP/s"] =
      benchmark::Counter(flop_per_iteration * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["flop"] = benchmark::Counter(flop_per_iteration);
  state.counters["batch"] = benchmark::Counter(static_cast<double>(rows));
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()) * static_cast<std::int64_t>(rows));
}

using kortexdl::bench::AlignedFloats;
using kortexdl::bench::random_floats;

// Row-major sgemm, the call the engine makes.
inline void sgemm(char ta, char tb, std::size_t m, std::size_t n, std::size_t k, const float* a, std::size_t lda,
                  const float* b, std::size_t ldb, float* c, std::size_t ldc) {
  const dnnl_status_t status =
      dnnl_sgemm(ta, tb, static_cast<dnnl_dim_t>(m), static_cast<dnnl_dim_t>(n), static_cast<dnnl_dim_t>(k), 1.0f, a,
                 static_cast<dnnl_dim_t>(lda), b, static_cast<dnnl_dim_t>(ldb), 0.0f, c, static_cast<dnnl_dim_t>(ldc));
  if (status != dnnl_success) throw std::runtime_error("dnnl_sgemm failed");
}

// ---- the network -----------------------------------------------------------

kortexdl::Network make_network(const Config& cfg) {
  kortexdl::NetworkConfig nc;
  nc.seed = kSeed;
  return kortexdl::Network(cfg.sizes, nc);
}

void BM_NetForward(benchmark::State& state, const Config* cfg, std::size_t batch, Mode mode) {
  ThreadMode threads(mode);
  const kortexdl::Network net = make_network(*cfg);
  const auto inputs = random_floats(batch * cfg->sizes.front(), 1);
  std::vector<float> outputs(batch * cfg->sizes.back());
  for (int i = 0; i < 3; ++i) net.forward(inputs, batch, outputs);  // grow the workspace
  const CpuSample cpu_start = CpuSample::now();
  for (auto _ : state) {
    net.forward(inputs, batch, outputs);
    benchmark::DoNotOptimize(outputs.data());
    benchmark::ClobberMemory();
  }
  set_counters(state, forward_flop(cfg->sizes, batch), batch, cpu_start);
}

void BM_NetTrain(benchmark::State& state, const Config* cfg, std::size_t batch, Mode mode) {
  ThreadMode threads(mode);
  kortexdl::Network net = make_network(*cfg);
  const auto inputs = random_floats(batch * cfg->sizes.front(), 1);
  std::vector<std::int32_t> labels(batch);
  std::mt19937 rng(7);
  for (auto& y : labels) y = static_cast<std::int32_t>(rng() % cfg->sizes.back());
  const kortexdl::Targets targets(labels);
  float loss = 0.0f;
  for (int i = 0; i < 3; ++i) loss = net.train_batch(inputs, targets, kortexdl::LossType::CrossEntropy, kLearningRate, batch);
  const CpuSample cpu_start = CpuSample::now();
  for (auto _ : state) {
    loss = net.train_batch(inputs, targets, kortexdl::LossType::CrossEntropy, kLearningRate, batch);
    benchmark::DoNotOptimize(loss);
  }
  if (!std::isfinite(loss)) state.SkipWithError("training loss is not finite");
  set_counters(state, training_flop(cfg->sizes, batch), batch, cpu_start);
}

// Threads training one network (thread safety on), one core per call: the
// shape of many Python threads calling train_batch. Every thread makes its
// own steps; items_per_second counts the steps of all of them.
kortexdl::Network& shared_network(const Config& cfg, std::size_t batch) {
  static std::mutex mutex;
  static std::map<std::pair<const Config*, std::size_t>, std::unique_ptr<kortexdl::Network>> networks;
  std::lock_guard<std::mutex> lock(mutex);
  auto& net = networks[{&cfg, batch}];
  if (!net) {
    net = std::make_unique<kortexdl::Network>(make_network(cfg));
    net->enable_thread_safety(true);
  }
  return *net;
}

void BM_SharedTrain(benchmark::State& state, const Config* cfg, std::size_t batch) {
  if (state.thread_index() == 0) kortexdl::set_num_threads(1);
  kortexdl::Network& net = shared_network(*cfg, batch);
  const auto inputs = random_floats(batch * cfg->sizes.front(), 1 + static_cast<unsigned>(state.thread_index()));
  std::vector<std::int32_t> labels(batch);
  for (std::size_t i = 0; i < batch; ++i) labels[i] = static_cast<std::int32_t>(i % cfg->sizes.back());
  const kortexdl::Targets targets(labels);
  float loss = 0.0f;
  for (auto _ : state) {
    loss = net.train_batch(inputs, targets, kortexdl::LossType::CrossEntropy, 1e-4f, batch);
    benchmark::DoNotOptimize(loss);
  }
  if (!std::isfinite(loss)) state.SkipWithError("training loss is not finite");
  state.SetItemsProcessed(state.iterations());
  if (state.thread_index() == 0) kortexdl::set_num_threads(0);
}

// Threads serving forward calls, one core per call, thread safety on: on one
// shared network (the shape of many Python threads calling forward on one
// model) or on a network each (the same work with nothing shared but the
// library). The two side by side tell what sharing a network costs.
void forward_from_threads(benchmark::State& state, kortexdl::Network& net, const Config& cfg, std::size_t batch) {
  if (state.thread_index() == 0) kortexdl::set_num_threads(1);
  const auto inputs = random_floats(batch * cfg.sizes.front(), 1 + static_cast<unsigned>(state.thread_index()));
  std::vector<float> outputs(batch * cfg.sizes.back());
  for (int i = 0; i < 3; ++i) net.forward(inputs, batch, outputs);
  for (auto _ : state) {
    net.forward(inputs, batch, outputs);
    benchmark::DoNotOptimize(outputs.data());
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations());
  if (state.thread_index() == 0) kortexdl::set_num_threads(0);
}

void BM_SharedForward(benchmark::State& state, const Config* cfg, std::size_t batch) {
  forward_from_threads(state, shared_network(*cfg, batch), *cfg, batch);
}

void BM_OwnForward(benchmark::State& state, const Config* cfg, std::size_t batch) {
  kortexdl::Network net = make_network(*cfg);
  net.enable_thread_safety(true);
  forward_from_threads(state, net, *cfg, batch);
}

// ---- the ceiling: the step's GEMMs, back to back, on aligned buffers -------

struct GemmPlan {
  std::vector<AlignedFloats> weights;   // in x out, per layer
  std::vector<AlignedFloats> acts;      // acts[0] = inputs (batch x in0), acts[l+1] = layer l output
  std::vector<AlignedFloats> dweights;  // in x out, per layer
  std::vector<AlignedFloats> deltas;    // batch x out per layer: fixed inputs of the backward GEMMs
  std::vector<AlignedFloats> dinputs;   // batch x in per layer: outputs of dX = delta * W^T
  // The backward GEMMs read fixed deltas rather than each other's outputs:
  // chaining dX = delta * W^T across iterations would shrink the values into
  // denormals and measure the FPU's slow path instead of the GEMM.

  GemmPlan(const std::vector<std::size_t>& sizes, std::size_t batch) {
    for (std::size_t l = 0; l < sizes.size(); ++l) acts.emplace_back(batch * sizes[l], 100 + l);
    for (std::size_t l = 0; l + 1 < sizes.size(); ++l) {
      weights.emplace_back(sizes[l] * sizes[l + 1], 200 + l);
      dweights.emplace_back(sizes[l] * sizes[l + 1], 300 + l);
      deltas.emplace_back(batch * sizes[l + 1], 400 + l);
      dinputs.emplace_back(batch * sizes[l], 500 + l);
    }
  }
};

void run_forward_gemms(GemmPlan& p, const std::vector<std::size_t>& sizes, std::size_t batch) {
  for (std::size_t l = 0; l + 1 < sizes.size(); ++l) {
    const std::size_t in = sizes[l], out = sizes[l + 1];
    sgemm('N', 'N', batch, out, in, p.acts[l].get(), in, p.weights[l].get(), out, p.acts[l + 1].get(), out);
  }
}

// The engine's backward order: last layer first, dW then dX.
void run_backward_gemms(GemmPlan& p, const std::vector<std::size_t>& sizes, std::size_t batch) {
  for (std::size_t l = sizes.size() - 1; l-- > 0;) {
    const std::size_t in = sizes[l], out = sizes[l + 1];
    // dW = X^T * delta  (in x out, K = batch)
    sgemm('T', 'N', in, out, batch, p.acts[l].get(), in, p.deltas[l].get(), out, p.dweights[l].get(), out);
    if (l == 0) break;
    // dX = delta * W^T  (batch x in, K = out)
    sgemm('N', 'T', batch, in, out, p.deltas[l].get(), out, p.weights[l].get(), out, p.dinputs[l].get(), in);
  }
}

void BM_CeilForward(benchmark::State& state, const Config* cfg, std::size_t batch, Mode mode) {
  ThreadMode threads(mode);
  GemmPlan plan(cfg->sizes, batch);
  for (int i = 0; i < 3; ++i) run_forward_gemms(plan, cfg->sizes, batch);
  const CpuSample cpu_start = CpuSample::now();
  for (auto _ : state) {
    run_forward_gemms(plan, cfg->sizes, batch);
    benchmark::ClobberMemory();
  }
  set_counters(state, forward_flop(cfg->sizes, batch), batch, cpu_start);
}

void BM_CeilTrain(benchmark::State& state, const Config* cfg, std::size_t batch, Mode mode) {
  ThreadMode threads(mode);
  GemmPlan plan(cfg->sizes, batch);
  for (int i = 0; i < 3; ++i) {
    run_forward_gemms(plan, cfg->sizes, batch);
    run_backward_gemms(plan, cfg->sizes, batch);
  }
  const CpuSample cpu_start = CpuSample::now();
  for (auto _ : state) {
    run_forward_gemms(plan, cfg->sizes, batch);
    run_backward_gemms(plan, cfg->sizes, batch);
    benchmark::ClobberMemory();
  }
  set_counters(state, training_flop(cfg->sizes, batch), batch, cpu_start);
}

// ---- raw dnnl_sgemm ---------------------------------------------------------

struct Shape {
  char ta, tb;
  std::size_t m, n, k;
};

void BM_Sgemm(benchmark::State& state, Shape s, Mode mode) {
  ThreadMode threads(mode);
  const std::size_t lda = s.ta == 'N' ? s.k : s.m;
  const std::size_t ldb = s.tb == 'N' ? s.n : s.k;
  AlignedFloats a(s.m * s.k, 1), b(s.k * s.n, 2), c(s.m * s.n, 3);
  for (int i = 0; i < 3; ++i) sgemm(s.ta, s.tb, s.m, s.n, s.k, a.get(), lda, b.get(), ldb, c.get(), s.n);
  const CpuSample cpu_start = CpuSample::now();
  for (auto _ : state) {
    sgemm(s.ta, s.tb, s.m, s.n, s.k, a.get(), lda, b.get(), ldb, c.get(), s.n);
    benchmark::ClobberMemory();
  }
  set_counters(state, 2.0 * static_cast<double>(s.m) * s.n * s.k, s.m, cpu_start);
}

template <class... Args>
void add(const std::string& name, Args&&... args) {
  benchmark::RegisterBenchmark(name.c_str(), std::forward<Args>(args)...)
      ->UseRealTime()
      ->MinTime(kMinTime)
      ->MinWarmUpTime(kWarmUp)
      ->Unit(benchmark::kMicrosecond);
}

void register_all() {
  const Mode modes[] = {Mode::MultiThread, Mode::SingleThread};
  // Each network row is followed by its ceiling row, so the two are measured
  // side by side (as close in time as the library allows).
  for (const Config& cfg : configs()) {
    for (std::size_t batch : batches()) {
      for (Mode mode : modes) {
        const std::string tail = std::string("/") + cfg.name + "/" + std::to_string(batch) + "/" + mode_name(mode);
        add("net/forward" + tail, BM_NetForward, &cfg, batch, mode);
        add("ceil/forward" + tail, BM_CeilForward, &cfg, batch, mode);
        add("net/train" + tail, BM_NetTrain, &cfg, batch, mode);
        add("ceil/train" + tail, BM_CeilTrain, &cfg, batch, mode);
      }
    }
  }
  for (const Config& cfg : configs()) {
    for (std::size_t batch : {std::size_t{1}, std::size_t{8}, std::size_t{32}, std::size_t{256}}) {
      benchmark::RegisterBenchmark(("shared/train/" + std::string(cfg.name) + "/" + std::to_string(batch)).c_str(),
                                   BM_SharedTrain, &cfg, batch)
          ->Threads(1)
          ->Threads(2)
          ->Threads(4)
          ->Threads(16)
          ->UseRealTime()
          ->MinTime(4 * kMinTime)
          ->Unit(benchmark::kMicrosecond);
    }
  }
  for (const Config& cfg : configs()) {
    for (std::size_t batch : {std::size_t{1}, std::size_t{32}}) {
      const std::string tail = "/" + std::string(cfg.name) + "/" + std::to_string(batch);
      using Bench = void (*)(benchmark::State&, const Config*, std::size_t);
      for (const auto& [kind, fn] : {std::pair<const char*, Bench>{"shared", BM_SharedForward},
                                     std::pair<const char*, Bench>{"own", BM_OwnForward}}) {
        std::string name = kind;
        name.append("/forward").append(tail);
        benchmark::RegisterBenchmark(name.c_str(), fn, &cfg, batch)
            ->Threads(1)
            ->Threads(2)
            ->UseRealTime()
            ->MinTime(4 * kMinTime)
            ->Unit(benchmark::kMicrosecond);
      }
    }
  }
  // Raw dnnl_sgemm: every layer's forward shape at every batch (duplicates
  // across configs measured once), then the machine's big-GEMM ceiling.
  std::vector<Shape> shapes;
  auto push = [&](Shape s) {
    for (const Shape& t : shapes) {
      if (t.ta == s.ta && t.tb == s.tb && t.m == s.m && t.n == s.n && t.k == s.k) return;
    }
    shapes.push_back(s);
  };
  for (const Config& cfg : configs()) {
    for (std::size_t batch : batches()) {
      for (std::size_t l = 0; l + 1 < cfg.sizes.size(); ++l) push({'N', 'N', batch, cfg.sizes[l + 1], cfg.sizes[l]});
    }
  }
  push({'N', 'N', 1000, 256, 784});
  push({'N', 'N', 1024, 1024, 1024});
  for (const Shape& s : shapes) {
    for (Mode mode : modes) {
      add("sgemm/" + std::string{s.ta, s.tb} + "/" + std::to_string(s.m) + "x" + std::to_string(s.n) + "x" +
              std::to_string(s.k) + "/" + mode_name(mode),
          BM_Sgemm, s, mode);
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  register_all();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::AddCustomContext("kortexdl_threads_default", std::to_string(kortexdl::get_num_threads()));
  benchmark::AddCustomContext("omp_max_threads", std::to_string(omp_get_max_threads()));
  const dnnl_version_t* v = dnnl_version();
  benchmark::AddCustomContext("dnnl_version", std::to_string(v->major) + "." + std::to_string(v->minor) + "." +
                                                  std::to_string(v->patch) + " (" + v->hash + ")");
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
