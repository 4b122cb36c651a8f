// Model files (Network.save / load / to_bytes / from_bytes, pickling) and
// the dataset readers (kortexdl.datasets). File and parsing work runs with
// the GIL released like every other call.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "../convert.hpp"
#include "../gil_utils.hpp"
#include "bindings.hpp"
#include "kortexdl/datasets.hpp"
#include "kortexdl/error.hpp"

namespace kortexdl::python {

namespace {

// str, bytes or any os.PathLike, as open() accepts.
std::string to_path(const py::object& path, const char* argument) {
  PyObject* fs = PyOS_FSPath(path.ptr());
  if (fs == nullptr) {
    PyErr_Clear();
    throw py::type_error(std::string(argument) + ": expected a path (str or os.PathLike), got " + type_name(path));
  }
  py::object fspath = py::reinterpret_steal<py::object>(fs);
  if (PyBytes_Check(fspath.ptr())) return fspath.cast<std::string>();
  py::object encoded = py::reinterpret_steal<py::object>(PyUnicode_EncodeFSDefault(fspath.ptr()));
  if (!encoded) throw py::error_already_set();
  return encoded.cast<std::string>();
}

// Any object exposing a contiguous byte buffer (bytes, bytearray, memoryview,
// a uint8 numpy array). The buffer view is released with the GIL held.
class ByteView {
 public:
  ByteView(const py::object& data, const char* argument) {
    if (PyObject_GetBuffer(data.ptr(), &view_, PyBUF_C_CONTIGUOUS) != 0) {
      PyErr_Clear();
      throw py::type_error(std::string(argument) + ": expected bytes (or another contiguous buffer), got " +
                           type_name(data));
    }
  }
  ~ByteView() { PyBuffer_Release(&view_); }
  ByteView(const ByteView&) = delete;
  ByteView& operator=(const ByteView&) = delete;
  std::span<const std::uint8_t> span() const {
    return {static_cast<const std::uint8_t*>(view_.buf), static_cast<std::size_t>(view_.len)};
  }

 private:
  Py_buffer view_{};
};

py::bytes to_bytes(const Network& net, const py::object& include_optimizer_state) {
  const bool optimizer = to_bool(include_optimizer_state, "include_optimizer_state");
  const std::vector<std::uint8_t> bytes = without_gil<"to_bytes">([&] { return net.to_bytes(optimizer); });
  return py::bytes(reinterpret_cast<const char*>(bytes.data()), bytes.size());
}

Network from_bytes(const py::object& data) {
  const ByteView view(data, "data");
  const std::span<const std::uint8_t> bytes = view.span();
  return without_gil<"from_bytes">([&] { return Network::from_bytes(bytes); });
}

// A dataset as numpy arrays: (inputs (rows, features), labels (rows,) int32
// or targets (rows, width) float32).
py::tuple dataset_arrays(datasets::Dataset&& d) {
  const auto rows = static_cast<py::ssize_t>(d.rows);
  py::object inputs = adopt(std::move(d.inputs), {rows, static_cast<py::ssize_t>(d.features)});
  if (d.target_width == 0) return py::make_tuple(inputs, adopt(std::move(d.labels)));
  return py::make_tuple(inputs, adopt(std::move(d.targets), {rows, static_cast<py::ssize_t>(d.target_width)}));
}

}  // namespace

void bind_io(py::module_& m, NetworkClass& network) {
  network.def(
      "save",
      [](const Network& net, const py::object& path, const py::object& include_optimizer_state) {
        const std::string file = to_path(path, "path");
        const bool optimizer = to_bool(include_optimizer_state, "include_optimizer_state");
        without_gil<"save">([&] { net.save(file, optimizer); });
      },
      py::arg("path"), py::arg("include_optimizer_state") = true,
      (std::string("Writes the architecture, configuration, parameters and (optionally) the optimizer state to "
                   "a model file (docs/model-format.md). Atomic: a temporary file is renamed over path, so a "
                   "crash never leaves a half-written model. Raises IoError (an OSError).") +
       kReleasesGil)
          .c_str());
  network.def_static(
      "load",
      [](const py::object& path) {
        const std::string file = to_path(path, "path");
        return without_gil<"load">([&] { return Network::load(file); });
      },
      py::arg("path"),
      (std::string("Reads a model file written by save(), bit-exact. Every length is checked before anything "
                   "is allocated: a truncated, corrupted or foreign file raises FormatError (a ValueError).") +
       kReleasesGil)
          .c_str());
  network.def("to_bytes", &to_bytes, py::arg("include_optimizer_state") = true,
              (std::string("The model-file format in memory, as bytes.") + kReleasesGil).c_str());
  network.def_static("from_bytes", &from_bytes, py::arg("data"),
                     (std::string("A network from to_bytes() output (bytes, bytearray, memoryview, ...).") +
                      kReleasesGil)
                         .c_str());
  // Pickling (and copy.deepcopy through it) uses the model format.
  network.def(py::pickle(
      [](const Network& net) { return py::make_tuple(to_bytes(net, py::bool_(true))); },
      [](const py::tuple& state) {
        if (state.size() != 1) throw FormatError("Network pickle: unknown state layout");
        return from_bytes(state[0]);
      }));

  py::module_ ds = m.def_submodule("datasets", "Readers for IDX (MNIST, Fashion-MNIST), CSV and .npy files.");
  ds.def(
      "fashion_mnist",
      [](const py::object& directory) {
        const std::string dir = to_path(directory, "directory");
        datasets::TrainTest data = without_gil<"datasets">([&] { return datasets::fashion_mnist(dir); });
        return py::make_tuple(dataset_arrays(std::move(data.train)), dataset_arrays(std::move(data.test)));
      },
      py::arg("directory") = "/usr/share/datasets/fashion-mnist",
      "Fashion-MNIST from Debian's dataset-fashion-mnist package (or `directory`): "
      "((x_train, y_train), (x_test, y_test)) with x float32 (rows, 784) in [0, 1] and y int32 labels.");
  ds.def(
      "read_idx",
      [](const py::object& images, const py::object& labels, const py::object& scale) {
        const std::string images_path = to_path(images, "images_path");
        const std::string labels_path = to_path(labels, "labels_path");
        const float factor = to_float(scale, "scale");
        return dataset_arrays(
            without_gil<"datasets">([&] { return datasets::read_idx(images_path, labels_path, factor); }));
      },
      py::arg("images_path"), py::arg("labels_path"), py::arg("scale") = 1.0 / 255.0,
      "An IDX images file (gzip or plain) with its labels file: (x float32 (rows, features), y int32).");
  ds.def(
      "read_csv",
      [](const py::object& path, int label_column, bool regression) {
        const std::string file = to_path(path, "path");
        return dataset_arrays(
            without_gil<"datasets">([&] { return datasets::read_csv(file, label_column, regression); }));
      },
      py::arg("path"), py::arg("label_column") = -1, py::arg("regression") = false,
      "A CSV of numbers (optional header): (x float32 (rows, features), y) where y is the int32 labels in "
      "label_column (negative counts from the end), or float32 targets (rows, 1) with regression=True.");
}

}  // namespace kortexdl::python
