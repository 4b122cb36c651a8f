// Reading the data a subcommand was given, and shaping its targets for a
// loss. The readers themselves are the library's (include/kortexdl/datasets.hpp).
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "cli.hpp"

namespace kortexdl::cli {

namespace {

std::string plural(std::size_t n, const char* one, const char* many) {
  return std::to_string(n) + " " + (n == 1 ? one : many);
}

std::string describe(const std::string& source, const datasets::Dataset& d) {
  std::string text = source + ": " + plural(d.rows, "row", "rows") + " x " + plural(d.features, "feature", "features");
  if (!d.labels.empty()) {
    text += ", " + plural(d.classes, "class", "classes");
  } else if (!d.targets.empty()) {
    text += ", " + plural(d.target_width, "target", "targets") + " per row";
  }
  return text;
}

// Deletes a temporary file when it goes out of scope.
struct TempFile {
  std::string path;
  TempFile() = default;
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  ~TempFile() {
    if (!path.empty()) ::unlink(path.c_str());
  }
};

// An IDX images file without its labels file: the library reads images only
// with labels, so this reads the image count from the header (gzip or
// plain) and hands read_idx a labels file of that many zeros, keeping all
// of the library's checks on the images. A header it cannot make sense of
// is left to read_idx to report (with the images file as the labels too,
// so the images file is the one named in the error).
datasets::Dataset read_idx_images(const std::string& images) {
  std::uint32_t count = 0;
  bool header_ok = false;
  if (gzFile file = gzopen(images.c_str(), "rb")) {
    std::array<unsigned char, 8> header{};
    if (gzread(file, header.data(), static_cast<unsigned>(header.size())) == static_cast<int>(header.size()) &&
        header[0] == 0 && header[1] == 0 && header[2] == 0x08 && header[3] >= 2) {
      count = (std::uint32_t{header[4]} << 24) | (std::uint32_t{header[5]} << 16) | (std::uint32_t{header[6]} << 8) |
              std::uint32_t{header[7]};
      header_ok = count > 0;
    }
    gzclose(file);
  }
  if (!header_ok) return datasets::read_idx(images, images);  // throws, naming `images`

  const char* tmpdir = std::getenv("TMPDIR");
  std::string pattern = std::string(tmpdir != nullptr && *tmpdir != '\0' ? tmpdir : "/tmp") + "/kortexdl-labels-XXXXXX";
  TempFile labels;
  const int fd = ::mkstemp(pattern.data());
  if (fd < 0) throw IoError("cannot create a temporary file in " + pattern + ": " + std::strerror(errno));
  labels.path = pattern;
  std::FILE* out = ::fdopen(fd, "wb");
  if (out == nullptr) {
    ::close(fd);
    throw IoError(labels.path + ": " + std::strerror(errno));
  }
  const std::array<unsigned char, 8> header{0, 0, 0x08, 0x01, static_cast<unsigned char>(count >> 24),
                                            static_cast<unsigned char>(count >> 16),
                                            static_cast<unsigned char>(count >> 8), static_cast<unsigned char>(count)};
  bool ok = std::fwrite(header.data(), 1, header.size(), out) == header.size();
  const std::vector<unsigned char> zeros(std::min<std::size_t>(count, 1 << 16), 0);
  for (std::size_t left = count; ok && left > 0;) {
    const std::size_t n = std::min(left, zeros.size());
    ok = std::fwrite(zeros.data(), 1, n, out) == n;
    left -= n;
  }
  ok = (std::fclose(out) == 0) && ok;
  if (!ok) throw IoError(labels.path + ": cannot write a temporary labels file: " + std::strerror(errno));

  datasets::Dataset data = datasets::read_idx(images, labels.path);
  data.labels.clear();
  data.classes = 0;
  return data;
}

std::string shape_text(const std::vector<std::size_t>& shape) {
  std::string text = "(";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i) text += ", ";
    text += std::to_string(shape[i]);
  }
  return text + (shape.size() == 1 ? ",)" : ")");
}

datasets::Dataset read_npy_data(const std::vector<std::string>& paths, bool need_targets) {
  datasets::Array inputs = datasets::read_npy(paths[0]);
  if (inputs.shape.size() < 2) {
    throw FormatError(paths[0] + ": inputs must be an array of rows x features (2 or more dimensions), got shape " +
                      shape_text(inputs.shape));
  }
  datasets::Dataset d;
  d.rows = inputs.shape[0];
  d.features = 1;
  for (std::size_t i = 1; i < inputs.shape.size(); ++i) d.features *= inputs.shape[i];
  if (d.rows == 0 || d.features == 0) {
    throw FormatError(paths[0] + ": no data (shape " + shape_text(inputs.shape) + ")");
  }
  d.inputs = std::move(inputs.values);
  if (!need_targets) return d;

  const std::string& path = paths[1];
  datasets::Array targets = datasets::read_npy(path);
  if (targets.shape.empty() || targets.shape.size() > 2) {
    throw FormatError(path + ": targets must be 1-D (class labels) or 2-D (rows x targets), got shape " +
                      shape_text(targets.shape));
  }
  if (targets.shape[0] != d.rows) {
    throw FormatError(path + ": " + std::to_string(targets.shape[0]) + " rows of targets for the " +
                      std::to_string(d.rows) + " rows of " + paths[0]);
  }
  if (targets.shape.size() == 2) {
    if (targets.shape[1] == 0) throw FormatError(path + ": targets have no columns (shape " + shape_text(targets.shape) + ")");
    d.target_width = targets.shape[1];
    d.targets = std::move(targets.values);
    return d;
  }
  d.labels.reserve(d.rows);
  std::int32_t largest = -1;
  for (std::size_t i = 0; i < targets.values.size(); ++i) {
    const float v = targets.values[i];
    if (!(std::isfinite(v) && v == std::floor(v) && v >= -2147483648.0f && v < 2147483648.0f)) {
      throw FormatError(path + ": value " + std::to_string(v) + " at index " + std::to_string(i) +
                        " is not a whole number; 1-D targets are class labels (use a 2-D array for float targets)");
    }
    d.labels.push_back(static_cast<std::int32_t>(v));
    largest = std::max(largest, d.labels.back());
  }
  d.classes = largest >= 0 ? static_cast<std::size_t>(largest) + 1 : 0;
  return d;
}

// Predict with --csv: every column is a feature when there are as many
// columns as the model has inputs; with one more, --label-column is dropped.
datasets::Dataset read_csv_inputs(const std::string& path, int label_column, std::size_t model_inputs) {
  // Read as regression on the last column, so every field is a number, then
  // put the rows back together.
  datasets::Dataset raw = datasets::read_csv(path, -1, true);
  const std::size_t columns = raw.features + 1;
  std::size_t drop = columns;  // none
  if (columns == model_inputs + 1) {
    long long index = label_column;
    if (index < 0) index += static_cast<long long>(columns);
    if (index < 0 || index >= static_cast<long long>(columns)) {
      throw FormatError(path + ": --label-column " + std::to_string(label_column) + " is outside the " +
                        std::to_string(columns) + " columns");
    }
    drop = static_cast<std::size_t>(index);
  } else if (columns != model_inputs) {
    throw ShapeError(path + ": rows have " + std::to_string(columns) + " columns; the model takes " +
                     std::to_string(model_inputs) + " inputs (give " + std::to_string(model_inputs) +
                     " feature columns, or " + std::to_string(model_inputs + 1) + " with a label column)");
  }
  datasets::Dataset d;
  d.rows = raw.rows;
  d.features = drop == columns ? columns : columns - 1;
  d.inputs.reserve(d.rows * d.features);
  for (std::size_t r = 0; r < raw.rows; ++r) {
    for (std::size_t c = 0; c < columns; ++c) {
      if (c == drop) continue;
      d.inputs.push_back(c + 1 < columns ? raw.inputs[r * raw.features + c] : raw.targets[r]);
    }
  }
  return d;
}

}  // namespace

Data load_data(const DataArgs& a, Purpose purpose, std::size_t model_inputs) {
  const int sources = int{!a.idx.empty()} + int{!a.csv.empty()} + int{!a.npy.empty()} + int{a.fashion_mnist};
  if (sources == 0) throw UsageError("no data: give one of --idx, --csv, --npy or --fashion-mnist");
  if (sources > 1) throw UsageError("give only one data source (--idx, --csv, --npy or --fashion-mnist)");
  const bool need_targets = purpose != Purpose::Predict;

  Data data;
  if (!a.idx.empty()) {
    if (a.idx.size() < 2 && need_targets) throw UsageError("--idx needs two files here: IMAGES LABELS");
    data.set = a.idx.size() >= 2 ? datasets::read_idx(a.idx[0], a.idx[1]) : read_idx_images(a.idx[0]);
    if (!need_targets) {
      data.set.labels.clear();
      data.set.classes = 0;
    }
    data.description = describe(a.idx[0], data.set);
  } else if (!a.csv.empty()) {
    data.set = need_targets ? datasets::read_csv(a.csv, a.label_column, a.regression)
                            : read_csv_inputs(a.csv, a.label_column, model_inputs);
    data.description = describe(a.csv, data.set);
  } else if (!a.npy.empty()) {
    if (a.npy.size() < 2 && need_targets) throw UsageError("--npy needs two files here: INPUTS TARGETS");
    data.set = read_npy_data(a.npy, need_targets);
    data.description = describe(a.npy[0], data.set);
  } else {
    const std::string dir = a.fashion_mnist_dir.empty() ? "/usr/share/datasets/fashion-mnist" : a.fashion_mnist_dir;
    datasets::TrainTest both = datasets::fashion_mnist(dir);
    // Training uses the 60000 training images; evaluate and predict the
    // 10000 test images the model has never seen.
    data.set = purpose == Purpose::Train ? std::move(both.train) : std::move(both.test);
    if (!need_targets) {
      data.set.labels.clear();
      data.set.classes = 0;
    }
    data.description = describe(std::string("Fashion-MNIST ") + (purpose == Purpose::Train ? "training" : "test") +
                                    " set",
                                data.set);
  }
  return data;
}

LossType default_loss(const datasets::Dataset& data, std::optional<Activation> output_activation) {
  if (output_activation) {
    switch (*output_activation) {
      case Activation::Softmax: return LossType::CrossEntropy;
      case Activation::Sigmoid: return LossType::BinaryCrossEntropy;
      case Activation::Linear: return data.labels.empty() ? LossType::MSE : LossType::CrossEntropy;
      default: return LossType::MSE;
    }
  }
  return data.labels.empty() ? LossType::MSE : LossType::CrossEntropy;
}

Activation default_output_activation(LossType loss) {
  switch (loss) {
    case LossType::CrossEntropy: return Activation::Softmax;
    case LossType::BinaryCrossEntropy: return Activation::Sigmoid;
    case LossType::MSE: return Activation::Linear;
  }
  return Activation::Linear;
}

PreparedTargets prepare_targets(const datasets::Dataset& data, LossType loss, std::size_t outputs) {
  PreparedTargets prepared;
  if (data.labels.empty()) {
    prepared.values = data.targets;
    return prepared;
  }
  if (loss == LossType::CrossEntropy) {
    prepared.labels = data.labels;
    prepared.is_labels = true;
    return prepared;
  }
  // MSE or binary cross-entropy on class labels: one column holding the
  // label (MSE) or 0/1 (BCE) for a single output, one-hot rows otherwise.
  const char* name = loss == LossType::MSE ? "mse" : "binary_cross_entropy";
  prepared.values.assign(data.rows * outputs, 0.0f);
  for (std::size_t i = 0; i < data.rows; ++i) {
    const std::int32_t label = data.labels[i];
    if (outputs == 1) {
      if (loss == LossType::BinaryCrossEntropy && label != 0 && label != 1) {
        throw InvalidArgumentError(std::string("labels: ") + name + " with one output needs labels 0 and 1, row " +
                                   std::to_string(i) + " has label " + std::to_string(label));
      }
      prepared.values[i] = static_cast<float>(label);
    } else {
      if (label < 0 || static_cast<std::size_t>(label) >= outputs) {
        throw InvalidArgumentError("labels: label " + std::to_string(label) + " in row " + std::to_string(i) +
                                   " is out of range for " + std::to_string(outputs) + " outputs (valid: 0 to " +
                                   std::to_string(outputs - 1) + ")");
      }
      prepared.values[i * outputs + static_cast<std::size_t>(label)] = 1.0f;
    }
  }
  return prepared;
}

void check_features(const Data& data, const Network& network) {
  if (data.set.features != network.input_size()) {
    throw ShapeError(data.description + ": " + std::to_string(data.set.features) +
                     " features per row, but the network takes " + std::to_string(network.input_size()) + " inputs");
  }
}

void check_writable(const std::string& path) {
  namespace fs = std::filesystem;
  const fs::path file(path);
  fs::path dir = file.parent_path();
  if (dir.empty()) dir = ".";
  std::error_code ec;
  if (fs::is_directory(file, ec)) throw IoError(path + ": is a directory");
  if (!fs::is_directory(dir, ec)) throw IoError(path + ": cannot write there: " + dir.string() + " is not a directory");
  if (::access(dir.c_str(), W_OK) != 0) {
    throw IoError(path + ": cannot write in " + dir.string() + ": " + std::strerror(errno));
  }
}

std::string lower(std::string text) {
  for (char& c : text) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return text;
}

std::string join_sizes(const std::vector<std::size_t>& sizes) {
  std::string text;
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    if (i) text += "-";
    text += std::to_string(sizes[i]);
  }
  return text;
}

std::string format_bytes(std::uintmax_t bytes) {
  char buffer[64];
  if (bytes < 1024) {
    std::snprintf(buffer, sizeof buffer, "%ju bytes", bytes);
  } else if (bytes < 1024 * 1024) {
    std::snprintf(buffer, sizeof buffer, "%.1f KiB (%ju bytes)", static_cast<double>(bytes) / 1024.0, bytes);
  } else {
    std::snprintf(buffer, sizeof buffer, "%.1f MiB (%ju bytes)", static_cast<double>(bytes) / (1024.0 * 1024.0), bytes);
  }
  return buffer;
}

}  // namespace kortexdl::cli
