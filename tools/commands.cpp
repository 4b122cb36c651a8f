// kortexdl evaluate, predict and info.
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "cli.hpp"

namespace kortexdl::cli {

namespace {

std::string json_string(const std::string& text) {
  std::string out = "\"";
  for (const char c : text) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      case '\r': out += "\\r"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char buffer[8];
          std::snprintf(buffer, sizeof buffer, "\\u%04x", static_cast<unsigned>(c));
          out += buffer;
        } else {
          out += c;
        }
    }
  }
  return out + "\"";
}

std::string number(double value) {
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, "%.9g", value);
  return buffer;
}

// "0-3,8,10-11"
std::string cpu_list(const std::vector<int>& cpus) {
  std::string text;
  for (std::size_t i = 0; i < cpus.size();) {
    std::size_t j = i;
    while (j + 1 < cpus.size() && cpus[j + 1] == cpus[j] + 1) ++j;
    if (!text.empty()) text += ",";
    text += std::to_string(cpus[i]);
    if (j > i) {
      text += "-";
      text += std::to_string(cpus[j]);
    }
    i = j + 1;
  }
  return text.empty() ? "none" : text;
}

enum class OutputFormat { Npy, Csv, Stdout };

OutputFormat output_format(const std::string& path) {
  if (path == "-") return OutputFormat::Stdout;
  const std::string ext = lower(std::filesystem::path(path).extension().string());
  if (ext == ".npy") return OutputFormat::Npy;
  if (ext == ".csv") return OutputFormat::Csv;
  throw UsageError("--output: '" + path + "' must end in .npy or .csv (or be - for CSV on standard output)");
}

// Rows of `columns` values as CSV; integers when `whole`. Written to a
// temporary file renamed over `path`, like the library's writers.
void write_csv(const std::string& path, const std::vector<float>& values, std::size_t columns, bool whole) {
  const bool to_stdout = path == "-";
  const std::string temporary = path + ".tmp";
  std::FILE* out = to_stdout ? stdout : std::fopen(temporary.c_str(), "w");
  if (out == nullptr) throw IoError(temporary + ": " + std::strerror(errno));
  bool ok = true;
  for (std::size_t i = 0; ok && i < values.size(); ++i) {
    const bool last = (i + 1) % columns == 0;
    const int n = whole ? std::fprintf(out, "%lld%c", static_cast<long long>(values[i]), last ? '\n' : ',')
                        : std::fprintf(out, "%.9g%c", static_cast<double>(values[i]), last ? '\n' : ',');
    ok = n > 0;
  }
  if (to_stdout) {
    if (std::fflush(stdout) != 0 || !ok) throw IoError(std::string("standard output: ") + std::strerror(errno));
    return;
  }
  const int saved_errno = errno;
  ok = (std::fclose(out) == 0) && ok;
  if (!ok) {
    std::remove(temporary.c_str());
    throw IoError(path + ": " + std::strerror(saved_errno != 0 ? saved_errno : errno));
  }
  if (std::rename(temporary.c_str(), path.c_str()) != 0) {
    const int rename_errno = errno;
    std::remove(temporary.c_str());
    throw IoError(path + ": " + std::strerror(rename_errno));
  }
}

// Whether the model file holds optimizer state: the flag after the
// parameters (docs/model-format.md), read once Network::load accepted the file.
bool file_has_optimizer_state(const std::string& path, const Network& network) {
  const std::uint64_t offset = 84 + 8 * static_cast<std::uint64_t>(network.sizes().size()) + 8 +
                               4 * static_cast<std::uint64_t>(network.parameter_count());
  std::ifstream in(path, std::ios::binary);
  in.seekg(static_cast<std::streamoff>(offset));
  unsigned char flag[4] = {};
  if (!in.read(reinterpret_cast<char*>(flag), sizeof flag)) {
    throw IoError(path + ": cannot read the optimizer state flag at byte " + std::to_string(offset));
  }
  return flag[0] == 1;
}

std::string optimizer_text(const OptimizerConfig& o) {
  char buffer[160];
  switch (o.kind) {
    case OptimizerKind::SGD:
      std::snprintf(buffer, sizeof buffer, "sgd (weight decay %g)", static_cast<double>(o.weight_decay));
      break;
    case OptimizerKind::Momentum:
      std::snprintf(buffer, sizeof buffer, "momentum (momentum %g, nesterov %s, weight decay %g)",
                    static_cast<double>(o.momentum), o.nesterov ? "yes" : "no", static_cast<double>(o.weight_decay));
      break;
    case OptimizerKind::Adam:
      std::snprintf(buffer, sizeof buffer, "adam (beta1 %g, beta2 %g, epsilon %g, weight decay %g)",
                    static_cast<double>(o.beta1), static_cast<double>(o.beta2), static_cast<double>(o.epsilon),
                    static_cast<double>(o.weight_decay));
      break;
  }
  return buffer;
}

}  // namespace

int run_evaluate(const EvaluateArgs& args) {
  if (args.threads) set_num_threads(*args.threads);
  const Network network = Network::load(args.model);
  const Data data = load_data(args.data, Purpose::Evaluate);
  check_features(data, network);
  const LossType loss = args.loss.empty() ? default_loss(data.set, network.config().output_activation)
                                          : parse_loss(lower(args.loss), "--loss");
  const PreparedTargets targets = prepare_targets(data.set, loss, network.output_size());
  const Evaluation result = network.evaluate(data.set.inputs, targets.view(), loss, args.batch_size);
  std::optional<double> accuracy = result.accuracy;
  // A classifier trained with MSE: the library reports no accuracy for
  // that loss, but the labels are there.
  if (!accuracy && !data.set.labels.empty()) {
    accuracy = score(network, data.set.inputs, data.set.labels, args.batch_size);
  }
  if (args.json) {
    std::printf("{\"model\": %s, \"data\": %s, \"samples\": %zu, \"loss_type\": %s, \"loss\": %s, \"accuracy\": %s}\n",
                json_string(args.model).c_str(), json_string(data.description).c_str(), result.samples,
                json_string(std::string(to_string(loss))).c_str(), number(result.loss).c_str(),
                accuracy ? number(*accuracy).c_str() : "null");
  } else {
    std::printf("data      %s\n", data.description.c_str());
    std::printf("samples   %zu\n", result.samples);
    std::printf("loss      %.6f (%s)\n", result.loss, std::string(to_string(loss)).c_str());
    if (accuracy) std::printf("accuracy  %.6f\n", *accuracy);
  }
  return kExitOk;
}

int run_predict(const PredictArgs& args) {
  const OutputFormat format = output_format(args.output);
  if (format != OutputFormat::Stdout) check_writable(args.output);
  if (args.threads) set_num_threads(*args.threads);
  const Network network = Network::load(args.model);
  const Data data = load_data(args.data, Purpose::Predict, network.input_size());
  check_features(data, network);
  const std::size_t rows = data.set.rows;

  std::vector<float> values;
  std::size_t columns = 0;
  if (args.classes) {
    const std::vector<std::int32_t> classes = predict_classes(network, data.set.inputs, args.batch_size);
    values.assign(classes.begin(), classes.end());
    columns = 1;
  } else {
    values = predict(network, data.set.inputs, args.batch_size);
    columns = network.output_size();
  }
  if (format == OutputFormat::Npy) {
    datasets::write_npy(args.output, values, args.classes ? std::vector<std::size_t>{rows}
                                                          : std::vector<std::size_t>{rows, columns});
  } else {
    write_csv(args.output, values, columns, args.classes);
  }
  if (format != OutputFormat::Stdout) {
    if (args.classes) {
      std::printf("wrote %zu class indices to %s (from %s)\n", rows, args.output.c_str(), data.description.c_str());
    } else {
      std::printf("wrote %zu x %zu outputs to %s (from %s)\n", rows, columns, args.output.c_str(),
                  data.description.c_str());
    }
  }
  return kExitOk;
}

int run_info(const InfoArgs& args) {
  const Network network = Network::load(args.model);
  std::error_code ec;
  const std::uintmax_t file_size = std::filesystem::file_size(args.model, ec);
  const bool has_state = file_has_optimizer_state(args.model, network);
  const Network::OptimizerState state = network.optimizer_state();
  const NetworkConfig& config = network.config();
  const NumaTopology topology = numa_topology();

  if (args.json) {
    std::string sizes = "[";
    for (std::size_t i = 0; i < network.sizes().size(); ++i) {
      if (i) sizes += ", ";
      sizes += std::to_string(network.sizes()[i]);
    }
    sizes += "]";
    std::string nodes = "[";
    for (std::size_t i = 0; i < topology.nodes.size(); ++i) {
      nodes += std::string(i ? ", " : "") + "{\"id\": " + std::to_string(topology.nodes[i].id) +
               ", \"cpus\": " + json_string(cpu_list(topology.nodes[i].cpus)) + "}";
    }
    nodes += "]";
    const OptimizerConfig& o = config.optimizer;
    std::printf(
        "{\"model\": %s, \"file_size\": %ju, \"format_version\": 1, \"sizes\": %s, \"layers\": %zu, "
        "\"hidden_activation\": %s, \"output_activation\": %s, \"init\": %s, \"parameters\": %zu, "
        "\"optimizer\": {\"kind\": %s, \"momentum\": %s, \"nesterov\": %s, \"beta1\": %s, \"beta2\": %s, "
        "\"epsilon\": %s, \"weight_decay\": %s}, \"optimizer_state\": %s, \"optimizer_step\": %llu, "
        "\"seed\": %llu, \"seed_explicit\": %s, "
        "\"machine\": {\"library_version\": %s, \"backend\": %s, \"threads\": %zu, \"numa_nodes\": %s, "
        "\"libnuma\": %s, \"virtual_nodes\": %s, \"note\": %s}}\n",
        json_string(args.model).c_str(), ec ? std::uintmax_t{0} : file_size, sizes.c_str(), network.num_layers(),
        json_string(std::string(to_string(config.hidden_activation))).c_str(),
        json_string(std::string(to_string(config.output_activation))).c_str(),
        json_string(std::string(to_string(config.init))).c_str(), network.parameter_count(),
        json_string(std::string(to_string(o.kind))).c_str(), number(o.momentum).c_str(),
        o.nesterov ? "true" : "false", number(o.beta1).c_str(), number(o.beta2).c_str(), number(o.epsilon).c_str(),
        number(o.weight_decay).c_str(), has_state ? "true" : "false", static_cast<unsigned long long>(state.step),
        static_cast<unsigned long long>(network.seed()), config.seed ? "true" : "false",
        json_string(std::string(kVersion)).c_str(), json_string(std::string(backend_name())).c_str(),
        get_num_threads(), nodes.c_str(), topology.libnuma_available ? "true" : "false",
        topology.virtual_nodes ? "true" : "false", json_string(topology.note).c_str());
    return kExitOk;
  }

  std::printf("model             %s\n", args.model.c_str());
  std::printf("file size         %s\n", ec ? "unknown" : format_bytes(file_size).c_str());
  std::printf("sizes             %s (%zu layer%s)\n", join_sizes(network.sizes()).c_str(), network.num_layers(),
              network.num_layers() == 1 ? "" : "s");
  std::printf("activations       %s hidden, %s output\n", std::string(to_string(config.hidden_activation)).c_str(),
              std::string(to_string(config.output_activation)).c_str());
  std::printf("weight init       %s\n", std::string(to_string(config.init)).c_str());
  std::printf("parameters        %zu\n", network.parameter_count());
  std::printf("optimizer         %s\n", optimizer_text(config.optimizer).c_str());
  if (has_state) {
    std::printf("optimizer state   saved (step %llu)\n", static_cast<unsigned long long>(state.step));
  } else {
    std::printf("optimizer state   not saved (resuming starts the optimizer afresh)\n");
  }
  std::printf("seed              %llu (%s)\n", static_cast<unsigned long long>(network.seed()),
              config.seed ? "set explicitly" : "drawn at random");
  std::printf("this machine      kortexdl %s, %s backend, %zu thread%s\n", std::string(kVersion).c_str(),
              std::string(backend_name()).c_str(), get_num_threads(), get_num_threads() == 1 ? "" : "s");
  std::printf("NUMA              %zu node%s%s%s\n", topology.nodes.size(), topology.nodes.size() == 1 ? "" : "s",
              topology.libnuma_available ? " (libnuma)" : " (no libnuma)", topology.virtual_nodes ? ", virtual" : "");
  for (const NumaNode& node : topology.nodes) {
    std::printf("  node %-3d        cpus %s\n", node.id, cpu_list(node.cpus).c_str());
  }
  if (!topology.note.empty()) std::printf("  note            %s\n", topology.note.c_str());
  return kExitOk;
}

}  // namespace kortexdl::cli
