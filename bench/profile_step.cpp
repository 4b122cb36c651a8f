// kortexdl_profile_step: where one forward pass or training step spends its
// time, call by call.
//
//   kortexdl_profile_step [--config small|medium|large] [--batch N]
//                         [--op forward|train] [--threads 0|1|N] [--seconds S]
//
// It replays exactly the calls Network::forward / Network::train_batch make
// (src/engine.cpp gradient_rows + src/network.cpp train_impl at this commit:
// ReLU hidden layers, linear output, CrossEntropy on labels, SGD) through the
// library's own internal entry points (exported from libkortexdl), with a
// timestamp between calls, and compares the sum with the public call timed
// the same way. Per phase it prints the median time per step and its share.
// "public call - sum of phases" is what the replay does not see (argument
// checks, the access guard, call overhead). This is a diagnostic tool that
// includes src/ headers; it follows the engine by hand, so re-check it
// against src/engine.cpp when the engine changes.
#include <omp.h>
#include <x86intrin.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "architecture.hpp"
#include "backend/gemm.hpp"
#include "backend/kernels.hpp"
#include "bench_data.hpp"
#include "kortexdl/network.hpp"
#include "kortexdl/threading.hpp"
#include "optimizer_update.hpp"
#include "parallel/thread_budget.hpp"
#include "validation.hpp"
#include "workspace.hpp"

namespace {

using kortexdl::Activation;
using kortexdl::LossType;
namespace detail = kortexdl::detail;
namespace backend = kortexdl::backend;
namespace bench = kortexdl::bench;

double tsc_ghz() {
  const auto t0 = std::chrono::steady_clock::now();
  const std::uint64_t c0 = __rdtsc();
  while (std::chrono::steady_clock::now() - t0 < std::chrono::milliseconds(100)) {
  }
  const std::uint64_t c1 = __rdtsc();
  const double ns = std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count();
  return static_cast<double>(c1 - c0) / ns;
}

inline std::uint64_t stamp() {
  _mm_lfence();
  const std::uint64_t t = __rdtsc();
  _mm_lfence();
  return t;
}

// Records the time since the previous mark. Every step makes the same
// sequence of marks, so the n-th mark of a step is phase n; its name is only
// built on the first step (string work would otherwise distort tiny steps).
class Phases {
 public:
  void start() {
    pos_ = 0;
    last_ = stamp();
  }
  template <class Name>
  void mark(Name&& name) {
    const std::uint64_t now = stamp();
    if (pos_ == names_.size()) {
      names_.push_back(std::string(name()));
      samples_.emplace_back();
      current_.push_back(0);
    }
    current_[pos_++] += now - last_;
    last_ = stamp();  // the name lookup above is not charged to the next phase
  }
  void end_step() {
    for (std::size_t i = 0; i < samples_.size(); ++i) {
      samples_[i].push_back(current_[i]);
      current_[i] = 0;
    }
  }
  void clear() {
    for (auto& v : samples_) v.clear();
  }
  const std::vector<std::string>& names() const { return names_; }
  std::vector<std::uint64_t>& samples(std::size_t i) { return samples_[i]; }

 private:
  std::uint64_t last_ = 0;
  std::size_t pos_ = 0;
  std::vector<std::string> names_;
  std::vector<std::vector<std::uint64_t>> samples_;
  std::vector<std::uint64_t> current_;
};

double median(std::vector<std::uint64_t> v) {
  if (v.empty()) return 0;
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(v.size() / 2), v.end());
  return static_cast<double>(v[v.size() / 2]);
}

double mean(const std::vector<std::uint64_t>& v) {
  double s = 0;
  for (auto x : v) s += static_cast<double>(x);
  return v.empty() ? 0 : s / static_cast<double>(v.size());
}

std::string shape(std::size_t m, std::size_t n, std::size_t k) {
  return std::to_string(m) + "x" + std::to_string(n) + "x" + std::to_string(k);
}

// One forward pass, as forward_impl + forward_rows do it.
void replay_forward(Phases& ph, const detail::Architecture& arch, const float* params, const float* inputs,
                    std::size_t rows, float* outputs) {
  ph.start();
  {
    detail::ComputeScope scope(arch.forward_work(rows));
    ph.mark([&] { return std::string("ComputeScope enter (omp_set_num_threads)"); });
    const std::size_t hidden = arch.layers.size() > 1 ? rows * arch.max_width : 0;
    auto lease = detail::Workspace::local().acquire(2 * detail::Workspace::padded_floats(hidden));
    float* ping = lease.take(hidden);
    float* pong = lease.take(hidden);
    ph.mark([&] { return std::string("workspace"); });
    const float* current = inputs;
    for (std::size_t l = 0; l < arch.layers.size(); ++l) {
      const auto& layer = arch.layers[l];
      const bool last = l + 1 == arch.layers.size();
      float* next = last ? outputs : (current == ping ? pong : ping);
      backend::sgemm(false, false, rows, layer.outputs, layer.inputs, 1.0f, current, layer.inputs,
                     params + layer.weights_offset, layer.outputs, 0.0f, next, layer.outputs);
      ph.mark([&] { return std::string("gemm fwd  L" + std::to_string(l) + " NN " + shape(rows, layer.outputs, layer.inputs)); });
      backend::bias_activation(last ? arch.output_activation : arch.hidden_activation, next,
                               params + layer.biases_offset, rows, layer.outputs, nullptr);
      ph.mark([&] { return std::string(std::string(last ? "bias (linear)" : "bias+relu") + " L" + std::to_string(l)); });
      current = next;
    }
  }
  ph.mark([&] { return std::string("ComputeScope exit + workspace release"); });
}

// One training step, as train_impl + gradient_rows + apply_update do it (at
// batch 1: OneRowGradient + checked_one_row_update).
void replay_train(Phases& ph, const detail::Architecture& arch, const kortexdl::OptimizerConfig& opt,
                  kortexdl::Network::OptimizerState& opt_state, float* params, std::span<const float> inputs,
                  const kortexdl::Targets& targets, std::size_t rows, float lr) {
  ph.start();
  detail::check_inputs_exact(inputs, rows, arch.inputs());
  detail::check_learning_rate(lr);
  detail::check_loss_matches_output(LossType::CrossEntropy, arch.output_activation);
  const detail::TargetRows target_rows = detail::check_targets(targets, LossType::CrossEntropy, rows, arch.outputs());
  ph.mark([&] { return std::string("argument checks + check_targets"); });
  detail::check_finite(inputs, "inputs");
  ph.mark([&] { return std::string("check_finite(inputs)"); });
  if (rows == 1) {
    // One row: the gradient stays in factors (engine.hpp, OneRowGradient).
    detail::ComputeScope scope(arch.training_work(rows));
    ph.mark([&] { return std::string("ComputeScope enter (omp_set_num_threads)"); });
    detail::OneRowGradient gradient(arch);
    ph.mark([&] { return std::string("workspace"); });
    const detail::LossSums sums = gradient.compute(params, inputs.data(), target_rows, LossType::CrossEntropy, 1.0f);
    ph.mark([&] { return std::string("forward + deltas (OneRowGradient::compute)"); });
    detail::checked_one_row_update("train_batch", sums.loss, opt, arch, params, gradient, lr, opt_state);
    ph.mark([&] { return std::string("check + update from factors (checked_one_row_update)"); });
  } else {
    detail::ComputeScope scope(arch.training_work(rows));
    ph.mark([&] { return std::string("ComputeScope enter (omp_set_num_threads)"); });
    auto glease = detail::Workspace::local().acquire(arch.parameter_count);
    float* grad = glease.take(arch.parameter_count);
    const float scale = 1.0f / static_cast<float>(rows);

    const std::size_t n = arch.layers.size();
    std::size_t total = 0;
    for (std::size_t l = 0; l + 1 < n; ++l) total += detail::Workspace::padded_floats(rows * arch.layers[l].outputs);
    total += detail::Workspace::padded_floats(rows * arch.outputs());
    total += 2 * detail::Workspace::padded_floats(rows * arch.max_width);
    auto lease = detail::Workspace::local().acquire(total);
    ph.mark([&] { return std::string("workspace"); });

    std::vector<const float*> acts(n + 1);
    acts[0] = inputs.data();
    for (std::size_t l = 0; l + 1 < n; ++l) {
      const auto& layer = arch.layers[l];
      float* a = lease.take(rows * layer.outputs);
      backend::sgemm(false, false, rows, layer.outputs, layer.inputs, 1.0f, acts[l], layer.inputs,
                     params + layer.weights_offset, layer.outputs, 0.0f, a, layer.outputs);
      ph.mark([&] { return std::string("gemm fwd  L" + std::to_string(l) + " NN " + shape(rows, layer.outputs, layer.inputs)); });
      backend::bias_activation(arch.hidden_activation, a, params + layer.biases_offset, rows, layer.outputs, nullptr);
      ph.mark([&] { return std::string("bias+relu L" + std::to_string(l)); });
      acts[l + 1] = a;
    }
    const auto& out = arch.layers.back();
    float* final_values = lease.take(rows * out.outputs);
    backend::sgemm(false, false, rows, out.outputs, out.inputs, 1.0f, acts[n - 1], out.inputs,
                   params + out.weights_offset, out.outputs, 0.0f, final_values, out.outputs);
    ph.mark([&] { return std::string("gemm fwd  L" + std::to_string(n - 1) + " NN " + shape(rows, out.outputs, out.inputs)); });
    backend::bias_activation(Activation::Linear, final_values, params + out.biases_offset, rows, out.outputs, nullptr);
    ph.mark([&] { return std::string("bias L" + std::to_string(n - 1)); });

    float* delta = lease.take(rows * arch.max_width);
    float* delta_prev = lease.take(rows * arch.max_width);
    std::size_t correct = 0;
    const double loss = backend::softmax_cross_entropy(final_values, target_rows.values, target_rows.labels, rows,
                                                       out.outputs, scale, delta, &correct);
    ph.mark([&] { return std::string("softmax_cross_entropy"); });
    for (std::size_t l = n; l-- > 0;) {
      const auto& layer = arch.layers[l];
      backend::sgemm(true, false, layer.inputs, layer.outputs, rows, 1.0f, acts[l], layer.inputs, delta,
                     layer.outputs, 0.0f, grad + layer.weights_offset, layer.outputs);
      ph.mark([&] { return std::string("gemm dW   L" + std::to_string(l) + " TN " + shape(layer.inputs, layer.outputs, rows)); });
      backend::column_sums(delta, rows, layer.outputs, grad + layer.biases_offset);
      ph.mark([&] { return std::string("column_sums L" + std::to_string(l)); });
      if (l == 0) break;
      backend::sgemm(false, true, rows, layer.inputs, layer.outputs, 1.0f, delta, layer.outputs,
                     params + layer.weights_offset, layer.outputs, 0.0f, delta_prev, layer.inputs);
      ph.mark([&] { return std::string("gemm dX   L" + std::to_string(l) + " NT " + shape(rows, layer.inputs, layer.outputs)); });
      backend::activation_backward(arch.hidden_activation, delta_prev, acts[l], nullptr, rows, layer.inputs);
      ph.mark([&] { return std::string("relu' L" + std::to_string(l)); });
      std::swap(delta, delta_prev);
    }
    if (!(loss == loss)) std::abort();
    detail::apply_update(opt, arch, params, grad, lr, opt_state);
    ph.mark([&] { return std::string("sgd update (apply_update)"); });
  }
  ph.mark([&] { return std::string("ComputeScope exit + workspace release"); });
}

// The same GEMMs as the step, on separate 64-byte aligned buffers with no
// element-wise work in between (what kortexdl_bench's ceil/ rows run), under
// the same phase names so each GEMM can be compared with the library's.
struct CeilingPlan {
  std::vector<bench::AlignedFloats> w, acts, dw, deltas, dx;
  CeilingPlan(const std::vector<std::size_t>& sizes, std::size_t rows) {
    std::uint64_t seed = 0;
    for (std::size_t l = 0; l < sizes.size(); ++l) acts.emplace_back(rows * sizes[l], ++seed);
    for (std::size_t l = 0; l + 1 < sizes.size(); ++l) {
      w.emplace_back(sizes[l] * sizes[l + 1], ++seed);
      dw.emplace_back(sizes[l] * sizes[l + 1], ++seed);
      deltas.emplace_back(rows * sizes[l + 1], ++seed);
      dx.emplace_back(rows * sizes[l], ++seed);
    }
  }
};

void replay_ceiling(Phases& ph, CeilingPlan& p, const std::vector<std::size_t>& sizes, std::size_t rows, bool train) {
  const std::size_t n = sizes.size() - 1;
  ph.start();
  for (std::size_t l = 0; l < n; ++l) {
    const std::size_t in = sizes[l], out = sizes[l + 1];
    backend::sgemm(false, false, rows, out, in, 1.0f, p.acts[l].get(), in, p.w[l].get(), out, 0.0f,
                   p.acts[l + 1].get(), out);
    ph.mark([&] { return "gemm fwd  L" + std::to_string(l) + " NN " + shape(rows, out, in); });
  }
  if (!train) return;
  for (std::size_t l = n; l-- > 0;) {
    const std::size_t in = sizes[l], out = sizes[l + 1];
    backend::sgemm(true, false, in, out, rows, 1.0f, p.acts[l].get(), in, p.deltas[l].get(), out, 0.0f,
                   p.dw[l].get(), out);
    ph.mark([&] { return "gemm dW   L" + std::to_string(l) + " TN " + shape(in, out, rows); });
    if (l == 0) break;
    backend::sgemm(false, true, rows, in, out, 1.0f, p.deltas[l].get(), out, p.w[l].get(), out, 0.0f,
                   p.dx[l].get(), in);
    ph.mark([&] { return "gemm dX   L" + std::to_string(l) + " NT " + shape(rows, in, out); });
  }
}

struct Options {
  std::string config = "medium";
  std::size_t batch = 256;
  std::string op = "train";
  std::size_t threads = 0;
  double seconds = 1.0;
};

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--config") o.config = value();
    else if (a == "--batch") o.batch = std::stoul(value());
    else if (a == "--op") o.op = value();
    else if (a == "--threads") o.threads = std::stoul(value());
    else if (a == "--seconds") o.seconds = std::stod(value());
    else {
      std::fprintf(stderr,
                   "usage: %s [--config small|medium|large] [--batch N] [--op forward|train] [--threads N] "
                   "[--seconds S]\n",
                   argv[0]);
      std::exit(2);
    }
  }
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = parse(argc, argv);
  std::vector<std::size_t> sizes;
  if (o.config == "small") sizes = {100, 50, 10};
  else if (o.config == "medium") sizes = {784, 256, 128, 10};
  else if (o.config == "large") sizes = {1000, 512, 256, 128, 10};
  else {
    std::fprintf(stderr, "unknown config %s\n", o.config.c_str());
    return 2;
  }
  kortexdl::set_num_threads(o.threads);
  omp_set_num_threads(static_cast<int>(kortexdl::get_num_threads()));
  const double ghz = tsc_ghz();
  const std::size_t rows = o.batch;
  const bool train = o.op == "train";

  kortexdl::NetworkConfig nc;
  nc.seed = 42;
  kortexdl::Network net(sizes, nc);
  const auto arch = detail::Architecture::make(sizes, Activation::ReLU, Activation::Linear);
  std::vector<float> params = net.parameters();
  kortexdl::Network::OptimizerState opt_state;
  const kortexdl::OptimizerConfig opt{};

  std::mt19937_64 rng(1);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> inputs(rows * sizes.front());
  for (auto& x : inputs) x = dist(rng);
  std::vector<std::int32_t> labels(rows);
  for (auto& y : labels) y = static_cast<std::int32_t>(rng() % sizes.back());
  const kortexdl::Targets targets(labels);
  std::vector<float> outputs(rows * sizes.back());
  const float lr = 0.01f;

  const double flop = train ? arch.training_flops(rows) : arch.forward_flops(rows);
  const auto budget = static_cast<std::uint64_t>(o.seconds * 1e9 * ghz);

  // 1. The public call, timed one call at a time.
  std::vector<std::uint64_t> whole;
  for (int i = 0; i < 5; ++i) {
    if (train) net.train_batch(inputs, targets, LossType::CrossEntropy, lr, rows);
    else net.forward(inputs, rows, outputs);
  }
  for (std::uint64_t begin = stamp(); stamp() - begin < budget;) {
    const std::uint64_t t0 = stamp();
    if (train) net.train_batch(inputs, targets, LossType::CrossEntropy, lr, rows);
    else net.forward(inputs, rows, outputs);
    whole.push_back(stamp() - t0);
  }

  // 2. The replay, phase by phase.
  Phases ph;
  std::vector<std::uint64_t> replay;
  auto one = [&] {
    if (train) replay_train(ph, arch, opt, opt_state, params.data(), inputs, targets, rows, lr);
    else replay_forward(ph, arch, params.data(), inputs.data(), rows, outputs.data());
  };
  for (int i = 0; i < 5; ++i) {
    one();
    ph.end_step();
  }
  ph.clear();
  // Library replay and ceiling replay alternate, step by step, so both see
  // the same machine conditions. The ceiling runs on the thread count the
  // library picks for this call.
  Phases cph;
  CeilingPlan plan(sizes, rows);
  const int lib_threads = static_cast<int>(detail::share_for(flop));
  for (int i = 0; i < 5; ++i) {
    omp_set_num_threads(lib_threads);
    replay_ceiling(cph, plan, sizes, rows, train);
    cph.end_step();
  }
  cph.clear();
  for (std::uint64_t begin = stamp(); stamp() - begin < budget;) {
    omp_set_num_threads(static_cast<int>(kortexdl::get_num_threads()));
    const std::uint64_t t0 = stamp();
    one();
    replay.push_back(stamp() - t0);
    ph.end_step();
    omp_set_num_threads(lib_threads);
    replay_ceiling(cph, plan, sizes, rows, train);
    cph.end_step();
  }
  omp_set_num_threads(static_cast<int>(kortexdl::get_num_threads()));

  // The cost of a mark with nothing in between (two serialised rdtsc): it
  // is in every phase's time; the "net" column subtracts it.
  double floor_cycles = 0;
  {
    Phases empty;
    for (int i = 0; i < 20000; ++i) {
      empty.start();
      empty.mark([] { return std::string("empty"); });
      empty.end_step();
    }
    floor_cycles = median(empty.samples(0));
  }

  const double whole_med = median(whole);
  const double replay_med = median(replay);
  const auto us = [&](double cycles) { return cycles / ghz / 1000.0; };
  const std::size_t threads_used = detail::share_for(flop);
  std::printf("%s %s batch %zu, kortexdl threads %zu (this call's share: %zu), TSC %.2f GHz\n", o.op.c_str(),
              o.config.c_str(), rows, kortexdl::get_num_threads(), threads_used, ghz);
  std::printf("public call   : median %10.2f us  (%zu calls)  %7.1f GFLOP/s\n", us(whole_med), whole.size(),
              flop / (us(whole_med) * 1e3));
  std::printf("replay, whole : median %10.2f us  (%zu steps)\n", us(replay_med), replay.size());
  double sum_med = 0, gemm_med = 0;
  std::printf("timer floor   : %.3f us per phase (subtracted in the \"net\" column and the shares)\n",
              us(floor_cycles));
  std::map<std::string, double> ceiling;
  double ceiling_sum = 0;
  for (std::size_t i = 0; i < cph.names().size(); ++i) {
    const double m = std::max(0.0, median(cph.samples(i)) - floor_cycles);
    ceiling[cph.names()[i]] = m;
    ceiling_sum += m;
  }
  std::printf("\n%-48s %10s %10s %10s %7s %10s %8s\n", "phase (median per step)", "median us", "net us", "mean us",
              "share", "ceil us", "lib/ceil");
  for (std::size_t i = 0; i < ph.names().size(); ++i) {
    const double m = std::max(0.0, median(ph.samples(i)) - floor_cycles);
    sum_med += m;
    if (ph.names()[i].rfind("gemm", 0) == 0) gemm_med += m;
  }
  for (std::size_t i = 0; i < ph.names().size(); ++i) {
    const double raw = median(ph.samples(i));
    const double m = std::max(0.0, raw - floor_cycles);
    const auto c = ceiling.find(ph.names()[i]);
    if (c != ceiling.end()) {
      std::printf("%-48s %10.3f %10.3f %10.3f %6.1f%% %10.3f %8.2f\n", ph.names()[i].c_str(), us(raw), us(m),
                  us(mean(ph.samples(i))), 100.0 * m / sum_med, us(c->second), c->second > 0 ? m / c->second : 0.0);
    } else {
      std::printf("%-48s %10.3f %10.3f %10.3f %6.1f%%\n", ph.names()[i].c_str(), us(raw), us(m),
                  us(mean(ph.samples(i))), 100.0 * m / sum_med);
    }
  }
  std::printf("%-48s %10s %10.3f %10s %6.1f%% %10.3f %8.2f\n", "all GEMMs", "", us(gemm_med), "",
              100.0 * gemm_med / sum_med, us(ceiling_sum), ceiling_sum > 0 ? gemm_med / ceiling_sum : 0.0);
  std::printf("%-48s %10s %10.3f %10s %6.1f%%\n", "everything else", "", us(sum_med - gemm_med), "",
              100.0 * (sum_med - gemm_med) / sum_med);
  std::printf("%-48s %10s %10.3f\n", "sum of net phase medians", "", us(sum_med));
  std::printf("%-48s %10s %10.3f\n", "public call - that sum (unseen overhead)", "", us(whole_med - sum_med));
  std::printf("%-48s %10s %10.3f   -> public call at %.0f%% of this ceiling\n",
              "ceiling: the same GEMMs alone, aligned buffers", "", us(ceiling_sum),
              100.0 * ceiling_sum / whole_med);
  return 0;
}
