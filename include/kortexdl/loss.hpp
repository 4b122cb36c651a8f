#pragma once
#include <string_view>

namespace kortexdl {

// Every loss is a mean over the batch of a per-sample loss:
//   MSE                 per sample: mean over outputs of (y - t)^2
//   CrossEntropy        per sample: -sum_j t_j log softmax(z)_j, with integer
//                       labels (t one-hot) or probability rows as targets
//   BinaryCrossEntropy  per sample: mean over outputs of
//                       -(t log p + (1 - t) log(1 - p)), p = sigmoid(z)
// CrossEntropy needs a Softmax or Linear output layer (a Linear output is
// read as logits); BinaryCrossEntropy needs Sigmoid or Linear (logits).
enum class LossType { MSE, CrossEntropy, BinaryCrossEntropy };

std::string_view to_string(LossType loss);
LossType parse_loss(std::string_view name, std::string_view argument = "loss_type");

}  // namespace kortexdl
