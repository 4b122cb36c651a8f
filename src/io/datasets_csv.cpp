// CSV reader: numbers separated by commas, optional header line. Format and
// errors: docs/data-formats.md.
#include <charconv>
#include <cmath>
#include <limits>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "io/dataset_source.hpp"
#include "kortexdl/datasets.hpp"
#include "kortexdl/error.hpp"

namespace kortexdl::datasets {

namespace detail {
namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
  return s;
}

bool is_blank(std::string_view s) { return trim(s).empty(); }

void split_fields(std::string_view line, std::vector<std::string_view>& fields) {
  fields.clear();
  std::size_t start = 0;
  while (true) {
    const std::size_t comma = line.find(',', start);
    if (comma == std::string_view::npos) {
      fields.push_back(trim(line.substr(start)));
      return;
    }
    fields.push_back(trim(line.substr(start, comma - start)));
    start = comma + 1;
  }
}

enum class NumberStatus { kOk, kNotANumber, kOutOfRange };

// A whole field as a number (std::from_chars, optional leading '+').
template <typename T>
NumberStatus parse_number(std::string_view field, T& value) {
  if (!field.empty() && field.front() == '+') {
    field.remove_prefix(1);
    if (!field.empty() && (field.front() == '-' || field.front() == '+')) return NumberStatus::kNotANumber;
  }
  if (field.empty()) return NumberStatus::kNotANumber;
  const char* end = field.data() + field.size();
  const auto [ptr, ec] = std::from_chars(field.data(), end, value, std::chars_format::general);
  if (ptr != end) return NumberStatus::kNotANumber;
  if (ec == std::errc::result_out_of_range) return NumberStatus::kOutOfRange;
  if (ec != std::errc()) return NumberStatus::kNotANumber;
  return NumberStatus::kOk;
}

class CsvParser {
 public:
  CsvParser(const std::string& name, int label_column, bool regression)
      : name_(name), label_argument_(label_column), regression_(regression) {}

  Dataset run(std::string_view text) {
    if (text.size() >= 3 && text.substr(0, 3) == "\xEF\xBB\xBF") text.remove_prefix(3);  // UTF-8 BOM
    std::size_t line_start = 0;
    std::size_t line_number = 0;
    bool saw_header = false;
    while (line_start < text.size()) {
      std::size_t line_end = text.find('\n', line_start);
      if (line_end == std::string_view::npos) line_end = text.size();
      const std::string_view line = text.substr(line_start, line_end - line_start);
      line_start = line_end + 1;
      ++line_number;
      if (is_blank(line)) continue;
      split_fields(line, fields_);
      if (columns_ == 0) {
        first_line_ = line_number;
        columns_ = fields_.size();
        resolve_label_column();
        if (looks_like_header()) {
          saw_header = true;
          continue;
        }
      }
      parse_row(line_number);
    }
    if (rows_ == 0) {
      fail(name_, saw_header ? "has a header line but no data rows" : "is empty (no data rows)");
    }
    data_.rows = rows_;
    data_.features = columns_ - 1;
    if (regression_) {
      data_.target_width = 1;
    } else {
      data_.classes = static_cast<std::size_t>(max_label_) + 1;
    }
    return std::move(data_);
  }

 private:
  void resolve_label_column() {
    const auto columns = static_cast<long long>(columns_);
    if (columns_ < 2) {
      fail(name_, "line " + std::to_string(first_line_) + " has " + std::to_string(columns_) +
                      " column; a CSV dataset needs a label column and at least one feature column");
    }
    long long index = label_argument_;
    if (index < 0) index += columns;
    if (index < 0 || index >= columns) {
      fail(name_, "label_column " + std::to_string(label_argument_) + " is outside the " + std::to_string(columns_) +
                      " columns of line " + std::to_string(first_line_) + " (valid: " + std::to_string(-columns) +
                      " to " + std::to_string(columns - 1) + ")");
    }
    label_index_ = static_cast<std::size_t>(index);
  }

  bool looks_like_header() const {
    for (const std::string_view field : fields_) {
      double value = 0;
      if (parse_number(field, value) == NumberStatus::kNotANumber) return true;
    }
    return false;
  }

  [[noreturn]] void fail_field(std::size_t line, std::size_t column, const std::string& what) const {
    fail(name_, "line " + std::to_string(line) + ", column " + std::to_string(column + 1) + ": " + what);
  }

  void parse_row(std::size_t line) {
    if (fields_.size() != columns_) {
      fail(name_, "line " + std::to_string(line) + " has " + std::to_string(fields_.size()) + " fields, expected " +
                      std::to_string(columns_) + " (as on line " + std::to_string(first_line_) + ")");
    }
    for (std::size_t column = 0; column < columns_; ++column) {
      const std::string_view field = fields_[column];
      if (field.empty()) fail_field(line, column, "empty field");
      if (column == label_index_ && !regression_) {
        data_.labels.push_back(parse_label(field, line, column));
        continue;
      }
      float value = 0;
      switch (parse_number(field, value)) {
        case NumberStatus::kOk: break;
        case NumberStatus::kNotANumber: fail_field(line, column, quote_bytes(field) + " is not a number");
        case NumberStatus::kOutOfRange: fail_field(line, column, quote_bytes(field) + " is outside the float32 range");
      }
      if (!std::isfinite(value)) fail_field(line, column, quote_bytes(field) + " is not a finite number");
      if (column == label_index_) {
        data_.targets.push_back(value);
      } else {
        data_.inputs.push_back(value);
      }
    }
    ++rows_;
  }

  std::int32_t parse_label(std::string_view field, std::size_t line, std::size_t column) {
    double value = 0;
    const NumberStatus status = parse_number(field, value);
    if (status == NumberStatus::kNotANumber) fail_field(line, column, "label " + quote_bytes(field) + " is not a number");
    if (status == NumberStatus::kOutOfRange || !std::isfinite(value)) {
      fail_field(line, column, "label " + quote_bytes(field) + " is not a finite number");
    }
    if (value != std::floor(value)) fail_field(line, column, "label " + quote_bytes(field) + " is not a whole number");
    if (value < 0) fail_field(line, column, "label " + quote_bytes(field) + " is negative");
    if (value > static_cast<double>(kMaxCsvLabel)) {
      fail_field(line, column,
                 "label " + quote_bytes(field) + " is larger than the limit " + std::to_string(kMaxCsvLabel));
    }
    const auto label = static_cast<std::int32_t>(value);
    if (label > max_label_) max_label_ = label;
    return label;
  }

  const std::string& name_;
  const int label_argument_;
  const bool regression_;
  std::size_t columns_ = 0;
  std::size_t first_line_ = 0;
  std::size_t label_index_ = 0;
  std::size_t rows_ = 0;
  std::int32_t max_label_ = 0;
  std::vector<std::string_view> fields_;
  Dataset data_;
};

}  // namespace

Dataset parse_csv(std::string_view text, int label_column, bool regression, const std::string& name) {
  return CsvParser(name, label_column, regression).run(text);
}

}  // namespace detail

Dataset read_csv(const std::string& path, int label_column, bool regression) {
  detail::PlainFileSource source(path);
  std::string text;
  if (const auto size = source.remaining()) {
    if (*size > detail::kMaxCsvBytes) {
      detail::fail(source, "is " + std::to_string(*size) + " bytes, more than the CSV reader's limit of " +
                               std::to_string(detail::kMaxCsvBytes));
    }
    text.reserve(static_cast<std::size_t>(*size));
  }
  char buffer[1 << 16];
  while (true) {
    const std::size_t got = source.read(reinterpret_cast<unsigned char*>(buffer), sizeof buffer);
    if (got == 0) break;
    if (text.size() + got > detail::kMaxCsvBytes) {
      detail::fail(source, "is more than the CSV reader's limit of " + std::to_string(detail::kMaxCsvBytes) + " bytes");
    }
    text.append(buffer, got);
  }
  return detail::parse_csv(text, label_column, regression, path);
}

}  // namespace kortexdl::datasets
