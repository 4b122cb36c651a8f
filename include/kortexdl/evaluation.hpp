#pragma once
#include <cstddef>
#include <optional>

namespace kortexdl {

struct Evaluation {
  double loss = 0.0;                // mean over the samples
  std::optional<double> accuracy;   // CrossEntropy / BinaryCrossEntropy only
  std::size_t samples = 0;
};

}  // namespace kortexdl
