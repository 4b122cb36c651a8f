#pragma once
// Readers for the data formats the examples and the command-line tool use:
// IDX (MNIST / Fashion-MNIST, gzip or plain), CSV and NumPy .npy. Every
// reader checks sizes before allocating and reports malformed input with
// FormatError (IoError when the file cannot be opened).
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace kortexdl::datasets {

// Row-major float features with integer labels (classification) or float
// targets (regression); exactly one of labels / targets is filled.
struct Dataset {
  std::vector<float> inputs;          // rows x features
  std::vector<std::int32_t> labels;   // rows, or empty
  std::vector<float> targets;         // rows x target_width, or empty
  std::size_t rows = 0;
  std::size_t features = 0;
  std::size_t target_width = 0;       // 0 when labels are used
  std::size_t classes = 0;            // max label + 1, or 0
};

// An IDX images file (uint8, any number of dimensions after the count) with
// its labels file; pixels are scaled by `scale` (1/255 gives [0, 1]).
Dataset read_idx(const std::string& images_path, const std::string& labels_path, float scale = 1.0f / 255.0f);

struct TrainTest {
  Dataset train;
  Dataset test;
};
// Fashion-MNIST from Debian's dataset-fashion-mnist package (or `directory`).
TrainTest fashion_mnist(const std::string& directory = "/usr/share/datasets/fashion-mnist");

// CSV of numbers, optional header line; `label_column` (negative counts
// from the end, e.g. -1 = last) holds integer class labels, or with
// `regression` true, float targets; the other columns are the features.
Dataset read_csv(const std::string& path, int label_column = -1, bool regression = false);

// A .npy array (float32/float64/int32/int64/uint8, C or Fortran order) as
// float32 values with its shape.
struct Array {
  std::vector<float> values;
  std::vector<std::size_t> shape;
};
Array read_npy(const std::string& path);
void write_npy(const std::string& path, const std::vector<float>& values, const std::vector<std::size_t>& shape);

}  // namespace kortexdl::datasets
