// kortexdl: train, evaluate, run and inspect KortexDL models from the shell.
// Options and exit codes: docs/cli.md.
#include <CLI/CLI.hpp>

#include <charconv>
#include <cstdio>
#include <exception>
#include <new>
#include <string>

#include "cli.hpp"

namespace cli = kortexdl::cli;

namespace {

const char* const kExitCodes =
    "Exit codes: 0 success, 1 usage error, 2 data or model file error, 3 invalid argument (e.g. a label out of "
    "range, data not matching the network), 4 training diverged, 5 internal error, 130 interrupted.";

// Validators with short messages (CLI11's ranges print 300-digit bounds).
CLI::Validator whole_number(unsigned long long minimum) {
  return CLI::Validator(
      [minimum](std::string& text) -> std::string {
        unsigned long long value = 0;
        const auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
        if (text.empty() || ec != std::errc() || ptr != text.data() + text.size() || value < minimum) {
          return "must be a whole number >= " + std::to_string(minimum) + ", got '" + text + "'";
        }
        return {};
      },
      "", "whole number");
}

CLI::Validator positive_number() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        double value = 0;
        const auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
        if (text.empty() || ec != std::errc() || ptr != text.data() + text.size() || !(value > 0.0)) {
          return "must be a number > 0, got '" + text + "'";
        }
        return {};
      },
      "", "positive number");
}

CLI::Validator one_of(std::vector<std::string> names) {
  return CLI::IsMember(std::move(names), CLI::ignore_case);
}

void add_data_options(CLI::App* sub, cli::DataArgs& d, cli::Purpose purpose) {
  const bool predict = purpose == cli::Purpose::Predict;
  const char* group = "Data (exactly one source)";
  sub->add_option("--idx", d.idx,
                  predict ? "IDX images file (gzip or plain), optionally with its labels file (ignored)"
                          : "IDX images and labels files (gzip or plain), e.g. MNIST")
      ->expected(1, 2)
      ->type_name(predict ? "IMAGES [LABELS]" : "IMAGES LABELS")
      ->group(group);
  CLI::Option* csv =
      sub->add_option("--csv", d.csv,
                      predict ? "CSV of features (as many columns as the model has inputs, or one more holding "
                                "a label, dropped)"
                              : "CSV of numbers, optional header; one column holds the labels (or targets)")
          ->type_name("FILE")
          ->group(group);
  sub->add_option("--label-column", d.label_column,
                  "CSV column of the labels or targets, negative counts from the end (default -1: the last)")
      ->type_name("N")
      ->needs(csv)
      ->group(group);
  if (!predict) {
    sub->add_flag("--regression", d.regression, "CSV: the label column holds float targets, not class labels")
        ->needs(csv)
        ->group(group);
  }
  sub->add_option("--npy", d.npy,
                  predict ? "inputs .npy (rows x features), optionally with a targets .npy (ignored)"
                          : "inputs .npy (rows x features) and targets .npy: 1-D integer class labels or "
                            "2-D float targets (rows x outputs)")
      ->expected(1, 2)
      ->type_name(predict ? "INPUTS [TARGETS]" : "INPUTS TARGETS")
      ->group(group);
  CLI::Option* fashion =
      sub->add_option("--fashion-mnist", d.fashion_mnist_dir,
                      std::string("Fashion-MNIST from Debian's dataset-fashion-mnist package, or DIR; ") +
                          (purpose == cli::Purpose::Train ? "the 60000 training images"
                                                          : "the 10000 test images"))
          ->expected(0, 1)
          ->type_name("[DIR]")
          ->group(group);
  // Given with or without a directory (an empty one means the default).
  sub->callback([&d, fashion] { d.fashion_mnist = fashion->count() > 0; });
}

void add_threads_option(CLI::App* sub, std::optional<std::size_t>& threads) {
  sub->add_option_function<std::size_t>(
         "--threads", [&threads](const std::size_t& n) { threads = n; },
         "intra-op threads (default: KORTEX_NUM_THREADS, else OMP_NUM_THREADS, else all usable CPUs)")
      ->type_name("N")
      ->check(whole_number(0))
      ->group("Machine");
}

std::string one_line(std::string text) {
  for (char& c : text) {
    if (c == '\n' || c == '\r') c = ' ';
  }
  while (!text.empty() && text.back() == ' ') text.pop_back();
  return text;
}

int fail(const std::string& command, const std::string& message, int code) {
  std::fprintf(stderr, "%s: error: %s\n", command.c_str(), one_line(message).c_str());
  return code;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string version = "kortexdl " + std::string(kortexdl::kVersion) + " (" +
                              std::string(kortexdl::backend_name()) + " backend)";
  CLI::App app("Train, evaluate, run and inspect KortexDL models (fully-connected networks on the CPU).", "kortexdl");
  app.set_version_flag("--version", version);
  app.require_subcommand(1);
  app.footer(std::string("Run 'kortexdl COMMAND --help' for a command's options.\n") + kExitCodes + "\n");
  app.get_formatter()->column_width(34);

  // ---- train ------------------------------------------------------------------
  cli::TrainArgs train;
  CLI::App* train_cmd = app.add_subcommand("train", "train a network (new, or --resume a saved one) and save it");
  add_data_options(train_cmd, train.data, cli::Purpose::Train);
  {
    const char* g = "Network";
    train_cmd
        ->add_option("--sizes", train.sizes,
                     "layer sizes, inputs first, e.g. 784,256,128,10; the first and last may be 'auto' (from the "
                     "data). Default: auto,128,auto")
        ->delimiter(',')
        ->type_name("N,N,...")
        ->group(g);
    train_cmd->add_option("--hidden", train.hidden, "hidden sizes only, e.g. 256,128 (= --sizes auto,256,128,auto)")
        ->delimiter(',')
        ->type_name("N,...")
        ->excludes("--sizes")
        ->group(g);
    train_cmd
        ->add_option("--hidden-activation", train.hidden_activation,
                     "activation of the hidden layers (default relu)")
        ->check(one_of({"relu", "tanh", "sigmoid", "gelu", "linear"}))
        ->type_name("NAME")
        ->group(g);
    train_cmd
        ->add_option("--output-activation", train.output_activation,
                     "activation of the output layer (default from the loss: softmax for cross_entropy, sigmoid for "
                     "binary_cross_entropy, linear for mse)")
        ->check(one_of({"relu", "tanh", "sigmoid", "gelu", "linear", "softmax"}))
        ->type_name("NAME")
        ->group(g);
    train_cmd
        ->add_option_function<std::uint64_t>(
            "--seed", [&train](const std::uint64_t& s) { train.seed = s; },
            "seed of the initial weights and the shuffling (default: random, reported by 'info')")
        ->check(whole_number(0))
        ->type_name("N")
        ->group(g);
  }
  {
    const char* g = "Training";
    train_cmd
        ->add_option("--loss", train.loss,
                     "default: cross_entropy for class labels, mse for float targets; with --resume, from the model's "
                     "output activation")
        ->check(one_of({"cross_entropy", "mse", "binary_cross_entropy"}))
        ->type_name("NAME")
        ->group(g);
    train_cmd->add_option("--optimizer", train.optimizer, "default adam")
        ->check(one_of({"sgd", "momentum", "adam"}))
        ->type_name("NAME")
        ->group(g);
    train_cmd
        ->add_option_function<float>(
            "--lr", [&train](const float& v) { train.learning_rate = v; },
            "learning rate (default 0.001 for adam, 0.01 for sgd and momentum)")
        ->check(positive_number())
        ->type_name("RATE")
        ->group(g);
    train_cmd
        ->add_option_function<float>(
            "--momentum", [&train](const float& v) { train.momentum = v; }, "momentum optimizer: momentum (0.9)")
        ->type_name("M")
        ->group(g);
    train_cmd
        ->add_option_function<float>(
            "--weight-decay", [&train](const float& v) { train.weight_decay = v; },
            "L2 penalty on the weights, in [0, 1] (default 0)")
        ->type_name("W")
        ->group(g);
    train_cmd->add_option("--epochs", train.epochs, "epochs (default 10)")
        ->check(whole_number(1))
        ->type_name("N")
        ->group(g);
    train_cmd->add_option("--batch-size", train.batch_size, "rows per mini-batch (default 32)")
        ->check(whole_number(1))
        ->type_name("N")
        ->group(g);
    train_cmd->add_option("--schedule", train.schedule, "learning-rate schedule (default constant)")
        ->check(one_of({"constant", "cosine", "step"}))
        ->type_name("NAME")
        ->group(g);
    train_cmd->add_option("--step-epochs", train.step_epochs, "step schedule: multiply by --gamma every N epochs (10)")
        ->check(whole_number(1))
        ->type_name("N")
        ->group(g);
    train_cmd->add_option("--gamma", train.gamma, "step schedule: the factor (0.1)")->type_name("G")->group(g);
    train_cmd->add_option("--min-lr", train.min_learning_rate, "cosine schedule: the final rate (0)")
        ->type_name("RATE")
        ->group(g);
    train_cmd
        ->add_option("--validation-split", train.validation_split,
                     "hold out this fraction of the rows (the last ones) for validation (default 0)")
        ->type_name("F")
        ->group(g);
    train_cmd
        ->add_option("--patience", train.patience,
                     "stop after N epochs without improvement of the validation loss (the training loss without "
                     "validation) and restore the best epoch; 0 (default) disables")
        ->check(whole_number(0))
        ->type_name("N")
        ->group(g);
    train_cmd
        ->add_option("--min-delta", train.min_delta,
                     "early stopping: an improvement must be larger than this to count (default 0)")
        ->type_name("D")
        ->group(g);
    train_cmd->add_option("--resume", train.resume, "continue training this saved model (with its optimizer state)")
        ->type_name("MODEL.kdl")
        ->group(g);
  }
  {
    const char* g = "Output";
    train_cmd->add_option("--output,-o", train.output, "where to save the trained model")
        ->required()
        ->type_name("MODEL.kdl")
        ->group(g);
    train_cmd->add_flag("--save-on-interrupt", train.save_on_interrupt,
                        "on Ctrl-C, save the model as it is after the last whole batch (default: save nothing)")
        ->group(g);
    train_cmd->add_flag("--without-optimizer-state", train.without_optimizer_state,
                        "save parameters only (smaller file; a resumed run restarts the optimizer)")
        ->group(g);
    train_cmd
        ->add_option("--progress", train.progress,
                     "progress bar within the epoch (default auto: when standard output is a terminal)")
        ->check(one_of({"auto", "on", "off"}))
        ->type_name("WHEN")
        ->group(g);
    train_cmd->add_flag("--quiet,-q", train.quiet, "print nothing but errors")->group(g);
  }
  add_threads_option(train_cmd, train.threads);
  train_cmd
      ->add_option("--numa-nodes", train.numa_nodes,
                   "data-parallel training over N NUMA nodes (virtual ones if the machine has fewer); 0: every "
                   "node; 1 (default): plain training")
      ->check(whole_number(0))
      ->type_name("N")
      ->group("Machine");
  train_cmd->footer(
      "Examples:\n"
      "  kortexdl train --csv iris.csv --hidden 16 --epochs 50 --validation-split 0.2 -o iris.kdl\n"
      "  kortexdl train --fashion-mnist --sizes 784,256,128,10 --epochs 10 --schedule cosine -o fm.kdl\n"
      "  kortexdl train --npy x.npy y.npy --resume fm.kdl --epochs 5 -o fm.kdl\n"
      "Ctrl-C stops between batches and exits 130 (saving only with --save-on-interrupt).\n");

  // ---- evaluate ---------------------------------------------------------------
  cli::EvaluateArgs evaluate;
  CLI::App* evaluate_cmd = app.add_subcommand("evaluate", "loss and accuracy of a saved model on labelled data");
  evaluate_cmd->add_option("--model,-m", evaluate.model, "the model file")->required()->type_name("MODEL.kdl");
  add_data_options(evaluate_cmd, evaluate.data, cli::Purpose::Evaluate);
  evaluate_cmd
      ->add_option("--loss", evaluate.loss,
                   "default: from the model's output activation and the data")
      ->check(one_of({"cross_entropy", "mse", "binary_cross_entropy"}))
      ->type_name("NAME");
  evaluate_cmd->add_option("--batch-size", evaluate.batch_size, "rows per chunk (default 1024)")
      ->check(whole_number(1))
      ->type_name("N");
  evaluate_cmd->add_flag("--json", evaluate.json, "print one JSON object");
  add_threads_option(evaluate_cmd, evaluate.threads);
  evaluate_cmd->footer("Example:\n  kortexdl evaluate -m fm.kdl --fashion-mnist\n");

  // ---- predict ----------------------------------------------------------------
  cli::PredictArgs predict;
  CLI::App* predict_cmd = app.add_subcommand("predict", "run a saved model on inputs and write its outputs");
  predict_cmd->add_option("--model,-m", predict.model, "the model file")->required()->type_name("MODEL.kdl");
  add_data_options(predict_cmd, predict.data, cli::Purpose::Predict);
  predict_cmd
      ->add_option("--output,-o", predict.output,
                   ".npy (float32, rows x outputs) or .csv (one row per input); - writes CSV to standard output")
      ->required()
      ->type_name("OUT.npy|OUT.csv");
  predict_cmd->add_flag("--classes", predict.classes,
                        "write the predicted class of each row (arg-max; a single sigmoid output: > 0.5) instead "
                        "of the outputs");
  predict_cmd->add_option("--batch-size", predict.batch_size, "rows per chunk (default 1024)")
      ->check(whole_number(1))
      ->type_name("N");
  add_threads_option(predict_cmd, predict.threads);
  predict_cmd->footer(
      "Examples:\n"
      "  kortexdl predict -m fm.kdl --npy x.npy -o probabilities.npy\n"
      "  kortexdl predict -m iris.kdl --csv iris.csv --classes -o -\n");

  // ---- info -------------------------------------------------------------------
  cli::InfoArgs info;
  CLI::App* info_cmd = app.add_subcommand(
      "info", "describe a saved model (sizes, activations, optimizer, seed) and this machine (backend, threads, NUMA)");
  info_cmd->add_option("model", info.model, "the model file")->required()->type_name("MODEL.kdl");
  info_cmd->add_flag("--json", info.json, "print one JSON object");

  std::string command = "kortexdl";
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::string hint = " (see 'kortexdl --help')";
    for (CLI::App* sub : app.get_subcommands()) {
      command = "kortexdl " + sub->get_name();
      hint = " (see '" + command + " --help')";
    }
    return fail(command, e.what() + hint, cli::kExitUsage);
  }

  // Named choices are accepted in any case (checked by CLI::IsMember).
  for (std::string* choice : {&train.hidden_activation, &train.output_activation, &train.loss, &train.optimizer,
                              &train.schedule, &train.progress, &evaluate.loss}) {
    *choice = cli::lower(*choice);
  }

  try {
    if (train_cmd->parsed()) {
      command = "kortexdl train";
      return cli::run_train(train);
    }
    if (evaluate_cmd->parsed()) {
      command = "kortexdl evaluate";
      return cli::run_evaluate(evaluate);
    }
    if (predict_cmd->parsed()) {
      command = "kortexdl predict";
      return cli::run_predict(predict);
    }
    command = "kortexdl info";
    return cli::run_info(info);
  } catch (const cli::UsageError& e) {
    return fail(command, std::string(e.what()) + " (see '" + command + " --help')", cli::kExitUsage);
  } catch (const kortexdl::FormatError& e) {
    return fail(command, e.what(), cli::kExitData);
  } catch (const kortexdl::IoError& e) {
    return fail(command, e.what(), cli::kExitData);
  } catch (const kortexdl::InvalidArgumentError& e) {  // and ShapeError
    return fail(command, e.what(), cli::kExitInvalid);
  } catch (const kortexdl::ResourceLimitError& e) {
    return fail(command, e.what(), cli::kExitInvalid);
  } catch (const kortexdl::NumericalError& e) {
    return fail(command, std::string("training diverged: ") + e.what(), cli::kExitNumerical);
  } catch (const kortexdl::InterruptedError& e) {
    return fail(command, e.what(), cli::kExitInterrupted);
  } catch (const std::bad_alloc&) {
    return fail(command, "out of memory", cli::kExitInternal);
  } catch (const std::exception& e) {
    return fail(command, std::string("internal error: ") + e.what(), cli::kExitInternal);
  }
}
