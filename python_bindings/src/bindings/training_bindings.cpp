// Network.fit (a whole training run in one C++ call), predict,
// predict_classes, score, and the EpochRecord / History result types.
//
// fit runs its epoch loop with the GIL released and takes the GIL back only
// to run the Python callbacks and to poll for Ctrl-C (interrupt.hpp). An
// exception raised by a callback stops training after the current step and
// is re-raised from fit().
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdio>
#include <optional>
#include <string>
#include <utility>

#include "../convert.hpp"
#include "../gil_utils.hpp"
#include "../interrupt.hpp"
#include "bindings.hpp"
#include "kortexdl/error.hpp"
#include "kortexdl/training.hpp"

namespace kortexdl::python {

namespace {

std::string format_double(double value) {
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, "%.6g", value);
  return buffer;
}

std::string record_repr(const EpochRecord& r) {
  std::string text = "EpochRecord(epoch=" + std::to_string(r.epoch) + ", loss=" + format_double(r.loss);
  if (r.accuracy) text += ", accuracy=" + format_double(*r.accuracy);
  if (r.validation_loss) text += ", validation_loss=" + format_double(*r.validation_loss);
  if (r.validation_accuracy) text += ", validation_accuracy=" + format_double(*r.validation_accuracy);
  return text + ", learning_rate=" + format_double(r.learning_rate) + ", seconds=" + format_double(r.seconds) + ")";
}

std::string history_repr(const History& h) {
  return "History(epochs=" + std::to_string(h.epochs.size()) + ", steps=" + std::to_string(h.steps) +
         ", best_epoch=" + std::to_string(h.best_epoch) + ", best_loss=" + format_double(h.best_loss) +
         ", stopped_early=" + (h.stopped_early ? "True" : "False") +
         ", restored_best=" + (h.restored_best ? "True" : "False") + ")";
}

LearningRateSchedule to_schedule(const py::object& schedule, const py::object& step_epochs, const py::object& gamma,
                                 const py::object& min_learning_rate) {
  if (schedule.is_none()) return LearningRateSchedule::constant();
  if (!PyUnicode_Check(schedule.ptr())) {
    throw py::type_error("schedule: expected 'constant', 'step' or 'cosine', got " + type_name(schedule));
  }
  const std::string name = schedule.cast<std::string>();
  if (name == "constant") return LearningRateSchedule::constant();
  if (name == "step") return LearningRateSchedule::step(to_count(step_epochs, "step_epochs", 1), to_float(gamma, "gamma"));
  if (name == "cosine") return LearningRateSchedule::cosine(to_float(min_learning_rate, "min_learning_rate"));
  throw InvalidArgumentError("schedule: unknown value '" + name + "'; expected one of constant, step, cosine");
}

double to_double(const py::object& value, const char* argument) {
  if (value.is_none() || PyUnicode_Check(value.ptr())) {
    throw py::type_error(std::string(argument) + ": expected a number, got " +
                         (value.is_none() ? std::string("None") : type_name(value)));
  }
  const double v = PyFloat_AsDouble(value.ptr());
  if (v == -1.0 && PyErr_Occurred()) {
    PyErr_Clear();
    throw py::type_error(std::string(argument) + ": expected a number, got " + type_name(value));
  }
  return v;
}

// A callback's verdict: False stops training; None, True or anything else continues.
bool keep_going(const py::object& result) { return !(PyBool_Check(result.ptr()) && result.ptr() == Py_False); }

py::object check_callable(const py::object& callback, const char* argument) {
  if (!callback.is_none() && !PyCallable_Check(callback.ptr())) {
    throw py::type_error(std::string(argument) + ": expected a callable or None, got " + type_name(callback));
  }
  return callback;
}

History fit(Network& net, const py::object& inputs, const py::object& targets, const py::object& loss_type,
            const py::object& epochs, const py::object& batch_size, const py::object& learning_rate,
            const py::object& schedule, const py::object& step_epochs, const py::object& gamma,
            const py::object& min_learning_rate, const py::object& shuffle, const py::object& seed,
            const py::object& validation_data, const py::object& validation_split,
            const py::object& early_stopping_patience, const py::object& min_delta, const py::object& restore_best,
            const py::object& numa_nodes, const py::object& on_epoch_end, const py::object& on_batch_end,
            const py::object& batch_callback_every) {
  const LossType loss = to_loss(loss_type);
  FitOptions options;
  options.epochs = to_count(epochs, "epochs", 1);
  options.batch_size = to_count(batch_size, "batch_size", 1);
  options.learning_rate = to_float(learning_rate, "learning_rate");
  options.schedule = to_schedule(schedule, step_epochs, gamma, min_learning_rate);
  options.shuffle = to_bool(shuffle, "shuffle");
  options.seed = to_optional_seed(seed, "seed");
  options.validation_split = to_double(validation_split, "validation_split");
  options.early_stopping_patience = to_count(early_stopping_patience, "early_stopping_patience", 0);
  options.min_delta = to_double(min_delta, "min_delta");
  options.restore_best = to_bool(restore_best, "restore_best");
  options.numa_nodes = to_count(numa_nodes, "numa_nodes", 0);
  const py::object epoch_callback = check_callable(on_epoch_end, "on_epoch_end");
  const py::object batch_callback = check_callable(on_batch_end, "on_batch_end");
  options.batch_callback_every = batch_callback_every.is_none()
                                     ? (batch_callback.is_none() ? 0 : 1)
                                     : to_count(batch_callback_every, "batch_callback_every", 0);

  const Batch batch = inferred_batch(net, inputs);
  const TargetsInput target_arrays = to_targets(targets, loss, batch.rows, net.output_size());
  const Targets view = target_arrays.view();

  // Validation data: an (inputs, targets) pair, converted like the training data.
  std::optional<Batch> validation;
  std::optional<TargetsInput> validation_targets;
  if (!validation_data.is_none()) {
    if (!py::isinstance<py::sequence>(validation_data) || PyUnicode_Check(validation_data.ptr()) ||
        py::len(validation_data) != 2) {
      throw py::type_error("validation_data: expected an (inputs, targets) pair, got " + type_name(validation_data));
    }
    const auto pair = py::reinterpret_borrow<py::sequence>(validation_data);
    validation.emplace(inferred_batch(net, pair[0], "validation_data[0] (inputs)"));
    validation_targets.emplace(
        to_targets(pair[1], loss, validation->rows, net.output_size(), "validation_data[1] (targets)"));
    options.validation_inputs = validation->inputs.span();
    options.validation_targets = validation_targets->view();
  }

  SignalPoller poller;
  options.should_stop = [&poller] { return poller(); };
  if (!epoch_callback.is_none()) {
    options.on_epoch_end = [&poller, &epoch_callback](const EpochRecord& record) {
      py::gil_scoped_acquire gil;
      try {
        return keep_going(epoch_callback(record));
      } catch (py::error_already_set& error) {
        poller.keep(error);
        return false;
      }
    };
  }
  if (!batch_callback.is_none()) {
    options.on_batch_end = [&poller, &batch_callback](std::size_t epoch, std::size_t step, double batch_loss) {
      py::gil_scoped_acquire gil;
      try {
        return keep_going(batch_callback(epoch, step, batch_loss));
      } catch (py::error_already_set& error) {
        poller.keep(error);
        return false;
      }
    };
  }

  const std::span<const float> in = batch.inputs.span();
  History history;
  try {
    history = without_gil<"fit">([&] { return kortexdl::fit(net, in, view, loss, options); });
  } catch (const InterruptedError&) {
    poller.rethrow_pending();
    throw;
  }
  poller.rethrow_pending();  // a callback raised: training stopped after that step
  return history;
}

py::array_t<float> predict(const Network& net, const py::object& inputs, const py::object& batch_size) {
  const Batch batch = inferred_batch(net, inputs);
  const std::size_t chunk = to_count(batch_size, "batch_size", 1);
  const std::span<const float> in = batch.inputs.span();
  std::vector<float> outputs = without_gil<"predict">([&] { return kortexdl::predict(net, in, chunk); });
  return adopt(std::move(outputs),
               {static_cast<py::ssize_t>(batch.rows), static_cast<py::ssize_t>(net.output_size())});
}

py::array_t<std::int32_t> predict_classes(const Network& net, const py::object& inputs,
                                          const py::object& batch_size) {
  const Batch batch = inferred_batch(net, inputs);
  const std::size_t chunk = to_count(batch_size, "batch_size", 1);
  const std::span<const float> in = batch.inputs.span();
  return adopt(without_gil<"predict_classes">([&] { return kortexdl::predict_classes(net, in, chunk); }));
}

double score(const Network& net, const py::object& inputs, const py::object& labels, const py::object& batch_size) {
  const Batch batch = inferred_batch(net, inputs);
  const LabelArray label_array = to_labels(labels, "labels", net.output_size());
  const std::size_t chunk = to_count(batch_size, "batch_size", 1);
  const std::span<const float> in = batch.inputs.span();
  const std::span<const std::int32_t> truth(label_array.data(), static_cast<std::size_t>(label_array.size()));
  return without_gil<"score">([&] { return kortexdl::score(net, in, truth, chunk); });
}

}  // namespace

void bind_training(py::module_& m, NetworkClass& network) {
  py::class_<EpochRecord>(m, "EpochRecord", "One epoch of fit(): what on_epoch_end receives and History.epochs holds.")
      .def_readonly("epoch", &EpochRecord::epoch, "1-based epoch number.")
      .def_readonly("loss", &EpochRecord::loss, "Mean training loss over the epoch.")
      .def_property_readonly(
          "accuracy", [](const EpochRecord& r) { return r.accuracy; }, "Training accuracy (classification) or None.")
      .def_property_readonly(
          "validation_loss", [](const EpochRecord& r) { return r.validation_loss; }, "None without validation.")
      .def_property_readonly(
          "validation_accuracy", [](const EpochRecord& r) { return r.validation_accuracy; },
          "None without validation or for MSE.")
      .def_readonly("learning_rate", &EpochRecord::learning_rate, "The learning rate at the epoch's last step.")
      .def_readonly("seconds", &EpochRecord::seconds, "Wall time of the epoch, validation included.")
      .def("__repr__", &record_repr);

  py::class_<History>(m, "History", "What fit() returns.")
      .def_readonly("epochs", &History::epochs, "One EpochRecord per completed epoch.")
      .def_readonly("stopped_early", &History::stopped_early,
                    "Patience ran out, or a callback returned False.")
      .def_readonly("best_epoch", &History::best_epoch, "1-based epoch with the best monitored loss.")
      .def_readonly("best_loss", &History::best_loss,
                    "Best validation loss (the training loss without validation).")
      .def_readonly("restored_best", &History::restored_best,
                    "Whether the best epoch's parameters were put back when stopping early.")
      .def_readonly("steps", &History::steps, "Optimizer steps taken.")
      .def_property_readonly(
          "loss", [](const History& h) {
            py::list values;
            for (const auto& r : h.epochs) values.append(r.loss);
            return values;
          },
          "The training loss of every epoch, as a list.")
      .def_property_readonly(
          "validation_loss",
          [](const History& h) {
            py::list values;
            for (const auto& r : h.epochs) values.append(py::cast(r.validation_loss));
            return values;
          },
          "The validation loss of every epoch (None entries without validation).")
      .def("__len__", [](const History& h) { return h.epochs.size(); })
      .def("__repr__", &history_repr);

  network.def("fit", &fit, py::arg("inputs"), py::arg("targets"), py::arg("loss_type"), py::kw_only(),
              py::arg("epochs") = 10, py::arg("batch_size") = 32, py::arg("learning_rate") = 1e-3,
              py::arg("schedule") = "constant", py::arg("step_epochs") = 10, py::arg("gamma") = 0.1,
              py::arg("min_learning_rate") = 0.0, py::arg("shuffle") = true, py::arg("seed") = py::none(),
              py::arg("validation_data") = py::none(), py::arg("validation_split") = 0.0,
              py::arg("early_stopping_patience") = 0, py::arg("min_delta") = 0.0, py::arg("restore_best") = true,
              py::arg("numa_nodes") = 1, py::arg("on_epoch_end") = py::none(), py::arg("on_batch_end") = py::none(),
              py::arg("batch_callback_every") = py::none(),
              (std::string(
                   "A whole training run in one call: epochs of (shuffled) mini-batches of batch_size rows, a "
                   "learning-rate schedule ('constant', 'step': x gamma every step_epochs epochs, 'cosine': down "
                   "to min_learning_rate), validation on validation_data=(inputs, targets) or the last "
                   "validation_split fraction of the rows, and early stopping after early_stopping_patience "
                   "epochs without an improvement > min_delta (restore_best puts back the best epoch's "
                   "parameters). numa_nodes: 1 plain training, 0 every NUMA node, n > 1 that many (virtual) "
                   "nodes, as train_parallel_numa.\n\n"
                   "Callbacks run on the calling thread with the GIL: on_epoch_end(record: EpochRecord) and "
                   "on_batch_end(epoch, step, loss) (every batch_callback_every steps, default 1); returning "
                   "False stops training after the current step; an exception raised by a callback stops it "
                   "and is re-raised. Ctrl-C (KeyboardInterrupt) stops after the last whole step. Returns a "
                   "History.") +
               kReleasesGil + " It is re-acquired only to run callbacks.")
                  .c_str());
  network.def("predict", &predict, py::arg("inputs"), py::arg("batch_size") = 256,
              (std::string("Outputs for any number of rows, in chunks of batch_size rows: a new (rows, "
                           "output_size) float32 array (forward_batch with a default chunk).") +
               kReleasesGil)
                  .c_str());
  network.def("predict_classes", &predict_classes, py::arg("inputs"), py::arg("batch_size") = 256,
              (std::string("The arg-max class of every row as an int32 array (a single output: output > 0.5 "
                           "for a sigmoid output layer, > 0 for logits).") +
               kReleasesGil)
                  .c_str());
  network.def("score", &score, py::arg("inputs"), py::arg("labels"), py::arg("batch_size") = 256,
              (std::string("Fraction of rows whose predicted class (predict_classes) equals the integer label.") +
               kReleasesGil)
                  .c_str());
}

}  // namespace kortexdl::python
