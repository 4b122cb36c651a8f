// Model files: Network::save / load / to_bytes / from_bytes.
// The format is specified byte by byte in docs/model-format.md.
//
// Reading is done in three passes over a Source (a byte span or a file read
// with pread, never mapped, so a file truncated under us gives an error, not
// SIGBUS):
//   1. layout: the fixed fields and every count, each checked against the
//      library limits and against the bytes that remain BEFORE it is used;
//      the file must end exactly at the checksum;
//   2. checksum: CRC-32 over everything before the last 4 bytes;
//   3. values: enum codes, flags, sizes, parameter count, optimizer
//      hyper-parameters; only then are the parameters and optimizer buffers
//      allocated (their sizes were proven to fit in the file in pass 1) and
//      read, and every float checked to be finite.
// Every failure is a FormatError naming the source, the field and expected
// vs actual; operating-system failures are IoError.
#include "io/model_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "architecture.hpp"
#include "checked_math.hpp"
#include "kortexdl/error.hpp"
#include "kortexdl/network.hpp"
#include "network_state.hpp"
#include "optimizer_update.hpp"
#include "parallel/access_guard.hpp"

namespace kortexdl {

namespace detail::model_file {

static_assert(sizeof(float) == 4 && std::numeric_limits<float>::is_iec559, "model files store IEEE-754 binary32");
static_assert(sizeof(std::size_t) == 8, "model files assume a 64-bit size_t");
static_assert(std::endian::native == std::endian::little || std::endian::native == std::endian::big,
              "mixed-endian hosts are not supported");

std::uint32_t checksum(std::span<const std::uint8_t> bytes) {
  uLong crc = crc32(0L, Z_NULL, 0);
  // zlib's length type is 32-bit on some platforms: feed at most 1 GiB a call.
  constexpr std::size_t kChunk = std::size_t{1} << 30;
  for (std::size_t done = 0; done < bytes.size();) {
    const std::size_t n = std::min(kChunk, bytes.size() - done);
    crc = crc32(crc, bytes.data() + done, static_cast<uInt>(n));
    done += n;
  }
  return static_cast<std::uint32_t>(crc);
}

namespace {

// ---- little-endian encoding ------------------------------------------------

void store_u32(std::uint8_t* p, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<std::uint8_t>(v >> (8 * i));
}
void store_u64(std::uint8_t* p, std::uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<std::uint8_t>(v >> (8 * i));
}
std::uint32_t load_u32(const std::uint8_t* p) {
  std::uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= static_cast<std::uint32_t>(p[i]) << (8 * i);
  return v;
}
std::uint64_t load_u64(const std::uint8_t* p) {
  std::uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= static_cast<std::uint64_t>(p[i]) << (8 * i);
  return v;
}

void store_floats(std::uint8_t* dst, const float* src, std::size_t n) {
  if constexpr (std::endian::native == std::endian::little) {
    if (n != 0) std::memcpy(dst, src, n * sizeof(float));
  } else {
    for (std::size_t i = 0; i < n; ++i) store_u32(dst + 4 * i, std::bit_cast<std::uint32_t>(src[i]));
  }
}
void load_floats(float* dst, const std::uint8_t* src, std::size_t n) {
  if constexpr (std::endian::native == std::endian::little) {
    if (n != 0) std::memcpy(dst, src, n * sizeof(float));
  } else {
    for (std::size_t i = 0; i < n; ++i) dst[i] = std::bit_cast<float>(load_u32(src + 4 * i));
  }
}

class Writer {
 public:
  explicit Writer(std::uint8_t* p) : p_(p) {}
  void bytes(const void* src, std::size_t n) {
    std::memcpy(p_, src, n);
    p_ += n;
  }
  void u32(std::uint32_t v) {
    store_u32(p_, v);
    p_ += 4;
  }
  void u64(std::uint64_t v) {
    store_u64(p_, v);
    p_ += 8;
  }
  void f32(float v) { u32(std::bit_cast<std::uint32_t>(v)); }
  template <class Floats>
  void floats(const Floats& values) {
    store_floats(p_, values.data(), values.size());
    p_ += values.size() * sizeof(float);
  }
  std::uint8_t* position() const { return p_; }

 private:
  std::uint8_t* p_;
};

// ---- enum codes --------------------------------------------------------------

std::uint32_t activation_code(Activation a) {
  switch (a) {
    case Activation::ReLU: return code::kReLU;
    case Activation::Tanh: return code::kTanh;
    case Activation::Sigmoid: return code::kSigmoid;
    case Activation::GELU: return code::kGELU;
    case Activation::Linear: return code::kLinear;
    case Activation::Softmax: return code::kSoftmax;
  }
  throw InternalError("model file: activation " + std::to_string(static_cast<int>(a)) + " has no file code");
}

std::optional<Activation> activation_from_code(std::uint32_t c) {
  switch (c) {
    case code::kReLU: return Activation::ReLU;
    case code::kTanh: return Activation::Tanh;
    case code::kSigmoid: return Activation::Sigmoid;
    case code::kGELU: return Activation::GELU;
    case code::kLinear: return Activation::Linear;
    case code::kSoftmax: return Activation::Softmax;
    default: return std::nullopt;
  }
}

std::uint32_t init_code(WeightInit w) {
  switch (w) {
    case WeightInit::Auto: return code::kInitAuto;
    case WeightInit::HeNormal: return code::kInitHeNormal;
    case WeightInit::XavierUniform: return code::kInitXavierUniform;
  }
  throw InternalError("model file: weight init " + std::to_string(static_cast<int>(w)) + " has no file code");
}

std::optional<WeightInit> init_from_code(std::uint32_t c) {
  switch (c) {
    case code::kInitAuto: return WeightInit::Auto;
    case code::kInitHeNormal: return WeightInit::HeNormal;
    case code::kInitXavierUniform: return WeightInit::XavierUniform;
    default: return std::nullopt;
  }
}

std::uint32_t optimizer_code(OptimizerKind k) {
  switch (k) {
    case OptimizerKind::SGD: return code::kSGD;
    case OptimizerKind::Momentum: return code::kMomentum;
    case OptimizerKind::Adam: return code::kAdam;
  }
  throw InternalError("model file: optimizer " + std::to_string(static_cast<int>(k)) + " has no file code");
}

std::optional<OptimizerKind> optimizer_from_code(std::uint32_t c) {
  switch (c) {
    case code::kSGD: return OptimizerKind::SGD;
    case code::kMomentum: return OptimizerKind::Momentum;
    case code::kAdam: return OptimizerKind::Adam;
    default: return std::nullopt;
  }
}

// ---- sources -------------------------------------------------------------------

class Source {
 public:
  explicit Source(std::string description) : description_(std::move(description)) {}
  virtual ~Source() = default;
  Source(const Source&) = delete;
  Source& operator=(const Source&) = delete;

  virtual std::uint64_t size() const = 0;
  // Exactly n bytes from offset; the caller has checked offset + n <= size().
  virtual void read(std::uint64_t offset, void* dst, std::size_t n) const = 0;
  // A view of [offset, offset + n) when the source is in memory, else empty.
  virtual std::span<const std::uint8_t> view(std::uint64_t offset, std::size_t n) const = 0;

  // "model file 'x.kdl'" or "model bytes": the start of every message.
  const std::string& description() const { return description_; }
  [[noreturn]] void fail(const std::string& what) const { throw FormatError(description_ + ": " + what); }

 private:
  std::string description_;
};

class MemorySource final : public Source {
 public:
  explicit MemorySource(std::span<const std::uint8_t> bytes) : Source("model bytes"), bytes_(bytes) {}
  std::uint64_t size() const override { return bytes_.size(); }
  void read(std::uint64_t offset, void* dst, std::size_t n) const override {
    if (n != 0) std::memcpy(dst, bytes_.data() + offset, n);
  }
  std::span<const std::uint8_t> view(std::uint64_t offset, std::size_t n) const override {
    return bytes_.subspan(offset, n);
  }

 private:
  std::span<const std::uint8_t> bytes_;
};

// strerror() text, thread-safely.
std::string errno_text(int error) { return std::error_code(error, std::generic_category()).message(); }

class FileSource final : public Source {
 public:
  explicit FileSource(const std::string& path) : Source("model file '" + path + "'"), path_(path) {
    // O_NONBLOCK: opening a FIFO must not hang; it is then rejected below.
    do {
      fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    } while (fd_ < 0 && errno == EINTR);
    if (fd_ < 0) throw IoError("cannot open model file '" + path + "': " + errno_text(errno));
    struct stat st {};
    if (::fstat(fd_, &st) != 0) {
      const int error = errno;
      ::close(fd_);
      throw IoError("cannot read model file '" + path + "': " + errno_text(error));
    }
    if (!S_ISREG(st.st_mode)) {
      ::close(fd_);
      throw IoError("cannot read model file '" + path + "': " +
                    (S_ISDIR(st.st_mode) ? errno_text(EISDIR) : std::string("not a regular file")));
    }
    size_ = static_cast<std::uint64_t>(st.st_size);
  }
  ~FileSource() override { ::close(fd_); }

  std::uint64_t size() const override { return size_; }
  void read(std::uint64_t offset, void* dst, std::size_t n) const override {
    auto* out = static_cast<std::uint8_t*>(dst);
    while (n > 0) {
      // Linux transfers at most 0x7ffff000 bytes per call.
      const std::size_t want = std::min<std::size_t>(n, std::size_t{1} << 30);
      const ssize_t got = ::pread(fd_, out, want, static_cast<off_t>(offset));
      if (got < 0) {
        if (errno == EINTR) continue;
        throw IoError("cannot read model file '" + path_ + "': " + errno_text(errno));
      }
      if (got == 0) {
        fail("truncated: the file shrank to " + std::to_string(offset) + " bytes while it was read (it was " +
             std::to_string(size_) + ")");
      }
      out += got;
      offset += static_cast<std::uint64_t>(got);
      n -= static_cast<std::size_t>(got);
    }
  }
  std::span<const std::uint8_t> view(std::uint64_t, std::size_t) const override { return {}; }

 private:
  std::string path_;
  int fd_ = -1;
  std::uint64_t size_ = 0;
};

// ---- pass 1: layout ------------------------------------------------------------

// Everything read from a file, before the values are interpreted.
struct RawModel {
  std::uint32_t version = 0;
  std::uint32_t header_bytes = 0;
  std::uint64_t file_bytes = 0;
  std::vector<std::uint64_t> sizes;
  std::uint32_t hidden_code = 0, output_code = 0, init_code = 0, seed_explicit = 0;
  std::uint64_t seed = 0;
  std::uint32_t optimizer_code = 0, nesterov = 0;
  float momentum = 0, beta1 = 0, beta2 = 0, epsilon = 0, weight_decay = 0;
  std::uint64_t parameter_count = 0;
  std::uint64_t parameters_offset = 0;
  std::uint32_t has_optimizer_state = 0;
  std::uint64_t step = 0;
  std::uint64_t buffer_count = 0;
  std::uint64_t buffers_offset = 0;
  std::uint64_t checksum_offset = 0;
  std::uint32_t stored_checksum = 0;
};

class Cursor {
 public:
  explicit Cursor(const Source& source) : source_(source) {}
  std::uint64_t position() const { return pos_; }
  std::uint64_t remaining() const { return source_.size() - pos_; }

  // Fails unless `bytes` more bytes remain.
  void need(std::uint64_t bytes, const char* section) const {
    if (bytes > remaining()) {
      source_.fail(std::string("truncated in ") + section + ": need " + std::to_string(bytes) + " bytes, " +
                   std::to_string(remaining()) + " remain");
    }
  }
  // Fails unless count elements of `element` bytes each remain; returns the
  // byte count (which then cannot overflow). `what` names the count field.
  std::uint64_t need_array(std::uint64_t count, std::uint64_t element, const char* section, const char* what) const {
    if (count > remaining() / element) {
      std::string amount;
      if (count <= std::numeric_limits<std::uint64_t>::max() / element) {
        amount = std::to_string(count * element) + " bytes";
      } else {
        amount = std::to_string(count) + " x " + std::to_string(element) + " bytes";
      }
      source_.fail(std::string("truncated in ") + section + " (" + what + " " + std::to_string(count) +
                   "): need " + amount + ", " + std::to_string(remaining()) + " remain");
    }
    return checked_mul(count, element, what);
  }

  void read(void* dst, std::size_t n, const char* section) {
    need(n, section);
    source_.read(pos_, dst, n);
    pos_ += n;
  }
  void skip(std::uint64_t n) { pos_ += n; }  // after need()/need_array()

 private:
  const Source& source_;
  std::uint64_t pos_ = 0;
};

std::string hex_bytes(const std::uint8_t* p, std::size_t n) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  for (std::size_t i = 0; i < n; ++i) {
    if (i != 0) out += ' ';
    out += kDigits[p[i] >> 4];
    out += kDigits[p[i] & 15];
  }
  return out;
}

std::string hex32(std::uint32_t v) {
  char text[16];
  std::snprintf(text, sizeof text, "0x%08x", v);
  return text;
}

RawModel read_layout(const Source& source) {
  RawModel raw;
  const std::uint64_t size = source.size();
  if (size == 0) source.fail("empty (0 bytes); not a KortexDL model file");
  if (size > kMaxFileBytes) {
    source.fail("is " + std::to_string(size) + " bytes, more than any model file can hold (" +
                std::to_string(kMaxFileBytes) + " bytes at the library's limit of " +
                std::to_string(kMaxParameters) + " parameters)");
  }
  Cursor cur(source);

  // Magic first, on whatever is there, so a short foreign file is called
  // foreign rather than truncated.
  std::uint8_t magic[8] = {};
  const std::size_t magic_bytes = static_cast<std::size_t>(std::min<std::uint64_t>(size, 8));
  source.read(0, magic, magic_bytes);
  if (std::memcmp(magic, kMagic, magic_bytes) != 0) {
    source.fail("not a KortexDL model file: expected the magic bytes \"KORTEXDL\" (" +
                hex_bytes(reinterpret_cast<const std::uint8_t*>(kMagic), 8) + "), found " +
                hex_bytes(magic, magic_bytes));
  }

  std::uint8_t head[12];
  cur.read(head, sizeof head, "header");
  raw.version = load_u32(head + kVersionOffset);
  if (raw.version != kFormatVersion) {
    if (raw.version > kFormatVersion) {
      source.fail("format version " + std::to_string(raw.version) + " is newer than this build of KortexDL reads "
                  "(it supports format version " + std::to_string(kFormatVersion) + "); upgrade KortexDL");
    }
    source.fail("format version 0 is not valid (this build supports format version " +
                std::to_string(kFormatVersion) + ")");
  }

  std::uint8_t rest[20];
  cur.read(rest, sizeof rest, "header");
  raw.header_bytes = load_u32(rest + (kHeaderBytesOffset - 12));
  raw.file_bytes = load_u64(rest + (kFileBytesOffset - 12));
  const std::uint64_t sizes_count = load_u64(rest + (kSizesCountOffset - 12));
  if (sizes_count < 2) {
    source.fail("sizes count: need at least 2 (the input size and the output size), got " +
                std::to_string(sizes_count));
  }
  if (sizes_count > kMaxSizesCount) {
    source.fail("sizes count: " + std::to_string(sizes_count) + " exceeds the largest possible (" +
                std::to_string(kMaxSizesCount) + " at the library's limit of " + std::to_string(kMaxParameters) +
                " parameters)");
  }
  const std::uint64_t sizes_bytes = cur.need_array(sizes_count, 8, "sizes", "sizes count");
  const std::uint64_t expected_header = header_bytes_for(sizes_count);
  if (raw.header_bytes != expected_header) {
    source.fail("header length: " + std::to_string(sizes_count) + " sizes make a header of " +
                std::to_string(expected_header) + " bytes, the field says " + std::to_string(raw.header_bytes));
  }
  {
    std::vector<std::uint8_t> buffer(sizes_bytes);  // fits in the file: checked above
    cur.read(buffer.data(), buffer.size(), "sizes");
    raw.sizes.resize(sizes_count);
    for (std::size_t i = 0; i < sizes_count; ++i) raw.sizes[i] = load_u64(buffer.data() + 8 * i);
  }

  std::uint8_t config[kConfigBytes];
  cur.read(config, sizeof config, "configuration");
  raw.hidden_code = load_u32(config + 0);
  raw.output_code = load_u32(config + 4);
  raw.init_code = load_u32(config + 8);
  raw.seed_explicit = load_u32(config + 12);
  raw.seed = load_u64(config + 16);
  raw.optimizer_code = load_u32(config + 24);
  raw.momentum = std::bit_cast<float>(load_u32(config + 28));
  raw.nesterov = load_u32(config + 32);
  raw.beta1 = std::bit_cast<float>(load_u32(config + 36));
  raw.beta2 = std::bit_cast<float>(load_u32(config + 40));
  raw.epsilon = std::bit_cast<float>(load_u32(config + 44));
  raw.weight_decay = std::bit_cast<float>(load_u32(config + 48));

  std::uint8_t count[8];
  cur.read(count, sizeof count, "parameter count");
  raw.parameter_count = load_u64(count);
  if (raw.parameter_count > kMaxParameters) {
    source.fail("parameter count: " + std::to_string(raw.parameter_count) + " exceeds the library's limit of " +
                std::to_string(kMaxParameters));
  }
  raw.parameters_offset = cur.position();
  cur.skip(cur.need_array(raw.parameter_count, 4, "parameters", "parameter count"));

  std::uint8_t flag[4];
  cur.read(flag, sizeof flag, "optimizer state");
  raw.has_optimizer_state = load_u32(flag);
  if (raw.has_optimizer_state > 1) {
    source.fail("optimizer state flag: expected 0 or 1, got " + std::to_string(raw.has_optimizer_state));
  }
  if (raw.has_optimizer_state == 1) {
    std::uint8_t state[16];
    cur.read(state, sizeof state, "optimizer state");
    raw.step = load_u64(state);
    raw.buffer_count = load_u64(state + 8);
    if (raw.buffer_count > kMaxOptimizerBuffers) {
      source.fail("optimizer buffer count: at most " + std::to_string(kMaxOptimizerBuffers) + ", got " +
                  std::to_string(raw.buffer_count));
    }
    raw.buffers_offset = cur.position();
    // buffer_count <= 2 and parameter_count <= 2^32: the product cannot wrap.
    const std::uint64_t floats = checked_mul(raw.buffer_count, raw.parameter_count, "optimizer buffers");
    cur.skip(cur.need_array(floats, 4, "optimizer buffers", "floats"));
  }

  raw.checksum_offset = cur.position();
  std::uint8_t crc[4];
  cur.read(crc, sizeof crc, "checksum");
  raw.stored_checksum = load_u32(crc);
  if (cur.remaining() != 0) {
    source.fail(std::to_string(cur.remaining()) + " unexpected bytes after the checksum (the model ends at byte " +
                std::to_string(cur.position()) + ", the file has " + std::to_string(size) + ")");
  }
  if (raw.file_bytes != size) {
    source.fail("file length: the field says " + std::to_string(raw.file_bytes) + " bytes, the file has " +
                std::to_string(size));
  }
  return raw;
}

// ---- pass 2: checksum ----------------------------------------------------------

void verify_checksum(const Source& source, const RawModel& raw) {
  std::uint32_t computed = 0;
  const std::uint64_t n = raw.checksum_offset;
  if (auto whole = source.view(0, n); whole.size() == n) {
    computed = checksum(whole);
  } else {
    uLong crc = crc32(0L, Z_NULL, 0);
    std::vector<std::uint8_t> chunk(std::min<std::uint64_t>(n, std::uint64_t{1} << 20));
    for (std::uint64_t done = 0; done < n;) {
      const std::size_t k = static_cast<std::size_t>(std::min<std::uint64_t>(chunk.size(), n - done));
      source.read(done, chunk.data(), k);
      crc = crc32(crc, chunk.data(), static_cast<uInt>(k));
      done += k;
    }
    computed = static_cast<std::uint32_t>(crc);
  }
  if (computed != raw.stored_checksum) {
    source.fail("checksum mismatch: the file stores " + hex32(raw.stored_checksum) + ", its contents give " +
                hex32(computed) + " (the file is corrupted)");
  }
}

// ---- pass 3: values ------------------------------------------------------------

std::string sizes_text(const std::vector<std::uint64_t>& sizes) {
  std::string out;
  for (std::size_t i = 0; i < sizes.size() && i < 16; ++i) {
    if (i != 0) out += '-';
    out += std::to_string(sizes[i]);
  }
  if (sizes.size() > 16) out += "-... (" + std::to_string(sizes.size()) + " sizes)";
  return out;
}

template <class Floats>
void read_finite_floats(const Source& source, std::uint64_t offset, Floats& out, const std::string& what) {
  const std::size_t n = out.size();
  const std::size_t bytes = n * sizeof(float);
  if (auto view = source.view(offset, bytes); view.size() == bytes && bytes != 0) {
    load_floats(out.data(), view.data(), n);
  } else if (bytes != 0) {
    source.read(offset, out.data(), bytes);
    if constexpr (std::endian::native != std::endian::little) {
      for (auto& v : out) {
        std::uint8_t b[4];
        std::memcpy(b, &v, 4);
        v = std::bit_cast<float>(load_u32(b));
      }
    }
  }
  for (std::size_t i = 0; i < n; ++i) {
    if (!std::isfinite(out[i])) {
      source.fail(what + "[" + std::to_string(i) + "] is " + (std::isnan(out[i]) ? "nan" : "inf") +
                  "; a model file holds only finite values");
    }
  }
}

std::unique_ptr<NetworkState> decode(const Source& source) {
  const RawModel raw = read_layout(source);
  verify_checksum(source, raw);

  NetworkConfig config;
  const auto hidden = activation_from_code(raw.hidden_code);
  if (!hidden) {
    source.fail("hidden activation: unknown code " + std::to_string(raw.hidden_code) + " (expected 1 to 6)");
  }
  const auto output = activation_from_code(raw.output_code);
  if (!output) {
    source.fail("output activation: unknown code " + std::to_string(raw.output_code) + " (expected 1 to 6)");
  }
  if (*hidden == Activation::Softmax) {
    source.fail("hidden activation: softmax is only valid for the output layer");
  }
  const auto init = init_from_code(raw.init_code);
  if (!init) source.fail("weight init: unknown code " + std::to_string(raw.init_code) + " (expected 1 to 3)");
  if (raw.seed_explicit > 1) {
    source.fail("seed flag: expected 0 or 1, got " + std::to_string(raw.seed_explicit));
  }
  const auto kind = optimizer_from_code(raw.optimizer_code);
  if (!kind) source.fail("optimizer: unknown code " + std::to_string(raw.optimizer_code) + " (expected 1 to 3)");
  if (raw.nesterov > 1) source.fail("nesterov flag: expected 0 or 1, got " + std::to_string(raw.nesterov));
  config.hidden_activation = *hidden;
  config.output_activation = *output;
  config.init = *init;
  if (raw.seed_explicit == 1) config.seed = raw.seed;
  config.optimizer.kind = *kind;
  config.optimizer.momentum = raw.momentum;
  config.optimizer.nesterov = raw.nesterov == 1;
  config.optimizer.beta1 = raw.beta1;
  config.optimizer.beta2 = raw.beta2;
  config.optimizer.epsilon = raw.epsilon;
  config.optimizer.weight_decay = raw.weight_decay;
  try {
    validate_optimizer(config.optimizer);
  } catch (const InvalidArgumentError& e) {
    source.fail(std::string("optimizer configuration: ") + e.what());
  }

  // Sizes, and the parameter count they imply, with arithmetic that cannot wrap.
  std::uint64_t implied = 0;
  for (std::size_t i = 0; i < raw.sizes.size(); ++i) {
    if (raw.sizes[i] == 0) {
      source.fail("sizes[" + std::to_string(i) + "]: every layer needs at least 1 unit, got 0");
    }
  }
  try {
    for (std::size_t l = 0; l + 1 < raw.sizes.size(); ++l) {
      implied = checked_add(implied, checked_mul(raw.sizes[l], raw.sizes[l + 1], "layer weights"), "parameters");
      implied = checked_add(implied, raw.sizes[l + 1], "parameters");
      if (implied > kMaxParameters) break;
    }
  } catch (const ResourceLimitError&) {
    implied = std::numeric_limits<std::uint64_t>::max();
  }
  if (implied > kMaxParameters) {
    source.fail("sizes " + sizes_text(raw.sizes) + " imply more than the library's limit of " +
                std::to_string(kMaxParameters) + " parameters");
  }
  if (raw.parameter_count != implied) {
    source.fail("parameter count: sizes " + sizes_text(raw.sizes) + " imply " + std::to_string(implied) +
                " parameters, the file says " + std::to_string(raw.parameter_count));
  }
  const std::size_t expected_buffers = optimizer_buffer_count(*kind);
  if (raw.has_optimizer_state == 1 && raw.buffer_count != expected_buffers) {
    source.fail("optimizer buffer count: " + std::string(to_string(*kind)) + " keeps " +
                std::to_string(expected_buffers) + ", the file has " + std::to_string(raw.buffer_count));
  }

  Architecture arch;
  try {
    arch = Architecture::make(std::vector<std::size_t>(raw.sizes.begin(), raw.sizes.end()), *hidden, *output);
  } catch (const Error& e) {
    source.fail(std::string("architecture: ") + e.what());
  }
  if (arch.parameter_count != raw.parameter_count) {
    throw InternalError(source.description() + ": architecture parameter count disagrees with the reader's");
  }

  // Everything is consistent and the file holds every float: allocate.
  const std::uint64_t seed = raw.seed;
  auto state = std::make_unique<NetworkState>(std::move(arch), config, seed);
  state->params.resize(raw.parameter_count);
  read_finite_floats(source, raw.parameters_offset, state->params, "parameters");
  if (raw.has_optimizer_state == 1) {
    state->optimizer.step = raw.step;
    state->optimizer.buffers.resize(raw.buffer_count);
    for (std::size_t b = 0; b < raw.buffer_count; ++b) {
      state->optimizer.buffers[b].resize(raw.parameter_count);
      read_finite_floats(source, raw.buffers_offset + b * raw.parameter_count * 4, state->optimizer.buffers[b],
                         "optimizer buffer " + std::to_string(b));
    }
  } else {
    state->optimizer = make_optimizer_state(config.optimizer, raw.parameter_count);
  }
  return state;
}

// ---- writing -------------------------------------------------------------------

// `operation` names the public call, for a ConcurrencyError's message.
std::vector<std::uint8_t> encode(const NetworkState& s, bool include_optimizer_state, const char* operation) {
  const Architecture& arch = s.arch;
  const NetworkConfig& config = s.config;
  const std::size_t count = arch.parameter_count;
  const std::size_t buffers = optimizer_buffer_count(config.optimizer.kind);
  const std::size_t header = header_bytes_for(arch.sizes.size());
  std::size_t total = checked_add(header, 8, "model file");
  total = checked_add(total, checked_mul(count, 4, "model file"), "model file");
  total = checked_add(total, 4, "model file");
  if (include_optimizer_state) {
    total = checked_add(total, 16, "model file");
    total = checked_add(total, checked_mul(checked_mul(count, buffers, "model file"), 4, "model file"), "model file");
  }
  total = checked_add(total, 4, "model file");

  std::vector<std::uint8_t> out(total);  // before taking the lock: the lock covers only the copies
  Writer w(out.data());
  w.bytes(kMagic, sizeof kMagic);
  w.u32(kFormatVersion);
  w.u32(static_cast<std::uint32_t>(header));
  w.u64(total);
  w.u64(arch.sizes.size());
  for (std::size_t v : arch.sizes) w.u64(v);
  w.u32(activation_code(arch.hidden_activation));
  w.u32(activation_code(arch.output_activation));
  w.u32(init_code(config.init));
  w.u32(config.seed.has_value() ? 1 : 0);
  w.u64(s.seed);
  w.u32(optimizer_code(config.optimizer.kind));
  w.f32(config.optimizer.momentum);
  w.u32(config.optimizer.nesterov ? 1 : 0);
  w.f32(config.optimizer.beta1);
  w.f32(config.optimizer.beta2);
  w.f32(config.optimizer.epsilon);
  w.f32(config.optimizer.weight_decay);
  if (static_cast<std::size_t>(w.position() - out.data()) != header) {
    throw InternalError("model file: header is " + std::to_string(w.position() - out.data()) + " bytes, expected " +
                        std::to_string(header));
  }
  w.u64(count);
  {
    // One read access for parameters and optimizer state together, so the
    // file is one consistent snapshot even while other threads train (with
    // thread safety enabled) or run forward.
    AccessGuard::Read access(s.guard, s.guard.locking(), operation);
    if (s.params.size() != count || s.optimizer.buffers.size() != buffers) {
      throw InternalError("model file: the network's buffers do not match its architecture");
    }
    w.floats(s.params);
    if (include_optimizer_state) {
      w.u32(1);
      w.u64(s.optimizer.step);
      w.u64(buffers);
      for (const auto& buffer : s.optimizer.buffers) {
        if (buffer.size() != count) throw InternalError("model file: an optimizer buffer has the wrong length");
        w.floats(buffer);
      }
    } else {
      w.u32(0);
    }
  }
  const std::size_t body = static_cast<std::size_t>(w.position() - out.data());
  if (body + 4 != total) throw InternalError("model file: encoded length disagrees with the computed length");
  w.u32(checksum(std::span<const std::uint8_t>(out.data(), body)));
  return out;
}

// The permission bits a new file gets (0666 minus the umask), read without
// changing the umask (umask() is process-wide and racy).
mode_t default_file_mode() {
  mode_t mask = 022;
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("Umask:", 0) == 0) {
      try {
        mask = static_cast<mode_t>(std::stoul(line.substr(6), nullptr, 8));
      } catch (const std::exception&) {
      }
      break;
    }
  }
  return static_cast<mode_t>(0666 & ~mask);
}

// Writes `bytes` to a temporary file next to `path`, fsyncs it and renames it
// over `path`. On any failure the temporary file is removed and `path` is
// untouched.
void write_atomically(const std::string& path, std::span<const std::uint8_t> bytes) {
  const std::filesystem::path target(path);
  std::filesystem::path dir = target.parent_path();
  if (dir.empty()) dir = ".";
  const std::string name = target.filename().string();
  if (name.empty() || name == "." || name == "..") {
    throw IoError("cannot save model to '" + path + "': " + errno_text(EISDIR));
  }
  auto fail = [&](const std::string& step, int error) -> IoError {
    return IoError("cannot save model to '" + path + "': " + step + ": " + errno_text(error));
  };

  std::string temp = (dir / ("." + name + ".tmp-XXXXXX")).string();
  const int fd = ::mkostemp(temp.data(), O_CLOEXEC);
  if (fd < 0) throw fail("cannot create a temporary file in '" + dir.string() + "'", errno);

  // Removes the temporary file unless it was renamed into place.
  struct TempFile {
    const std::string& name;
    int fd;
    bool keep = false;
    ~TempFile() {
      if (fd >= 0) ::close(fd);
      if (!keep) ::unlink(name.c_str());
    }
  } guard{temp, fd};

  // Keep the mode of the file being replaced; a new file gets 0666 & ~umask.
  struct stat existing {};
  const mode_t mode = ::stat(path.c_str(), &existing) == 0 && S_ISREG(existing.st_mode)
                          ? static_cast<mode_t>(existing.st_mode & 07777)
                          : default_file_mode();
  if (::fchmod(fd, mode) != 0) throw fail("cannot set the mode of '" + temp + "'", errno);

  const std::uint8_t* p = bytes.data();
  std::size_t left = bytes.size();
  while (left > 0) {
    const ssize_t n = ::write(fd, p, std::min<std::size_t>(left, std::size_t{1} << 30));
    if (n < 0) {
      if (errno == EINTR) continue;
      throw fail("cannot write '" + temp + "'", errno);
    }
    p += n;
    left -= static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0) throw fail("cannot flush '" + temp + "' to disk", errno);
  const int closing = guard.fd;
  guard.fd = -1;
  if (::close(closing) != 0) throw fail("cannot close '" + temp + "'", errno);
  if (::rename(temp.c_str(), path.c_str()) != 0) {
    throw fail("cannot rename '" + temp + "' to '" + path + "'", errno);
  }
  guard.keep = true;

  // Make the rename itself durable. Best effort: the model is complete and in
  // place whatever this returns (some file systems refuse fsync on a directory).
  const int dir_fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd >= 0) {
    (void)::fsync(dir_fd);
    ::close(dir_fd);
  }
}

}  // namespace
}  // namespace detail::model_file

// ---- Network's model-file members ----------------------------------------------

std::vector<std::uint8_t> Network::to_bytes(bool include_optimizer_state) const {
  return detail::model_file::encode(*state_, include_optimizer_state, "to_bytes");
}

Network Network::from_bytes(std::span<const std::uint8_t> bytes) {
  const detail::model_file::MemorySource source(bytes);
  return Network(detail::model_file::decode(source));
}

void Network::save(const std::string& path, bool include_optimizer_state) const {
  const std::vector<std::uint8_t> bytes = detail::model_file::encode(*state_, include_optimizer_state, "save");
  detail::model_file::write_atomically(path, bytes);
}

Network Network::load(const std::string& path) {
  const detail::model_file::FileSource source(path);
  return Network(detail::model_file::decode(source));
}

}  // namespace kortexdl
