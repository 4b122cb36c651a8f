// kortexdl.Network: construction, the single-network compute methods,
// parameters and introspection. Every compute method follows one pattern:
//   1. with the GIL held, convert the arguments (convert.hpp) and allocate
//      the output array, taking raw pointers and sizes;
//   2. run exactly one C++ call inside without_gil<"name">(...), which sees
//      only C++ values;
//   3. with the GIL back, wrap the C++ result.
// The converted arrays live in the enclosing scope, so they outlive step 2.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include "../convert.hpp"
#include "../gil_utils.hpp"
#include "bindings.hpp"
#include "kortexdl/error.hpp"
#include "kortexdl/network.hpp"

namespace kortexdl::python {

namespace {

template <class Enum>
Enum enum_or_name(py::handle value, const char* argument, Enum (*parse)(std::string_view, std::string_view),
                  const char* enum_name) {
  if (py::isinstance<Enum>(value)) return value.cast<Enum>();
  if (PyUnicode_Check(value.ptr())) return parse(value.cast<std::string>(), argument);
  throw py::type_error(std::string(argument) + ": expected a name or a kortexdl." + enum_name + ", got " +
                       (value.is_none() ? std::string("None") : type_name(value)));
}

std::vector<std::size_t> to_sizes(py::handle sizes) {
  if (sizes.is_none() || PyUnicode_Check(sizes.ptr()) || PyBytes_Check(sizes.ptr()) ||
      PyIndex_Check(sizes.ptr()) != 0 || !py::isinstance<py::iterable>(sizes)) {
    throw py::type_error("sizes: expected a sequence of layer sizes such as [784, 256, 10], got " +
                         (sizes.is_none() ? std::string("None") : type_name(sizes)));
  }
  std::vector<std::size_t> result;
  for (py::handle item : py::iter(sizes)) {
    const std::string argument = "sizes[" + std::to_string(result.size()) + "]";
    if (PyBool_Check(item.ptr()) || PyIndex_Check(item.ptr()) == 0) {
      throw py::type_error(argument + ": expected an integer, got " + type_name(item));
    }
    py::object index = py::reinterpret_steal<py::object>(PyNumber_Index(item.ptr()));
    if (!index) throw py::error_already_set();
    // Beyond long long (2**63 and up) pybind11's cast would raise a bare
    // RuntimeError; such a layer is a request for absurd memory.
    int overflow = 0;
    const long long v = PyLong_AsLongLongAndOverflow(index.ptr(), &overflow);
    if (v == -1 && PyErr_Occurred()) throw py::error_already_set();
    if (overflow > 0) {
      throw ResourceLimitError(argument + ": a layer of " + py::str(index).cast<std::string>() +
                               " units is beyond the library's parameter limit");
    }
    if (overflow < 0 || v < 0) {
      throw InvalidArgumentError(argument + ": every layer needs at least 1 unit, got " +
                                 py::str(index).cast<std::string>());
    }
    result.push_back(static_cast<std::size_t>(v));
  }
  return result;
}

Network make_network(const py::object& sizes, const py::object& hidden_activation,
                     const py::object& output_activation, const py::object& init, const py::object& seed,
                     const py::object& optimizer, const py::object& momentum, const py::object& nesterov,
                     const py::object& beta1, const py::object& beta2, const py::object& epsilon,
                     const py::object& weight_decay) {
  NetworkConfig config;
  config.hidden_activation =
      enum_or_name<Activation>(hidden_activation, "hidden_activation", &parse_activation, "Activation");
  config.output_activation =
      enum_or_name<Activation>(output_activation, "output_activation", &parse_activation, "Activation");
  config.init = enum_or_name<WeightInit>(init, "init", &parse_init, "WeightInit");
  config.seed = to_optional_seed(seed, "seed");
  config.optimizer.kind = enum_or_name<OptimizerKind>(optimizer, "optimizer", &parse_optimizer, "Optimizer");
  config.optimizer.momentum = to_float(momentum, "momentum");
  config.optimizer.nesterov = to_bool(nesterov, "nesterov");
  config.optimizer.beta1 = to_float(beta1, "beta1");
  config.optimizer.beta2 = to_float(beta2, "beta2");
  config.optimizer.epsilon = to_float(epsilon, "epsilon");
  config.optimizer.weight_decay = to_float(weight_decay, "weight_decay");
  return Network(to_sizes(sizes), config);
}

// The keyword arguments that rebuild this network's configuration.
py::dict config_dict(const Network& net) {
  const NetworkConfig& c = net.config();
  py::dict d;
  d["hidden_activation"] = std::string(to_string(c.hidden_activation));
  d["output_activation"] = std::string(to_string(c.output_activation));
  d["init"] = std::string(to_string(c.init));
  d["seed"] = net.seed();
  d["optimizer"] = std::string(to_string(c.optimizer.kind));
  d["momentum"] = c.optimizer.momentum;
  d["nesterov"] = c.optimizer.nesterov;
  d["beta1"] = c.optimizer.beta1;
  d["beta2"] = c.optimizer.beta2;
  d["epsilon"] = c.optimizer.epsilon;
  d["weight_decay"] = c.optimizer.weight_decay;
  return d;
}

std::string sizes_text(const Network& net) {
  std::string text = "[";
  for (std::size_t i = 0; i < net.sizes().size(); ++i) {
    if (i > 0) text += ", ";
    text += std::to_string(net.sizes()[i]);
  }
  return text + "]";
}

std::string network_repr(const Network& net) {
  const NetworkConfig& c = net.config();
  return "Network(" + sizes_text(net) + ", hidden_activation='" + std::string(to_string(c.hidden_activation)) +
         "', output_activation='" + std::string(to_string(c.output_activation)) + "', optimizer='" +
         std::string(to_string(c.optimizer.kind)) + "', parameters=" + std::to_string(net.parameter_count()) +
         ", thread_safety=" + (net.thread_safety_enabled() ? "True" : "False") + ")";
}

py::array_t<float> copy_rows(const float* data, std::size_t rows, std::size_t cols) {
  auto out = new_float_array(rows, cols);
  std::copy_n(data, rows * cols, out.mutable_data());
  return out;
}

// ---- the compute methods ----------------------------------------------------

template <MethodName Name, bool Locked>
py::array_t<float> forward(const Network& net, const py::object& inputs, const py::object& batch_size) {
  const Batch batch = exact_batch(net, inputs, batch_size);
  const std::size_t count = batch.rows * net.output_size();
  auto out = new_float_array(batch.rows, net.output_size());
  const std::span<float> outputs(out.mutable_data(), count);
  const std::span<const float> in = batch.inputs.span();
  const std::size_t rows = batch.rows;
  without_gil<Name>([&] {
    if constexpr (Locked) {
      net.forward_thread_safe(in, rows, outputs);
    } else {
      net.forward(in, rows, outputs);
    }
  });
  return out;
}

template <MethodName Name, bool Locked>
py::array_t<float> forward_batch(const Network& net, const py::object& inputs, const py::object& batch_size) {
  const Batch batch = inferred_batch(net, inputs);
  const std::size_t chunk = to_optional_count(batch_size, "batch_size", 1).value_or(batch.rows);
  auto out = new_float_array(batch.rows, net.output_size());
  const std::span<float> outputs(out.mutable_data(), batch.rows * net.output_size());
  const std::span<const float> in = batch.inputs.span();
  without_gil<Name>([&] {
    if constexpr (Locked) {
      net.forward_batch_thread_safe(in, chunk, outputs);
    } else {
      net.forward_batch(in, chunk, outputs);
    }
  });
  return out;
}

template <MethodName Name, bool Locked>
float train_batch(Network& net, const py::object& inputs, const py::object& targets, const py::object& loss_type,
                  const py::object& learning_rate, const py::object& batch_size) {
  const LossType loss = to_loss(loss_type);
  const float rate = to_float(learning_rate, "learning_rate");
  const Batch batch = exact_batch(net, inputs, batch_size);
  const TargetsInput target_arrays = to_targets(targets, loss, batch.rows, net.output_size());
  const Targets view = target_arrays.view();
  const std::span<const float> in = batch.inputs.span();
  const std::size_t rows = batch.rows;
  return without_gil<Name, ReturnGate::leave>([&] {
    if constexpr (Locked) {
      return net.train_batch_thread_safe(in, view, loss, rate, rows);
    } else {
      return net.train_batch(in, view, loss, rate, rows);
    }
  });
}

template <MethodName Name, bool Locked>
Evaluation evaluate(const Network& net, const py::object& inputs, const py::object& targets,
                    const py::object& loss_type, const py::object& batch_size) {
  const LossType loss = to_loss(loss_type);
  const std::size_t chunk = to_optional_count(batch_size, "batch_size", 1).value_or(0);
  const Batch batch = inferred_batch(net, inputs);
  const TargetsInput target_arrays = to_targets(targets, loss, batch.rows, net.output_size());
  const Targets view = target_arrays.view();
  const std::span<const float> in = batch.inputs.span();
  return without_gil<Name>([&] {
    if constexpr (Locked) {
      return net.evaluate_thread_safe(in, view, loss, chunk);
    } else {
      return net.evaluate(in, view, loss, chunk);
    }
  });
}

py::tuple compute_gradients(const Network& net, const py::object& inputs, const py::object& targets,
                            const py::object& loss_type, const py::object& batch_size) {
  const LossType loss = to_loss(loss_type);
  const Batch batch = exact_batch(net, inputs, batch_size);
  const TargetsInput target_arrays = to_targets(targets, loss, batch.rows, net.output_size());
  const Targets view = target_arrays.view();
  const std::span<const float> in = batch.inputs.span();
  const std::size_t rows = batch.rows;
  Network::Gradients g =
      without_gil<"compute_gradients">([&] { return net.compute_gradients(in, view, loss, rows); });
  return py::make_tuple(g.loss, adopt(std::move(g.values)));
}

void apply_gradients(Network& net, const py::object& grad, const py::object& learning_rate) {
  const float rate = to_float(learning_rate, "learning_rate");
  const FloatInput gradient = to_float_array(grad, "grad", 1);
  if (gradient.size != net.parameter_count()) {
    throw ShapeError("grad: expected parameter_count = " + std::to_string(net.parameter_count()) +
                     " floats, got " + std::to_string(gradient.size));
  }
  const std::span<const float> values = gradient.span();
  without_gil<"apply_gradients", ReturnGate::leave>([&] { net.apply_gradients(values, rate); });
}

// ---- parameters --------------------------------------------------------------

std::vector<float> parameters(const Network& net) {
  return without_gil<"get_parameters">([&] { return net.parameters(); });
}

void set_parameters(Network& net, const py::object& values) {
  const FloatInput flat = to_float_array(values, "parameters", 1);
  if (flat.size != net.parameter_count()) {
    throw ShapeError("parameters: expected parameter_count = " + std::to_string(net.parameter_count()) +
                     " floats, got " + std::to_string(flat.size));
  }
  const std::span<const float> view = flat.span();
  without_gil<"set_parameters">([&] { net.set_parameters(view); });
}

py::list get_weights(const Network& net) {
  const std::vector<float> all = parameters(net);  // one consistent snapshot of every layer
  py::list layers;
  for (const LayerLayout& l : net.layers()) {
    layers.append(py::make_tuple(copy_rows(all.data() + l.weights_offset, l.inputs, l.outputs),
                                 adopt(std::vector<float>(all.data() + l.biases_offset,
                                                          all.data() + l.biases_offset + l.outputs))));
  }
  return layers;
}

void set_weights(Network& net, const py::object& layers) {
  const auto& layout = net.layers();
  if (!py::isinstance<py::sequence>(layers) || PyUnicode_Check(layers.ptr())) {
    throw py::type_error("weights: expected a list of (W, b) pairs, one per layer, got " + type_name(layers));
  }
  const auto sequence = py::reinterpret_borrow<py::sequence>(layers);
  if (sequence.size() != layout.size()) {
    throw ShapeError("weights: expected " + std::to_string(layout.size()) + " (W, b) pairs, one per layer, got " +
                     std::to_string(sequence.size()));
  }
  std::vector<float> all(net.parameter_count());
  for (std::size_t i = 0; i < layout.size(); ++i) {
    const LayerLayout& l = layout[i];
    const std::string name = "weights[" + std::to_string(i) + "]";
    py::object pair = sequence[i];
    if (!py::isinstance<py::sequence>(pair) || py::len(pair) != 2) {
      throw py::type_error(name + ": expected a (W, b) pair, got " + type_name(pair));
    }
    const FloatInput w = to_float_array(pair[py::int_(0)], (name + "[0] (W)").c_str(), 2);
    const FloatInput b = to_float_array(pair[py::int_(1)], (name + "[1] (b)").c_str(), 1);
    const bool w_ok = w.ndim == 2 ? (w.shape0 == l.inputs && w.shape1 == l.outputs) : w.size == l.inputs * l.outputs;
    if (!w_ok) {
      const std::string got = w.ndim == 2 ? "shape (" + std::to_string(w.shape0) + ", " + std::to_string(w.shape1) + ")"
                                          : std::to_string(w.size) + " floats";
      throw ShapeError(name + "[0] (W): expected shape (inputs, outputs) = (" + std::to_string(l.inputs) + ", " +
                       std::to_string(l.outputs) + "), got " + got);
    }
    if (b.size != l.outputs) {
      throw ShapeError(name + "[1] (b): expected " + std::to_string(l.outputs) + " biases, got " +
                       std::to_string(b.size));
    }
    std::copy_n(w.data, w.size, all.begin() + static_cast<std::ptrdiff_t>(l.weights_offset));
    std::copy_n(b.data, b.size, all.begin() + static_cast<std::ptrdiff_t>(l.biases_offset));
  }
  const std::span<const float> view(all);
  without_gil<"set_parameters">([&] { net.set_parameters(view); });  // one write: all layers or none
}

}  // namespace

NetworkClass bind_network(py::module_& m) {
  NetworkClass cls(m, "Network",
                   "A fully-connected network: Network([784, 256, 10]) has two dense layers.\n\n"
                   "Inputs are float32 batches, either 2-D (rows, input_size) or flat with batch_size rows; "
                   "float64, integer, strided and Fortran-ordered arrays are converted. Every compute method "
                   "releases the GIL. Any number of threads may run forward/evaluate on one network at any "
                   "time; concurrent training needs enable_thread_safety(True) (otherwise the overlapping call "
                   "raises ConcurrencyError and changes nothing).");

  cls.def(py::init(&make_network), py::arg("sizes"), py::kw_only(), py::arg("hidden_activation") = "relu",
          py::arg("output_activation") = "linear", py::arg("init") = "auto", py::arg("seed") = py::none(),
          py::arg("optimizer") = "sgd", py::arg("momentum") = 0.9, py::arg("nesterov") = false,
          py::arg("beta1") = 0.9, py::arg("beta2") = 0.999, py::arg("epsilon") = 1e-8,
          py::arg("weight_decay") = 0.0,
          "Creates a network with sizes = [inputs, hidden..., outputs].\n\n"
          "hidden_activation: 'relu' (default), 'tanh', 'sigmoid', 'gelu', 'linear' or a kortexdl.Activation.\n"
          "output_activation: 'linear' (default), 'softmax', 'sigmoid', ...\n"
          "init: 'auto' (He for ReLU/GELU, Xavier otherwise), 'he_normal', 'xavier_uniform'.\n"
          "seed: same seed => bit-identical initial weights; None draws one (see .seed).\n"
          "optimizer: 'sgd' (default), 'momentum' (momentum, nesterov) or 'adam' (beta1, beta2, epsilon); "
          "weight_decay is an L2 penalty on the weights.");

  // ---- inference
  cls.def("forward", &forward<"forward", false>, py::arg("inputs"), py::arg("batch_size") = py::none(),
          (std::string("Outputs for a batch: a new (batch_size, output_size) float32 array.\n\n"
                       "inputs: a 2-D (rows, input_size) array, or a flat array of batch_size x input_size "
                       "floats. batch_size is the number of rows; it may be omitted for 2-D inputs (and for "
                       "flat inputs holding whole rows).") +
           kReleasesGil)
              .c_str());
  cls.def("forward_batch", &forward_batch<"forward_batch", false>, py::arg("inputs"),
          py::arg("batch_size") = py::none(),
          (std::string("Outputs for any number of rows (inferred from inputs), computed in chunks of "
                       "batch_size rows so scratch memory stays bounded by one chunk (None: one chunk).") +
           kReleasesGil)
              .c_str());
  cls.def("forward_thread_safe", &forward<"forward_thread_safe", true>, py::arg("inputs"),
          py::arg("batch_size") = py::none(),
          (std::string("forward(), holding the network's read lock for this call whatever "
                       "thread_safety_enabled says.") +
           kReleasesGil)
              .c_str());
  cls.def("forward_batch_thread_safe", &forward_batch<"forward_batch_thread_safe", true>, py::arg("inputs"),
          py::arg("batch_size") = py::none(),
          (std::string("forward_batch(), holding the network's read lock for this call.") + kReleasesGil).c_str());

  // ---- training
  const std::string train_doc =
      "One optimizer step on the whole batch; returns the batch's mean loss before the step (a float).\n\n"
      "targets: float array (rows, output_size) or flat, or for CrossEntropy a 1-D integer label array. "
      "loss_type: a kortexdl.LossType or its name. batch_size is the number of rows (optional for 2-D "
      "inputs).";
  cls.def("train_batch", &train_batch<"train_batch", false>, py::arg("inputs"), py::arg("targets"),
          py::arg("loss_type"), py::arg("learning_rate"), py::arg("batch_size") = py::none(),
          (train_doc + " Without enable_thread_safety(True), a call that overlaps any other call on this network "
                       "raises ConcurrencyError and changes nothing." +
           kReleasesGil)
              .c_str());
  cls.def("train_batch_thread_safe", &train_batch<"train_batch_thread_safe", true>, py::arg("inputs"),
          py::arg("targets"), py::arg("loss_type"), py::arg("learning_rate"), py::arg("batch_size") = py::none(),
          (train_doc + " Takes the network's lock for this call whatever thread_safety_enabled says: the gradient "
                       "phase shares it with other readers, only the update is exclusive." +
           kReleasesGil)
              .c_str());
  const std::string evaluate_doc =
      "Loss (and accuracy for classification) over all rows of inputs, computed in chunks of batch_size "
      "rows (None: the library's default chunk). Returns a kortexdl.Evaluation.";
  cls.def("evaluate", &evaluate<"evaluate", false>, py::arg("inputs"), py::arg("targets"), py::arg("loss_type"),
          py::arg("batch_size") = py::none(), (evaluate_doc + kReleasesGil).c_str());
  cls.def("evaluate_thread_safe", &evaluate<"evaluate_thread_safe", true>, py::arg("inputs"), py::arg("targets"),
          py::arg("loss_type"), py::arg("batch_size") = py::none(),
          (evaluate_doc + " Holds the network's read lock for this call." + kReleasesGil).c_str());
  cls.def("compute_gradients", &compute_gradients, py::arg("inputs"), py::arg("targets"), py::arg("loss_type"),
          py::arg("batch_size") = py::none(),
          (std::string("The gradient of the batch's mean loss w.r.t. every parameter, without changing "
                       "anything: returns (loss, gradient) with gradient a flat float32 array in the layout "
                       "of get_parameters(). With apply_gradients it splits train_batch in two.") +
           kReleasesGil)
              .c_str());
  cls.def("apply_gradients", &apply_gradients, py::arg("grad"), py::arg("learning_rate"),
          (std::string("One optimizer step with the given flat gradient (parameter_count finite floats).") +
           kReleasesGil)
              .c_str());

  // ---- concurrency
  cls.def(
      "enable_thread_safety", [](Network& net, const py::object& enabled) { net.enable_thread_safety(to_bool(enabled, "enabled")); },
      py::arg("enabled") = true,
      "Guards the parameters with a reader-writer lock: forward, evaluate and the gradient phase of training "
      "share it, only the short update is exclusive, so concurrent train_batch calls overlap their expensive "
      "part and readers always see whole updates.");
  cls.def_property_readonly("thread_safety_enabled", &Network::thread_safety_enabled,
                            "Whether enable_thread_safety(True) is in effect.");
  cls.def_property_readonly("version", &Network::version,
                            "Number of optimizer updates and parameter writes applied so far.");

  // ---- architecture
  cls.def_property_readonly(
      "sizes", [](const Network& net) { return py::cast(net.sizes()); }, "Layer sizes [inputs, hidden..., outputs].");
  cls.def_property_readonly("input_size", &Network::input_size);
  cls.def_property_readonly("output_size", &Network::output_size);
  cls.def_property_readonly("num_layers", &Network::num_layers, "Number of dense layers (len(sizes) - 1).");
  cls.def_property_readonly("parameter_count", &Network::parameter_count, "Number of weights and biases.");
  cls.def_property_readonly("seed", &Network::seed, "The seed the initial weights were drawn from.");
  cls.def_property_readonly(
      "hidden_activation", [](const Network& net) { return net.config().hidden_activation; });
  cls.def_property_readonly(
      "output_activation", [](const Network& net) { return net.config().output_activation; });
  cls.def_property_readonly("optimizer", [](const Network& net) { return net.config().optimizer.kind; });
  cls.def_property_readonly("config", &config_dict,
                            "The keyword arguments that rebuild this configuration: Network(net.sizes, **net.config).");

  // ---- parameters
  cls.def(
      "get_parameters", [](const Network& net) { return adopt(parameters(net)); },
      "A copy of every parameter as one flat float32 array (all layers' W then b, back to back).");
  cls.def("set_parameters", &set_parameters, py::arg("parameters"),
          "Replaces every parameter (parameter_count finite floats). Counts as a write; optimizer state is kept.");
  cls.def("get_weights", &get_weights,
          "A copy of the parameters as a list of (W, b) per layer: W is (inputs, outputs), b is (outputs,); "
          "y = x @ W + b. All layers come from one consistent snapshot.");
  cls.def("set_weights", &set_weights, py::arg("weights"),
          "Replaces the parameters from a list of (W, b) pairs as get_weights() returns them. Every shape is "
          "checked first, then all layers are written at once.");
  cls.def(
      "clone", [](const Network& net) { return without_gil<"clone">([&] { return net.clone(); }); },
      "A deep copy: parameters, optimizer state, configuration. Thread safety starts disabled on the copy.");
  cls.def("__copy__", [](const Network& net) { return without_gil<"clone">([&] { return net.clone(); }); });
  cls.def(
      "__deepcopy__",
      [](const Network& net, const py::object&) { return without_gil<"clone">([&] { return net.clone(); }); },
      py::arg("memo"));
  cls.def("__repr__", &network_repr);
  return cls;
}

}  // namespace kortexdl::python
