// kortexdl._core: the module, its exceptions, enums, result types and
// module-level functions. The Network class lives in network_bindings.cpp,
// the data-parallel calls in data_parallel_bindings.cpp.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdio>
#include <string>

#include "../convert.hpp"
#include "../gil_return_gate.hpp"
#include "../gil_utils.hpp"
#include "bindings.hpp"
#include "kortexdl/activation.hpp"
#include "kortexdl/error.hpp"
#include "kortexdl/evaluation.hpp"
#include "kortexdl/init.hpp"
#include "kortexdl/loss.hpp"
#include "kortexdl/numa.hpp"
#include "kortexdl/optimizer.hpp"
#include "kortexdl/threading.hpp"
#include "kortexdl/version.hpp"

namespace kortexdl::python {

namespace {

// The Python exception classes, created once at import and kept for the life
// of the process (the module holds references too).
struct ErrorTypes {
  PyObject* base = nullptr;
  PyObject* invalid_argument = nullptr;
  PyObject* shape = nullptr;
  PyObject* concurrency = nullptr;
  PyObject* numerical = nullptr;
  PyObject* resource_limit = nullptr;
  PyObject* format = nullptr;
  PyObject* io = nullptr;
  PyObject* internal = nullptr;
};
ErrorTypes errors;

// An exception class with several bases, e.g. ShapeError(InvalidArgumentError)
// where InvalidArgumentError(KortexError, ValueError): the way the C API
// supports multiple inheritance from builtin exceptions (pybind11's
// register_exception takes a single base).
PyObject* new_error(py::module_& m, const char* name, std::initializer_list<PyObject*> bases, const char* doc) {
  py::tuple base_tuple(bases.size());
  std::size_t i = 0;
  for (PyObject* base : bases) base_tuple[i++] = py::reinterpret_borrow<py::object>(base);
  const std::string qualified = std::string("kortexdl.") + name;
  PyObject* type = PyErr_NewExceptionWithDoc(qualified.c_str(), doc, base_tuple.ptr(), nullptr);
  if (type == nullptr) throw py::error_already_set();
  m.add_object(name, py::handle(type));  // the module takes its own reference; ours is never released
  return type;
}

std::string format_float(double value) {
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, "%.6g", value);
  return buffer;
}

std::string evaluation_repr(const Evaluation& e) {
  std::string text = "Evaluation(loss=" + format_float(e.loss) + ", accuracy=";
  text += e.accuracy ? format_float(*e.accuracy) : std::string("None");
  return text + ", samples=" + std::to_string(e.samples) + ")";
}

// Every method that goes through without_gil, registered up front so
// gil_stats() lists them all (with zero calls) from the start.
constexpr const char* kCountedMethods[] = {
    "forward",
    "forward_batch",
    "train_batch",
    "evaluate",
    "forward_thread_safe",
    "forward_batch_thread_safe",
    "train_batch_thread_safe",
    "evaluate_thread_safe",
    "train_parallel_numa",
    "evaluate_parallel_numa",
    "compute_gradients",
    "apply_gradients",
    "get_parameters",
    "set_parameters",
    "clone",
    "fit",
    "predict",
    "predict_classes",
    "score",
    "save",
    "load",
    "to_bytes",
    "from_bytes",
    "datasets",
};

}  // namespace

void bind_errors(py::module_& m) {
  errors.base = new_error(m, "KortexError", {PyExc_Exception},
                          "Base class of every error KortexDL raises (each also derives from the matching "
                          "builtin exception).");
  errors.invalid_argument = new_error(m, "InvalidArgumentError", {errors.base, PyExc_ValueError},
                                      "An argument has a value the call cannot accept (a ValueError).");
  errors.shape = new_error(m, "ShapeError", {errors.invalid_argument},
                           "An array's length or shape does not match what the network expects (a ValueError).");
  errors.concurrency = new_error(m, "ConcurrencyError", {errors.base, PyExc_RuntimeError},
                                 "Calls overlapped in a way that is only safe with "
                                 "network.enable_thread_safety(True) (a RuntimeError). Nothing was changed.");
  errors.numerical = new_error(m, "NumericalError", {errors.base, PyExc_FloatingPointError},
                               "A training step produced a non-finite loss; the step was not applied "
                               "(a FloatingPointError).");
  errors.resource_limit = new_error(m, "ResourceLimitError", {errors.base, PyExc_MemoryError},
                                    "A request would need more memory than the library allows (a MemoryError).");
  errors.format = new_error(m, "FormatError", {errors.base, PyExc_ValueError},
                            "A file or byte stream is not in the expected format (a ValueError).");
  errors.io = new_error(m, "IoError", {errors.base, PyExc_OSError},
                        "The operating system refused a file operation (an OSError).");
  errors.internal = new_error(m, "InternalError", {errors.base, PyExc_RuntimeError},
                              "A backend call failed in a way no argument explains (a RuntimeError).");

  // Most derived first. kortexdl::InterruptedError becomes KeyboardInterrupt
  // (calls that poll for Ctrl-C re-raise the original exception themselves).
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const ShapeError& e) {
      PyErr_SetString(errors.shape, e.what());
    } catch (const InvalidArgumentError& e) {
      PyErr_SetString(errors.invalid_argument, e.what());
    } catch (const ConcurrencyError& e) {
      PyErr_SetString(errors.concurrency, e.what());
    } catch (const NumericalError& e) {
      PyErr_SetString(errors.numerical, e.what());
    } catch (const ResourceLimitError& e) {
      PyErr_SetString(errors.resource_limit, e.what());
    } catch (const FormatError& e) {
      PyErr_SetString(errors.format, e.what());
    } catch (const IoError& e) {
      PyErr_SetString(errors.io, e.what());
    } catch (const InternalError& e) {
      PyErr_SetString(errors.internal, e.what());
    } catch (const InterruptedError& e) {
      PyErr_SetString(PyExc_KeyboardInterrupt, e.what());
    } catch (const Error& e) {
      PyErr_SetString(errors.base, e.what());
    }
  });
}

void bind_enums(py::module_& m) {
  py::enum_<Activation>(m, "Activation", "Activation functions (also accepted by name: 'relu', 'tanh', ...).")
      .value("ReLU", Activation::ReLU)
      .value("Tanh", Activation::Tanh)
      .value("Sigmoid", Activation::Sigmoid)
      .value("GELU", Activation::GELU, "Exact (erf-based) GELU, as PyTorch's default.")
      .value("Linear", Activation::Linear)
      .value("Softmax", Activation::Softmax, "Output layer only; fused with CrossEntropy when training.");

  py::enum_<LossType>(m, "LossType",
                      "Losses, each the mean over the batch of a per-sample loss (also accepted by name: "
                      "'mse', 'cross_entropy', 'binary_cross_entropy').")
      .value("MSE", LossType::MSE, "Mean over outputs of (y - t)^2.")
      .value("CrossEntropy", LossType::CrossEntropy,
             "Softmax cross-entropy; targets are integer class labels or probability rows.")
      .value("BinaryCrossEntropy", LossType::BinaryCrossEntropy,
             "Sigmoid binary cross-entropy per output; targets in [0, 1].");
  remember_loss_members(m.attr("LossType"));

  py::enum_<WeightInit>(m, "WeightInit", "Weight initialisation (also accepted by name: 'auto', 'he_normal', ...).")
      .value("Auto", WeightInit::Auto, "He for ReLU/GELU layers, Xavier for the others.")
      .value("HeNormal", WeightInit::HeNormal)
      .value("XavierUniform", WeightInit::XavierUniform);

  py::enum_<OptimizerKind>(m, "Optimizer", "Optimizers (also accepted by name: 'sgd', 'momentum', 'adam').")
      .value("SGD", OptimizerKind::SGD)
      .value("Momentum", OptimizerKind::Momentum)
      .value("Adam", OptimizerKind::Adam);

  py::class_<Evaluation>(m, "Evaluation",
                         "The result of evaluate(): mean loss, accuracy (None for MSE) and the number of samples. "
                         "float(e) is the loss; `loss, accuracy = e` unpacks it.")
      .def_readonly("loss", &Evaluation::loss, "Mean loss over the samples.")
      .def_property_readonly(
          "accuracy", [](const Evaluation& e) { return e.accuracy; },
          "Fraction of correctly classified samples (CrossEntropy, BinaryCrossEntropy), else None.")
      .def_readonly("samples", &Evaluation::samples, "Number of samples (rows) evaluated.")
      .def("__float__", [](const Evaluation& e) { return e.loss; })
      .def("__iter__",
           [](const Evaluation& e) {
             return py::iter(py::make_tuple(e.loss, e.accuracy ? py::cast(*e.accuracy) : py::none()));
           })
      .def("__repr__", &evaluation_repr);
}

void bind_module_functions(py::module_& m) {
  for (const char* name : kCountedMethods) method_stats(name);

  m.attr("__version__") = std::string(kVersion);
  m.attr("version_info") = py::make_tuple(kVersionMajor, kVersionMinor, kVersionPatch);

  m.def(
      "gil_stats",
      []() {
        py::dict stats;
        for (const MethodSnapshot& s : snapshot_stats()) {
          py::dict entry;
          entry["calls"] = s.calls;
          entry["total_seconds"] = s.total_seconds;
          entry["max_seconds"] = s.max_seconds;
          stats[py::str(s.name)] = entry;
        }
        stats["gil_held_violations"] = gil_held_violations();
        const GilHandoffCounts handoff = gil_handoff_counts();
        py::dict handoff_entry;
        handoff_entry["spin_budget_us"] = gil_spin_budget_us();
        handoff_entry["polled"] = handoff.polled;
        handoff_entry["handed_off"] = handoff.handed_off;
        const ReturnGateCounts gate = return_gate_counts();
        handoff_entry["lanes"] = return_gate_lanes();
        handoff_entry["queued"] = gate.queued;
        handoff_entry["rotated"] = gate.rotated;
        handoff_entry["expired"] = gate.expired;
        handoff_entry["gil_bound"] = gate.gil_bound;
        stats["gil_handoff"] = handoff_entry;
        return stats;
      },
      "Counters of the GIL-released compute regions: {method: {'calls', 'total_seconds', 'max_seconds'}} "
      "for every method that releases the GIL, plus 'gil_held_violations': how many times a compute "
      "region found the GIL still held (always 0 unless something is broken), and 'gil_handoff': "
      "{'spin_budget_us', 'polled', 'handed_off', 'lanes', 'queued', 'rotated', 'expired', 'gil_bound'}: how "
      "many returning calls polled for the GIL instead of sleeping on it (KORTEX_GIL_SPIN_US) and how many found "
      "it free in time, and how returning calls used the lanes (KORTEX_GIL_LANES): waited in line, were handed a "
      "lane at the end of another thread's turn, took over a lane its holder had left, or were GIL-bound (shorter "
      "than their thread's Python between calls; such threads share one lane).");
  m.def("reset_gil_stats", &reset_stats, "Sets every gil_stats() counter back to zero.");

  m.def(
      "set_num_threads", [](py::object n) { set_num_threads(to_count(n, "n", 0)); }, py::arg("n"),
      "Sets the total number of intra-op threads all concurrent calls share (one caller uses all of them; K "
      "concurrent callers get about n/K each). 0 restores the default: KORTEX_NUM_THREADS, else "
      "OMP_NUM_THREADS, else the CPUs this process may use.");
  m.def("get_num_threads", &get_num_threads, "The total intra-op thread budget (see set_num_threads).");
  m.def("calls_in_flight", &calls_in_flight, "Compute calls currently running inside the library (diagnostics).");
  m.def(
      "backend_name", []() { return std::string(backend_name()); },
      "Name of the GEMM backend compiled in ('onednn' or 'cblas').");
  m.def(
      "numa_topology",
      [](py::object numa_nodes) {
        const NumaTopology topology = numa_topology(to_count(numa_nodes, "numa_nodes", 0));
        py::list nodes;
        for (const NumaNode& node : topology.nodes) {
          py::dict entry;
          entry["id"] = node.id;
          entry["cpus"] = py::cast(node.cpus);
          nodes.append(entry);
        }
        py::dict result;
        result["nodes"] = nodes;
        result["libnuma_available"] = topology.libnuma_available;
        result["virtual_nodes"] = topology.virtual_nodes;
        result["pinning_allowed"] = topology.pinning_allowed;
        result["note"] = topology.note;
        return result;
      },
      py::arg("numa_nodes") = 0,
      "The NUMA nodes train_parallel_numa spreads over: {'nodes': [{'id', 'cpus'}], 'libnuma_available', "
      "'virtual_nodes', 'pinning_allowed', 'note'}. numa_nodes > 0 (or KORTEX_NUMA_NODES) splits the usable "
      "CPUs into that many virtual nodes.");
}

}  // namespace kortexdl::python

PYBIND11_MODULE(_core, m) {
  namespace kp = kortexdl::python;
  m.doc() =
      "KortexDL: fully-connected networks on the CPU, built for concurrency. Every compute method "
      "releases the GIL.";
  kp::bind_errors(m);
  kp::bind_enums(m);
  kp::bind_module_functions(m);
  auto network = kp::bind_network(m);
  kp::bind_data_parallel(m, network);
  kp::bind_training(m, network);
  kp::bind_io(m, network);
  kp::bind_distributed(m);
}
