#pragma once
#include <cstdint>
#include <span>
#include <vector>

namespace kortexdl {

// What a training or evaluation call compares the outputs with: either one
// float per output (batch x outputs, row-major) or one integer class label
// per sample (CrossEntropy only). A non-owning view: the caller keeps the
// data alive for the call.
class Targets {
 public:
  Targets(std::span<const float> values) : values_(values) {}               // NOLINT: implicit by design
  Targets(const std::vector<float>& values) : values_(values) {}            // NOLINT
  Targets(std::span<const std::int32_t> labels) : labels_(labels), is_labels_(true) {}  // NOLINT
  Targets(const std::vector<std::int32_t>& labels) : labels_(labels), is_labels_(true) {}  // NOLINT

  bool is_labels() const { return is_labels_; }
  std::span<const float> values() const { return values_; }
  std::span<const std::int32_t> labels() const { return labels_; }
  std::size_t size() const { return is_labels_ ? labels_.size() : values_.size(); }

 private:
  std::span<const float> values_;
  std::span<const std::int32_t> labels_;
  bool is_labels_ = false;
};

}  // namespace kortexdl
