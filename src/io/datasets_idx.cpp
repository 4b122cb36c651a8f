// IDX reader (MNIST / Fashion-MNIST), gzip or plain, and Fashion-MNIST from
// Debian's dataset-fashion-mnist package. Format: docs/data-formats.md.
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "checked_math.hpp"
#include "io/dataset_source.hpp"
#include "kortexdl/datasets.hpp"
#include "kortexdl/error.hpp"

namespace kortexdl::datasets {

namespace detail {
namespace {

struct IdxHeader {
  std::vector<std::uint32_t> dims;
  std::size_t count = 0;        // dims[0]
  std::size_t item_values = 1;  // product of dims[1..]
  std::size_t total = 0;        // count * item_values
};

std::string hex(std::uint32_t value, int digits) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out = "0x";
  for (int shift = (digits - 1) * 4; shift >= 0; shift -= 4) out += kHex[(value >> shift) & 15u];
  return out;
}

const char* idx_type_name(unsigned char type) {
  switch (type) {
    case 0x08: return "unsigned byte";
    case 0x09: return "signed byte";
    case 0x0B: return "int16";
    case 0x0C: return "int32";
    case 0x0D: return "float32";
    case 0x0E: return "float64";
    default: return "not an IDX type";
  }
}

std::string dims_text(const std::vector<std::uint32_t>& dims) {
  std::string out;
  for (std::size_t i = 0; i < dims.size(); ++i) {
    if (i != 0) out += " x ";
    out += std::to_string(dims[i]);
  }
  return out;
}

std::size_t mul_or_fail(const ByteSource& source, std::size_t a, std::size_t b, const std::vector<std::uint32_t>& dims) {
  try {
    return kortexdl::detail::checked_mul(a, b, "IDX dimensions");
  } catch (const ResourceLimitError&) {
    fail(source, "dimensions " + dims_text(dims) + " overflow the size type");
  }
}

IdxHeader read_header(ByteSource& source, bool labels) {
  const char* kind = labels ? "labels" : "images";
  const char* expected_magic = labels ? "0x00000801" : "0x00000803";
  unsigned char magic[4];
  const std::size_t got = source.read(magic, sizeof magic);
  if (got == 0) fail(source, std::string("is empty (expected an IDX ") + kind + " file)");
  if (got < sizeof magic) fail(source, "truncated: the file ends inside the 4-byte IDX magic number");
  const std::uint32_t magic_value = (std::uint32_t{magic[0]} << 24) | (std::uint32_t{magic[1]} << 16) |
                                    (std::uint32_t{magic[2]} << 8) | std::uint32_t{magic[3]};
  if (magic[0] != 0 || magic[1] != 0) {
    fail(source, "bad magic number " + hex(magic_value, 8) + ": not an IDX file (expected " + expected_magic +
                     " for " + kind + ")");
  }
  if (magic[2] != 0x08) {
    fail(source, "IDX data type " + hex(magic[2], 2) + " (" + idx_type_name(magic[2]) + ", magic " +
                     hex(magic_value, 8) + ") is not supported: only unsigned byte (0x08) is");
  }
  const unsigned ndims = magic[3];
  if (labels && ndims != 1) {
    fail(source, "magic " + hex(magic_value, 8) + " gives " + std::to_string(ndims) +
                     " dimensions; an IDX labels file has 1 (magic 0x00000801)");
  }
  if (!labels && ndims < 2) {
    fail(source, "magic " + hex(magic_value, 8) + " gives " + std::to_string(ndims) +
                     " dimension(s); an IDX images file has at least 2 (count, then pixels; MNIST uses magic "
                     "0x00000803)");
  }
  unsigned char raw[4 * 255];
  const std::size_t header_bytes = 4 * std::size_t{ndims};
  const std::size_t got_dims = source.read(raw, header_bytes);
  if (got_dims < header_bytes) {
    fail(source, "truncated: the file ends inside the header (" + std::to_string(got_dims) + " of " +
                     std::to_string(header_bytes) + " bytes of dimension sizes)");
  }
  IdxHeader header;
  header.dims.resize(ndims);
  for (unsigned i = 0; i < ndims; ++i) {
    const unsigned char* p = raw + 4 * i;
    header.dims[i] = (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) |
                     std::uint32_t{p[3]};
  }
  for (unsigned i = 0; i < ndims; ++i) {
    if (header.dims[i] == 0) {
      fail(source, "dimension " + std::to_string(i) + " is 0 (dimensions " + dims_text(header.dims) +
                       "): the file holds no " + (i == 0 ? kind : "values"));
    }
  }
  header.count = header.dims[0];
  for (unsigned i = 1; i < ndims; ++i) header.item_values = mul_or_fail(source, header.item_values, header.dims[i], header.dims);
  header.total = mul_or_fail(source, header.count, header.item_values, header.dims);
  if (header.total > kMaxIdxValues) {
    fail(source, "dimensions " + dims_text(header.dims) + " declare " + std::to_string(header.total) +
                     " values, more than the reader's limit of " + std::to_string(kMaxIdxValues));
  }
  // Plain data: the sizes can be checked against the file before reading.
  if (const auto left = source.remaining()) {
    if (*left < header.total) {
      fail(source, "truncated: dimensions " + dims_text(header.dims) + " declare " + std::to_string(header.total) +
                       " bytes of data but only " + std::to_string(*left) + " follow the header");
    }
    if (*left > header.total) {
      fail(source, "dimensions " + dims_text(header.dims) + " declare " + std::to_string(header.total) +
                       " bytes of data but " + std::to_string(*left) + " follow the header (" +
                       std::to_string(*left - header.total) + " extra)");
    }
  }
  return header;
}

}  // namespace

Dataset parse_idx(ByteSource& images, ByteSource& labels, float scale) {
  if (!std::isfinite(scale)) {
    throw InvalidArgumentError("read_idx: scale must be finite, got " + std::to_string(scale));
  }
  // Both headers first: a count mismatch is reported before any data is read.
  const IdxHeader image_header = read_header(images, false);
  const IdxHeader label_header = read_header(labels, true);
  if (image_header.count != label_header.count) {
    throw FormatError(images.name() + " holds " + std::to_string(image_header.count) + " images but " +
                      labels.name() + " holds " + std::to_string(label_header.count) + " labels");
  }

  Dataset data;
  data.rows = image_header.count;
  data.features = image_header.item_values;
  {
    const std::vector<unsigned char> pixels =
        read_exactly(images, image_header.total,
                     "the pixel data (" + dims_text(image_header.dims) + ")");
    expect_end(images, "the " + std::to_string(image_header.total) + " bytes of pixel data");
    data.inputs.resize(pixels.size());
    std::transform(pixels.begin(), pixels.end(), data.inputs.begin(),
                   [scale](unsigned char p) { return static_cast<float>(p) * scale; });
  }
  const std::vector<unsigned char> raw_labels =
      read_exactly(labels, label_header.total, "the label data (" + std::to_string(label_header.count) + " labels)");
  expect_end(labels, "the " + std::to_string(label_header.total) + " labels");
  data.labels.assign(raw_labels.begin(), raw_labels.end());  // uint8: always < 256
  const auto max_label = *std::max_element(raw_labels.begin(), raw_labels.end());  // count >= 1
  data.classes = std::size_t{max_label} + 1;
  return data;
}

Dataset parse_idx(std::span<const unsigned char> images, std::span<const unsigned char> labels, float scale,
                  const std::string& images_name, const std::string& labels_name) {
  MemorySource image_source(images, images_name, true);
  MemorySource label_source(labels, labels_name, true);
  return parse_idx(image_source, label_source, scale);
}

void write_gzip_file(const std::string& path, std::span<const unsigned char> bytes) {
  errno = 0;
  gzFile file = gzopen(path.c_str(), "wb");
  if (file == nullptr) throw IoError("cannot create " + path + ": " + std::strerror(errno));
  std::size_t done = 0;
  while (done < bytes.size()) {
    const auto chunk = static_cast<unsigned>(std::min<std::size_t>(bytes.size() - done, std::size_t{1} << 30));
    if (gzwrite(file, bytes.data() + done, chunk) != static_cast<int>(chunk)) {
      gzclose(file);
      throw IoError("cannot write " + path);
    }
    done += chunk;
  }
  if (gzclose(file) != Z_OK) throw IoError("cannot write " + path);
}

}  // namespace detail

Dataset read_idx(const std::string& images_path, const std::string& labels_path, float scale) {
  detail::GzFileSource images(images_path);
  detail::GzFileSource labels(labels_path);
  return detail::parse_idx(images, labels, scale);
}

TrainTest fashion_mnist(const std::string& directory) {
  namespace fs = std::filesystem;
  // The package ships gzip'd files; uncompressed copies are accepted too.
  auto locate = [&](const std::string& base) {
    const fs::path gz = fs::path(directory) / (base + ".gz");
    const fs::path plain = fs::path(directory) / base;
    std::error_code ec;
    if (fs::exists(gz, ec)) return gz.string();
    if (fs::exists(plain, ec)) return plain.string();
    throw IoError("Fashion-MNIST file " + gz.string() +
                  " not found (nor an uncompressed copy): it comes from Debian's dataset-fashion-mnist package, "
                  "`apt-get install dataset-fashion-mnist`, or pass the directory holding the IDX files");
  };
  const std::string train_images = locate("train-images-idx3-ubyte");
  const std::string train_labels = locate("train-labels-idx1-ubyte");
  const std::string test_images = locate("t10k-images-idx3-ubyte");
  const std::string test_labels = locate("t10k-labels-idx1-ubyte");
  TrainTest result;
  result.train = read_idx(train_images, train_labels);
  result.test = read_idx(test_images, test_labels);
  if (result.train.features != result.test.features) {
    throw FormatError(test_images + ": images have " + std::to_string(result.test.features) + " pixels but " +
                      train_images + " has " + std::to_string(result.train.features));
  }
  const std::size_t classes = std::max(result.train.classes, result.test.classes);
  result.train.classes = classes;
  result.test.classes = classes;
  return result;
}

}  // namespace kortexdl::datasets
