#include "convert.hpp"

#include <unistd.h>

#include <climits>
#include <iterator>
#include <limits>

#include "kortexdl/error.hpp"

namespace kortexdl::python {

namespace {

std::string num(std::size_t v) { return std::to_string(v); }

std::string shape_text(const py::array& a) {
  std::string text = "(";
  for (py::ssize_t d = 0; d < a.ndim(); ++d) {
    if (d > 0) text += ", ";
    text += std::to_string(a.shape(d));
  }
  if (a.ndim() == 1) text += ",";
  return text + ")";
}

std::string repr_of(py::handle value) {
  try {
    return py::str(py::repr(value)).cast<std::string>();
  } catch (const py::error_already_set&) {
    return "<" + type_name(value) + ">";
  }
}

// numpy.asarray(object) without a dtype; failures become a TypeError naming
// the argument.
py::array as_numpy(py::handle object, const char* argument) {
  auto& api = py::detail::npy_api::get();
  if (api.PyArray_Check_(object.ptr())) return py::reinterpret_borrow<py::array>(object);
  PyObject* converted = api.PyArray_FromAny_(object.ptr(), nullptr, 0, 0, py::detail::npy_api::NPY_ARRAY_ENSUREARRAY_,
                                             nullptr);
  if (converted == nullptr) {
    py::error_already_set error;
    throw py::type_error(std::string(argument) + ": cannot convert " + type_name(object) +
                         " to an array of numbers (" + error.what() + ")");
  }
  return py::reinterpret_steal<py::array>(converted);
}

// Only numbers convert to float32 the way numpy users expect; strings,
// objects, complex numbers, dates are refused.
void check_numeric(const py::array& a, const char* argument) {
  const char kind = a.dtype().kind();
  if (kind == 'f' || kind == 'i' || kind == 'u' || kind == 'b') return;
  throw py::type_error(std::string(argument) + ": expected an array of real numbers, got dtype " +
                       py::str(a.dtype()).cast<std::string>() + " (convert it with numpy.asarray(" + argument +
                       ", dtype=numpy.float32) if the values are numbers)");
}

void check_ndim(const py::array& a, const char* argument, int max_ndim) {
  const auto ndim = a.ndim();
  if (ndim >= 1 && ndim <= max_ndim) return;
  std::string expected = max_ndim == 1 ? "a 1-D array" : "a 1-D (flat) or 2-D (rows, columns) array";
  std::string got = ndim == 0 ? "a 0-D array (a scalar)" : std::to_string(ndim) + "-D array of shape " + shape_text(a);
  throw ShapeError(std::string(argument) + ": expected " + expected + ", got " + got);
}

std::size_t checked_product(std::size_t a, std::size_t b, const char* what) {
  std::size_t result = 0;
  if (__builtin_mul_overflow(a, b, &result)) {
    throw ResourceLimitError(std::string(what) + ": " + num(a) + " x " + num(b) + " does not fit in memory");
  }
  return result;
}

std::size_t physical_memory_bytes() {
  const long pages = ::sysconf(_SC_PHYS_PAGES);
  const long page = ::sysconf(_SC_PAGESIZE);
  if (pages <= 0 || page <= 0) return std::numeric_limits<std::size_t>::max();
  return static_cast<std::size_t>(pages) * static_cast<std::size_t>(page);
}

// numpy.ascontiguousarray(any, dtype=T), reporting failures as what they
// are. A conversion that needs more memory than the machine has (a
// zero-stride view claiming 2**40 rows, say) is refused with
// ResourceLimitError (MemoryError) before numpy tries to allocate, and a
// MemoryError from numpy becomes one too: array_t::ensure would clear it and
// leave only a TypeError.
template <class T>
py::array_t<T, py::array::c_style | py::array::forcecast> contiguous(const py::array& any, const char* argument,
                                                                    const char* what) {
  using Array = py::array_t<T, py::array::c_style | py::array::forcecast>;
  if (Array::check_(any)) return py::reinterpret_borrow<Array>(any);
  const auto count = static_cast<std::size_t>(any.size());
  std::size_t bytes = 0;
  const bool overflows = __builtin_mul_overflow(count, sizeof(T), &bytes);
  if (overflows || bytes > physical_memory_bytes()) {
    throw ResourceLimitError(std::string(argument) + ": converting an array of shape " + shape_text(any) + " to " +
                             what + " needs " + (overflows ? num(count) + " x " + num(sizeof(T)) : num(bytes)) +
                             " bytes, more than the " + num(physical_memory_bytes()) +
                             " bytes of memory this machine has");
  }
  auto& api = py::detail::npy_api::get();
  PyObject* converted = api.PyArray_FromAny_(any.ptr(), py::dtype::of<T>().release().ptr(), 0, 0,
                                             py::detail::npy_api::NPY_ARRAY_ENSUREARRAY_ |
                                                 py::detail::npy_api::NPY_ARRAY_C_CONTIGUOUS_ |
                                                 py::detail::npy_api::NPY_ARRAY_FORCECAST_,
                                             nullptr);
  if (converted == nullptr) {
    py::error_already_set error;
    if (error.matches(PyExc_MemoryError)) {
      throw ResourceLimitError(std::string(argument) + ": converting an array of shape " + shape_text(any) + " to " +
                               what + " needs " + num(bytes) + " bytes, which could not be allocated");
    }
    throw py::type_error(std::string(argument) + ": cannot convert to " + what + " (" + error.what() + ")");
  }
  return py::reinterpret_steal<Array>(converted);
}

void check_columns(const FloatInput& in, std::size_t width, const char* argument, const char* width_name) {
  if (in.shape1 != width) {
    throw ShapeError(std::string(argument) + ": expected rows of " + width_name + " = " + num(width) +
                     " columns, got shape (" + num(in.shape0) + ", " + num(in.shape1) + ")");
  }
  if (in.shape0 == 0) throw ShapeError(std::string(argument) + ": expected at least one row, got none");
}

std::size_t flat_rows(const FloatInput& in, std::size_t width, const char* argument) {
  if (in.size == 0) {
    throw ShapeError(std::string(argument) + ": expected at least one row of " + num(width) + " floats, got none");
  }
  if (in.size % width != 0) {
    throw ShapeError(std::string(argument) + ": length " + num(in.size) + " is not a multiple of input_size " +
                     num(width));
  }
  return in.size / width;
}

template <class Int>
LabelArray labels_from(const py::array& any, std::size_t outputs, const char* argument) {
  const auto source = contiguous<Int>(any, argument, "integer labels");
  const auto size = static_cast<std::size_t>(source.size());
  LabelArray labels(static_cast<py::ssize_t>(size));
  const Int* in = source.data();
  std::int32_t* out = labels.mutable_data();
  for (std::size_t i = 0; i < size; ++i) {
    const Int v = in[i];
    bool fits;
    if constexpr (std::is_signed_v<Int>) {
      fits = v >= INT32_MIN && v <= INT32_MAX;
    } else {
      fits = v <= static_cast<std::uint64_t>(INT32_MAX);
    }
    if (!fits) {
      throw InvalidArgumentError(std::string(argument) + ": label " + std::to_string(v) + " at index " + num(i) +
                                 " is out of range [0, " + num(outputs) + ")");
    }
    out[i] = static_cast<std::int32_t>(v);
  }
  return labels;
}

LabelArray integer_labels(const py::array& any, std::size_t outputs, const char* argument) {
  if (LabelArray::check_(any)) return py::reinterpret_borrow<LabelArray>(any);
  if (any.dtype().kind() == 'i') return labels_from<std::int64_t>(any, outputs, argument);
  return labels_from<std::uint64_t>(any, outputs, argument);
}

}  // namespace

LabelArray to_labels(py::handle object, const char* argument, std::size_t outputs) {
  if (object.is_none()) throw py::type_error(std::string(argument) + ": expected an array of integer class labels, got None");
  py::array any = as_numpy(object, argument);
  const char kind = any.dtype().kind();
  if (kind != 'i' && kind != 'u') {
    throw py::type_error(std::string(argument) + ": expected integer class labels, got dtype " +
                         py::str(any.dtype()).cast<std::string>());
  }
  check_ndim(any, argument, 1);
  return integer_labels(any, outputs, argument);
}

std::string type_name(py::handle object) {
  PyTypeObject* type = Py_TYPE(object.ptr());
  return type->tp_name != nullptr ? type->tp_name : "object";
}

FloatInput to_float_array(py::handle object, const char* argument, int max_ndim) {
  if (object.is_none()) {
    throw py::type_error(std::string(argument) + ": expected an array of numbers, got None");
  }
  FloatInput in;
  if (FloatArray::check_(object)) {
    // The fast path: a float32 C-contiguous array is used as it is.
    in.array = py::reinterpret_borrow<FloatArray>(object);
  } else {
    py::array any = as_numpy(object, argument);
    check_numeric(any, argument);
    check_ndim(any, argument, max_ndim);
    in.array = contiguous<float>(any, argument, "a float32 array");
  }
  check_ndim(in.array, argument, max_ndim);
  in.ndim = static_cast<int>(in.array.ndim());
  in.data = in.array.data();
  in.size = static_cast<std::size_t>(in.array.size());
  if (in.ndim == 2) {
    in.shape0 = static_cast<std::size_t>(in.array.shape(0));
    in.shape1 = static_cast<std::size_t>(in.array.shape(1));
  }
  return in;
}

Batch exact_batch(const Network& network, py::handle inputs, py::handle batch_size) {
  const auto rows = to_optional_count(batch_size, "batch_size", 1);
  Batch batch{to_float_array(inputs, "inputs"), 0};
  const std::size_t width = network.input_size();
  if (batch.inputs.ndim == 2) {
    check_columns(batch.inputs, width, "inputs", "input_size");
    if (rows && *rows != batch.inputs.shape0) {
      throw ShapeError("batch_size: " + num(*rows) + " does not match the " + num(batch.inputs.shape0) +
                       " rows of inputs (shape (" + num(batch.inputs.shape0) + ", " + num(batch.inputs.shape1) +
                       "))");
    }
    batch.rows = batch.inputs.shape0;
  } else if (rows) {
    const std::size_t expected = checked_product(*rows, width, "batch_size x input_size");
    if (batch.inputs.size != expected) {
      throw ShapeError("inputs: expected batch_size x input_size = " + num(*rows) + " x " + num(width) + " = " +
                       num(expected) + " floats, got " + num(batch.inputs.size));
    }
    batch.rows = *rows;
  } else {
    batch.rows = flat_rows(batch.inputs, width, "inputs");
  }
  return batch;
}

Batch inferred_batch(const Network& network, py::handle inputs, const char* argument) {
  Batch batch{to_float_array(inputs, argument), 0};
  const std::size_t width = network.input_size();
  if (batch.inputs.ndim == 2) {
    check_columns(batch.inputs, width, argument, "input_size");
    batch.rows = batch.inputs.shape0;
  } else {
    batch.rows = flat_rows(batch.inputs, width, argument);
  }
  return batch;
}

Targets TargetsInput::view() const {
  if (is_labels) return Targets(std::span<const std::int32_t>(labels.data(), static_cast<std::size_t>(labels.size())));
  return Targets(std::span<const float>(values.data(), static_cast<std::size_t>(values.size())));
}

TargetsInput to_targets(py::handle object, LossType loss, std::size_t rows, std::size_t outputs,
                        const char* argument) {
  const std::string name = argument;
  if (object.is_none()) {
    throw py::type_error(name + ": expected an array of target values (or integer class labels), got None");
  }
  TargetsInput t;
  const bool labels_possible = loss == LossType::CrossEntropy;
  if (!labels_possible && FloatArray::check_(object)) {
    t.values = py::reinterpret_borrow<FloatArray>(object);
  } else {
    py::array any = as_numpy(object, argument);
    check_numeric(any, argument);
    check_ndim(any, argument, 2);
    const char kind = any.dtype().kind();
    if (labels_possible && any.ndim() == 1 && (kind == 'i' || kind == 'u')) {
      t.is_labels = true;
      t.labels = integer_labels(any, outputs, argument);
      return t;
    }
    t.values = contiguous<float>(any, argument, "a float32 array");
  }
  check_ndim(t.values, argument, 2);
  if (t.values.ndim() == 2) {
    const auto r = static_cast<std::size_t>(t.values.shape(0));
    const auto c = static_cast<std::size_t>(t.values.shape(1));
    if (r != rows || c != outputs) {
      throw ShapeError(name + ": expected shape (rows, output_size) = (" + num(rows) + ", " + num(outputs) +
                       "), got " + shape_text(t.values) +
                       (loss == LossType::CrossEntropy && c == 1 && r == rows
                            ? " (for class labels pass a 1-D integer array)"
                            : ""));
    }
  }
  return t;
}

std::optional<std::size_t> to_optional_count(py::handle value, const char* argument, std::size_t minimum) {
  if (value.is_none()) return std::nullopt;
  return to_count(value, argument, minimum);
}

std::size_t to_count(py::handle value, const char* argument, std::size_t minimum) {
  if (value.is_none() || PyBool_Check(value.ptr()) || PyIndex_Check(value.ptr()) == 0) {
    throw py::type_error(std::string(argument) + ": expected an integer, got " +
                         (value.is_none() ? std::string("None") : type_name(value) + " " + repr_of(value)));
  }
  py::object index = py::reinterpret_steal<py::object>(PyNumber_Index(value.ptr()));
  if (!index) throw py::error_already_set();
  int overflow = 0;
  const long long v = PyLong_AsLongLongAndOverflow(index.ptr(), &overflow);
  if (v == -1 && PyErr_Occurred()) throw py::error_already_set();
  if (overflow < 0 || (overflow == 0 && v < static_cast<long long>(minimum))) {
    throw InvalidArgumentError(std::string(argument) + ": must be at least " + num(minimum) + ", got " +
                               repr_of(index));
  }
  if (overflow > 0) throw InvalidArgumentError(std::string(argument) + ": too large, got " + repr_of(index));
  return static_cast<std::size_t>(v);
}

std::optional<std::uint64_t> to_optional_seed(py::handle value, const char* argument) {
  if (value.is_none()) return std::nullopt;
  if (PyBool_Check(value.ptr()) || PyIndex_Check(value.ptr()) == 0) {
    throw py::type_error(std::string(argument) + ": expected None or an integer, got " + type_name(value));
  }
  py::object index = py::reinterpret_steal<py::object>(PyNumber_Index(value.ptr()));
  if (!index) throw py::error_already_set();
  const unsigned long long v = PyLong_AsUnsignedLongLong(index.ptr());
  if (PyErr_Occurred()) {
    PyErr_Clear();
    throw InvalidArgumentError(std::string(argument) + ": must be between 0 and 2**64 - 1, got " + repr_of(index));
  }
  return static_cast<std::uint64_t>(v);
}

float to_float(py::handle value, const char* argument) {
  if (value.is_none() || PyUnicode_Check(value.ptr()) || PyBytes_Check(value.ptr())) {
    throw py::type_error(std::string(argument) + ": expected a number, got " +
                         (value.is_none() ? std::string("None") : type_name(value)));
  }
  const double v = PyFloat_AsDouble(value.ptr());
  if (v == -1.0 && PyErr_Occurred()) {
    PyErr_Clear();
    throw py::type_error(std::string(argument) + ": expected a number, got " + type_name(value));
  }
  return static_cast<float>(v);
}

bool to_bool(py::handle value, const char* argument) {
  const std::string name = type_name(value);
  if (PyBool_Check(value.ptr()) || PyLong_Check(value.ptr()) || name == "numpy.bool_") {
    const int truth = PyObject_IsTrue(value.ptr());
    if (truth < 0) throw py::error_already_set();
    return truth != 0;
  }
  throw py::type_error(std::string(argument) + ": expected True or False, got " +
                       (value.is_none() ? std::string("None") : name));
}

namespace {

// kortexdl.LossType's members, indexed by value; strong references for the
// process's lifetime (an extension module is never unloaded). Written once
// under the GIL at import, read-only after.
PyObject* loss_members[3] = {nullptr, nullptr, nullptr};

}  // namespace

void remember_loss_members(py::handle loss_type_class) {
  for (const auto item : py::dict(loss_type_class.attr("__members__"))) {
    const auto index = static_cast<std::size_t>(item.second.cast<LossType>());
    if (index < std::size(loss_members) && loss_members[index] == nullptr) {
      loss_members[index] = py::reinterpret_borrow<py::object>(item.second).release().ptr();
    }
  }
}

LossType to_loss(py::handle value) {
  // Class attributes are singletons, so `kortexdl.LossType.MSE` is found by
  // identity: isinstance and cast are two pybind11 type lookups, about 4% of
  // a one-row evaluate on 100-50-10 (a copy from pickle still takes them).
  for (std::size_t i = 0; i < std::size(loss_members); ++i) {
    if (value.ptr() == loss_members[i]) return static_cast<LossType>(i);
  }
  if (py::isinstance<LossType>(value)) return value.cast<LossType>();
  if (PyUnicode_Check(value.ptr())) return parse_loss(value.cast<std::string>(), "loss_type");
  throw py::type_error("loss_type: expected a kortexdl.LossType (or a name such as 'mse'), got " +
                       (value.is_none() ? std::string("None") : type_name(value)));
}

py::array_t<float> new_float_array(std::size_t rows, std::size_t cols) {
  return py::array_t<float>({static_cast<py::ssize_t>(rows), static_cast<py::ssize_t>(cols)});
}

py::array_t<float> new_float_vector(std::size_t size) {
  return py::array_t<float>(static_cast<py::ssize_t>(size));
}

}  // namespace kortexdl::python
