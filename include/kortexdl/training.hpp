#pragma once
// A whole training run in one call: epochs of shuffled mini-batches, a
// learning-rate schedule, validation, early stopping and callbacks, with the
// epoch loop in C++ (so bindings run it with the GIL released and only
// re-acquire it for callbacks).
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <vector>

#include "kortexdl/loss.hpp"
#include "kortexdl/network.hpp"
#include "kortexdl/targets.hpp"

namespace kortexdl {

class GradientExchange;  // kortexdl/distributed.hpp

struct LearningRateSchedule {
  enum class Kind { Constant, Step, Cosine };
  Kind kind = Kind::Constant;
  std::size_t step_epochs = 10;  // Step: multiply by gamma every step_epochs epochs
  float gamma = 0.1f;
  float min_learning_rate = 0.0f;  // Cosine: anneal to this, per step, over the whole run

  static LearningRateSchedule constant() { return {}; }
  static LearningRateSchedule step(std::size_t every_epochs, float gamma);
  static LearningRateSchedule cosine(float min_learning_rate = 0.0f);
  // The rate for a step, given the base rate and progress through the run.
  float at(float base, std::size_t epoch, std::size_t step_in_run, std::size_t total_steps) const;
};

struct EpochRecord {
  std::size_t epoch = 0;                     // 1-based
  double loss = 0.0;                         // mean training loss over the epoch
  std::optional<double> accuracy;            // training accuracy (classification)
  std::optional<double> validation_loss;
  std::optional<double> validation_accuracy;
  float learning_rate = 0.0f;                // at the epoch's last step
  double seconds = 0.0;                      // wall time of the epoch, validation included
};

struct FitOptions {
  std::size_t epochs = 10;
  std::size_t batch_size = 32;
  float learning_rate = 1e-3f;
  LearningRateSchedule schedule;
  bool shuffle = true;
  std::optional<std::uint64_t> seed;  // shuffling and the validation split; default: the network's seed

  // Validation: explicit data (validation_inputs non-empty), or the last
  // `validation_split` fraction of the rows, held out before shuffling.
  std::span<const float> validation_inputs;
  std::optional<Targets> validation_targets;
  double validation_split = 0.0;

  // Early stopping on the validation loss (the training loss without
  // validation): stop after `patience` epochs without an improvement larger
  // than min_delta; 0 disables. restore_best puts back the best epoch's
  // parameters when stopping.
  std::size_t early_stopping_patience = 0;
  double min_delta = 0.0;
  bool restore_best = true;

  std::size_t numa_nodes = 1;  // 1: plain training; 0: every NUMA node; N: N (virtual) nodes
  bool thread_safe = false;

  // Callbacks run on the calling thread; returning false stops training
  // after the current step (the history says so). should_stop is polled
  // before every step; returning true throws InterruptedError.
  std::function<bool(const EpochRecord&)> on_epoch_end;
  std::size_t batch_callback_every = 0;  // 0: no batch callback
  std::function<bool(std::size_t epoch, std::size_t step, double loss)> on_batch_end;
  std::function<bool()> should_stop;

  // Across processes (kortexdl/distributed.hpp; null: this process only).
  // Every rank passes its own rows and the same options; batch_size is per
  // rank (a step trains on the step's rows of every rank, its gradient the
  // mean over all of them); losses, accuracy and validation are over all
  // ranks, so early stopping decides the same everywhere. should_stop on any
  // rank interrupts every rank after the same step; a callback returning
  // false on any rank stops every rank after the next step (at the latest at
  // the end of the epoch). Starts by checking that the ranks agree and
  // copying rank 0's parameters and optimizer state to every rank.
  GradientExchange* distributed = nullptr;
};

struct History {
  std::vector<EpochRecord> epochs;
  bool stopped_early = false;     // patience ran out, or a callback asked to stop
  std::size_t best_epoch = 0;     // 1-based epoch with the best monitored loss
  double best_loss = 0.0;
  bool restored_best = false;
  std::size_t steps = 0;
};

History fit(Network& network, std::span<const float> inputs, const Targets& targets, LossType loss,
            const FitOptions& options);

// Outputs for any number of rows (forward_batch in chunks of batch_size).
std::vector<float> predict(const Network& network, std::span<const float> inputs, std::size_t batch_size = 256);
// The arg-max class of every row (a single sigmoid output: output > 0.5).
std::vector<std::int32_t> predict_classes(const Network& network, std::span<const float> inputs,
                                          std::size_t batch_size = 256);
// Fraction of rows whose predicted class equals the label.
double score(const Network& network, std::span<const float> inputs, std::span<const std::int32_t> labels,
             std::size_t batch_size = 256);

}  // namespace kortexdl
