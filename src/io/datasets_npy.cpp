// NumPy .npy reader (versions 1.0/2.0/3.0; <f4 <f8 <i4 <i8 |u1; C or
// Fortran order) and writer (<f4, C order, version 1.0). Format and errors:
// docs/data-formats.md.
#include <algorithm>
#include <bit>
#include <charconv>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <string>
#include <string_view>
#include <unistd.h>
#include <vector>

#include "checked_math.hpp"
#include "io/dataset_source.hpp"
#include "kortexdl/datasets.hpp"
#include "kortexdl/error.hpp"

namespace kortexdl::datasets {

namespace detail {
namespace {

constexpr unsigned char kMagic[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};

enum class DType { kF4, kF8, kI4, kI8, kU1 };

struct NpyHeader {
  DType dtype = DType::kF4;
  std::size_t item_size = 4;
  bool fortran_order = false;
  std::vector<std::size_t> shape;
  std::size_t count = 1;   // product of shape
  std::size_t nbytes = 0;  // count * item_size
};

std::string shape_text(const std::vector<std::size_t>& shape) {
  std::string out = "(";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i != 0) out += ", ";
    out += std::to_string(shape[i]);
  }
  if (shape.size() == 1) out += ",";
  return out + ")";
}

// The header is a Python dict literal, e.g.
//   {'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }
// This parses exactly the subset numpy writes for plain dtypes.
class HeaderParser {
 public:
  HeaderParser(std::string_view text, const ByteSource& source) : text_(text), source_(source) {}

  NpyHeader parse() {
    skip_space();
    expect('{', "the header dict must start with '{'");
    bool have_descr = false;
    bool have_order = false;
    bool have_shape = false;
    std::string descr;
    NpyHeader header;
    while (true) {
      skip_space();
      if (peek() == '}') {
        ++pos_;
        break;
      }
      const std::string key = parse_string("a quoted key");
      skip_space();
      expect(':', "expected ':' after key '" + key + "'");
      skip_space();
      if (key == "descr") {
        if (have_descr) bad("duplicate key 'descr'");
        have_descr = true;
        if (peek() != '\'' && peek() != '"') {
          bad("'descr' is not a string: structured dtypes are not supported (supported: <f4 <f8 <i4 <i8 |u1)");
        }
        descr = parse_string("the dtype string");
      } else if (key == "fortran_order") {
        if (have_order) bad("duplicate key 'fortran_order'");
        have_order = true;
        header.fortran_order = parse_bool();
      } else if (key == "shape") {
        if (have_shape) bad("duplicate key 'shape'");
        have_shape = true;
        header.shape = parse_shape();
      } else {
        bad("unexpected key " + quote_bytes(key) + " in the header dict (expected 'descr', 'fortran_order', 'shape')");
      }
      skip_space();
      if (peek() == ',') {
        ++pos_;
      } else if (peek() != '}') {
        bad("expected ',' or '}' after the value of '" + key + "'" + context());
      }
    }
    // numpy pads the header with spaces and ends it with '\n'.
    for (; pos_ < text_.size(); ++pos_) {
      const char c = text_[pos_];
      if (c != ' ' && c != '\n' && c != '\r' && c != '\t' && c != '\0') bad("unexpected text after the header dict" + context());
    }
    if (!have_descr) bad("the header has no 'descr'");
    if (!have_order) bad("the header has no 'fortran_order'");
    if (!have_shape) bad("the header has no 'shape'");
    set_dtype(header, descr);
    for (const std::size_t dim : header.shape) header.count = mul(header.count, dim, header.shape);
    header.nbytes = mul(header.count, header.item_size, header.shape);
    return header;
  }

 private:
  [[noreturn]] void bad(const std::string& what) const { fail(source_, "bad .npy header: " + what); }

  std::string context() const { return " at " + quote_bytes(text_.substr(std::min(pos_, text_.size())), 20); }

  char peek() const { return pos_ < text_.size() ? text_[pos_] : '\0'; }

  void skip_space() {
    while (pos_ < text_.size() && (text_[pos_] == ' ' || text_[pos_] == '\t' || text_[pos_] == '\n' || text_[pos_] == '\r')) ++pos_;
  }

  void expect(char c, const std::string& what) {
    if (peek() != c) bad(what + context());
    ++pos_;
  }

  std::string parse_string(const std::string& what) {
    const char quote = peek();
    if (quote != '\'' && quote != '"') bad("expected " + what + context());
    const std::size_t start = ++pos_;
    while (pos_ < text_.size() && text_[pos_] != quote) {
      if (text_[pos_] == '\\' || text_[pos_] == '\n') bad("unsupported character in " + what + context());
      ++pos_;
    }
    if (pos_ >= text_.size()) bad("unterminated string in the header");
    const std::string value(text_.substr(start, pos_ - start));
    ++pos_;
    return value;
  }

  bool parse_bool() {
    if (text_.substr(pos_, 4) == "True") {
      pos_ += 4;
      return true;
    }
    if (text_.substr(pos_, 5) == "False") {
      pos_ += 5;
      return false;
    }
    bad("'fortran_order' must be True or False" + context());
  }

  std::vector<std::size_t> parse_shape() {
    expect('(', "'shape' must be a tuple");
    std::vector<std::size_t> shape;
    while (true) {
      skip_space();
      if (peek() == ')') {
        ++pos_;
        break;
      }
      if (peek() == '-') bad("negative dimension in 'shape'" + context());
      if (peek() < '0' || peek() > '9') bad("expected a dimension in 'shape'" + context());
      std::size_t dim = 0;
      while (peek() >= '0' && peek() <= '9') {
        const auto digit = static_cast<std::size_t>(peek() - '0');
        if (__builtin_mul_overflow(dim, std::size_t{10}, &dim) || __builtin_add_overflow(dim, digit, &dim)) {
          bad("dimension in 'shape' overflows the size type" + context());
        }
        ++pos_;
      }
      if (peek() == 'L') ++pos_;  // Python 2 long, as old numpy wrote it
      if (shape.size() >= 64) bad("'shape' has more than 64 dimensions");
      shape.push_back(dim);
      skip_space();
      if (peek() == ',') {
        ++pos_;
      } else if (peek() != ')') {
        bad("expected ',' or ')' in 'shape'" + context());
      }
    }
    return shape;
  }

  void set_dtype(NpyHeader& header, const std::string& descr) const {
    if (descr == "<f4") {
      header.dtype = DType::kF4;
      header.item_size = 4;
    } else if (descr == "<f8") {
      header.dtype = DType::kF8;
      header.item_size = 8;
    } else if (descr == "<i4") {
      header.dtype = DType::kI4;
      header.item_size = 4;
    } else if (descr == "<i8") {
      header.dtype = DType::kI8;
      header.item_size = 8;
    } else if (descr == "|u1" || descr == "<u1" || descr == ">u1") {
      header.dtype = DType::kU1;
      header.item_size = 1;
    } else {
      bad("dtype " + quote_bytes(descr) + " is not supported (supported: <f4 <f8 <i4 <i8 |u1" +
          (!descr.empty() && descr[0] == '>' ? "; this one is big-endian" : "") + ")");
    }
  }

  std::size_t mul(std::size_t a, std::size_t b, const std::vector<std::size_t>& shape) const {
    try {
      return kortexdl::detail::checked_mul(a, b, "npy shape");
    } catch (const ResourceLimitError&) {
      bad("'shape' " + shape_text(shape) + " overflows the size type");
    }
  }

  std::string_view text_;
  const ByteSource& source_;
  std::size_t pos_ = 0;
};

template <typename Bits>
Bits load_le(const unsigned char* p) {
  Bits value = 0;
  for (std::size_t i = 0; i < sizeof(Bits); ++i) value |= static_cast<Bits>(static_cast<Bits>(p[i]) << (8 * i));
  return value;
}

// Converts `count` items starting at element `first` of the array.
void convert(const NpyHeader& header, const ByteSource& source, const unsigned char* bytes, std::size_t count,
             std::size_t first, float* out) {
  switch (header.dtype) {
    case DType::kF4:
      for (std::size_t i = 0; i < count; ++i) out[i] = std::bit_cast<float>(load_le<std::uint32_t>(bytes + 4 * i));
      break;
    case DType::kF8:
      for (std::size_t i = 0; i < count; ++i) {
        const double v = std::bit_cast<double>(load_le<std::uint64_t>(bytes + 8 * i));
        if (std::isfinite(v) && std::fabs(v) > static_cast<double>(std::numeric_limits<float>::max())) {
          char text[32];
          const auto printed = std::to_chars(text, text + sizeof text, v);
          fail(source, "element " + std::to_string(first + i) + " (" + std::string(text, printed.ptr) +
                           ") is outside the float32 range");
        }
        out[i] = static_cast<float>(v);  // NaN and infinities are kept
      }
      break;
    case DType::kI4:
      for (std::size_t i = 0; i < count; ++i) {
        out[i] = static_cast<float>(static_cast<std::int32_t>(load_le<std::uint32_t>(bytes + 4 * i)));
      }
      break;
    case DType::kI8:
      for (std::size_t i = 0; i < count; ++i) {
        out[i] = static_cast<float>(static_cast<std::int64_t>(load_le<std::uint64_t>(bytes + 8 * i)));
      }
      break;
    case DType::kU1:
      for (std::size_t i = 0; i < count; ++i) out[i] = static_cast<float>(bytes[i]);
      break;
  }
}

// Fortran (column-major) order to C (row-major) order.
std::vector<float> fortran_to_c(const std::vector<float>& in, const std::vector<std::size_t>& shape) {
  std::vector<float> out(in.size());
  const std::size_t ndim = shape.size();
  // At most 64 dimensions (the header parser's limit).
  std::size_t c_stride[64];
  std::size_t index[64] = {};
  std::size_t stride = 1;
  for (std::size_t k = 0; k < ndim; ++k) {
    c_stride[ndim - 1 - k] = stride;
    stride *= shape[ndim - 1 - k];
  }
  std::size_t c_offset = 0;
  for (const float value : in) {  // in Fortran order: the first index moves fastest
    out[c_offset] = value;
    for (std::size_t d = 0; d < ndim; ++d) {
      if (++index[d] < shape[d]) {
        c_offset += c_stride[d];
        break;
      }
      c_offset -= (shape[d] - 1) * c_stride[d];
      index[d] = 0;
    }
  }
  return out;
}

std::string header_dict(const std::vector<std::size_t>& shape) {
  return "{'descr': '<f4', 'fortran_order': False, 'shape': " + shape_text(shape) + ", }";
}

// The preamble (magic, version, header length, padded header) write_npy writes.
std::vector<unsigned char> encode_preamble(const std::vector<std::size_t>& shape) {
  std::string dict = header_dict(shape);
  // Version 1.0 holds a header up to 65535 bytes; larger (only with
  // thousands of dimensions) needs 2.0.
  const bool v2 = dict.size() + 1 + 10 > 65535;
  const std::size_t prefix = v2 ? 12 : 10;
  const std::size_t total = (prefix + dict.size() + 1 + 63) / 64 * 64;  // numpy aligns to 64
  dict.append(total - prefix - dict.size() - 1, ' ');
  dict += '\n';
  std::vector<unsigned char> out(kMagic, kMagic + 6);
  out.push_back(v2 ? 2 : 1);
  out.push_back(0);
  const std::size_t len = dict.size();
  for (std::size_t i = 0; i < (v2 ? 4u : 2u); ++i) out.push_back(static_cast<unsigned char>((len >> (8 * i)) & 0xffu));
  out.insert(out.end(), dict.begin(), dict.end());
  return out;
}

void check_write_shape(const std::vector<float>& values, const std::vector<std::size_t>& shape) {
  std::size_t count = 1;
  for (const std::size_t dim : shape) {
    if (__builtin_mul_overflow(count, dim, &count)) {
      throw ShapeError("write_npy: shape " + shape_text(shape) + " overflows the size type");
    }
  }
  if (count != values.size()) {
    throw ShapeError("write_npy: shape " + shape_text(shape) + " holds " + std::to_string(count) + " values but " +
                     std::to_string(values.size()) + " were given");
  }
}

void append_values_le(std::vector<unsigned char>& out, const float* values, std::size_t count) {
  const std::size_t start = out.size();
  out.resize(start + 4 * count);
  unsigned char* p = out.data() + start;
  for (std::size_t i = 0; i < count; ++i) {
    const auto bits = std::bit_cast<std::uint32_t>(values[i]);
    for (std::size_t b = 0; b < 4; ++b) p[4 * i + b] = static_cast<unsigned char>((bits >> (8 * b)) & 0xffu);
  }
}

}  // namespace

Array parse_npy(ByteSource& source) {
  unsigned char prefix[12];
  std::size_t got = source.read(prefix, 8);
  if (got == 0) fail(source, "is empty (expected a .npy file)");
  if (got < 6 || std::memcmp(prefix, kMagic, std::min<std::size_t>(got, 6)) != 0) {
    if (std::memcmp(prefix, kMagic, std::min<std::size_t>(got, 6)) == 0) {
      fail(source, "truncated: the file ends inside the .npy magic string");
    }
    fail(source, "not a .npy file: it starts with " + quote_bytes(std::string_view(reinterpret_cast<char*>(prefix), got)) +
                     ", not \\x93NUMPY");
  }
  if (got < 8) fail(source, "truncated: the file ends inside the .npy version");
  const unsigned major = prefix[6];
  const unsigned minor = prefix[7];
  if (major < 1 || major > 3 || minor != 0) {
    fail(source, "unsupported .npy format version " + std::to_string(major) + "." + std::to_string(minor) +
                     " (supported: 1.0, 2.0, 3.0)");
  }
  const std::size_t len_bytes = major == 1 ? 2 : 4;
  got = source.read(prefix + 8, len_bytes);
  if (got < len_bytes) fail(source, "truncated: the file ends inside the .npy header length");
  const std::uint64_t header_len = major == 1 ? load_le<std::uint16_t>(prefix + 8) : load_le<std::uint32_t>(prefix + 8);
  if (header_len > kMaxNpyHeaderBytes) {
    fail(source, "the .npy header claims " + std::to_string(header_len) + " bytes, more than the limit of " +
                     std::to_string(kMaxNpyHeaderBytes));
  }
  const std::vector<unsigned char> header_bytes =
      read_exactly(source, static_cast<std::size_t>(header_len), "the .npy header");
  const NpyHeader header =
      HeaderParser(std::string_view(reinterpret_cast<const char*>(header_bytes.data()), header_bytes.size()), source)
          .parse();
  const std::string data_what =
      "the data of shape " + shape_text(header.shape) + " (" + std::to_string(header.nbytes) + " bytes)";

  Array array;
  array.shape = header.shape;
  std::vector<float> values;
  if (const auto left = source.remaining()) {
    // Sizes known: check them, then convert straight into the result.
    if (*left < header.nbytes) {
      fail(source, "truncated: shape " + shape_text(header.shape) + " needs " + std::to_string(header.nbytes) +
                       " bytes of data but only " + std::to_string(*left) + " follow the header");
    }
    if (*left > header.nbytes) {
      fail(source, "shape " + shape_text(header.shape) + " needs " + std::to_string(header.nbytes) + " bytes of data but " +
                       std::to_string(*left) + " follow the header (" + std::to_string(*left - header.nbytes) + " extra)");
    }
    values.resize(header.count);
    std::vector<unsigned char> chunk;
    const std::size_t chunk_items = std::max<std::size_t>(1, (std::size_t{1} << 20) / header.item_size);
    chunk.resize(std::min(header.count, chunk_items) * header.item_size);
    for (std::size_t first = 0; first < header.count; first += chunk_items) {
      const std::size_t items = std::min(chunk_items, header.count - first);
      const std::size_t bytes = items * header.item_size;
      if (source.read(chunk.data(), bytes) < bytes) fail(source, "truncated: the file ended while reading " + data_what);
      convert(header, source, chunk.data(), items, first, values.data() + first);
    }
  } else {
    // A pipe: read what arrives (memory tracks the data actually there).
    const std::vector<unsigned char> raw = read_exactly(source, header.nbytes, data_what);
    values.resize(header.count);
    if (header.count != 0) convert(header, source, raw.data(), header.count, 0, values.data());
  }
  expect_end(source, data_what);
  array.values = header.fortran_order && header.shape.size() > 1 ? fortran_to_c(values, header.shape) : std::move(values);
  return array;
}

Array parse_npy(std::span<const unsigned char> bytes, const std::string& name) {
  MemorySource source(bytes, name, false);
  return parse_npy(source);
}

std::vector<unsigned char> encode_npy(const std::vector<float>& values, const std::vector<std::size_t>& shape) {
  check_write_shape(values, shape);
  std::vector<unsigned char> out = encode_preamble(shape);
  append_values_le(out, values.data(), values.size());
  return out;
}

}  // namespace detail

Array read_npy(const std::string& path) {
  detail::PlainFileSource source(path);
  return detail::parse_npy(source);
}

void write_npy(const std::string& path, const std::vector<float>& values, const std::vector<std::size_t>& shape) {
  detail::check_write_shape(values, shape);
  // Written to a temporary file and renamed, so a failed write never leaves
  // a half-written array under `path`.
  const std::string temp = path + ".tmp." + std::to_string(::getpid());
  errno = 0;
  std::FILE* file = std::fopen(temp.c_str(), "wb");
  if (file == nullptr) throw IoError("cannot create " + temp + ": " + std::strerror(errno));
  bool ok = true;
  std::vector<unsigned char> buffer = detail::encode_preamble(shape);
  ok = std::fwrite(buffer.data(), 1, buffer.size(), file) == buffer.size();
  constexpr std::size_t kChunk = std::size_t{1} << 18;
  for (std::size_t first = 0; ok && first < values.size(); first += kChunk) {
    buffer.clear();
    detail::append_values_le(buffer, values.data() + first, std::min(kChunk, values.size() - first));
    ok = std::fwrite(buffer.data(), 1, buffer.size(), file) == buffer.size();
  }
  const int write_errno = errno;
  if (std::fclose(file) != 0) ok = false;
  if (!ok) {
    std::remove(temp.c_str());
    throw IoError("cannot write " + temp + ": " + std::strerror(write_errno != 0 ? write_errno : errno));
  }
  if (std::rename(temp.c_str(), path.c_str()) != 0) {
    const int rename_errno = errno;
    std::remove(temp.c_str());
    throw IoError("cannot rename " + temp + " to " + path + ": " + std::strerror(rename_errno));
  }
}

}  // namespace kortexdl::datasets
