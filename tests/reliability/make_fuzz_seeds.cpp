// Writes the seed corpora of the four libFuzzer targets in fuzz/:
//
//   make_fuzz_seeds OUTDIR
//     OUTDIR/model_file/  small valid model files: every optimizer, with and
//                         without optimizer state, three shapes, every
//                         activation (Network::to_bytes)
//     OUTDIR/idx/         IDX image+label pairs in fuzz_idx's input layout
//                         (2 bytes: images length, then images, then labels),
//                         plain, gzip and mixed, 2-D and 3-D images
//     OUTDIR/csv/         CSV texts behind fuzz_csv's option byte (label column
//                         and regression flag): header, no header, CRLF,
//                         blank lines, BOM, regression
//     OUTDIR/npy/         .npy files: <f4/<f8/<i4/<i8/|u1, C and Fortran order,
//                         0-D, empty, version 2.0 header
//
// Built by tests/reliability/CMakeLists.txt (the replay tests use it) and by
// fuzz/CMakeLists.txt (the fuzzers' smoke runs start from it). Every seed is
// a valid input, so the fuzzers start past the format checks.
#include <zlib.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "io/dataset_source.hpp"
#include "kortexdl/kortexdl.hpp"

namespace {

namespace fs = std::filesystem;
using Bytes = std::vector<unsigned char>;

int written = 0;

void put(const fs::path& file, const Bytes& bytes) {
  std::ofstream out(file, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  if (!out) throw std::runtime_error("cannot write " + file.string());
  ++written;
}

void put(const fs::path& file, const std::string& text) { put(file, Bytes(text.begin(), text.end())); }

Bytes gzip(const Bytes& in) {
  z_stream zs{};
  if (deflateInit2(&zs, Z_BEST_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
    throw std::runtime_error("deflateInit2 failed");
  }
  Bytes out(deflateBound(&zs, static_cast<uLong>(in.size())) + 32);
  zs.next_in = const_cast<Bytef*>(in.data());
  zs.avail_in = static_cast<uInt>(in.size());
  zs.next_out = out.data();
  zs.avail_out = static_cast<uInt>(out.size());
  const int rc = deflate(&zs, Z_FINISH);
  deflateEnd(&zs);
  if (rc != Z_STREAM_END) throw std::runtime_error("deflate failed");
  out.resize(zs.total_out);
  return out;
}

void be32(Bytes& out, std::uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<unsigned char>(v >> shift));
}

Bytes idx_file(std::uint32_t magic, const std::vector<std::uint32_t>& dims, std::uint32_t seed) {
  Bytes out;
  be32(out, magic);
  std::size_t count = 1;
  for (const auto d : dims) {
    be32(out, d);
    count *= d;
  }
  for (std::size_t i = 0; i < count; ++i) {
    out.push_back(magic == 0x801 ? static_cast<unsigned char>((i * 7 + seed) % 3)
                                 : static_cast<unsigned char>((i * 37 + seed) & 0xff));
  }
  return out;
}

// fuzz_idx's layout: split = first two bytes (little-endian) modulo the rest.
Bytes idx_pair(const Bytes& images, const Bytes& labels) {
  Bytes out{static_cast<unsigned char>(images.size() & 0xff), static_cast<unsigned char>(images.size() >> 8)};
  out.insert(out.end(), images.begin(), images.end());
  out.insert(out.end(), labels.begin(), labels.end());
  return out;
}

// fuzz_csv's option byte: label column = byte % 7 - 3, regression = bit 7.
std::string csv_option(int label_column, bool regression) {
  const int low = label_column + 3;  // 0..6
  return std::string(1, static_cast<char>(low | (regression ? 0x80 : 0)));
}

Bytes npy(const std::string& descr, bool fortran, const std::string& shape, const Bytes& data, int version = 1) {
  std::string dict = "{'descr': '" + descr + "', 'fortran_order': " + (fortran ? "True" : "False") +
                     ", 'shape': " + shape + ", }";
  const std::size_t prefix = version == 1 ? 10 : 12;
  while ((prefix + dict.size() + 1) % 64 != 0) dict += ' ';
  dict += '\n';
  Bytes out{0x93, 'N', 'U', 'M', 'P', 'Y', static_cast<unsigned char>(version), 0};
  const std::size_t len = dict.size();
  for (std::size_t i = 0; i < (version == 1 ? 2u : 4u); ++i) out.push_back(static_cast<unsigned char>(len >> (8 * i)));
  out.insert(out.end(), dict.begin(), dict.end());
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

template <class T>
Bytes le(const std::vector<T>& values) {
  Bytes out(values.size() * sizeof(T));
  std::memcpy(out.data(), values.data(), out.size());  // x86-64: little-endian
  return out;
}

void model_seeds(const fs::path& dir) {
  using namespace kortexdl;
  const OptimizerConfig optimizers[] = {OptimizerConfig::sgd(0.01f), OptimizerConfig::with_momentum(0.8f, true),
                                        OptimizerConfig::adam()};
  const std::vector<std::vector<std::size_t>> shapes = {{1, 1}, {3, 4, 2}, {2, 3, 3, 1}};
  const Activation hidden[] = {Activation::ReLU, Activation::Tanh, Activation::GELU};
  int index = 0;
  for (const auto& optimizer : optimizers) {
    for (std::size_t s = 0; s < shapes.size(); ++s) {
      const auto& sizes = shapes[s];
      NetworkConfig config;
      config.hidden_activation = hidden[s];
      config.output_activation = sizes.back() > 1 ? Activation::Softmax : Activation::Sigmoid;
      config.init = s == 2 ? WeightInit::XavierUniform : WeightInit::Auto;
      config.seed = 1 + static_cast<std::uint64_t>(index);
      config.optimizer = optimizer;
      Network net(sizes, config);
      const std::vector<float> x(4 * sizes.front(), 0.5f);
      const std::vector<float> t(4 * sizes.back(), 0.25f);
      net.train_batch(x, t, sizes.back() > 1 ? LossType::CrossEntropy : LossType::BinaryCrossEntropy, 0.1f, 4);
      for (const bool state : {false, true}) {
        const auto bytes = net.to_bytes(state);
        put(dir / (std::string(to_string(optimizer.kind)) + "_" + std::to_string(sizes.size()) + "sizes" +
                   (state ? "_state" : "") + ".kdl"),
            Bytes(bytes.begin(), bytes.end()));
      }
      ++index;
    }
  }
  // Linear and sigmoid hidden layers too.
  for (const auto act : {Activation::Linear, Activation::Sigmoid}) {
    NetworkConfig config;
    config.hidden_activation = act;
    config.seed = 99;
    const auto bytes = Network({2, 2, 2}, config).to_bytes(false);
    put(dir / ("hidden_" + std::string(to_string(act)) + ".kdl"), Bytes(bytes.begin(), bytes.end()));
  }
}

void idx_seeds(const fs::path& dir) {
  const Bytes images = idx_file(0x803, {3, 2, 2}, 1);
  const Bytes labels = idx_file(0x801, {3}, 0);
  put(dir / "plain", idx_pair(images, labels));
  put(dir / "gzip", idx_pair(gzip(images), gzip(labels)));
  put(dir / "mixed", idx_pair(gzip(images), labels));
  put(dir / "two_dims", idx_pair(idx_file(0x802, {2, 3}, 2), idx_file(0x801, {2}, 1)));
  put(dir / "four_dims", idx_pair(idx_file(0x804, {2, 2, 2, 2}, 3), idx_file(0x801, {2}, 2)));
  put(dir / "one_row", idx_pair(idx_file(0x803, {1, 1, 1}, 4), idx_file(0x801, {1}, 0)));
}

void csv_seeds(const fs::path& dir) {
  put(dir / "header_last_label", csv_option(-1, false) + "a,b,label\n1,2,0\n3.5,-4e-1,2\n");
  put(dir / "no_header_first_label", csv_option(0, false) + "1,0.5,0.25\n0,1e3,-2\n2,3,4\n");
  put(dir / "regression", csv_option(-1, true) + "x,y\n1,0.5\n2,-1.25\n");
  put(dir / "crlf_spaces", csv_option(2, false) + " 1 , 2 , 1.0 \r\n\r\n3,4,2e0\r\n");
  put(dir / "bom_blank_lines", csv_option(-3, false) + "\xEF\xBB\xBF" "1,2,3\n\n0,5,6\n\n");
  put(dir / "middle_label", csv_option(1, false) + "f0,l,f1\n0.1,1,0.2\n0.3,0,0.4\n");
  put(dir / "regression_first", csv_option(0, true) + "-1.5,2,3\n2.5,4,5\n");
}

void npy_seeds(const fs::path& dir) {
  const auto f4 = kortexdl::datasets::detail::encode_npy({0, 1, 2, 3, 4, 5}, {2, 3});
  put(dir / "f4.npy", Bytes(f4.begin(), f4.end()));
  put(dir / "f8_fortran.npy", npy("<f8", true, "(2, 3, 2)", le(std::vector<double>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11})));
  put(dir / "i8.npy", npy("<i8", false, "(3,)", le(std::vector<std::int64_t>{-7, 0, std::int64_t{1} << 40})));
  put(dir / "i4.npy", npy("<i4", false, "(4,)", le(std::vector<std::int32_t>{0, 1, -2, 3})));
  put(dir / "u1.npy", npy("|u1", false, "(3, 2)", Bytes{0, 1, 2, 3, 254, 255}));
  put(dir / "scalar.npy", npy("<f4", false, "()", le(std::vector<float>{3.0f})));
  put(dir / "empty.npy", npy("<f4", false, "(2, 0)", Bytes{}));
  put(dir / "v2.npy", npy("<f4", false, "(3,)", le(std::vector<float>{1, 2, 3}), 2));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s OUTDIR\n", argv[0]);
    return 2;
  }
  try {
    const fs::path root = argv[1];
    for (const char* sub : {"model_file", "idx", "csv", "npy"}) {
      fs::remove_all(root / sub);
      fs::create_directories(root / sub);
    }
    model_seeds(root / "model_file");
    idx_seeds(root / "idx");
    csv_seeds(root / "csv");
    npy_seeds(root / "npy");
    std::printf("wrote %d seeds to %s/{model_file,idx,csv,npy}\n", written, root.c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "make_fuzz_seeds: %s\n", e.what());
    return 1;
  }
  return 0;
}
