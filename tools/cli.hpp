#pragma once
// The kortexdl command-line tool: what the argument parser fills in
// (kortexdl_cli.cpp) and the subcommands that act on it. docs/cli.md
// describes the options and the exit codes.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "kortexdl/kortexdl.hpp"

namespace kortexdl::cli {

// Exit codes (docs/cli.md). Scripts rely on them: never renumber.
enum ExitCode : int {
  kExitOk = 0,
  kExitUsage = 1,        // bad or missing options
  kExitData = 2,         // a data or model file cannot be read or is malformed (FormatError, IoError)
  kExitInvalid = 3,      // the library refused an argument (InvalidArgumentError, ShapeError, ResourceLimitError)
  kExitNumerical = 4,    // training diverged (NumericalError)
  kExitInternal = 5,     // anything else: a bug, or out of memory
  kExitInterrupted = 130 // SIGINT (Ctrl-C)
};

// A problem with the command line that the parser cannot see by itself
// (two data sources, an option that conflicts with the model, ...): exit 1.
class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Where the rows come from. Exactly one source is given.
struct DataArgs {
  std::vector<std::string> idx;  // IMAGES [LABELS]
  std::string csv;
  int label_column = -1;
  bool regression = false;
  std::vector<std::string> npy;  // INPUTS [TARGETS]
  bool fashion_mnist = false;
  std::string fashion_mnist_dir;  // empty: the Debian package's directory
};

enum class Purpose { Train, Evaluate, Predict };

// Rows of features with their targets, as read (see load_data).
struct Data {
  datasets::Dataset set;     // labels or targets may both be empty (predict)
  std::string description;   // "iris.csv: 150 rows x 4 features, 3 classes"
};

// Reads the data a subcommand was given. For Train and Evaluate the
// targets are required; Predict reads inputs only (labels are ignored).
// `model_inputs` (Predict with --csv) tells a features-only CSV from one
// with a label column. Throws UsageError, FormatError, IoError.
Data load_data(const DataArgs& args, Purpose purpose, std::size_t model_inputs = 0);

// The loss a network/data pair trains with unless --loss says otherwise.
LossType default_loss(const datasets::Dataset& data, std::optional<Activation> output_activation);
// The output activation a new network gets for a loss.
Activation default_output_activation(LossType loss);

// Targets in the form `loss` needs for a network with `outputs` outputs:
// labels stay labels for cross-entropy; for binary cross-entropy 0/1 labels
// become one float column; for MSE labels become one-hot rows. Float
// targets are used as they are. Throws InvalidArgumentError for labels that
// cannot be converted (a label >= outputs for MSE, other than 0/1 for BCE).
struct PreparedTargets {
  std::vector<std::int32_t> labels;
  std::vector<float> values;
  bool is_labels = false;
  Targets view() const { return is_labels ? Targets(labels) : Targets(values); }
};
PreparedTargets prepare_targets(const datasets::Dataset& data, LossType loss, std::size_t outputs);

// Throws ShapeError unless the data has as many features as the network inputs.
void check_features(const Data& data, const Network& network);

// Throws IoError unless a file can be created at `path` (its directory
// exists and is writable), so a long run does not end unable to save.
void check_writable(const std::string& path);

// Lower-cases ASCII.
std::string lower(std::string text);
std::string join_sizes(const std::vector<std::size_t>& sizes);
std::string format_bytes(std::uintmax_t bytes);

// ---- subcommands --------------------------------------------------------

struct TrainArgs {
  DataArgs data;
  std::vector<std::string> sizes;   // "auto" allowed first and last
  std::vector<std::string> hidden;  // hidden sizes only
  std::string hidden_activation;    // empty: relu (or the model's with --resume)
  std::string output_activation;    // empty: from the loss
  std::string loss;                 // empty: from the data
  std::string optimizer;            // empty: adam
  std::optional<float> learning_rate;  // empty: 1e-3 for adam, 1e-2 for sgd and momentum
  std::optional<float> momentum;       // empty: 0.9 (momentum only)
  std::optional<float> weight_decay;   // empty: 0
  std::size_t epochs = 10;
  std::size_t batch_size = 32;
  std::string schedule = "constant";
  std::size_t step_epochs = 10;
  float gamma = 0.1f;
  float min_learning_rate = 0.0f;
  double validation_split = 0.0;
  std::size_t patience = 0;
  double min_delta = 0.0;
  std::optional<std::uint64_t> seed;
  std::optional<std::size_t> threads;
  std::size_t numa_nodes = 1;
  std::string output;
  std::string resume;
  bool save_on_interrupt = false;
  bool without_optimizer_state = false;
  std::string progress = "auto";  // auto | on | off
  bool quiet = false;
};
int run_train(const TrainArgs& args);

struct EvaluateArgs {
  std::string model;
  DataArgs data;
  std::string loss;  // empty: from the model and the data
  std::size_t batch_size = 1024;
  std::optional<std::size_t> threads;
  bool json = false;
};
int run_evaluate(const EvaluateArgs& args);

struct PredictArgs {
  std::string model;
  DataArgs data;
  std::string output;  // .npy, .csv, or - (CSV on stdout)
  bool classes = false;
  std::size_t batch_size = 1024;
  std::optional<std::size_t> threads;
};
int run_predict(const PredictArgs& args);

struct InfoArgs {
  std::string model;
  bool json = false;
};
int run_info(const InfoArgs& args);

}  // namespace kortexdl::cli
