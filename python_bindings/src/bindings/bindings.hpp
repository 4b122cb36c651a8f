#pragma once
// The pieces of the kortexdl._core module, one per file.
#include <pybind11/pybind11.h>

#include "kortexdl/network.hpp"

namespace kortexdl::python {

namespace py = pybind11;

using NetworkClass = py::class_<Network>;

// core_bindings.cpp: exceptions, enums, Evaluation, module functions, gil_stats.
void bind_errors(py::module_& m);
void bind_enums(py::module_& m);
void bind_module_functions(py::module_& m);

// network_bindings.cpp: the Network class and its single-network methods.
NetworkClass bind_network(py::module_& m);

// data_parallel_bindings.cpp: train_parallel_numa, evaluate_parallel_numa and
// their result type.
void bind_data_parallel(py::module_& m, NetworkClass& network);

// training_bindings.cpp: fit, predict, predict_classes, score and their
// result types.
void bind_training(py::module_& m, NetworkClass& network);

// distributed_bindings.cpp: the _distributed submodule behind kortexdl.distributed.
void bind_distributed(py::module_& m);

// io_bindings.cpp: save/load/to_bytes/from_bytes, pickling, kortexdl.datasets.
void bind_io(py::module_& m, NetworkClass& network);

// The docstring sentence every compute method carries.
inline constexpr const char* kReleasesGil =
    "\n\nReleases the GIL for the whole computation: other Python threads keep running, and calls "
    "from several threads run in parallel (arguments are converted and the result allocated while "
    "the GIL is held).";

}  // namespace kortexdl::python
