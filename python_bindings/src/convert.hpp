#pragma once
// Argument conversion for the bindings: Python objects in, C++ views out.
//
// Everything here runs with the GIL held, before a compute region opens. A
// converted argument owns (or borrows) the numpy array its data lives in, so
// the caller keeps it alive across the released region; the region itself
// only sees raw pointers and sizes. Errors name the argument, and use the
// library's exception classes (ShapeError, InvalidArgumentError -> ValueError)
// or pybind11's type_error (TypeError) for values of the wrong kind.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "kortexdl/loss.hpp"
#include "kortexdl/network.hpp"
#include "kortexdl/targets.hpp"

namespace kortexdl::python {

namespace py = pybind11;

using FloatArray = py::array_t<float, py::array::c_style | py::array::forcecast>;
using LabelArray = py::array_t<std::int32_t, py::array::c_style | py::array::forcecast>;

// An array handle holding nothing yet, for members assigned later:
// pybind11's default constructor makes an empty numpy array, an allocation
// of about 700 instructions on every call for nothing.
template <class Array>
Array no_array() {
  return py::reinterpret_steal<Array>(py::handle());
}

// A C-contiguous float32 view of any numpy-convertible argument: float32
// C-contiguous arrays are borrowed as they are; float64, integer, bool,
// strided, Fortran-ordered arrays and nested sequences are converted (one
// copy), as numpy.ascontiguousarray(x, dtype=numpy.float32) would.
struct FloatInput {
  FloatArray array = no_array<FloatArray>();  // owns or borrows the data
  const float* data = nullptr;
  std::size_t size = 0;
  int ndim = 1;
  std::size_t shape0 = 0;  // rows of a 2-D array
  std::size_t shape1 = 0;  // columns of a 2-D array
  std::span<const float> span() const { return {data, size}; }
};

// max_ndim: 2 for batches ((batch, features) or flat), 1 for flat vectors.
FloatInput to_float_array(py::handle object, const char* argument, int max_ndim = 2);

// A batch of rows for a network: the converted array and its row count.
struct Batch {
  FloatInput inputs;
  std::size_t rows = 0;
};

// For calls whose batch_size IS the number of rows (forward, train_batch,
// compute_gradients): a 2-D input gives the rows itself (batch_size, when
// given, must agree); a flat input needs batch_size x input_size floats, or
// is read as whole rows when batch_size is None.
Batch exact_batch(const Network& network, py::handle inputs, py::handle batch_size);

// For calls that infer the rows and take batch_size as a chunk or mini-batch
// size (forward_batch, evaluate, the data-parallel calls).
Batch inferred_batch(const Network& network, py::handle inputs, const char* argument = "inputs");

// What a training/evaluation call compares with: float values (rows x
// outputs, 2-D or flat) or, for CrossEntropy, a 1-D integer label array
// (converted to int32; values outside int32 are reported as out of range).
struct TargetsInput {
  FloatArray values = no_array<FloatArray>();  // unless is_labels
  LabelArray labels = no_array<LabelArray>();  // if is_labels
  bool is_labels = false;
  Targets view() const;
};
TargetsInput to_targets(py::handle targets, LossType loss, std::size_t rows, std::size_t outputs,
                        const char* argument = "targets");

// A 1-D integer label array as int32 (int32 arrays are borrowed).
LabelArray to_labels(py::handle labels, const char* argument, std::size_t outputs);

// Scalars. Integers accept Python ints and numpy integers, never floats or
// bools. minimum is checked with the library's message format.
std::optional<std::size_t> to_optional_count(py::handle value, const char* argument, std::size_t minimum);
std::size_t to_count(py::handle value, const char* argument, std::size_t minimum);
std::optional<std::uint64_t> to_optional_seed(py::handle value, const char* argument);
float to_float(py::handle value, const char* argument);
bool to_bool(py::handle value, const char* argument);
LossType to_loss(py::handle value);
// Called once, when the module registers kortexdl.LossType: its members are
// then recognised by identity, without pybind11's type lookups.
void remember_loss_members(py::handle loss_type_class);

// A new C-contiguous float32 numpy array of the given shape (GIL held).
py::array_t<float> new_float_array(std::size_t rows, std::size_t cols);
py::array_t<float> new_float_vector(std::size_t size);

std::string type_name(py::handle object);

// A numpy array that takes over a C++ vector (no copy): 1-D, or with a shape.
template <class T>
py::array_t<T> adopt(std::vector<T>&& values, std::vector<py::ssize_t> shape = {}) {
  if (shape.empty()) shape.push_back(static_cast<py::ssize_t>(values.size()));
  auto* owned = new std::vector<T>(std::move(values));
  py::capsule owner(owned, [](void* p) { delete static_cast<std::vector<T>*>(p); });
  return py::array_t<T>(std::move(shape), owned->data(), owner);
}

}  // namespace kortexdl::python
