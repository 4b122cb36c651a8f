// kortexdl._core._distributed: the C++ side of kortexdl.distributed
// (python_bindings/kortexdl/distributed.py holds the Python API and its
// documentation; docs/distributed.md the guide).
//
// Every call that may wait for other processes (init, finalize, barrier,
// training, evaluation) runs with the GIL released, so other Python threads
// keep running while a rank waits for its peers. train_distributed is one
// long C++ call like fit(): callbacks re-acquire the GIL, Ctrl-C is polled
// between steps and, distributed, stops every rank after the same step.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <optional>
#include <string>

#include "../convert.hpp"
#include "../gil_utils.hpp"
#include "../interrupt.hpp"
#include "bindings.hpp"
#include "kortexdl/distributed.hpp"
#include "kortexdl/error.hpp"
#include "kortexdl/training.hpp"

namespace kortexdl::python {

namespace {

namespace dist = kortexdl::distributed;

double number(const py::object& value, const char* argument) {
  if (value.is_none() || PyUnicode_Check(value.ptr()) || PyBool_Check(value.ptr())) {
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

LearningRateSchedule schedule_of(const py::object& schedule, const py::object& step_epochs, const py::object& gamma,
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

py::dict result_info(const dist::DistributedHistory& r) {
  py::dict info;
  info["world_size"] = r.world_size;
  info["rank"] = r.rank;
  info["global_rows"] = r.global_rows;
  info["seconds"] = r.seconds;
  info["allreduce_seconds"] = r.allreduce_seconds;
  info["allreduces"] = r.allreduces;
  info["checkpoints_written"] = r.checkpoints_written;
  return info;
}

py::tuple train(Network& net, const py::object& inputs, const py::object& targets, const py::object& loss_type,
                const py::object& epochs, const py::object& batch_size, const py::object& learning_rate,
                const py::object& schedule, const py::object& step_epochs, const py::object& gamma,
                const py::object& min_learning_rate, const py::object& shuffle, const py::object& seed,
                const py::object& validation_data, const py::object& validation_split,
                const py::object& early_stopping_patience, const py::object& min_delta,
                const py::object& restore_best, const py::object& numa_nodes, const py::object& on_epoch_end,
                const py::object& checkpoint_path, const py::object& checkpoint_every,
                const py::object& include_optimizer_state, const py::object& save_on_all_ranks) {
  const LossType loss = to_loss(loss_type);
  FitOptions options;
  options.epochs = to_count(epochs, "epochs", 1);
  options.batch_size = to_count(batch_size, "batch_size", 1);
  options.learning_rate = to_float(learning_rate, "learning_rate");
  options.schedule = schedule_of(schedule, step_epochs, gamma, min_learning_rate);
  options.shuffle = to_bool(shuffle, "shuffle");
  options.seed = to_optional_seed(seed, "seed");
  options.validation_split = number(validation_split, "validation_split");
  options.early_stopping_patience = to_count(early_stopping_patience, "early_stopping_patience", 0);
  options.min_delta = number(min_delta, "min_delta");
  options.restore_best = to_bool(restore_best, "restore_best");
  options.numa_nodes = to_count(numa_nodes, "numa_nodes", 0);
  if (!on_epoch_end.is_none() && !PyCallable_Check(on_epoch_end.ptr())) {
    throw py::type_error("on_epoch_end: expected a callable or None, got " + type_name(on_epoch_end));
  }
  dist::DistributedOptions distributed;
  if (!checkpoint_path.is_none()) {
    distributed.checkpoint_path = py::str(py::module_::import("os").attr("fspath")(checkpoint_path)).cast<std::string>();
  }
  distributed.checkpoint_every = to_count(checkpoint_every, "checkpoint_every", 1);
  distributed.include_optimizer_state = to_bool(include_optimizer_state, "include_optimizer_state");
  distributed.save_on_all_ranks = to_bool(save_on_all_ranks, "save_on_all_ranks");

  const Batch batch = inferred_batch(net, inputs);
  const TargetsInput target_arrays = to_targets(targets, loss, batch.rows, net.output_size());
  const Targets view = target_arrays.view();
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
  if (!on_epoch_end.is_none()) {
    options.on_epoch_end = [&poller, &on_epoch_end](const EpochRecord& record) {
      py::gil_scoped_acquire gil;
      try {
        const py::object verdict = on_epoch_end(record);
        return !(PyBool_Check(verdict.ptr()) && verdict.ptr() == Py_False);
      } catch (py::error_already_set& error) {
        poller.keep(error);
        return false;  // every rank stops after this epoch; this rank re-raises
      }
    };
  }
  const std::span<const float> in = batch.inputs.span();
  dist::DistributedHistory result;
  try {
    result = without_gil<"train_distributed">(
        [&] { return dist::train_distributed(net, in, view, loss, options, distributed); });
  } catch (const InterruptedError&) {
    poller.rethrow_pending();
    throw;
  }
  poller.rethrow_pending();
  return py::make_tuple(py::cast(std::move(result.history)), result_info(result));
}

Evaluation evaluate(const Network& net, const py::object& inputs, const py::object& targets,
                    const py::object& loss_type, const py::object& batch_size) {
  const LossType loss = to_loss(loss_type);
  const std::size_t chunk = to_optional_count(batch_size, "batch_size", 1).value_or(0);
  const Batch batch = inferred_batch(net, inputs);
  const TargetsInput target_arrays = to_targets(targets, loss, batch.rows, net.output_size());
  const Targets view = target_arrays.view();
  const std::span<const float> in = batch.inputs.span();
  return without_gil<"distributed_evaluate">(
      [&] { return dist::evaluate(net, in, view, loss, dist::communicator(), chunk); });
}

}  // namespace

void bind_distributed(py::module_& m) {
  py::module_ d = m.def_submodule("_distributed", "The C++ side of kortexdl.distributed.");
  d.def("mpi_available", &dist::mpi_available);
  d.def(
      "init",
      [](const py::object& timeout_seconds, const py::object& fortran_handle) {
        dist::InitOptions options;
        if (!timeout_seconds.is_none()) options.timeout_seconds = number(timeout_seconds, "timeout_seconds");
        if (!fortran_handle.is_none()) options.fortran_handle = fortran_handle.cast<int>();
        py::gil_scoped_release release;
        dist::init(options);
      },
      py::arg("timeout_seconds") = py::none(), py::arg("fortran_handle") = py::none());
  d.def("initialized", &dist::initialized);
  d.def("finalize", [] {
    py::gil_scoped_release release;
    dist::finalize();
  });
  d.def("rank", [] {
    py::gil_scoped_release release;
    return dist::rank();
  });
  d.def("world_size", [] {
    py::gil_scoped_release release;
    return dist::world_size();
  });
  d.def("barrier", [] {
    py::gil_scoped_release release;
    dist::communicator().barrier();
  });
  d.def("description", [] {
    py::gil_scoped_release release;
    return dist::communicator().description();
  });
  d.def("owns_mpi", [] { return dist::communicator().owns_mpi(); });
  d.def("timeout_seconds", [] { return dist::communicator().timeout_seconds(); });
  d.def("allreduce_seconds", [] { return dist::communicator().allreduce_seconds(); });
  d.def(
      "allreduce_sum",
      [](py::array_t<double, py::array::c_style> values) {
        // In place, on a contiguous float64 array (tests, small metrics).
        double* data = values.mutable_data();
        const std::size_t count = static_cast<std::size_t>(values.size());
        py::gil_scoped_release release;
        dist::communicator().allreduce_sum(data, count);
      },
      py::arg("values").noconvert());
  d.def(
      "shard_indices",
      [](const py::object& rows, const py::object& rank, const py::object& world_size, const py::object& seed) {
        const std::size_t n = to_count(rows, "rows", 0);
        const std::size_t r = to_count(rank, "rank", 0);
        const std::size_t w = to_count(world_size, "world_size", 1);
        const auto s = to_optional_seed(seed, "seed");
        const std::vector<std::size_t> indices = dist::shard_indices(n, r, w, s);
        std::vector<std::int64_t> out(indices.begin(), indices.end());
        return adopt(std::move(out));
      },
      py::arg("rows"), py::arg("rank"), py::arg("world_size"), py::arg("seed"));
  d.def(
      "synchronize",
      [](Network& net) {
        py::gil_scoped_release release;
        dist::synchronize(net, dist::communicator());
      },
      py::arg("network"));
  d.def(
      "parameter_hash", [](const Network& net) { return dist::parameter_hash(net); }, py::arg("network"));
  d.def(
      "save",
      [](const Network& net, const py::object& path, const py::object& all_ranks,
         const py::object& include_optimizer_state) {
        const std::string p = py::str(py::module_::import("os").attr("fspath")(path)).cast<std::string>();
        const bool all = to_bool(all_ranks, "all_ranks");
        const bool include = to_bool(include_optimizer_state, "include_optimizer_state");
        py::gil_scoped_release release;
        return dist::save(net, p, dist::communicator(), all, include);
      },
      py::arg("network"), py::arg("path"), py::arg("all_ranks") = false, py::arg("include_optimizer_state") = true);
  d.def(
      "load",
      [](const py::object& path) {
        const std::string p = py::str(py::module_::import("os").attr("fspath")(path)).cast<std::string>();
        py::gil_scoped_release release;
        return Network::load(p);
      },
      py::arg("path"));
  d.def("evaluate", &evaluate, py::arg("network"), py::arg("inputs"), py::arg("targets"), py::arg("loss_type"),
        py::arg("batch_size") = py::none());
  d.def("train_distributed", &train, py::arg("network"), py::arg("inputs"), py::arg("targets"),
        py::arg("loss_type"), py::kw_only(), py::arg("epochs") = 10, py::arg("batch_size") = 32,
        py::arg("learning_rate") = 1e-3, py::arg("schedule") = "constant", py::arg("step_epochs") = 10,
        py::arg("gamma") = 0.1, py::arg("min_learning_rate") = 0.0, py::arg("shuffle") = true,
        py::arg("seed") = py::none(), py::arg("validation_data") = py::none(), py::arg("validation_split") = 0.0,
        py::arg("early_stopping_patience") = 0, py::arg("min_delta") = 0.0, py::arg("restore_best") = true,
        py::arg("numa_nodes") = 1, py::arg("on_epoch_end") = py::none(), py::arg("checkpoint_path") = py::none(),
        py::arg("checkpoint_every") = 1, py::arg("include_optimizer_state") = true,
        py::arg("save_on_all_ranks") = false);
}

}  // namespace kortexdl::python
