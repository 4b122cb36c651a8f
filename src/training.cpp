#include "kortexdl/training.hpp"

#include <algorithm>
#include <cmath>
#include <exception>
#include <limits>
#include <numeric>
#include <optional>
#include <random>
#include <string>

#include "distributed/run.hpp"
#include "format.hpp"
#include "kortexdl/error.hpp"
#include "kortexdl/numa.hpp"
#include "network_state.hpp"
#include "parallel/training_session.hpp"
#include "validation.hpp"

namespace kortexdl {

using detail::LossSums;
using detail::TargetRows;

LearningRateSchedule LearningRateSchedule::step(std::size_t every_epochs, float gamma) {
  if (every_epochs == 0) throw InvalidArgumentError("schedule.step_epochs: must be at least 1, got 0");
  if (!(std::isfinite(gamma) && gamma > 0.0f)) {
    throw InvalidArgumentError("schedule.gamma: must be a finite number > 0, got " + detail::format_number(gamma));
  }
  LearningRateSchedule s;
  s.kind = Kind::Step;
  s.step_epochs = every_epochs;
  s.gamma = gamma;
  return s;
}

LearningRateSchedule LearningRateSchedule::cosine(float min_learning_rate) {
  if (!(std::isfinite(min_learning_rate) && min_learning_rate >= 0.0f)) {
    throw InvalidArgumentError("schedule.min_learning_rate: must be a finite number >= 0, got " +
                               detail::format_number(min_learning_rate));
  }
  LearningRateSchedule s;
  s.kind = Kind::Cosine;
  s.min_learning_rate = min_learning_rate;
  return s;
}

float LearningRateSchedule::at(float base, std::size_t epoch, std::size_t step_in_run, std::size_t total_steps) const {
  switch (kind) {
    case Kind::Constant:
      return base;
    case Kind::Step:
      return base * std::pow(gamma, static_cast<float>(epoch / step_epochs));
    case Kind::Cosine: {
      const double progress = total_steps <= 1 ? 0.0 : static_cast<double>(step_in_run) / static_cast<double>(total_steps);
      const double factor = 0.5 * (1.0 + std::cos(3.14159265358979323846 * progress));
      return static_cast<float>(min_learning_rate + (base - min_learning_rate) * factor);
    }
  }
  return base;
}

namespace {

struct Split {
  std::span<const float> train_inputs;
  TargetRows train_targets;
  std::size_t train_rows = 0;
  std::span<const float> validation_inputs;
  TargetRows validation_targets;
  std::size_t validation_rows = 0;
};

void check_options(const FitOptions& options) {
  if (options.epochs == 0) throw InvalidArgumentError("epochs: must be at least 1, got 0");
  detail::check_batch_size(options.batch_size);
  detail::check_learning_rate(options.learning_rate);
  if (!(options.validation_split >= 0.0 && options.validation_split < 1.0)) {
    throw InvalidArgumentError("validation_split: must be in [0, 1), got " + detail::format_number(options.validation_split));
  }
  if (!options.validation_inputs.empty() && options.validation_split > 0.0) {
    throw InvalidArgumentError("validation_split: give either validation data or a split, not both");
  }
  if (!(std::isfinite(options.min_delta) && options.min_delta >= 0.0)) {
    throw InvalidArgumentError("min_delta: must be a finite number >= 0, got " + detail::format_number(options.min_delta));
  }
  if (options.batch_callback_every > 0 && !options.on_batch_end) {
    throw InvalidArgumentError("batch_callback_every: set on_batch_end too");
  }
}

Split split_rows(const detail::Architecture& arch, std::span<const float> inputs, const Targets& targets,
                 LossType loss, const FitOptions& options) {
  const std::size_t in = arch.inputs();
  const std::size_t out = arch.outputs();
  Split split;
  const std::size_t rows = detail::rows_of(inputs, in);
  const TargetRows all = detail::check_targets(targets, loss, rows, out);
  detail::check_finite(inputs, "inputs");
  if (!options.validation_inputs.empty()) {
    if (!options.validation_targets.has_value()) {
      throw InvalidArgumentError("validation_targets: validation inputs were given without targets");
    }
    split.validation_rows = detail::rows_of(options.validation_inputs, in, "validation_inputs");
    split.validation_targets = detail::check_targets(*options.validation_targets, loss, split.validation_rows, out);
    split.validation_inputs = options.validation_inputs;
    split.train_inputs = inputs;
    split.train_targets = all;
    split.train_rows = rows;
    return split;
  }
  const auto held_out = static_cast<std::size_t>(std::floor(options.validation_split * static_cast<double>(rows)));
  if (options.validation_split > 0.0 && (held_out == 0 || held_out >= rows)) {
    throw InvalidArgumentError("validation_split: " + detail::format_number(options.validation_split) + " of " +
                               std::to_string(rows) + " rows leaves " + std::to_string(held_out) +
                               " validation rows and " + std::to_string(rows - held_out) +
                               " training rows; both need at least one");
  }
  split.train_rows = rows - held_out;
  split.train_inputs = inputs.subspan(0, split.train_rows * in);
  split.train_targets = all;
  if (held_out > 0) {
    split.validation_rows = held_out;
    split.validation_inputs = inputs.subspan(split.train_rows * in);
    split.validation_targets = all.offset(split.train_rows, out);
  }
  return split;
}

// The fit settings beyond RunSettings' own that every rank must share.
std::uint64_t settings_hash(const FitOptions& o) {
  std::uint64_t h = detail::fnv1a(nullptr, 0);
  auto mix = [&h](const auto& value) { h = detail::fnv1a(&value, sizeof value, h); };
  mix(static_cast<int>(o.schedule.kind));
  mix(static_cast<std::uint64_t>(o.schedule.step_epochs));
  mix(o.schedule.gamma);
  mix(o.schedule.min_learning_rate);
  mix(o.validation_split);
  mix(static_cast<std::uint64_t>(o.early_stopping_patience));
  mix(o.min_delta);
  mix(static_cast<int>(o.restore_best));
  return h;
}

}  // namespace

History fit(Network& network, std::span<const float> inputs, const Targets& targets, LossType loss,
            const FitOptions& options) {
  detail::NetworkState& s = network.state();
  Split split;
  // Distributed, a rank whose arguments fail still takes part in the
  // start-up exchange, so every rank throws instead of waiting for it.
  std::exception_ptr local_error;
  try {
    check_options(options);
    detail::check_loss_matches_output(loss, s.arch.output_activation);
    split = split_rows(s.arch, inputs, targets, loss, options);
  } catch (...) {
    if (options.distributed == nullptr) throw;
    local_error = std::current_exception();
  }
  const bool lock = options.thread_safe || s.guard.locking();
  std::optional<detail::DistributedRun> run;
  if (options.distributed != nullptr) {
    const detail::RunSettings settings{"fit",
                                       loss,
                                       options.batch_size,
                                       options.epochs,
                                       options.learning_rate,
                                       options.shuffle,
                                       settings_hash(options),
                                       local_error ? 0 : split.train_rows,
                                       local_error ? 0 : split.validation_rows};
    run.emplace(*options.distributed, s, settings, local_error, lock);
  }
  const std::size_t in = s.arch.inputs();
  const std::size_t out = s.arch.outputs();
  const std::size_t batch = std::min(options.batch_size, run ? run->max_rows() : split.train_rows);
  const NumaTopology topology = numa_topology(options.numa_nodes);

  detail::TrainingSession session(s, topology, lock, "fit", options.distributed);
  std::vector<std::size_t> order(split.train_rows);
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::mt19937_64 engine(options.seed.value_or(s.seed));
  detail::BatchGatherer gather(split.train_inputs, split.train_targets, in, out, options.shuffle ? batch : 0);
  const std::size_t steps_per_epoch = run ? run->steps_per_epoch(batch) : (split.train_rows + batch - 1) / batch;
  // Saturating: a run too long to count in size_t anneals as if endless
  // (a wrapped count would restart the cosine schedule).
  std::size_t total_steps = 0;
  if (__builtin_mul_overflow(steps_per_epoch, options.epochs, &total_steps)) {
    total_steps = std::numeric_limits<std::size_t>::max();
  }
  const std::size_t eval_chunk = detail::evaluation_chunk(0, std::max<std::size_t>(split.validation_rows, 1));

  History history;
  history.best_loss = std::numeric_limits<double>::infinity();
  std::vector<float> best_parameters;
  const bool keep_best = options.early_stopping_patience > 0 && options.restore_best;
  std::size_t epochs_without_improvement = 0;
  bool patience_ran_out = false;
  // Distributed: a callback on this rank asked to stop; every rank stops
  // after the step (or epoch end) where that vote is counted.
  bool stop_vote = false;

  for (std::size_t epoch = 0; epoch < options.epochs && !history.stopped_early; ++epoch) {
    const auto started = detail::Clock::now();
    if (options.shuffle) detail::shuffle_order(order, engine);
    LossSums sums;
    std::size_t rows_seen = 0;
    float rate = options.learning_rate;
    for (std::size_t step = 0; step < steps_per_epoch; ++step) {
      const bool interrupt = options.should_stop && options.should_stop();
      if (interrupt && !run) {
        throw InterruptedError("fit: interrupted after " + std::to_string(session.steps()) + " step(s), in epoch " +
                               std::to_string(epoch + 1) +
                               "; the network holds the parameters after the last whole step");
      }
      const std::size_t start = step * batch;
      const std::size_t n = run ? run->local_rows(step, batch) : std::min(batch, split.train_rows - start);
      const detail::BatchView view = gather.take(options.shuffle ? &order : nullptr, n > 0 ? start : 0, n);
      rate = options.schedule.at(options.learning_rate, epoch, session.steps(), total_steps);
      LossSums step_sums;
      std::size_t step_rows = n;
      if (run) {
        // Every rank takes this step; the votes of should_stop and of the
        // callbacks travel with its loss sums.
        step_rows = run->global_rows(step, batch);
        detail::StepVotes votes{interrupt, stop_vote};
        step_sums = session.step(view.inputs, view.targets, n, step_rows, loss, rate, votes);
        if (votes.interrupt) {
          throw InterruptedError("fit: interrupted on request of a rank after " + std::to_string(session.steps()) +
                                 " step(s), in epoch " + std::to_string(epoch + 1) +
                                 "; every rank holds the parameters after that step");
        }
        if (votes.stop) {
          sums += step_sums;
          rows_seen += step_rows;
          history.stopped_early = true;
          break;
        }
      } else {
        step_sums = session.step(view.inputs, view.targets, n, loss, rate);
      }
      sums += step_sums;
      rows_seen += step_rows;
      if (options.batch_callback_every > 0 && (step + 1) % options.batch_callback_every == 0) {
        if (!options.on_batch_end(epoch + 1, step + 1, step_sums.loss / static_cast<double>(step_rows))) {
          if (run) {
            stop_vote = true;  // counted at the next step or at the end of the epoch
          } else {
            history.stopped_early = true;
            break;
          }
        }
      }
    }
    const Evaluation train = detail::to_evaluation(sums, std::max<std::size_t>(rows_seen, 1), out, loss);
    EpochRecord record;
    record.epoch = epoch + 1;
    record.loss = train.loss;
    record.accuracy = train.accuracy;
    record.learning_rate = rate;
    if (run ? run->global_validation_rows() > 0 : split.validation_rows > 0) {
      LossSums v = session.evaluate(split.validation_inputs.data(), split.validation_targets, split.validation_rows,
                                    eval_chunk, loss);
      if (run) v = run->sum(v);
      const Evaluation validation =
          detail::to_evaluation(v, run ? run->global_validation_rows() : split.validation_rows, out, loss);
      record.validation_loss = validation.loss;
      record.validation_accuracy = validation.accuracy;
    }
    record.seconds = detail::seconds_since(started);
    history.epochs.push_back(record);

    const double monitored = record.validation_loss.value_or(record.loss);
    if (monitored < history.best_loss - options.min_delta) {
      history.best_loss = monitored;
      history.best_epoch = record.epoch;
      epochs_without_improvement = 0;
      if (keep_best) best_parameters = session.parameters();
    } else if (options.early_stopping_patience > 0 &&
               ++epochs_without_improvement >= options.early_stopping_patience) {
      history.stopped_early = true;
      patience_ran_out = true;
    }
    bool stop = options.on_epoch_end && !options.on_epoch_end(record);
    if (run) stop = run->any(stop || stop_vote);  // every rank, every epoch: callbacks may differ by rank
    if (stop) history.stopped_early = true;
  }
  if (patience_ran_out && keep_best && !best_parameters.empty()) {
    session.restore(best_parameters);
    history.restored_best = true;
  }
  history.steps = session.steps();
  return history;
}

std::vector<float> predict(const Network& network, std::span<const float> inputs, std::size_t batch_size) {
  return network.forward_batch(inputs, batch_size);
}

std::vector<std::int32_t> predict_classes(const Network& network, std::span<const float> inputs,
                                          std::size_t batch_size) {
  const std::vector<float> outputs = network.forward_batch(inputs, batch_size);
  const std::size_t out = network.output_size();
  const std::size_t rows = outputs.size() / out;
  std::vector<std::int32_t> classes(rows);
  const float threshold = network.config().output_activation == Activation::Sigmoid ? 0.5f : 0.0f;
  for (std::size_t i = 0; i < rows; ++i) {
    const float* row = outputs.data() + i * out;
    if (out == 1) {
      classes[i] = row[0] > threshold ? 1 : 0;
    } else {
      classes[i] = static_cast<std::int32_t>(std::max_element(row, row + out) - row);
    }
  }
  return classes;
}

double score(const Network& network, std::span<const float> inputs, std::span<const std::int32_t> labels,
             std::size_t batch_size) {
  const std::vector<std::int32_t> predicted = predict_classes(network, inputs, batch_size);
  if (labels.size() != predicted.size()) {
    throw ShapeError("labels: expected one label per row = " + std::to_string(predicted.size()) + " labels, got " +
                     std::to_string(labels.size()));
  }
  std::size_t hits = 0;
  for (std::size_t i = 0; i < labels.size(); ++i) hits += predicted[i] == labels[i] ? 1 : 0;
  return static_cast<double>(hits) / static_cast<double>(labels.size());
}

}  // namespace kortexdl
