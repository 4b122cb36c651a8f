// Byte sources for the dataset readers: memory (plain or gzip), files read
// through zlib (plain or gzip), plain files.
#include <sys/stat.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <string>

#include "io/dataset_source.hpp"
#include "kortexdl/error.hpp"

namespace kortexdl::datasets::detail {

namespace {

// zlib counts in unsigned int; never hand it more than this at once.
constexpr std::size_t kZlibChunk = std::size_t{1} << 30;

std::optional<std::uint64_t> regular_file_size(int fd) {
  struct stat st {};
  if (fd < 0 || ::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size < 0) {
    return std::nullopt;
  }
  return static_cast<std::uint64_t>(st.st_size);
}

std::string errno_text(int error) { return error != 0 ? std::strerror(error) : "unknown error"; }

}  // namespace

[[noreturn]] void fail(const std::string& name, const std::string& what) { throw FormatError(name + ": " + what); }
[[noreturn]] void fail(const ByteSource& source, const std::string& what) { fail(source.name(), what); }

std::string quote_bytes(std::string_view bytes, std::size_t limit) {
  std::string out = "'";
  const std::size_t shown = std::min(bytes.size(), limit);
  for (std::size_t i = 0; i < shown; ++i) {
    const auto c = static_cast<unsigned char>(bytes[i]);
    if (c >= 0x20 && c < 0x7f && c != '\\' && c != '\'') {
      out += static_cast<char>(c);
    } else {
      static constexpr char kHex[] = "0123456789abcdef";
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  out += "'";
  if (shown < bytes.size()) out += "...";
  return out;
}

std::vector<unsigned char> read_exactly(ByteSource& source, std::size_t n, const std::string& what) {
  std::vector<unsigned char> buffer;
  if (const auto left = source.remaining()) {
    if (*left < n) {
      fail(source, "truncated: " + what + " needs " + std::to_string(n) + " bytes but only " + std::to_string(*left) +
                       " remain");
    }
    buffer.reserve(n);  // the bytes are known to be there
  }
  std::size_t have = 0;
  while (have < n) {
    // Grow by at most what has already arrived (at least 1 MiB), so memory
    // tracks the data actually present, not the size a header claims.
    const std::size_t chunk = std::min(n - have, std::max(have, std::size_t{1} << 20));
    buffer.resize(have + chunk);
    const std::size_t got = source.read(buffer.data() + have, chunk);
    have += got;
    if (got < chunk) {
      fail(source, "truncated: " + what + " needs " + std::to_string(n) + " bytes but the data ends after " +
                       std::to_string(have));
    }
  }
  return buffer;
}

void expect_end(ByteSource& source, const std::string& after) {
  unsigned char extra[64];
  const std::size_t got = source.read(extra, sizeof extra);
  if (got != 0) {
    std::string count = std::to_string(got);
    if (const auto left = source.remaining()) count = std::to_string(got + *left);
    if (got == sizeof extra && !source.remaining()) count = "at least " + count;
    fail(source, "unexpected data after " + after + " (" + count + " extra bytes)");
  }
}

// ---- MemorySource ------------------------------------------------------------

struct MemorySource::Inflater {
  z_stream stream{};
  bool initialized = false;
  bool finished = false;
  ~Inflater() {
    if (initialized) inflateEnd(&stream);
  }
};

MemorySource::MemorySource(std::span<const unsigned char> bytes, std::string name, bool detect_gzip)
    : ByteSource(std::move(name)), bytes_(bytes) {
  if (detect_gzip && bytes.size() >= 2 && bytes[0] == 0x1f && bytes[1] == 0x8b) {
    inflater_ = std::make_unique<Inflater>();
    if (inflateInit2(&inflater_->stream, 15 + 16) != Z_OK) {  // gzip wrapper only, like gzread
      throw std::bad_alloc();
    }
    inflater_->initialized = true;
  }
}

MemorySource::~MemorySource() = default;

std::optional<std::uint64_t> MemorySource::remaining() const {
  if (inflater_) return std::nullopt;
  return bytes_.size() - pos_;
}

std::size_t MemorySource::read(unsigned char* dst, std::size_t n) {
  if (!inflater_) {
    const std::size_t got = std::min(n, bytes_.size() - pos_);
    if (got != 0) std::memcpy(dst, bytes_.data() + pos_, got);
    pos_ += got;
    return got;
  }
  z_stream& zs = inflater_->stream;
  std::size_t done = 0;
  while (done < n && !inflater_->finished) {
    if (zs.avail_in == 0) {
      if (pos_ == bytes_.size()) fail(*this, "truncated gzip stream (unexpected end of file)");
      const std::size_t feed = std::min(bytes_.size() - pos_, kZlibChunk);
      zs.next_in = const_cast<Bytef*>(bytes_.data() + pos_);  // zlib does not write through next_in
      zs.avail_in = static_cast<uInt>(feed);
      pos_ += feed;
    }
    const std::size_t want = std::min(n - done, kZlibChunk);
    zs.next_out = dst + done;
    zs.avail_out = static_cast<uInt>(want);
    const int rc = inflate(&zs, Z_NO_FLUSH);
    done += want - zs.avail_out;
    if (rc == Z_STREAM_END) {
      // Another member follows only if a gzip header does; anything else
      // after a member is ignored, as zlib's gzread does.
      const std::size_t unread = zs.avail_in + (bytes_.size() - pos_);
      const std::size_t next = bytes_.size() - unread;
      if (unread >= 2 && bytes_[next] == 0x1f && bytes_[next + 1] == 0x8b) {
        inflateReset(&zs);
      } else {
        inflater_->finished = true;
        pos_ = bytes_.size();
        zs.avail_in = 0;
      }
    } else if (rc == Z_BUF_ERROR) {
      if (zs.avail_in != 0) fail(*this, "corrupt gzip data (inflate made no progress)");
      // out of input: the top of the loop feeds more or reports truncation
    } else if (rc != Z_OK) {
      fail(*this, std::string("corrupt gzip data (") + (zs.msg != nullptr ? zs.msg : zError(rc)) + ")");
    }
  }
  return done;
}

// ---- GzFileSource ------------------------------------------------------------

GzFileSource::GzFileSource(const std::string& path) : ByteSource(path) {
  errno = 0;
  gzFile file = gzopen(path.c_str(), "rb");
  if (file == nullptr) {
    throw IoError("cannot open " + path + ": " + (errno != 0 ? errno_text(errno) : "out of memory"));
  }
  file_ = file;
  gzbuffer(file, 1u << 17);
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && st.st_size >= 0) {
    size_ = static_cast<std::uint64_t>(st.st_size);
  }
}

GzFileSource::~GzFileSource() {
  if (file_ != nullptr) gzclose_r(static_cast<gzFile>(file_));
}

void GzFileSource::fail_from_zlib() {
  int code = Z_OK;
  const char* message = gzerror(static_cast<gzFile>(file_), &code);
  std::string text = message != nullptr ? message : "";
  // zlib prefixes its message with the path; the path is added below.
  if (text.rfind(name() + ": ", 0) == 0) text.erase(0, name().size() + 2);
  if (code == Z_ERRNO) throw IoError("cannot read " + name() + ": " + text);
  if (code == Z_BUF_ERROR) fail(*this, "truncated gzip stream (" + text + ")");
  if (code == Z_MEM_ERROR) throw std::bad_alloc();
  fail(*this, "corrupt gzip data (" + (text.empty() ? std::string("zlib error ") + std::to_string(code) : text) + ")");
}

void GzFileSource::check_stream_error() {
  int code = Z_OK;
  gzerror(static_cast<gzFile>(file_), &code);
  if (code != Z_OK) fail_from_zlib();
}

std::size_t GzFileSource::read(unsigned char* dst, std::size_t n) {
  auto* file = static_cast<gzFile>(file_);
  std::size_t done = 0;
  while (done < n) {
    const auto want = static_cast<unsigned>(std::min(n - done, kZlibChunk));
    const int got = gzread(file, dst + done, want);
    if (got < 0) fail_from_zlib();
    if (got == 0) break;
    done += static_cast<std::size_t>(got);
  }
  consumed_ += done;
  // A short read is the end of the data, or an error (a truncated or corrupt
  // stream reports the error here, also when it hits the gzip trailer).
  if (done < n) check_stream_error();
  return done;
}

std::optional<std::uint64_t> GzFileSource::remaining() const {
  auto* file = static_cast<gzFile>(file_);
  if (!size_ || gzdirect(file) == 0) return std::nullopt;
  return *size_ >= consumed_ ? *size_ - consumed_ : 0;
}

// ---- PlainFileSource ---------------------------------------------------------

PlainFileSource::PlainFileSource(const std::string& path) : ByteSource(path) {
  errno = 0;
  file_ = std::fopen(path.c_str(), "rb");
  if (file_ == nullptr) throw IoError("cannot open " + path + ": " + errno_text(errno));
  size_ = regular_file_size(fileno(file_));
}

PlainFileSource::~PlainFileSource() {
  if (file_ != nullptr) std::fclose(file_);
}

std::size_t PlainFileSource::read(unsigned char* dst, std::size_t n) {
  const std::size_t got = std::fread(dst, 1, n, file_);
  consumed_ += got;
  if (got < n && std::ferror(file_) != 0) {
    throw IoError("cannot read " + name() + ": " + errno_text(errno));
  }
  return got;
}

std::optional<std::uint64_t> PlainFileSource::remaining() const {
  if (!size_) return std::nullopt;
  return *size_ >= consumed_ ? *size_ - consumed_ : 0;
}

}  // namespace kortexdl::datasets::detail
