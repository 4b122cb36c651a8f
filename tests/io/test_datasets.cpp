// Dataset readers: IDX (plain and gzip), Fashion-MNIST, CSV, NPY. Every file
// is made by the test; Fashion-MNIST is used when Debian's package is there.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "io/dataset_source.hpp"
#include "kortexdl/datasets.hpp"
#include "kortexdl/error.hpp"

namespace {

namespace fs = std::filesystem;
namespace ds = kortexdl::datasets;
using Bytes = std::vector<unsigned char>;

// ---- helpers ------------------------------------------------------------------

class TempDir {
 public:
  TempDir() {
    std::string pattern = (fs::temp_directory_path() / "kortexdl-datasets-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

void write_file(const std::string& path, const Bytes& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

void write_text(const std::string& path, const std::string& text) {
  write_file(path, Bytes(text.begin(), text.end()));
}

Bytes read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void put_be32(Bytes& out, std::uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<unsigned char>((v >> shift) & 0xff));
}

Bytes idx_header(std::uint32_t magic, const std::vector<std::uint32_t>& dims) {
  Bytes out;
  put_be32(out, magic);
  for (const auto d : dims) put_be32(out, d);
  return out;
}

// count images of rows x cols; pixel value (i * 7 + j) % 256.
Bytes idx_images(std::uint32_t count, std::uint32_t rows, std::uint32_t cols) {
  Bytes out = idx_header(0x00000803, {count, rows, cols});
  for (std::uint32_t i = 0; i < count; ++i) {
    for (std::uint32_t j = 0; j < rows * cols; ++j) out.push_back(static_cast<unsigned char>((i * 7 + j) % 256));
  }
  return out;
}

Bytes idx_labels(const std::vector<unsigned char>& labels) {
  Bytes out = idx_header(0x00000801, {static_cast<std::uint32_t>(labels.size())});
  out.insert(out.end(), labels.begin(), labels.end());
  return out;
}

Bytes gzip_bytes(const TempDir& dir, const Bytes& plain) {
  const std::string path = dir.file("gzip-scratch.gz");
  ds::detail::write_gzip_file(path, plain);
  return read_file(path);
}

// Runs f, expecting FormatError whose message contains every one of `parts`.
template <typename F>
void expect_format_error(F&& f, const std::vector<std::string>& parts) {
  try {
    f();
    ADD_FAILURE() << "no exception; expected FormatError containing '" << (parts.empty() ? "" : parts[0]) << "'";
  } catch (const kortexdl::FormatError& e) {
    for (const auto& part : parts) EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "wrong exception type: " << e.what();
  }
}

// ---- IDX ------------------------------------------------------------------------

class IdxTest : public ::testing::Test {
 protected:
  TempDir dir;
  const Bytes images = idx_images(3, 2, 2);
  const Bytes labels = idx_labels({0, 2, 1});

  void check_small(const ds::Dataset& d, float scale = 1.0f / 255.0f) {
    EXPECT_EQ(d.rows, 3u);
    EXPECT_EQ(d.features, 4u);
    EXPECT_EQ(d.classes, 3u);
    EXPECT_EQ(d.target_width, 0u);
    EXPECT_TRUE(d.targets.empty());
    ASSERT_EQ(d.inputs.size(), 12u);
    for (std::size_t i = 0; i < 3; ++i) {
      for (std::size_t j = 0; j < 4; ++j) {
        EXPECT_FLOAT_EQ(d.inputs[i * 4 + j], static_cast<float>((i * 7 + j) % 256) * scale);
      }
    }
    EXPECT_EQ(d.labels, (std::vector<std::int32_t>{0, 2, 1}));
  }
};

TEST_F(IdxTest, ReadsPlainFiles) {
  write_file(dir.file("img"), images);
  write_file(dir.file("lbl"), labels);
  check_small(ds::read_idx(dir.file("img"), dir.file("lbl")));
  check_small(ds::read_idx(dir.file("img"), dir.file("lbl"), 1.0f), 1.0f);
}

TEST_F(IdxTest, ReadsGzipFilesAndMixtures) {
  ds::detail::write_gzip_file(dir.file("img.gz"), images);
  ds::detail::write_gzip_file(dir.file("lbl.gz"), labels);
  write_file(dir.file("lbl"), labels);
  ASSERT_NE(read_file(dir.file("img.gz"))[0], 0x00);  // really compressed
  check_small(ds::read_idx(dir.file("img.gz"), dir.file("lbl.gz")));
  check_small(ds::read_idx(dir.file("img.gz"), dir.file("lbl")));
}

TEST_F(IdxTest, ParsesFromMemory) {
  check_small(ds::detail::parse_idx(images, labels, 1.0f / 255.0f));
  check_small(ds::detail::parse_idx(gzip_bytes(dir, images), gzip_bytes(dir, labels), 1.0f / 255.0f));
}

TEST_F(IdxTest, ConcatenatedGzipMembersAreOneStream) {
  // gzip allows members back to back; zlib reads them as one stream.
  const Bytes first(images.begin(), images.begin() + 10);
  const Bytes rest(images.begin() + 10, images.end());
  Bytes joined = gzip_bytes(dir, first);
  const Bytes second = gzip_bytes(dir, rest);
  joined.insert(joined.end(), second.begin(), second.end());
  write_file(dir.file("img.gz"), joined);
  write_file(dir.file("lbl"), labels);
  check_small(ds::read_idx(dir.file("img.gz"), dir.file("lbl")));
  check_small(ds::detail::parse_idx(joined, labels, 1.0f / 255.0f));
}

TEST_F(IdxTest, AnyNumberOfDimensionsAfterTheCount) {
  Bytes two_d = idx_header(0x00000802, {3, 4});
  Bytes four_d = idx_header(0x00000804, {3, 1, 2, 2});
  for (std::size_t i = 0; i < 12; ++i) {
    two_d.push_back(images[16 + i]);
    four_d.push_back(images[16 + i]);
  }
  check_small(ds::detail::parse_idx(two_d, labels, 1.0f / 255.0f));
  check_small(ds::detail::parse_idx(four_d, labels, 1.0f / 255.0f));
}

TEST_F(IdxTest, EveryTruncationOfAPlainFileIsAFormatError) {
  write_file(dir.file("lbl"), labels);
  write_file(dir.file("img"), images);
  for (std::size_t n = 0; n < images.size(); ++n) {
    SCOPED_TRACE("images prefix " + std::to_string(n));
    write_file(dir.file("cut"), Bytes(images.begin(), images.begin() + static_cast<std::ptrdiff_t>(n)));
    expect_format_error([&] { ds::read_idx(dir.file("cut"), dir.file("lbl")); }, {dir.file("cut")});
    const Bytes cut(images.begin(), images.begin() + static_cast<std::ptrdiff_t>(n));
    EXPECT_THROW(ds::detail::parse_idx(cut, labels, 1.0f), kortexdl::FormatError);
  }
  for (std::size_t n = 0; n < labels.size(); ++n) {
    SCOPED_TRACE("labels prefix " + std::to_string(n));
    write_file(dir.file("cut"), Bytes(labels.begin(), labels.begin() + static_cast<std::ptrdiff_t>(n)));
    expect_format_error([&] { ds::read_idx(dir.file("img"), dir.file("cut")); }, {dir.file("cut")});
  }
}

TEST_F(IdxTest, EveryTruncationOfAGzipFileIsAFormatError) {
  const Bytes gz_images = gzip_bytes(dir, images);
  const Bytes gz_labels = gzip_bytes(dir, labels);
  write_file(dir.file("lbl.gz"), gz_labels);
  write_file(dir.file("img.gz"), gz_images);
  for (std::size_t n = 0; n < gz_images.size(); ++n) {
    SCOPED_TRACE("gzip images prefix " + std::to_string(n));
    const Bytes cut(gz_images.begin(), gz_images.begin() + static_cast<std::ptrdiff_t>(n));
    write_file(dir.file("cut.gz"), cut);
    expect_format_error([&] { ds::read_idx(dir.file("cut.gz"), dir.file("lbl.gz")); }, {dir.file("cut.gz")});
    EXPECT_THROW(ds::detail::parse_idx(cut, gz_labels, 1.0f), kortexdl::FormatError);
  }
  for (std::size_t n = 0; n < gz_labels.size(); ++n) {
    SCOPED_TRACE("gzip labels prefix " + std::to_string(n));
    const Bytes cut(gz_labels.begin(), gz_labels.begin() + static_cast<std::ptrdiff_t>(n));
    write_file(dir.file("cut.gz"), cut);
    expect_format_error([&] { ds::read_idx(dir.file("img.gz"), dir.file("cut.gz")); }, {dir.file("cut.gz")});
    EXPECT_THROW(ds::detail::parse_idx(gz_images, cut, 1.0f), kortexdl::FormatError);
  }
}

TEST_F(IdxTest, CorruptedBytesGiveFormatErrorOrAConsistentDataset) {
  const Bytes gz_images = gzip_bytes(dir, images);
  write_file(dir.file("lbl"), labels);
  int errors = 0;
  for (const Bytes* original : {&images, &gz_images}) {
    for (std::size_t i = 0; i < original->size(); ++i) {
      for (const unsigned char flip : {0x01, 0x80, 0xff}) {
        Bytes bad = *original;
        bad[i] ^= flip;
        write_file(dir.file("bad"), bad);
        try {
          const ds::Dataset d = ds::read_idx(dir.file("bad"), dir.file("lbl"));
          EXPECT_EQ(d.inputs.size(), d.rows * d.features);
          EXPECT_EQ(d.labels.size(), d.rows);
        } catch (const kortexdl::FormatError&) {
          ++errors;
        }
      }
    }
  }
  EXPECT_GT(errors, 0);
}

TEST_F(IdxTest, BadMagic) {
  Bytes bad = images;
  bad[0] = 0x12;
  bad[1] = 0x34;
  expect_format_error([&] { ds::detail::parse_idx(bad, labels, 1.0f); }, {"<images>", "bad magic number 0x12340803"});
  // A PNG is not an IDX file, gzip'd or not.
  const Bytes png = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  expect_format_error([&] { ds::detail::parse_idx(png, labels, 1.0f); }, {"bad magic"});
  expect_format_error([&] { ds::detail::parse_idx(gzip_bytes(dir, png), labels, 1.0f); }, {"bad magic"});
}

TEST_F(IdxTest, UnsupportedDataTypes) {
  for (const unsigned char type : {0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0x42}) {
    Bytes bad = images;
    bad[2] = type;
    expect_format_error([&] { ds::detail::parse_idx(bad, labels, 1.0f); }, {"data type", "only unsigned byte (0x08)"});
  }
  Bytes floats = images;
  floats[2] = 0x0D;
  expect_format_error([&] { ds::detail::parse_idx(floats, labels, 1.0f); }, {"0x0D (float32"});
}

TEST_F(IdxTest, WrongKindOfFile) {
  // Labels where images are expected and the other way round.
  expect_format_error([&] { ds::detail::parse_idx(labels, labels, 1.0f); }, {"<images>", "at least 2"});
  expect_format_error([&] { ds::detail::parse_idx(images, images, 1.0f); }, {"<labels>", "0x00000801"});
}

TEST_F(IdxTest, CountMismatch) {
  write_file(dir.file("img"), images);
  write_file(dir.file("lbl"), idx_labels({1, 2}));
  expect_format_error([&] { ds::read_idx(dir.file("img"), dir.file("lbl")); },
                      {dir.file("img"), "3 images", dir.file("lbl"), "2 labels"});
}

TEST_F(IdxTest, ZeroDimensions) {
  expect_format_error([&] { ds::detail::parse_idx(idx_header(0x803, {0, 2, 2}), idx_labels({}), 1.0f); },
                      {"dimension 0 is 0"});
  expect_format_error([&] { ds::detail::parse_idx(idx_header(0x803, {3, 0, 2}), labels, 1.0f); },
                      {"dimension 1 is 0"});
}

TEST_F(IdxTest, TrailingDataIsAFormatError) {
  Bytes longer = images;
  longer.push_back(7);
  write_file(dir.file("img"), longer);
  write_file(dir.file("lbl"), labels);
  expect_format_error([&] { ds::read_idx(dir.file("img"), dir.file("lbl")); }, {"1 extra"});
  ds::detail::write_gzip_file(dir.file("img.gz"), longer);
  expect_format_error([&] { ds::read_idx(dir.file("img.gz"), dir.file("lbl")); }, {"unexpected data after"});
  expect_format_error([&] { ds::detail::parse_idx(gzip_bytes(dir, longer), labels, 1.0f); }, {"unexpected data"});
}

TEST_F(IdxTest, HugeDimensionsFailBeforeAllocating) {
  // 2^40 pixels: over the limit, rejected from the header alone.
  const Bytes huge = idx_header(0x803, {65536, 65536, 256});
  expect_format_error([&] { ds::detail::parse_idx(huge, labels, 1.0f); }, {"limit"});
  expect_format_error([&] { ds::detail::parse_idx(gzip_bytes(dir, huge), labels, 1.0f); }, {"limit"});
  // Dimensions whose product overflows 64 bits.
  const Bytes overflow = idx_header(0x804, {0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu});
  expect_format_error([&] { ds::detail::parse_idx(overflow, labels, 1.0f); }, {"overflow"});

  // Under the limit (~4 GiB) but the data is not there: a plain file is
  // checked against its size; a gzip stream fails at the short read.
  Bytes big = idx_header(0x803, {65535, 256, 256});
  big.resize(big.size() + 100, 1);
  const Bytes big_labels = idx_labels(std::vector<unsigned char>(65535, 1));
  write_file(dir.file("big"), big);
  write_file(dir.file("big-labels"), big_labels);
  expect_format_error([&] { ds::read_idx(dir.file("big"), dir.file("big-labels")); }, {"truncated", "only 100"});
  ds::detail::write_gzip_file(dir.file("big.gz"), big);
  expect_format_error([&] { ds::read_idx(dir.file("big.gz"), dir.file("big-labels")); }, {"truncated"});

  // The buffer grows with the data that arrives: the first read asks for at
  // most 1 MiB although the header claims ~4 GiB.
  class Recording final : public ds::detail::ByteSource {
   public:
    explicit Recording(const Bytes& bytes) : ByteSource("<recording>"), inner_(bytes, "<recording>", true) {}
    std::size_t read(unsigned char* dst, std::size_t n) override {
      largest = std::max(largest, n);
      return inner_.read(dst, n);
    }
    std::optional<std::uint64_t> remaining() const override { return std::nullopt; }
    std::size_t largest = 0;

   private:
    ds::detail::MemorySource inner_;
  };
  Recording images_source(big);
  ds::detail::MemorySource labels_source(big_labels, "<labels>", true);
  EXPECT_THROW(ds::detail::parse_idx(images_source, labels_source, 1.0f), kortexdl::FormatError);
  EXPECT_LE(images_source.largest, std::size_t{1} << 20);
}

TEST_F(IdxTest, MissingFileIsAnIoErrorNamingIt) {
  write_file(dir.file("lbl"), labels);
  try {
    ds::read_idx(dir.file("nope"), dir.file("lbl"));
    FAIL() << "no exception";
  } catch (const kortexdl::IoError& e) {
    EXPECT_NE(std::string(e.what()).find(dir.file("nope")), std::string::npos) << e.what();
  }
  // A directory opens but cannot be read.
  EXPECT_THROW(ds::read_idx(dir.path().string(), dir.file("lbl")), kortexdl::Error);
}

TEST_F(IdxTest, NonFiniteScaleIsRejected) {
  EXPECT_THROW(ds::detail::parse_idx(images, labels, std::numeric_limits<float>::quiet_NaN()),
               kortexdl::InvalidArgumentError);
}

TEST(FashionMnist, MissingDirectoryNamesThePackage) {
  try {
    ds::fashion_mnist("/nonexistent/kortexdl-fashion");
    FAIL() << "no exception";
  } catch (const kortexdl::IoError& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("/nonexistent/kortexdl-fashion/train-images-idx3-ubyte.gz"), std::string::npos) << message;
    EXPECT_NE(message.find("apt-get install dataset-fashion-mnist"), std::string::npos) << message;
  }
}

TEST(FashionMnist, LoadsFromTheDebianPackage) {
  const std::string directory = "/usr/share/datasets/fashion-mnist";
  if (!fs::exists(directory + "/train-images-idx3-ubyte.gz")) {
    GTEST_SKIP() << directory << " is absent: apt-get install dataset-fashion-mnist";
  }
  const ds::TrainTest data = ds::fashion_mnist();
  EXPECT_EQ(data.train.rows, 60000u);
  EXPECT_EQ(data.test.rows, 10000u);
  for (const ds::Dataset* d : {&data.train, &data.test}) {
    EXPECT_EQ(d->features, 784u);
    EXPECT_EQ(d->classes, 10u);
    ASSERT_EQ(d->inputs.size(), d->rows * 784);
    ASSERT_EQ(d->labels.size(), d->rows);
    const auto [lo, hi] = std::minmax_element(d->inputs.begin(), d->inputs.end());
    EXPECT_EQ(*lo, 0.0f);
    EXPECT_EQ(*hi, 1.0f);
    std::vector<std::size_t> per_class(10, 0);
    for (const auto label : d->labels) {
      ASSERT_GE(label, 0);
      ASSERT_LT(label, 10);
      ++per_class[static_cast<std::size_t>(label)];
    }
    for (const auto n : per_class) EXPECT_EQ(n, d->rows / 10);  // Fashion-MNIST is balanced
  }
}

// ---- CSV ------------------------------------------------------------------------

ds::Dataset csv(const std::string& text, int label_column = -1, bool regression = false) {
  return ds::detail::parse_csv(text, label_column, regression, "t.csv");
}

TEST(Csv, HeaderAndLabelsInTheLastColumn) {
  TempDir dir;
  write_text(dir.file("d.csv"), "a,b,label\n1,2,0\n3.5,-4e-1,2\n+5,6,1\n");
  const ds::Dataset d = ds::read_csv(dir.file("d.csv"));
  EXPECT_EQ(d.rows, 3u);
  EXPECT_EQ(d.features, 2u);
  EXPECT_EQ(d.classes, 3u);
  EXPECT_EQ(d.inputs, (std::vector<float>{1, 2, 3.5f, -0.4f, 5, 6}));
  EXPECT_EQ(d.labels, (std::vector<std::int32_t>{0, 2, 1}));
  EXPECT_TRUE(d.targets.empty());
  EXPECT_EQ(d.target_width, 0u);
}

TEST(Csv, NoHeaderLabelColumnFromEitherEnd) {
  const ds::Dataset first = csv("4,1,2\n3,5,6\n", 0);
  EXPECT_EQ(first.labels, (std::vector<std::int32_t>{4, 3}));
  EXPECT_EQ(first.inputs, (std::vector<float>{1, 2, 5, 6}));
  EXPECT_EQ(first.classes, 5u);
  const ds::Dataset middle = csv("1,4,2\n5,3,6\n", -2);
  EXPECT_EQ(middle.labels, (std::vector<std::int32_t>{4, 3}));
  EXPECT_EQ(middle.inputs, (std::vector<float>{1, 2, 5, 6}));
  EXPECT_EQ(csv("1,4,2\n5,3,6\n", 1).labels, middle.labels);
}

TEST(Csv, Regression) {
  const ds::Dataset d = csv("x,y\n1,0.5\n2,-1.25\n", -1, true);
  EXPECT_EQ(d.rows, 2u);
  EXPECT_EQ(d.features, 1u);
  EXPECT_EQ(d.target_width, 1u);
  EXPECT_EQ(d.classes, 0u);
  EXPECT_TRUE(d.labels.empty());
  EXPECT_EQ(d.targets, (std::vector<float>{0.5f, -1.25f}));
  EXPECT_EQ(d.inputs, (std::vector<float>{1, 2}));
}

TEST(Csv, WhitespaceCrlfBlankLinesBomAndWholeFloatLabels) {
  const ds::Dataset d = csv("\xEF\xBB\xBF f1 ,\tf2,y\r\n\r\n 1 , 2 , 1.0 \r\n\n3,4,2e0\r\n\n");
  EXPECT_EQ(d.rows, 2u);
  EXPECT_EQ(d.inputs, (std::vector<float>{1, 2, 3, 4}));
  EXPECT_EQ(d.labels, (std::vector<std::int32_t>{1, 2}));
  const ds::Dataset no_newline = csv("1,2,0\n3,4,1");
  EXPECT_EQ(no_newline.rows, 2u);
}

TEST(Csv, ParsesFloatsExactly) {
  const ds::Dataset d = csv("0.1,3.4028235e38,1e-45,0\n", -1);
  EXPECT_EQ(d.inputs[0], 0.1f);
  EXPECT_EQ(d.inputs[1], std::numeric_limits<float>::max());
  EXPECT_EQ(d.inputs[2], std::numeric_limits<float>::denorm_min());
}

TEST(Csv, Errors) {
  expect_format_error([] { csv(""); }, {"t.csv", "empty"});
  expect_format_error([] { csv("\n  \n\r\n"); }, {"empty"});
  expect_format_error([] { csv("a,b,c\n"); }, {"header line but no data rows"});
  expect_format_error([] { csv("1,2,3\n4,5\n"); }, {"line 2 has 2 fields, expected 3"});
  expect_format_error([] { csv("a,b,c\n1,2,3\n\n4,5,6,7\n"); }, {"line 4 has 4 fields, expected 3 (as on line 1)"});
  expect_format_error([] { csv("1,2,3\n4,x5,6\n"); }, {"line 2, column 2", "'x5' is not a number"});
  expect_format_error([] { csv("1,2,3\n4,0x10,6\n"); }, {"line 2, column 2", "not a number"});
  expect_format_error([] { csv("1,2,3\n4,,6\n"); }, {"line 2, column 2: empty field"});
  expect_format_error([] { csv("1,2,3\n4,5,\n"); }, {"line 2, column 3: empty field"});
  expect_format_error([] { csv("1,2,3\nnan,5,6\n"); }, {"line 2, column 1", "not a finite number"});
  expect_format_error([] { csv("1,2,3\n-inf,5,6\n"); }, {"line 2, column 1", "not a finite number"});
  expect_format_error([] { csv("1,2,3\n1e39,5,6\n"); }, {"line 2, column 1", "float32 range"});
  expect_format_error([] { csv("1,2,3\n\"4\",5,6\n"); }, {"line 2, column 1", "not a number"});
  expect_format_error([] { csv("1,2,1.5\n"); }, {"line 1, column 3", "not a whole number"});
  expect_format_error([] { csv("1,2,-1\n"); }, {"line 1, column 3", "negative"});
  expect_format_error([] { csv("1,2,99999999\n"); }, {"line 1, column 3", "limit"});
  expect_format_error([] { csv("1,2,cat\n3,4,dog\n"); }, {"line 2, column 3", "label 'dog' is not a number"});
  expect_format_error([] { csv("1,2,inf\n"); }, {"line 1, column 3", "not a finite number"});
  expect_format_error([] { csv("1,2,3\n", 3); }, {"label_column 3", "-3 to 2"});
  expect_format_error([] { csv("1,2,3\n", -4); }, {"label_column -4"});
  expect_format_error([] { csv("1\n2\n"); }, {"1 column"});
  expect_format_error([] { csv("1,2,3\n4,5,x\n", -1, true); }, {"line 2, column 3", "'x' is not a number"});
  expect_format_error([] { csv("1,2,3\n4,5,++6\n", -1, true); }, {"line 2, column 3", "not a number"});
}

TEST(Csv, FileErrorsNameThePath) {
  TempDir dir;
  try {
    ds::read_csv(dir.file("missing.csv"));
    FAIL() << "no exception";
  } catch (const kortexdl::IoError& e) {
    EXPECT_NE(std::string(e.what()).find(dir.file("missing.csv")), std::string::npos) << e.what();
  }
  write_text(dir.file("bad.csv"), "1,2,3\n4,5\n");
  expect_format_error([&] { ds::read_csv(dir.file("bad.csv")); }, {dir.file("bad.csv"), "line 2"});
  write_text(dir.file("empty.csv"), "");
  expect_format_error([&] { ds::read_csv(dir.file("empty.csv")); }, {dir.file("empty.csv"), "empty"});
}

// ---- NPY ------------------------------------------------------------------------

// A .npy file with the given header dict, padded like numpy pads it.
Bytes npy(const std::string& dict, const Bytes& data, int major = 1) {
  Bytes out = {0x93, 'N', 'U', 'M', 'P', 'Y', static_cast<unsigned char>(major), 0};
  const std::size_t prefix = major == 1 ? 10 : 12;
  std::string header = dict;
  while ((prefix + header.size() + 1) % 64 != 0) header += ' ';
  header += '\n';
  for (std::size_t i = 0; i < (major == 1 ? 2u : 4u); ++i) out.push_back(static_cast<unsigned char>(header.size() >> (8 * i)));
  out.insert(out.end(), header.begin(), header.end());
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

template <typename T>
Bytes le_bytes(const std::vector<T>& values) {
  Bytes out(values.size() * sizeof(T));
  if (!values.empty()) std::memcpy(out.data(), values.data(), out.size());  // the test runs on a little-endian machine
  return out;
}

ds::Array parse(const Bytes& bytes) { return ds::detail::parse_npy(bytes, "t.npy"); }

TEST(Npy, WriteThenReadRoundTrips) {
  TempDir dir;
  const std::vector<std::vector<std::size_t>> shapes = {{2, 3}, {5}, {}, {2, 0, 3}, {2, 3, 4}, {1, 1}};
  for (const auto& shape : shapes) {
    std::size_t count = 1;
    for (const auto d : shape) count *= d;
    std::vector<float> values(count);
    for (std::size_t i = 0; i < count; ++i) values[i] = static_cast<float>(i) * 0.5f - 3.0f;
    if (count > 2) values[1] = std::numeric_limits<float>::infinity();
    ds::write_npy(dir.file("a.npy"), values, shape);
    const ds::Array back = ds::read_npy(dir.file("a.npy"));
    EXPECT_EQ(back.shape, shape);
    EXPECT_EQ(back.values, values);
    EXPECT_EQ(read_file(dir.file("a.npy")), ds::detail::encode_npy(values, shape));
  }
  EXPECT_FALSE(fs::exists(dir.file("a.npy.tmp." + std::to_string(::getpid()))));
}

TEST(Npy, WrittenLayoutIsNumpyVersion1) {
  const Bytes file = ds::detail::encode_npy({1.0f, 2.0f, 3.0f, 4.0f, 5.0f, 6.0f}, {2, 3});
  ASSERT_GE(file.size(), 10u);
  EXPECT_EQ(Bytes(file.begin(), file.begin() + 8), (Bytes{0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0}));
  const std::size_t header_len = file[8] | (std::size_t{file[9]} << 8);
  EXPECT_EQ((10 + header_len) % 64, 0u);
  const std::string header(file.begin() + 10, file.begin() + 10 + static_cast<std::ptrdiff_t>(header_len));
  EXPECT_EQ(header.rfind("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", 0), 0u) << header;
  EXPECT_EQ(header.back(), '\n');
  EXPECT_EQ(Bytes(file.begin() + 10 + static_cast<std::ptrdiff_t>(header_len), file.end()),
            le_bytes<float>({1, 2, 3, 4, 5, 6}));
  const Bytes one_d = ds::detail::encode_npy({1.0f}, {1});
  EXPECT_NE(std::string(one_d.begin(), one_d.end()).find("'shape': (1,), }"), std::string::npos);
}

TEST(Npy, ReadsEveryDtype) {
  const ds::Array f8 = parse(npy("{'descr': '<f8', 'fortran_order': False, 'shape': (2, 2), }",
                                 le_bytes<double>({0.1, -2.5, 1e30, std::numeric_limits<double>::quiet_NaN()})));
  EXPECT_EQ(f8.shape, (std::vector<std::size_t>{2, 2}));
  EXPECT_EQ(f8.values[0], 0.1f);
  EXPECT_EQ(f8.values[1], -2.5f);
  EXPECT_EQ(f8.values[2], 1e30f);
  EXPECT_TRUE(std::isnan(f8.values[3]));
  const ds::Array i8 = parse(npy("{'descr': '<i8', 'fortran_order': False, 'shape': (3,), }",
                                 le_bytes<std::int64_t>({-7, 0, std::int64_t{1} << 40})));
  EXPECT_EQ(i8.values, (std::vector<float>{-7.0f, 0.0f, 1099511627776.0f}));
  const ds::Array i4 = parse(npy("{'descr': '<i4', 'fortran_order': False, 'shape': (2,), }",
                                 le_bytes<std::int32_t>({-2147483647 - 1, 12})));
  EXPECT_EQ(i4.values, (std::vector<float>{-2147483648.0f, 12.0f}));
  const ds::Array u1 = parse(npy("{'descr': '|u1', 'fortran_order': False, 'shape': (1, 3), }", Bytes{0, 128, 255}));
  EXPECT_EQ(u1.values, (std::vector<float>{0, 128, 255}));
  EXPECT_EQ(u1.shape, (std::vector<std::size_t>{1, 3}));
  const ds::Array f4 = parse(npy("{'descr': '<f4', 'fortran_order': False, 'shape': (), }", le_bytes<float>({42.0f})));
  EXPECT_TRUE(f4.shape.empty());
  EXPECT_EQ(f4.values, (std::vector<float>{42.0f}));
}

TEST(Npy, FortranOrderIsTransposedToCOrder) {
  // C-order [[1,2,3],[4,5,6]] stored column-major: 1 4 2 5 3 6.
  const ds::Array two = parse(npy("{'descr': '<f8', 'fortran_order': True, 'shape': (2, 3), }",
                                  le_bytes<double>({1, 4, 2, 5, 3, 6})));
  EXPECT_EQ(two.shape, (std::vector<std::size_t>{2, 3}));
  EXPECT_EQ(two.values, (std::vector<float>{1, 2, 3, 4, 5, 6}));
  // 3-d, shape (2, 3, 4): element (i, j, k) = 100i + 10j + k.
  std::vector<std::int32_t> fortran;
  std::vector<float> c_order;
  for (int k = 0; k < 4; ++k)
    for (int j = 0; j < 3; ++j)
      for (int i = 0; i < 2; ++i) fortran.push_back(100 * i + 10 * j + k);
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 3; ++j)
      for (int k = 0; k < 4; ++k) c_order.push_back(static_cast<float>(100 * i + 10 * j + k));
  const ds::Array three = parse(npy("{'descr': '<i4', 'fortran_order': True, 'shape': (2, 3, 4), }", le_bytes(fortran)));
  EXPECT_EQ(three.values, c_order);
  const ds::Array one = parse(npy("{'descr': '|u1', 'fortran_order': True, 'shape': (3,), }", Bytes{1, 2, 3}));
  EXPECT_EQ(one.values, (std::vector<float>{1, 2, 3}));
}

TEST(Npy, HeaderVariants) {
  // Version 2.0, keys in another order, double quotes, Python 2 longs, no trailing comma.
  const ds::Array a = parse(npy("{\"shape\": (2L, 1L), \"fortran_order\": False, \"descr\": \"<f4\"}",
                                le_bytes<float>({1, 2}), 2));
  EXPECT_EQ(a.shape, (std::vector<std::size_t>{2, 1}));
  EXPECT_EQ(a.values, (std::vector<float>{1, 2}));
  EXPECT_EQ(parse(npy("{'descr':'<f4','fortran_order':False,'shape':(2,)}", le_bytes<float>({1, 2}), 3)).values.size(), 2u);
}

TEST(Npy, EveryTruncationIsAFormatError) {
  const Bytes file = ds::detail::encode_npy({1, 2, 3, 4, 5, 6}, {3, 2});
  TempDir dir;
  for (std::size_t n = 0; n < file.size(); ++n) {
    SCOPED_TRACE("prefix " + std::to_string(n));
    const Bytes cut(file.begin(), file.begin() + static_cast<std::ptrdiff_t>(n));
    EXPECT_THROW(parse(cut), kortexdl::FormatError);
    write_file(dir.file("cut.npy"), cut);
    expect_format_error([&] { ds::read_npy(dir.file("cut.npy")); }, {dir.file("cut.npy")});
  }
}

TEST(Npy, CorruptedBytesGiveFormatErrorOrAConsistentArray) {
  const Bytes file = ds::detail::encode_npy({1, 2, 3, 4, 5, 6}, {3, 2});
  for (std::size_t i = 0; i < file.size(); ++i) {
    for (const unsigned char flip : {0x01, 0x20, 0x80, 0xff}) {
      Bytes bad = file;
      bad[i] ^= flip;
      try {
        const ds::Array a = parse(bad);
        std::size_t count = 1;
        for (const auto d : a.shape) count *= d;
        EXPECT_EQ(a.values.size(), count);
      } catch (const kortexdl::FormatError&) {
      }
    }
  }
}

TEST(Npy, BadFiles) {
  const Bytes data = le_bytes<float>({1, 2});
  const std::string ok_tail = "'fortran_order': False, 'shape': (2,), }";
  expect_format_error([&] { parse(Bytes{'P', 'K', 3, 4, 0, 0, 0, 0, 0, 0}); }, {"t.npy", "not a .npy file"});
  expect_format_error([&] { parse({}); }, {"empty"});
  Bytes v4 = npy("{'descr': '<f4', " + ok_tail, data);
  v4[6] = 4;
  expect_format_error([&] { parse(v4); }, {"version 4.0"});
  for (const std::string dtype : {">f4", "<f2", "|b1", "<c8", "O", "<U3", "|u2", ""}) {
    expect_format_error([&] { parse(npy("{'descr': '" + dtype + "', " + ok_tail, data)); }, {"not supported"});
  }
  expect_format_error([&] { parse(npy("{'descr': '>f4', " + ok_tail, data)); }, {"big-endian"});
  expect_format_error([&] { parse(npy("{'descr': [('a', '<f4')], " + ok_tail, data)); }, {"structured"});
  expect_format_error([&] { parse(npy("{'fortran_order': False, 'shape': (2,), }", data)); }, {"no 'descr'"});
  expect_format_error([&] { parse(npy("{'descr': '<f4', 'shape': (2,), }", data)); }, {"no 'fortran_order'"});
  expect_format_error([&] { parse(npy("{'descr': '<f4', 'fortran_order': False}", data)); }, {"no 'shape'"});
  expect_format_error([&] { parse(npy("{'descr': '<f4', 'descr': '<f4', " + ok_tail, data)); }, {"duplicate"});
  expect_format_error([&] { parse(npy("{'descr': '<f4', 'extra': 1, " + ok_tail, data)); }, {"unexpected key"});
  expect_format_error([&] { parse(npy("{'descr': '<f4', 'fortran_order': 0, 'shape': (2,), }", data)); }, {"True or False"});
  expect_format_error([&] { parse(npy("{'descr': '<f4', 'fortran_order': False, 'shape': (-2,), }", data)); }, {"negative"});
  expect_format_error([&] { parse(npy("{'descr': '<f4', 'fortran_order': False, 'shape': [2], }", data)); }, {"tuple"});
  expect_format_error([&] { parse(npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), } x", data)); }, {"after the header"});
  expect_format_error([&] { parse(npy("['descr']", data)); }, {"must start with '{'"});
  expect_format_error([&] { parse(npy("{'descr': '<f4, " + ok_tail, data)); }, {"bad .npy header"});
  expect_format_error([&] { parse(npy("{'descr': '<f4', " + ok_tail, le_bytes<float>({1}))); }, {"truncated", "only 4"});
  expect_format_error([&] { parse(npy("{'descr': '<f4', " + ok_tail, le_bytes<float>({1, 2, 3}))); }, {"4 extra"});
  expect_format_error([&] { parse(npy("{'descr': '<f8', " + ok_tail, le_bytes<double>({1, 1e300}))); },
                      {"element 1 (1e+300) is outside the float32 range"});
  // Sizes that overflow, or that the file does not hold.
  expect_format_error(
      [&] { parse(npy("{'descr': '<f8', 'fortran_order': False, 'shape': (4294967296, 4294967296), }", data)); },
      {"overflow"});
  expect_format_error(
      [&] { parse(npy("{'descr': '<f8', 'fortran_order': False, 'shape': (99999999999999999999999,), }", data)); },
      {"overflow"});
  expect_format_error(
      [&] { parse(npy("{'descr': '<f4', 'fortran_order': False, 'shape': (1099511627776,), }", data)); },
      {"truncated", "4398046511104 bytes"});
  // A header length far beyond the file (version 2.0 has 32 bits for it).
  Bytes long_header = {0x93, 'N', 'U', 'M', 'P', 'Y', 2, 0, 0xff, 0xff, 0xff, 0x7f};
  expect_format_error([&] { parse(long_header); }, {"limit"});
  Bytes claims_more = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, 0xff, 0xff, '{'};
  expect_format_error([&] { parse(claims_more); }, {"truncated"});
}

TEST(Npy, FileErrors) {
  TempDir dir;
  EXPECT_THROW(ds::read_npy(dir.file("missing.npy")), kortexdl::IoError);
  EXPECT_THROW(ds::write_npy(dir.file("no-such-dir/a.npy"), {1.0f}, {1}), kortexdl::IoError);
  EXPECT_THROW(ds::write_npy(dir.file("a.npy"), {1.0f, 2.0f}, {3}), kortexdl::ShapeError);
  EXPECT_THROW(ds::write_npy(dir.file("a.npy"), {}, {}), kortexdl::ShapeError);  // a scalar holds one value
  EXPECT_FALSE(fs::exists(dir.file("a.npy")));
}

// Cross-check with numpy itself when /usr/bin/python3 has it.
bool have_numpy() {
  return std::system("/usr/bin/python3 -c 'import numpy' >/dev/null 2>&1") == 0;
}

TEST(Npy, AgreesWithNumpy) {
  if (!have_numpy()) GTEST_SKIP() << "/usr/bin/python3 with numpy is not installed (apt-get install python3-numpy)";
  TempDir dir;
  const std::string script = dir.file("make.py");
  write_text(script,
             "import numpy as np, sys\n"
             "d = sys.argv[1]\n"
             "a = np.arange(24, dtype=np.float64).reshape(2, 3, 4) * 0.5 - 3\n"
             "np.save(d + '/f8.npy', a)\n"
             "np.save(d + '/f8_fortran.npy', np.asfortranarray(a))\n"
             "np.save(d + '/f4.npy', a.astype(np.float32))\n"
             "np.save(d + '/i8.npy', (a * 2).astype(np.int64))\n"
             "np.save(d + '/i4_fortran.npy', np.asfortranarray((a * 2).astype(np.int32)))\n"
             "np.save(d + '/u1.npy', (np.arange(24) * 10 % 256).astype(np.uint8).reshape(4, 6))\n"
             "np.save(d + '/scalar.npy', np.float32(7.5))\n"
             "b = np.load(d + '/ours.npy')\n"
             "assert b.dtype == np.float32 and b.shape == (3, 2), (b.dtype, b.shape)\n"
             "assert (b == np.array([[1, 2], [3, 4], [5, 6.5]], dtype=np.float32)).all(), b\n");
  ds::write_npy(dir.file("ours.npy"), {1, 2, 3, 4, 5, 6.5f}, {3, 2});
  ASSERT_EQ(std::system(("/usr/bin/python3 " + script + " " + dir.path().string()).c_str()), 0);

  std::vector<float> expected(24);
  for (std::size_t i = 0; i < 24; ++i) expected[i] = static_cast<float>(i) * 0.5f - 3.0f;
  const std::vector<std::size_t> shape = {2, 3, 4};
  for (const std::string name : {"f8", "f8_fortran", "f4"}) {
    const ds::Array a = ds::read_npy(dir.file(name + ".npy"));
    EXPECT_EQ(a.shape, shape) << name;
    EXPECT_EQ(a.values, expected) << name;
  }
  std::vector<float> doubled(24);
  for (std::size_t i = 0; i < 24; ++i) doubled[i] = std::trunc(expected[i] * 2);
  for (const std::string name : {"i8", "i4_fortran"}) {
    const ds::Array a = ds::read_npy(dir.file(name + ".npy"));
    EXPECT_EQ(a.shape, shape) << name;
    EXPECT_EQ(a.values, doubled) << name;
  }
  const ds::Array u1 = ds::read_npy(dir.file("u1.npy"));
  EXPECT_EQ(u1.shape, (std::vector<std::size_t>{4, 6}));
  for (std::size_t i = 0; i < 24; ++i) EXPECT_EQ(u1.values[i], static_cast<float>(i * 10 % 256));
  const ds::Array scalar = ds::read_npy(dir.file("scalar.npy"));
  EXPECT_TRUE(scalar.shape.empty());
  EXPECT_EQ(scalar.values, (std::vector<float>{7.5f}));
}

}  // namespace
