#pragma once
// Internals of the dataset readers (include/kortexdl/datasets.hpp): byte
// sources that the parsers stream from, and entry points that parse from
// memory (used by the fuzz targets and white-box tests).
//
// Every parser reads through a ByteSource, so the file readers and the
// in-memory entry points run the same code; only the source differs.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "kortexdl/datasets.hpp"

namespace kortexdl::datasets::detail {

// Limits checked before anything is allocated.
// IDX: values (pixels) in one images file; 2^32 uint8 become 16 GiB of fp32.
inline constexpr std::uint64_t kMaxIdxValues = std::uint64_t{1} << 32;
// CSV: bytes read into memory, and the largest class label accepted
// (labels are whole numbers a float holds exactly).
inline constexpr std::uint64_t kMaxCsvBytes = std::uint64_t{4} << 30;
inline constexpr std::int64_t kMaxCsvLabel = (std::int64_t{1} << 24) - 1;
// NPY: length of the header dict (numpy writes ~128 bytes).
inline constexpr std::uint64_t kMaxNpyHeaderBytes = std::uint64_t{1} << 20;

// A stream of bytes with a name (the path) for error messages.
class ByteSource {
 public:
  explicit ByteSource(std::string name) : name_(std::move(name)) {}
  virtual ~ByteSource() = default;
  ByteSource(const ByteSource&) = delete;
  ByteSource& operator=(const ByteSource&) = delete;

  // Reads up to n bytes; fewer only at the end of the data. Throws
  // FormatError for a corrupt or truncated compressed stream (also when the
  // end is reached), IoError when the operating system fails a read.
  virtual std::size_t read(unsigned char* dst, std::size_t n) = 0;
  // Bytes left, when known without reading them (plain files and memory);
  // nullopt for compressed streams and pipes.
  virtual std::optional<std::uint64_t> remaining() const = 0;

  const std::string& name() const { return name_; }

 private:
  std::string name_;
};

// Bytes in memory (not copied: they must outlive the source). With
// detect_gzip, data starting with the gzip magic 1f 8b is inflated, with
// the same rules as zlib's gzread: concatenated members are read in turn
// and anything after the last member that is not a gzip header is ignored.
class MemorySource final : public ByteSource {
 public:
  MemorySource(std::span<const unsigned char> bytes, std::string name, bool detect_gzip);
  ~MemorySource() override;
  std::size_t read(unsigned char* dst, std::size_t n) override;
  std::optional<std::uint64_t> remaining() const override;

 private:
  struct Inflater;
  std::span<const unsigned char> bytes_;
  std::size_t pos_ = 0;  // next byte of bytes_ not yet consumed (or handed to zlib)
  std::unique_ptr<Inflater> inflater_;
};

// A file read with zlib's gzopen/gzread: gzip-compressed or plain, told
// apart by the gzip magic. Throws IoError when it cannot be opened.
class GzFileSource final : public ByteSource {
 public:
  explicit GzFileSource(const std::string& path);
  ~GzFileSource() override;
  std::size_t read(unsigned char* dst, std::size_t n) override;
  std::optional<std::uint64_t> remaining() const override;

 private:
  [[noreturn]] void fail_from_zlib();
  void check_stream_error();
  void* file_ = nullptr;  // gzFile
  std::optional<std::uint64_t> size_;  // of a regular file
  std::uint64_t consumed_ = 0;
};

// A plain (uncompressed) file. Throws IoError when it cannot be opened.
class PlainFileSource final : public ByteSource {
 public:
  explicit PlainFileSource(const std::string& path);
  ~PlainFileSource() override;
  std::size_t read(unsigned char* dst, std::size_t n) override;
  std::optional<std::uint64_t> remaining() const override;

 private:
  std::FILE* file_ = nullptr;
  std::optional<std::uint64_t> size_;  // of a regular file
  std::uint64_t consumed_ = 0;
};

// Throws FormatError("<source name>: <what>").
[[noreturn]] void fail(const ByteSource& source, const std::string& what);
[[noreturn]] void fail(const std::string& name, const std::string& what);

// Reads exactly n bytes into a buffer that grows with the data that actually
// arrives (so a header claiming more than the stream holds fails at the short
// read, having allocated at most about twice what was there). `what` names
// the data in the truncation message.
std::vector<unsigned char> read_exactly(ByteSource& source, std::size_t n, const std::string& what);
// Throws FormatError unless the source is at its end.
void expect_end(ByteSource& source, const std::string& after);

// Up to `limit` bytes shown as a quoted, escaped string for messages.
std::string quote_bytes(std::string_view bytes, std::size_t limit = 40);

// ---- parsers over sources / memory -------------------------------------------
Dataset parse_idx(ByteSource& images, ByteSource& labels, float scale);
// IDX files given as bytes (each plain or gzip).
Dataset parse_idx(std::span<const unsigned char> images, std::span<const unsigned char> labels, float scale,
                  const std::string& images_name = "<images>", const std::string& labels_name = "<labels>");

Dataset parse_csv(std::string_view text, int label_column, bool regression, const std::string& name = "<csv>");

Array parse_npy(ByteSource& source);
Array parse_npy(std::span<const unsigned char> bytes, const std::string& name = "<npy>");
// The complete .npy file write_npy writes (<f4, C order, version 1.0).
std::vector<unsigned char> encode_npy(const std::vector<float>& values, const std::vector<std::size_t>& shape);

// Writes `bytes` gzip-compressed with zlib's gzopen (for tests).
void write_gzip_file(const std::string& path, std::span<const unsigned char> bytes);

}  // namespace kortexdl::datasets::detail
