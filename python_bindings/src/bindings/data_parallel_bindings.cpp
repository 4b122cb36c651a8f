// Network.train_parallel_numa / evaluate_parallel_numa and TrainingHistory.
//
// train_parallel_numa is one long C++ call (many epochs of mini-batches), so
// it is interruptible (interrupt.hpp): Ctrl-C stops it after the last whole
// mini-batch, and the binding re-raises the KeyboardInterrupt. The network
// holds the parameters after the last whole step.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdio>
#include <string>

#include "../convert.hpp"
#include "../gil_utils.hpp"
#include "../interrupt.hpp"
#include "bindings.hpp"
#include "kortexdl/data_parallel.hpp"
#include "kortexdl/error.hpp"

namespace kortexdl::python {

namespace {

std::string format_double(double value) {
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, "%.6g", value);
  return buffer;
}

std::string history_repr(const DataParallelResult& r) {
  std::string losses = "[";
  for (std::size_t i = 0; i < r.epoch_losses.size(); ++i) {
    if (i > 0) losses += ", ";
    losses += format_double(r.epoch_losses[i]);
  }
  losses += "]";
  return "TrainingHistory(loss=" + format_double(r.loss) + ", epoch_losses=" + losses +
         ", steps=" + std::to_string(r.steps) + ", nodes=" + std::to_string(r.nodes) +
         ", seconds=" + format_double(r.seconds) + ", reduce_seconds=" + format_double(r.reduce_seconds) + ")";
}

py::object train_parallel(Network& net, const py::object& inputs, const py::object& targets,
                          const py::object& loss_type, const py::object& learning_rate, const py::object& batch_size,
                          const py::object& epochs, const py::object& shuffle, const py::object& seed,
                          const py::object& numa_nodes, const py::object& history) {
  const LossType loss = to_loss(loss_type);
  const float rate = to_float(learning_rate, "learning_rate");
  DataParallelOptions options;
  options.batch_size = to_count(batch_size, "batch_size", 1);
  options.epochs = to_count(epochs, "epochs", 1);
  options.shuffle = to_bool(shuffle, "shuffle");
  options.seed = to_optional_seed(seed, "seed");
  options.numa_nodes = to_count(numa_nodes, "numa_nodes", 0);
  const bool want_history = to_bool(history, "history");
  const Batch batch = inferred_batch(net, inputs);
  const TargetsInput target_arrays = to_targets(targets, loss, batch.rows, net.output_size());
  const Targets view = target_arrays.view();
  const std::span<const float> in = batch.inputs.span();

  SignalPoller poller;
  options.should_stop = [&poller] { return poller(); };
  DataParallelResult result;
  try {
    result = without_gil<"train_parallel_numa">(
        [&] { return train_parallel_numa(net, in, view, loss, rate, options); });
  } catch (const InterruptedError&) {
    poller.rethrow_pending();
    throw;
  }
  if (want_history) return py::cast(std::move(result));
  return py::float_(result.loss);
}

Evaluation evaluate_parallel(const Network& net, const py::object& inputs, const py::object& targets,
                             const py::object& loss_type, const py::object& batch_size,
                             const py::object& numa_nodes) {
  const LossType loss = to_loss(loss_type);
  const std::size_t chunk = to_optional_count(batch_size, "batch_size", 1).value_or(0);
  const std::size_t nodes = to_count(numa_nodes, "numa_nodes", 0);
  const Batch batch = inferred_batch(net, inputs);
  const TargetsInput target_arrays = to_targets(targets, loss, batch.rows, net.output_size());
  const Targets view = target_arrays.view();
  const std::span<const float> in = batch.inputs.span();
  return without_gil<"evaluate_parallel_numa">(
      [&] { return evaluate_parallel_numa(net, in, view, loss, chunk, nodes); });
}

}  // namespace

void bind_data_parallel(py::module_& m, NetworkClass& network) {
  py::class_<DataParallelResult>(m, "TrainingHistory",
                                 "What train_parallel_numa(..., history=True) returns. float(h) is the last "
                                 "epoch's mean loss.")
      .def_readonly("loss", &DataParallelResult::loss, "Mean loss of the last epoch.")
      .def_readonly("epoch_losses", &DataParallelResult::epoch_losses, "Mean loss of every completed epoch.")
      .def_readonly("steps", &DataParallelResult::steps, "Optimizer steps taken.")
      .def_readonly("nodes", &DataParallelResult::nodes, "NUMA nodes (parameter replicas) used.")
      .def_readonly("seconds", &DataParallelResult::seconds, "Wall time of the training loop.")
      .def_readonly("reduce_seconds", &DataParallelResult::reduce_seconds,
                    "Of which averaging gradients across replicas.")
      .def_readonly("worker_cpus", &DataParallelResult::worker_cpus,
                    "For each node's worker thread, the CPUs it may run on after pinning (empty with one node).")
      .def("__float__", [](const DataParallelResult& r) { return r.loss; })
      .def("__repr__", &history_repr);

  network.def("train_parallel_numa", &train_parallel, py::arg("inputs"), py::arg("targets"), py::arg("loss_type"),
              py::arg("learning_rate"), py::arg("batch_size") = 32, py::arg("epochs") = 1, py::kw_only(),
              py::arg("shuffle") = false, py::arg("seed") = py::none(), py::arg("numa_nodes") = 0,
              py::arg("history") = false,
              (std::string(
                   "Synchronous data-parallel training over NUMA nodes: one parameter replica per node, worked on "
                   "by threads pinned to that node's CPUs. Every mini-batch of batch_size rows (rows inferred from "
                   "inputs) is split across the nodes, the gradients are averaged and every replica applies the "
                   "same update, which equals plain training up to float rounding. On one node it is plain "
                   "mini-batch training.\n\n"
                   "shuffle: a new row order every epoch (seed: its seed, default the network's). numa_nodes: "
                   "0 = KORTEX_NUMA_NODES or the machine's nodes; n > 0 splits the CPUs into n virtual nodes.\n"
                   "Returns the last epoch's mean loss (a float), or with history=True a TrainingHistory.\n"
                   "Ctrl-C (KeyboardInterrupt) stops it after the last whole mini-batch; the network keeps "
                   "those parameters.") +
               kReleasesGil)
                  .c_str());
  network.def("evaluate_parallel_numa", &evaluate_parallel, py::arg("inputs"), py::arg("targets"),
              py::arg("loss_type"), py::arg("batch_size") = py::none(), py::kw_only(), py::arg("numa_nodes") = 0,
              (std::string("evaluate() with the rows sharded across the NUMA nodes. Returns a kortexdl.Evaluation.") +
               kReleasesGil)
                  .c_str());
}

}  // namespace kortexdl::python
