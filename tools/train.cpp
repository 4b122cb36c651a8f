// kortexdl train: build (or resume) a network, fit it, save it.
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "cli.hpp"

namespace kortexdl::cli {

namespace {

// Set by the SIGINT handler, read by fit's should_stop between batches.
volatile std::sig_atomic_t g_interrupted = 0;

extern "C" void on_sigint(int) { g_interrupted = 1; }

// Installs the handler for the lifetime of the object. SA_RESETHAND puts
// the default action back after the first signal, so a second Ctrl-C
// kills a run that does not reach a batch boundary soon enough. SA_ONSTACK:
// the library gives computing threads an alternate signal stack, and a
// handler on the interrupted stack could write into the heap while a GEMM
// kernel runs (src/parallel/signal_safety.hpp).
class SigintGuard {
 public:
  SigintGuard() {
    g_interrupted = 0;
    struct sigaction action {};
    action.sa_handler = on_sigint;
    sigemptyset(&action.sa_mask);
    action.sa_flags = SA_RESETHAND | SA_ONSTACK;
    sigaction(SIGINT, &action, &previous_);
  }
  ~SigintGuard() { sigaction(SIGINT, &previous_, nullptr); }
  SigintGuard(const SigintGuard&) = delete;
  SigintGuard& operator=(const SigintGuard&) = delete;

 private:
  struct sigaction previous_ {};
};

using Clock = std::chrono::steady_clock;

double seconds_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// Per-epoch lines, and on a terminal a progress bar redrawn within the
// epoch (at most ten times a second).
class Progress {
 public:
  Progress(bool bar, bool quiet, std::size_t epochs, std::size_t steps_per_epoch)
      : bar_(bar && !quiet),
        quiet_(quiet),
        epochs_(epochs),
        steps_(steps_per_epoch),
        width_(std::to_string(epochs).size()),
        epoch_started_(Clock::now()) {}

  bool on_batch(std::size_t epoch, std::size_t step, double loss) {
    loss_sum_ += loss;
    ++loss_count_;
    const auto now = Clock::now();
    if (step != steps_ && drawn_ && seconds_between(last_draw_, now) < 0.1) return true;
    last_draw_ = now;
    constexpr std::size_t kBar = 24;
    const std::size_t filled = steps_ == 0 ? kBar : std::min(kBar, step * kBar / steps_);
    std::string line = "\repoch " + pad(epoch) + "/" + std::to_string(epochs_) + " [" + std::string(filled, '#') +
                       std::string(kBar - filled, '.') + "] ";
    char tail[128];
    std::snprintf(tail, sizeof tail, "%3zu%%  %zu/%zu  loss %.4f  %.1f s\033[K",
                  steps_ == 0 ? std::size_t{100} : step * 100 / steps_, step, steps_,
                  loss_sum_ / static_cast<double>(loss_count_), seconds_between(epoch_started_, now));
    line += tail;
    std::fputs(line.c_str(), stdout);
    std::fflush(stdout);
    drawn_ = true;
    return true;
  }

  void on_epoch(const EpochRecord& r) {
    clear();
    loss_sum_ = 0.0;
    loss_count_ = 0;
    epoch_started_ = Clock::now();
    if (quiet_) return;
    std::string line = "epoch " + pad(r.epoch) + "/" + std::to_string(epochs_);
    char field[96];
    std::snprintf(field, sizeof field, "  loss %.4f", r.loss);
    line += field;
    if (r.accuracy) {
      std::snprintf(field, sizeof field, "  acc %.4f", *r.accuracy);
      line += field;
    }
    if (r.validation_loss) {
      std::snprintf(field, sizeof field, "  val_loss %.4f", *r.validation_loss);
      line += field;
    }
    if (r.validation_accuracy) {
      std::snprintf(field, sizeof field, "  val_acc %.4f", *r.validation_accuracy);
      line += field;
    }
    std::snprintf(field, sizeof field, "  lr %.3g  %.2f s\n", static_cast<double>(r.learning_rate), r.seconds);
    line += field;
    std::fputs(line.c_str(), stdout);
    std::fflush(stdout);
  }

  // Erases the bar, so the next line starts clean.
  void clear() {
    if (!drawn_) return;
    std::fputs("\r\033[K", stdout);
    std::fflush(stdout);
    drawn_ = false;
  }

  bool bar() const { return bar_; }

 private:
  std::string pad(std::size_t n) const {
    std::string text = std::to_string(n);
    return std::string(width_ > text.size() ? width_ - text.size() : 0, ' ') + text;
  }

  bool bar_;
  bool quiet_;
  std::size_t epochs_;
  std::size_t steps_;
  std::size_t width_;
  Clock::time_point epoch_started_;
  Clock::time_point last_draw_{};
  bool drawn_ = false;
  double loss_sum_ = 0.0;
  std::size_t loss_count_ = 0;
};

// --sizes / --hidden as numbers, with 0 standing for "auto" (first and last).
std::vector<std::size_t> parse_sizes(const TrainArgs& args) {
  std::vector<std::string> spec;
  const char* option = "--sizes";
  if (!args.sizes.empty()) {
    spec = args.sizes;
  } else {
    option = "--hidden";
    spec.push_back("auto");
    spec.insert(spec.end(), args.hidden.begin(), args.hidden.end());
    if (args.hidden.empty()) spec.push_back("128");  // the default: one hidden layer of 128
    spec.push_back("auto");
  }
  if (spec.size() < 2) {
    throw UsageError(std::string(option) + ": give at least the input and output sizes, e.g. auto,128,auto");
  }
  std::vector<std::size_t> sizes;
  for (std::size_t i = 0; i < spec.size(); ++i) {
    const std::string item = lower(spec[i]);
    const bool end = i == 0 || i + 1 == spec.size();
    if (item == "auto" && end) {
      sizes.push_back(0);
      continue;
    }
    std::size_t value = 0;
    const auto [ptr, ec] = std::from_chars(item.data(), item.data() + item.size(), value);
    if (item.empty() || ec != std::errc() || ptr != item.data() + item.size() || value == 0) {
      throw UsageError(std::string(option) + ": '" + spec[i] + "' is not a layer size (a whole number >= 1" +
                       (end ? ", or auto" : "") + ")");
    }
    sizes.push_back(value);
  }
  return sizes;
}

// The output size the data asks for under `loss`.
std::size_t outputs_for(const datasets::Dataset& d, LossType loss) {
  if (d.labels.empty()) return d.target_width;
  if (loss == LossType::BinaryCrossEntropy && d.classes <= 2) return 1;
  return std::max<std::size_t>(d.classes, 1);
}

void refuse_mismatch(bool given, bool same, const std::string& option, const std::string& model_value) {
  if (given && !same) {
    throw UsageError(option + " does not match the model being resumed, which has " + model_value +
                     " (leave the option out)");
  }
}

std::string name_of(Activation a) { return std::string(to_string(a)); }

}  // namespace

int run_train(const TrainArgs& args) {
  check_writable(args.output);
  if (args.threads) set_num_threads(*args.threads);
  const bool resuming = !args.resume.empty();
  const std::vector<std::size_t> requested_sizes =
      resuming && args.sizes.empty() && args.hidden.empty() ? std::vector<std::size_t>{} : parse_sizes(args);

  // The model first when resuming: a bad model file fails before the data is read.
  std::optional<Network> resumed;
  if (resuming) resumed.emplace(Network::load(args.resume));
  const Data data = load_data(args.data, Purpose::Train);
  const datasets::Dataset& d = data.set;

  std::optional<Activation> model_output;
  if (resumed) model_output = resumed->config().output_activation;
  std::optional<Activation> output_activation;
  if (!args.output_activation.empty()) output_activation = parse_activation(args.output_activation, "--output-activation");
  const LossType loss = !args.loss.empty() ? parse_loss(lower(args.loss), "--loss")
                                           : default_loss(d, model_output ? model_output : output_activation);

  Network network = [&] {
    if (resumed) {
      const NetworkConfig& c = resumed->config();
      if (!requested_sizes.empty()) {
        std::vector<std::size_t> expected = requested_sizes;
        if (expected.front() == 0) expected.front() = resumed->input_size();
        if (expected.back() == 0) expected.back() = resumed->output_size();
        refuse_mismatch(true, expected == resumed->sizes(), args.sizes.empty() ? "--hidden" : "--sizes",
                        "sizes " + join_sizes(resumed->sizes()));
      }
      refuse_mismatch(!args.hidden_activation.empty(),
                      args.hidden_activation.empty() ||
                          parse_activation(args.hidden_activation, "--hidden-activation") == c.hidden_activation,
                      "--hidden-activation " + args.hidden_activation, name_of(c.hidden_activation));
      refuse_mismatch(output_activation.has_value(), !output_activation || *output_activation == c.output_activation,
                      "--output-activation " + args.output_activation, name_of(c.output_activation));
      refuse_mismatch(!args.optimizer.empty(),
                      args.optimizer.empty() || parse_optimizer(args.optimizer, "--optimizer") == c.optimizer.kind,
                      "--optimizer " + args.optimizer, std::string(to_string(c.optimizer.kind)));
      refuse_mismatch(args.momentum.has_value(), !args.momentum || *args.momentum == c.optimizer.momentum,
                      "--momentum", "momentum " + std::to_string(c.optimizer.momentum));
      refuse_mismatch(args.weight_decay.has_value(),
                      !args.weight_decay || *args.weight_decay == c.optimizer.weight_decay, "--weight-decay",
                      "weight decay " + std::to_string(c.optimizer.weight_decay));
      return std::move(*resumed);
    }
    std::vector<std::size_t> sizes = requested_sizes;
    if (sizes.front() == 0) sizes.front() = d.features;
    if (sizes.back() == 0) sizes.back() = outputs_for(d, loss);
    NetworkConfig config;
    config.hidden_activation = args.hidden_activation.empty()
                                   ? Activation::ReLU
                                   : parse_activation(args.hidden_activation, "--hidden-activation");
    config.output_activation = output_activation.value_or(default_output_activation(loss));
    config.seed = args.seed;
    const OptimizerKind kind = args.optimizer.empty() ? OptimizerKind::Adam : parse_optimizer(args.optimizer, "--optimizer");
    const float decay = args.weight_decay.value_or(0.0f);
    switch (kind) {
      case OptimizerKind::SGD: config.optimizer = OptimizerConfig::sgd(decay); break;
      case OptimizerKind::Momentum:
        config.optimizer = OptimizerConfig::with_momentum(args.momentum.value_or(0.9f), false, decay);
        break;
      case OptimizerKind::Adam: config.optimizer = OptimizerConfig::adam(0.9f, 0.999f, 1e-8f, decay); break;
    }
    return Network(sizes, config);
  }();
  check_features(data, network);
  const PreparedTargets targets = prepare_targets(d, loss, network.output_size());

  const NetworkConfig& config = network.config();
  const Network::OptimizerState state = network.optimizer_state();
  FitOptions options;
  options.epochs = args.epochs;
  options.batch_size = args.batch_size;
  options.learning_rate =
      args.learning_rate.value_or(config.optimizer.kind == OptimizerKind::Adam ? 1e-3f : 1e-2f);
  const std::string schedule = lower(args.schedule);
  if (schedule == "cosine") {
    options.schedule = LearningRateSchedule::cosine(args.min_learning_rate);
  } else if (schedule == "step") {
    options.schedule = LearningRateSchedule::step(args.step_epochs, args.gamma);
  }
  // A resumed run continues with a new shuffling order rather than
  // replaying the first run's.
  options.seed = args.seed.value_or(network.seed() + state.step);
  options.validation_split = args.validation_split;
  options.early_stopping_patience = args.patience;
  options.min_delta = args.min_delta;
  options.numa_nodes = args.numa_nodes;

  const std::size_t held_out =
      static_cast<std::size_t>(std::floor(args.validation_split * static_cast<double>(d.rows)));
  const std::size_t train_rows = held_out < d.rows ? d.rows - held_out : d.rows;
  const std::size_t batch = std::max<std::size_t>(1, std::min(args.batch_size, train_rows));
  const std::size_t steps_per_epoch = (train_rows + batch - 1) / batch;
  const bool bar = args.progress == "on" || (args.progress == "auto" && ::isatty(STDOUT_FILENO) == 1);
  Progress progress(bar, args.quiet, args.epochs, steps_per_epoch);
  if (progress.bar()) {
    options.batch_callback_every = std::max<std::size_t>(1, steps_per_epoch / 1000);
    options.on_batch_end = [&progress](std::size_t epoch, std::size_t step, double batch_loss) {
      return progress.on_batch(epoch, step, batch_loss);
    };
  }
  std::size_t epochs_done = 0;
  options.on_epoch_end = [&progress, &epochs_done](const EpochRecord& r) {
    progress.on_epoch(r);
    epochs_done = r.epoch;
    return true;
  };
  options.should_stop = [] { return g_interrupted != 0; };

  if (!args.quiet) {
    std::printf("network %s: %s hidden, %s output, %s optimizer, %zu parameters, seed %llu%s\n",
                join_sizes(network.sizes()).c_str(), std::string(to_string(config.hidden_activation)).c_str(),
                std::string(to_string(config.output_activation)).c_str(),
                std::string(to_string(config.optimizer.kind)).c_str(), network.parameter_count(),
                static_cast<unsigned long long>(network.seed()),
                resuming ? (" (resumed from " + args.resume + ", step " + std::to_string(state.step) + ")").c_str()
                         : "");
    std::printf("data %s", data.description.c_str());
    if (held_out > 0) std::printf(" (%zu for training, %zu for validation)", train_rows, held_out);
    std::printf("\nloss %s, learning rate %g (%s), batch %zu, %zu epoch%s, %zu thread%s",
                std::string(to_string(loss)).c_str(), static_cast<double>(options.learning_rate), schedule.c_str(),
                batch, args.epochs, args.epochs == 1 ? "" : "s", get_num_threads(),
                get_num_threads() == 1 ? "" : "s");
    if (args.numa_nodes == 0) {
      std::printf(", data-parallel over every NUMA node");
    } else if (args.numa_nodes > 1) {
      std::printf(", data-parallel over %zu NUMA nodes", args.numa_nodes);
    }
    std::printf("\n");
    std::fflush(stdout);
  }

  History history;
  bool interrupted = false;
  {
    SigintGuard guard;
    try {
      history = fit(network, d.inputs, targets.view(), loss, options);
    } catch (const InterruptedError&) {
      interrupted = true;
    }
    // A Ctrl-C during the last epoch's validation still counts.
    interrupted = interrupted || g_interrupted != 0;
  }
  progress.clear();

  if (interrupted) {
    const std::string when = epochs_done == args.epochs
                                 ? "interrupted after the last epoch"
                                 : "interrupted in epoch " + std::to_string(epochs_done + 1) + " (" +
                                       std::to_string(epochs_done) + " complete)";
    if (args.save_on_interrupt) {
      network.save(args.output, !args.without_optimizer_state);
      std::fprintf(stderr, "kortexdl train: %s; saved %s as it was after the last whole batch\n", when.c_str(),
                   args.output.c_str());
    } else {
      std::fprintf(stderr, "kortexdl train: %s; nothing saved (--save-on-interrupt keeps the model)\n",
                   when.c_str());
    }
    return kExitInterrupted;
  }

  if (!args.quiet && history.stopped_early) {
    std::printf("stopped early after epoch %zu: best epoch %zu (%s %.4f)%s\n", history.epochs.size(),
                history.best_epoch, options.validation_split > 0.0 ? "val_loss" : "loss", history.best_loss,
                history.restored_best ? ", its parameters restored" : "");
  }
  network.save(args.output, !args.without_optimizer_state);
  if (!args.quiet) {
    std::error_code ec;
    const auto size = std::filesystem::file_size(args.output, ec);
    if (ec) {
      std::printf("saved %s\n", args.output.c_str());
    } else {
      std::printf("saved %s (%ju bytes)\n", args.output.c_str(), static_cast<std::uintmax_t>(size));
    }
  }
  return kExitOk;
}

}  // namespace kortexdl::cli
