// Model files (docs/model-format.md): bit-exact round trips, atomic saves,
// and a reader that turns every malformed input into a precise FormatError
// (never a crash, never an allocation the file could not back).
#include <gtest/gtest.h>
#include <dirent.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <typeinfo>
#include <vector>

#include "../test_support.hpp"
#include "io/model_file.hpp"
#include "kortexdl/kortexdl.hpp"

namespace {

namespace fs = std::filesystem;
namespace mf = kortexdl::detail::model_file;
using Bytes = std::vector<std::uint8_t>;
using kortexdl::Activation;
using kortexdl::FormatError;
using kortexdl::IoError;
using kortexdl::LossType;
using kortexdl::Network;
using kortexdl::NetworkConfig;
using kortexdl::OptimizerConfig;
using kortexdl::OptimizerKind;
using kortexdl::WeightInit;
using kortex_test::BitwiseEqual;
using kortex_test::bits_of;
using kortex_test::normal_floats;

// ---- helpers -------------------------------------------------------------------

class TempDir {
 public:
  TempDir() {
    const char* base = std::getenv("TMPDIR");
    std::string templ = std::string(base != nullptr && *base != '\0' ? base : "/tmp") + "/kortexdl-io-XXXXXX";
    if (::mkdtemp(templ.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = templ;
  }
  ~TempDir() {
    std::error_code ignored;
    fs::permissions(path_, fs::perms::owner_all, fs::perm_options::add, ignored);
    fs::remove_all(path_, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  const fs::path& path() const { return path_; }
  // Names of everything in the directory, sorted.
  std::vector<std::string> entries() const {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(path_)) out.push_back(e.path().filename().string());
    std::sort(out.begin(), out.end());
    return out;
  }

 private:
  fs::path path_;
};

Bytes read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return Bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

void write_file(const std::string& path, const Bytes& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

std::uint32_t get_u32(const Bytes& b, std::size_t at) {
  std::uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= static_cast<std::uint32_t>(b.at(at + i)) << (8 * i);
  return v;
}
std::uint64_t get_u64(const Bytes& b, std::size_t at) {
  std::uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= static_cast<std::uint64_t>(b.at(at + i)) << (8 * i);
  return v;
}
void put_u32(Bytes& b, std::size_t at, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) b.at(at + i) = static_cast<std::uint8_t>(v >> (8 * i));
}
void put_u64(Bytes& b, std::size_t at, std::uint64_t v) {
  for (int i = 0; i < 8; ++i) b.at(at + i) = static_cast<std::uint8_t>(v >> (8 * i));
}
void put_f32(Bytes& b, std::size_t at, float v) { put_u32(b, at, bits_of(v)); }

// Recomputes the trailing checksum, as a deliberate forger would, so the
// checks behind the checksum are exercised.
void reseal(Bytes& b) {
  put_u32(b, b.size() - 4, mf::checksum(std::span<const std::uint8_t>(b.data(), b.size() - 4)));
}

// Where the sections of a well-formed file start.
struct Offsets {
  std::size_t sizes_count = mf::kSizesCountOffset;
  std::size_t sizes = mf::kSizesOffset;
  std::size_t config = 0;  // hidden activation code
  std::size_t parameter_count = 0;
  std::size_t parameters = 0;
  std::size_t optimizer_flag = 0;
  std::size_t step = 0;          // if the flag is 1
  std::size_t buffer_count = 0;  // if the flag is 1
  std::size_t buffers = 0;       // if the flag is 1
  std::size_t checksum = 0;
};

Offsets offsets_of(const Bytes& b) {
  Offsets o;
  const std::size_t n = get_u64(b, mf::kSizesCountOffset);
  o.config = mf::kSizesOffset + 8 * n;
  o.parameter_count = o.config + mf::kConfigBytes;
  o.parameters = o.parameter_count + 8;
  o.optimizer_flag = o.parameters + 4 * get_u64(b, o.parameter_count);
  o.step = o.optimizer_flag + 4;
  o.buffer_count = o.step + 8;
  o.buffers = o.buffer_count + 8;
  o.checksum = b.size() - 4;
  return o;
}
// Configuration fields, relative to Offsets::config.
constexpr std::size_t kHidden = 0, kOutput = 4, kInit = 8, kSeedFlag = 12, kSeed = 16, kKind = 24, kMomentum = 28,
                      kNesterov = 32, kBeta1 = 36, kBeta2 = 40, kEpsilon = 44, kWeightDecay = 48;

std::vector<float> batch_inputs(std::size_t rows, std::size_t width, std::uint32_t seed) {
  return normal_floats(rows * width, seed);
}

NetworkConfig config_for(OptimizerKind kind, std::uint64_t seed = 7) {
  NetworkConfig config;
  config.hidden_activation = Activation::Tanh;
  config.output_activation = Activation::Linear;
  config.init = WeightInit::XavierUniform;
  config.seed = seed;
  switch (kind) {
    case OptimizerKind::SGD:
      config.optimizer = OptimizerConfig::sgd(0.01f);
      break;
    case OptimizerKind::Momentum:
      config.optimizer = OptimizerConfig::with_momentum(0.8f, true, 0.001f);
      break;
    case OptimizerKind::Adam:
      config.optimizer = OptimizerConfig::adam(0.85f, 0.995f, 1e-7f, 0.002f);
      break;
  }
  return config;
}

// A small network trained for `steps` MSE steps, so the optimizer state is not zero.
Network trained(OptimizerKind kind, std::size_t steps = 3, std::vector<std::size_t> sizes = {5, 7, 3}) {
  Network net(sizes, config_for(kind));
  const std::size_t rows = 8;
  const auto x = batch_inputs(rows, sizes.front(), 11);
  const auto t = normal_floats(rows * sizes.back(), 12);
  for (std::size_t i = 0; i < steps; ++i) net.train_batch(x, t, LossType::MSE, 0.05f, rows);
  return net;
}

std::string expect_format_error(const std::function<void()>& call, const std::string& fragment) {
  try {
    call();
  } catch (const FormatError& e) {
    EXPECT_EQ(typeid(e), typeid(FormatError));
    const std::string message = e.what();
    EXPECT_NE(message.find(fragment), std::string::npos) << "message: " << message << "\nexpected: " << fragment;
    return message;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected FormatError containing '" << fragment << "', got " << typeid(e).name() << ": "
                  << e.what();
    return {};
  }
  ADD_FAILURE() << "expected FormatError containing '" << fragment << "', nothing was thrown";
  return {};
}

std::string expect_bytes_rejected(const Bytes& bytes, const std::string& fragment) {
  return expect_format_error([&] { (void)Network::from_bytes(bytes); }, fragment);
}

void expect_same_config(const NetworkConfig& a, const NetworkConfig& b) {
  EXPECT_EQ(a.hidden_activation, b.hidden_activation);
  EXPECT_EQ(a.output_activation, b.output_activation);
  EXPECT_EQ(a.init, b.init);
  EXPECT_EQ(a.seed, b.seed);
  EXPECT_EQ(a.optimizer.kind, b.optimizer.kind);
  EXPECT_EQ(bits_of(a.optimizer.momentum), bits_of(b.optimizer.momentum));
  EXPECT_EQ(a.optimizer.nesterov, b.optimizer.nesterov);
  EXPECT_EQ(bits_of(a.optimizer.beta1), bits_of(b.optimizer.beta1));
  EXPECT_EQ(bits_of(a.optimizer.beta2), bits_of(b.optimizer.beta2));
  EXPECT_EQ(bits_of(a.optimizer.epsilon), bits_of(b.optimizer.epsilon));
  EXPECT_EQ(bits_of(a.optimizer.weight_decay), bits_of(b.optimizer.weight_decay));
}

void expect_same_model(const Network& original, const Network& loaded, bool with_state) {
  EXPECT_EQ(original.sizes(), loaded.sizes());
  EXPECT_EQ(original.parameter_count(), loaded.parameter_count());
  EXPECT_EQ(original.seed(), loaded.seed());
  expect_same_config(original.config(), loaded.config());
  EXPECT_TRUE(BitwiseEqual(original.parameters(), loaded.parameters()));
  const auto a = original.optimizer_state();
  const auto b = loaded.optimizer_state();
  ASSERT_EQ(a.buffers.size(), b.buffers.size());
  if (with_state) {
    EXPECT_EQ(a.step, b.step);
    for (std::size_t i = 0; i < a.buffers.size(); ++i) EXPECT_TRUE(BitwiseEqual(a.buffers[i], b.buffers[i]));
  } else {
    EXPECT_EQ(b.step, 0u);
    for (const auto& buffer : b.buffers) {
      EXPECT_TRUE(BitwiseEqual(buffer, std::vector<float>(loaded.parameter_count(), 0.0f)));
    }
  }
  EXPECT_FALSE(loaded.thread_safety_enabled());
}

// One more training step on both networks gives the same loss and parameters.
void expect_training_continues_identically(Network& a, Network& b) {
  const std::size_t rows = 6;
  const auto x = batch_inputs(rows, a.input_size(), 21);
  const auto t = normal_floats(rows * a.output_size(), 22);
  for (int i = 0; i < 2; ++i) {
    const float la = a.train_batch(x, t, LossType::MSE, 0.03f, rows);
    const float lb = b.train_batch(x, t, LossType::MSE, 0.03f, rows);
    EXPECT_EQ(bits_of(la), bits_of(lb));
  }
  EXPECT_TRUE(BitwiseEqual(a.parameters(), b.parameters()));
  EXPECT_EQ(a.optimizer_state().step, b.optimizer_state().step);
  const auto sa = a.optimizer_state();
  const auto sb = b.optimizer_state();
  for (std::size_t i = 0; i < sa.buffers.size(); ++i) EXPECT_TRUE(BitwiseEqual(sa.buffers[i], sb.buffers[i]));
  const auto y = batch_inputs(3, a.input_size(), 23);
  EXPECT_TRUE(BitwiseEqual(a.forward(y, 3), b.forward(y, 3)));
}

std::string kind_name(OptimizerKind kind) { return std::string(kortexdl::to_string(kind)); }

// ---- round trips ---------------------------------------------------------------

class RoundTrip : public ::testing::TestWithParam<std::tuple<OptimizerKind, bool>> {};

TEST_P(RoundTrip, BytesAreBitExactAndTrainingContinuesIdentically) {
  const auto [kind, with_state] = GetParam();
  Network original = trained(kind);
  const Bytes bytes = original.to_bytes(with_state);
  Network loaded = Network::from_bytes(bytes);
  expect_same_model(original, loaded, with_state);
  if (with_state) {
    EXPECT_EQ(loaded.to_bytes(true), bytes) << "re-encoding a loaded model gives the same bytes";
  } else {
    original.reset_optimizer();  // what the loaded network starts from
  }
  expect_training_continues_identically(original, loaded);
}

TEST_P(RoundTrip, FilesAreBitExactAndTrainingContinuesIdentically) {
  const auto [kind, with_state] = GetParam();
  TempDir dir;
  const std::string path = dir.file("model.kdl");
  Network original = trained(kind);
  original.save(path, with_state);
  EXPECT_EQ(read_file(path), original.to_bytes(with_state)) << "save writes exactly to_bytes()";
  Network loaded = Network::load(path);
  expect_same_model(original, loaded, with_state);
  if (!with_state) original.reset_optimizer();
  expect_training_continues_identically(original, loaded);
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"model.kdl"}) << "no temporary file is left behind";
}

INSTANTIATE_TEST_SUITE_P(AllOptimizers, RoundTrip,
                         ::testing::Combine(::testing::Values(OptimizerKind::SGD, OptimizerKind::Momentum,
                                                              OptimizerKind::Adam),
                                            ::testing::Bool()),
                         [](const auto& info) {
                           return kind_name(std::get<0>(info.param)) +
                                  (std::get<1>(info.param) ? "_WithState" : "_WithoutState");
                         });

TEST(ModelFile, EveryActivationInitAndSeedModeRoundTrips) {
  const Activation hiddens[] = {Activation::ReLU, Activation::Tanh, Activation::Sigmoid, Activation::GELU,
                                Activation::Linear};
  const Activation outputs[] = {Activation::ReLU,   Activation::Tanh,   Activation::Sigmoid,
                                Activation::GELU,   Activation::Linear, Activation::Softmax};
  for (const Activation hidden : hiddens) {
    for (const Activation output : outputs) {
      for (const WeightInit init : {WeightInit::Auto, WeightInit::HeNormal, WeightInit::XavierUniform}) {
        for (const bool explicit_seed : {false, true}) {
          NetworkConfig config;
          config.hidden_activation = hidden;
          config.output_activation = output;
          config.init = init;
          if (explicit_seed) config.seed = 0xfedcba9876543210ull;
          config.optimizer = OptimizerConfig::with_momentum(0.5f, false, 0.0f);
          const Network a({3, 4, 4, 2}, config);
          const Network b = Network::from_bytes(a.to_bytes());
          SCOPED_TRACE(std::string(kortexdl::to_string(hidden)) + "/" + std::string(kortexdl::to_string(output)) +
                       "/" + std::string(kortexdl::to_string(init)) + (explicit_seed ? "/seed" : "/random seed"));
          expect_same_model(a, b, true);
        }
      }
    }
  }
}

TEST(ModelFile, LargeStepCountAndUnusualValuesRoundTrip) {
  Network a = trained(OptimizerKind::Adam, 2, {1, 1});
  auto state = a.optimizer_state();
  state.step = std::numeric_limits<std::uint64_t>::max() - 1;
  state.buffers[1][0] = std::numeric_limits<float>::denorm_min();
  a.set_optimizer_state(state);
  a.set_parameters(std::vector<float>{-0.0f, std::numeric_limits<float>::max()});
  const Network b = Network::from_bytes(a.to_bytes());
  expect_same_model(a, b, true);
  EXPECT_EQ(bits_of(b.parameters()[0]), bits_of(-0.0f));
}

// The layout of docs/model-format.md, pinned by a hand-assembled file whose
// checksum was computed independently (Python's zlib.crc32).
TEST(ModelFile, MatchesTheDocumentedExampleByteForByte) {
  const Bytes expected = {
      0x4b, 0x4f, 0x52, 0x54, 0x45, 0x58, 0x44, 0x4c, 0x01, 0x00, 0x00, 0x00, 0x64, 0x00, 0x00, 0x00,  //
      0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  //
      0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  //
      0x01, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00,  //
      0x2a, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x66, 0x66, 0x66, 0x3f,  //
      0x00, 0x00, 0x00, 0x00, 0x66, 0x66, 0x66, 0x3f, 0x77, 0xbe, 0x7f, 0x3f, 0x77, 0xcc, 0x2b, 0x32,  //
      0x00, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x3f,  //
      0x00, 0x00, 0x80, 0xbe, 0x00, 0x00, 0x80, 0x3f, 0x00, 0x00, 0x00, 0x00, 0x18, 0xe4, 0xb9, 0xf9,
  };
  NetworkConfig config;
  config.hidden_activation = Activation::ReLU;
  config.output_activation = Activation::Sigmoid;
  config.init = WeightInit::XavierUniform;
  config.seed = 42;
  config.optimizer = OptimizerConfig::sgd();
  Network net({2, 1}, config);
  net.set_parameters(std::vector<float>{0.5f, -0.25f, 1.0f});
  EXPECT_EQ(net.to_bytes(false), expected);
  EXPECT_EQ(mf::checksum(std::span<const std::uint8_t>(expected.data(), expected.size() - 4)), 0xf9b9e418u);

  const Network loaded = Network::from_bytes(expected);
  EXPECT_EQ(loaded.sizes(), (std::vector<std::size_t>{2, 1}));
  EXPECT_EQ(loaded.config().output_activation, Activation::Sigmoid);
  EXPECT_EQ(loaded.seed(), 42u);
  EXPECT_TRUE(BitwiseEqual(loaded.parameters(), {0.5f, -0.25f, 1.0f}));
}

TEST(ModelFile, EnumCodesAreStableAndNotTheEnumeratorOrder) {
  auto code_of = [](Activation hidden, Activation output, WeightInit init, OptimizerConfig opt) {
    NetworkConfig config;
    config.hidden_activation = hidden;
    config.output_activation = output;
    config.init = init;
    config.seed = 1;
    config.optimizer = opt;
    const Bytes b = Network({1, 1}, config).to_bytes(false);
    const std::size_t c = offsets_of(b).config;
    return std::array<std::uint32_t, 4>{get_u32(b, c + kHidden), get_u32(b, c + kOutput), get_u32(b, c + kInit),
                                        get_u32(b, c + kKind)};
  };
  using A = std::array<std::uint32_t, 4>;
  EXPECT_EQ(code_of(Activation::ReLU, Activation::Softmax, WeightInit::Auto, OptimizerConfig::sgd()), (A{1, 6, 1, 1}));
  EXPECT_EQ(code_of(Activation::Tanh, Activation::Linear, WeightInit::HeNormal, OptimizerConfig::with_momentum()),
            (A{2, 5, 2, 2}));
  EXPECT_EQ(code_of(Activation::Sigmoid, Activation::GELU, WeightInit::XavierUniform, OptimizerConfig::adam()),
            (A{3, 4, 3, 3}));
  EXPECT_EQ(code_of(Activation::GELU, Activation::Sigmoid, WeightInit::Auto, OptimizerConfig::adam()),
            (A{4, 3, 1, 3}));
}

// ---- saving --------------------------------------------------------------------

TEST(ModelFileSave, ReplacesAnExistingFileAndKeepsItsMode) {
  TempDir dir;
  const std::string path = dir.file("model.kdl");
  write_file(path, Bytes{'o', 'l', 'd'});
  ASSERT_EQ(::chmod(path.c_str(), 0640), 0);
  const Network net = trained(OptimizerKind::Momentum);
  net.save(path);
  EXPECT_EQ(read_file(path), net.to_bytes());
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0640u);
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"model.kdl"});
}

TEST(ModelFileSave, NewFileGetsTheUmaskMode) {
  TempDir dir;
  const std::string path = dir.file("fresh.kdl");
  const mode_t mask = ::umask(022);
  ::umask(mask);
  trained(OptimizerKind::SGD).save(path);
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0666u & ~mask);
}

TEST(ModelFileSave, RelativePathInTheWorkingDirectory) {
  TempDir dir;
  const fs::path previous = fs::current_path();
  fs::current_path(dir.path());
  const Network net = trained(OptimizerKind::SGD);
  EXPECT_NO_THROW(net.save("plain.kdl"));
  fs::current_path(previous);
  EXPECT_EQ(read_file(dir.file("plain.kdl")), net.to_bytes());
}

void expect_io_error(const std::function<void()>& call, const std::vector<std::string>& fragments) {
  try {
    call();
    ADD_FAILURE() << "expected IoError, nothing was thrown";
  } catch (const IoError& e) {
    EXPECT_EQ(typeid(e), typeid(IoError));
    for (const auto& f : fragments) EXPECT_NE(std::string(e.what()).find(f), std::string::npos) << e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected IoError, got " << typeid(e).name() << ": " << e.what();
  }
}

TEST(ModelFileSave, MissingDirectoryIsAnIoError) {
  TempDir dir;
  const std::string path = dir.file("no/such/dir/model.kdl");
  expect_io_error([&] { trained(OptimizerKind::SGD).save(path); }, {path, std::strerror(ENOENT)});
  EXPECT_TRUE(dir.entries().empty());
}

TEST(ModelFileSave, TargetThatIsADirectoryIsAnIoErrorAndLeavesNoTemporaryFile) {
  TempDir dir;
  const std::string path = dir.file("taken");
  fs::create_directory(path);
  write_file(dir.file("taken/inside"), Bytes{1, 2, 3});
  expect_io_error([&] { trained(OptimizerKind::Adam).save(path); }, {path, "rename"});
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"taken"}) << "the temporary file was removed";
  EXPECT_EQ(read_file(dir.file("taken/inside")), (Bytes{1, 2, 3}));
  expect_io_error([&] { trained(OptimizerKind::Adam).save(dir.path().string() + "/"); }, {});
}

TEST(ModelFileSave, ReadOnlyDirectoryKeepsTheExistingFile) {
  TempDir dir;
  const std::string path = dir.file("model.kdl");
  const Network old_net = trained(OptimizerKind::SGD, 1);
  old_net.save(path);
  const Bytes before = read_file(path);
  ASSERT_EQ(::chmod(dir.path().c_str(), 0555), 0);
  if (::access(dir.path().c_str(), W_OK) == 0) {
    ::chmod(dir.path().c_str(), 0755);
    GTEST_SKIP() << "running with privileges that ignore directory permissions (root); "
                    "InterruptedSaveKeepsTheExistingFile covers the failure path";
  }
  expect_io_error([&] { trained(OptimizerKind::SGD, 2).save(path); }, {path, std::strerror(EACCES)});
  ::chmod(dir.path().c_str(), 0755);
  EXPECT_EQ(read_file(path), before);
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"model.kdl"});
}

// Runs `child` in a forked process and returns its exit status (child must
// _exit itself; returning means failure).
int run_in_child(const std::function<void()>& child) {
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  if (pid == 0) {
    child();
    ::_exit(99);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return status;
}

// A write that fails part-way (here: the file-size limit, as a full disk
// would) leaves the old model in place and no temporary file behind.
TEST(ModelFileSave, InterruptedSaveKeepsTheExistingFile) {
  TempDir dir;
  const std::string path = dir.file("model.kdl");
  const Network small = trained(OptimizerKind::SGD, 1);
  small.save(path);
  const Bytes before = read_file(path);
  const Network big({256, 512, 256}, config_for(OptimizerKind::Adam));  // ~2.4 MB with state
  const int status = run_in_child([&] {
    ::signal(SIGXFSZ, SIG_IGN);
    const rlim_t limit = 1 << 20;
    struct rlimit rl {limit, limit};
    if (::setrlimit(RLIMIT_FSIZE, &rl) != 0) ::_exit(2);
    try {
      big.save(path);
      std::fprintf(stderr, "save did not fail\n");
      ::_exit(3);
    } catch (const IoError& e) {
      const std::string message = e.what();
      if (message.find(path) == std::string::npos || message.find(std::strerror(EFBIG)) == std::string::npos) {
        std::fprintf(stderr, "unexpected message: %s\n", e.what());
        ::_exit(4);
      }
    } catch (...) {
      ::_exit(5);
    }
    ::_exit(0);
  });
  ASSERT_TRUE(WIFEXITED(status)) << status;
  EXPECT_EQ(WEXITSTATUS(status), 0);
  EXPECT_EQ(read_file(path), before) << "the old model is intact";
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"model.kdl"}) << "no temporary file is left behind";
  EXPECT_NO_THROW((void)Network::load(path));
}

// A process killed at an arbitrary moment of a save never leaves a partial
// model at the target path: it holds the old model or the new one, whole.
TEST(ModelFileSave, KilledSaveNeverLeavesAPartialModel) {
  TempDir dir;
  const std::string path = dir.file("model.kdl");
  const Network a({300, 400, 100}, config_for(OptimizerKind::Adam, 1));
  const Network b({300, 400, 100}, config_for(OptimizerKind::Adam, 2));
  a.save(path);
  const Bytes bytes_a = read_file(path);
  const Bytes bytes_b = b.to_bytes();
  std::mt19937 rng(5);
  int saw_b = 0;
  for (int round = 0; round < 8; ++round) {
    const pid_t pid = ::fork();
    if (pid == 0) {
      for (int i = 0;; ++i) (i % 2 == 0 ? b : a).save(path);
    }
    std::this_thread::sleep_for(std::chrono::microseconds(2000 + rng() % 30000));
    ::kill(pid, SIGKILL);
    int status = 0;
    ::waitpid(pid, &status, 0);
    const Bytes now = read_file(path);
    EXPECT_TRUE(now == bytes_a || now == bytes_b) << "round " << round << ": " << now.size() << " bytes";
    saw_b += now == bytes_b ? 1 : 0;
    EXPECT_NO_THROW((void)Network::load(path));
    for (const auto& name : dir.entries()) {  // a killed save may leave its temporary file; never the target
      if (name != "model.kdl") {
        EXPECT_EQ(name.rfind(".model.kdl.tmp-", 0), 0u) << name;
        fs::remove(dir.file(name));
      }
    }
  }
  RecordProperty("rounds_ending_with_b", saw_b);
}

TEST(ModelFileSave, WhileFourThreadsRunForward) {
  TempDir dir;
  Network net = trained(OptimizerKind::Adam, 2, {32, 64, 10});
  net.enable_thread_safety(true);
  const auto x = batch_inputs(16, 32, 3);
  const auto expected = net.forward(x, 16);
  std::atomic<bool> stop{false};
  std::atomic<int> mismatches{0};
  std::atomic<long> calls{0};
  std::vector<std::thread> readers;
  for (int t = 0; t < 4; ++t) {
    readers.emplace_back([&] {
      while (!stop.load()) {
        if (bits_of(net.forward(x, 16)) != bits_of(expected)) mismatches.fetch_add(1);
        calls.fetch_add(1);
      }
    });
  }
  for (int i = 0; i < 25; ++i) {
    const std::string path = dir.file("snap" + std::to_string(i % 3) + ".kdl");
    net.save(path);
    const Network loaded = Network::load(path);
    EXPECT_TRUE(BitwiseEqual(loaded.parameters(), net.parameters()));
  }
  stop.store(true);
  for (auto& t : readers) t.join();
  EXPECT_EQ(mismatches.load(), 0);
  EXPECT_GT(calls.load(), 0);
  EXPECT_EQ(dir.entries(), (std::vector<std::string>{"snap0.kdl", "snap1.kdl", "snap2.kdl"}));
}

// With a trainer running too, every file is one consistent snapshot: its
// parameters are exactly those after `step` updates.
TEST(ModelFileSave, SnapshotIsConsistentWhileTraining) {
  Network net = trained(OptimizerKind::Adam, 0, {16, 32, 4});
  net.enable_thread_safety(true);
  std::map<std::uint64_t, std::vector<float>> history;
  history[0] = net.parameters();
  std::mutex history_mutex;
  net.set_update_observer([&](std::span<const float> p, std::uint64_t version) {
    std::lock_guard<std::mutex> lock(history_mutex);
    history[version] = std::vector<float>(p.begin(), p.end());
  });
  const auto x = batch_inputs(8, 16, 4);
  const auto t = normal_floats(8 * 4, 5);
  std::atomic<bool> stop{false};
  std::thread trainer([&] {
    while (!stop.load()) net.train_batch(x, t, LossType::MSE, 0.001f, 8);
  });
  std::vector<std::thread> readers;
  for (int r = 0; r < 4; ++r) {
    readers.emplace_back([&] {
      while (!stop.load()) (void)net.forward(x, 8);
    });
  }
  // Snapshot until the trainer has moved on through many steps (or 60 s:
  // under the sanitizers, on a loaded machine, steps come slowly).
  std::vector<Bytes> snapshots;
  std::set<std::uint64_t> steps_seen;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (steps_seen.size() < 30 && std::chrono::steady_clock::now() < deadline) {
    snapshots.push_back(net.to_bytes());
    const bool new_step = steps_seen.insert(Network::from_bytes(snapshots.back()).optimizer_state().step).second;
    if (!new_step && snapshots.size() > 1000) snapshots.pop_back();  // bounded if the trainer crawls
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  stop.store(true);
  trainer.join();
  for (auto& r : readers) r.join();
  for (const Bytes& s : snapshots) {
    const Network loaded = Network::from_bytes(s);
    const std::uint64_t step = loaded.optimizer_state().step;
    std::lock_guard<std::mutex> lock(history_mutex);
    ASSERT_TRUE(history.count(step)) << step;
    EXPECT_TRUE(BitwiseEqual(loaded.parameters(), history[step])) << "step " << step;
  }
  EXPECT_GE(steps_seen.size(), 30u) << "the snapshots should catch the trainer at many different steps";
}

// ---- loading: operating-system errors ----------------------------------------

TEST(ModelFileLoad, MissingFileIsAnIoError) {
  TempDir dir;
  const std::string path = dir.file("absent.kdl");
  expect_io_error([&] { (void)Network::load(path); }, {path, std::strerror(ENOENT)});
}

TEST(ModelFileLoad, DirectoryIsAnIoError) {
  TempDir dir;
  expect_io_error([&] { (void)Network::load(dir.path().string()); }, {dir.path().string(), std::strerror(EISDIR)});
}

TEST(ModelFileLoad, FifoIsRejectedWithoutBlocking) {
  TempDir dir;
  const std::string path = dir.file("pipe");
  ASSERT_EQ(::mkfifo(path.c_str(), 0600), 0);
  expect_io_error([&] { (void)Network::load(path); }, {path, "not a regular file"});
}

// ---- loading: malformed input ----------------------------------------------------

// A small model with every section present (Adam: two buffers).
Bytes small_model(OptimizerKind kind = OptimizerKind::Adam, bool with_state = true) {
  return trained(kind, 2, {3, 4, 2}).to_bytes(with_state);
}

struct Malformed {
  const char* name;
  std::function<Bytes()> make;
  const char* fragment;
};

Bytes patched(std::function<void(Bytes&, const Offsets&)> edit, bool seal, OptimizerKind kind = OptimizerKind::Adam) {
  Bytes b = small_model(kind);
  const Offsets o = offsets_of(b);
  edit(b, o);
  if (seal) reseal(b);
  return b;
}

std::vector<Malformed> malformed_cases() {
  constexpr std::uint64_t k2p40 = std::uint64_t{1} << 40;
  constexpr std::uint64_t k2p63 = std::uint64_t{1} << 63;
  auto cut = [](std::size_t Offsets::*field, std::size_t extra) {
    return [field, extra] {
      Bytes b = small_model();
      b.resize(offsets_of(b).*field + extra);
      return b;
    };
  };
  auto set64 = [](std::size_t Offsets::*field, std::uint64_t v, bool seal) {
    return [=] { return patched([=](Bytes& b, const Offsets& o) { put_u64(b, o.*field, v); }, seal); };
  };
  auto set_config32 = [](std::size_t at, std::uint32_t v, OptimizerKind kind = OptimizerKind::Adam) {
    return [=] { return patched([=](Bytes& b, const Offsets& o) { put_u32(b, o.config + at, v); }, true, kind); };
  };
  auto set_config_f32 = [](std::size_t at, float v, OptimizerKind kind) {
    return [=] { return patched([=](Bytes& b, const Offsets& o) { put_f32(b, o.config + at, v); }, true, kind); };
  };
  return {
      // Not a model file at all.
      {"empty", [] { return Bytes{}; }, "empty (0 bytes); not a KortexDL model file"},
      {"png", [] { return Bytes{0x89, 'P', 'N', 'G', 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 13, 'I', 'H', 'D', 'R'}; },
       "not a KortexDL model file: expected the magic bytes \"KORTEXDL\" (4b 4f 52 54 45 58 44 4c), found 89 50 4e 47"},
      {"text", [] { const std::string s = "hello, this is a text file\n"; return Bytes(s.begin(), s.end()); },
       "not a KortexDL model file"},
      {"short text", [] { return Bytes{'h', 'i', '\n'}; }, "not a KortexDL model file"},
      {"wrong magic", [] { return patched([](Bytes& b, const Offsets&) { b[7] = 'M'; }, true); },
       "not a KortexDL model file"},
      // Versions.
      {"newer version", [] { return patched([](Bytes& b, const Offsets&) { put_u32(b, 8, 2); }, true); },
       "format version 2 is newer than this build of KortexDL reads (it supports format version 1)"},
      {"version 2^32-1", [] { return patched([](Bytes& b, const Offsets&) { put_u32(b, 8, 0xffffffffu); }, false); },
       "format version 4294967295 is newer"},
      {"version 0", [] { return patched([](Bytes& b, const Offsets&) { put_u32(b, 8, 0); }, true); },
       "format version 0 is not valid (this build supports format version 1)"},
      // Truncated at each section boundary.
      {"cut in header", cut(&Offsets::sizes_count, 0), "truncated in header: need 20 bytes, 12 remain"},
      {"cut in sizes", cut(&Offsets::sizes, 8), "truncated in sizes (sizes count 3): need 24 bytes, 8 remain"},
      {"cut before configuration", cut(&Offsets::config, 0), "truncated in configuration: need 52 bytes, 0 remain"},
      {"cut before parameter count", cut(&Offsets::parameter_count, 0), "truncated in parameter count: need 8 bytes"},
      {"cut in parameters", cut(&Offsets::parameters, 12),
       "truncated in parameters (parameter count 26): need 104 bytes, 12 remain"},
      {"cut before optimizer state", cut(&Offsets::optimizer_flag, 0), "truncated in optimizer state: need 4 bytes"},
      {"cut in optimizer state", cut(&Offsets::step, 4), "truncated in optimizer state: need 16 bytes, 4 remain"},
      {"cut in optimizer buffers", cut(&Offsets::buffers, 100),
       "truncated in optimizer buffers (floats 52): need 208 bytes, 100 remain"},
      {"cut before checksum", cut(&Offsets::checksum, 0), "truncated in checksum: need 4 bytes, 0 remain"},
      {"cut in checksum", cut(&Offsets::checksum, 3), "truncated in checksum: need 4 bytes, 3 remain"},
      {"trailing byte", [] { Bytes b = small_model(); b.push_back(0); return b; },
       "1 unexpected bytes after the checksum"},
      // Length fields.
      {"header length", [] { return patched([](Bytes& b, const Offsets&) { put_u32(b, 12, 99); }, true); },
       "header length: 3 sizes make a header of 108 bytes, the field says 99"},
      {"file length", [] { return patched([](Bytes& b, const Offsets&) { put_u64(b, 16, 5); }, true); },
       "file length: the field says 5 bytes, the file has"},
      {"file length 2^63", [] { return patched([](Bytes& b, const Offsets&) { put_u64(b, 16, k2p63); }, true); },
       "file length: the field says 9223372036854775808 bytes"},
      // Sizes.
      {"sizes count 0", set64(&Offsets::sizes_count, 0, true), "sizes count: need at least 2"},
      {"sizes count 1", set64(&Offsets::sizes_count, 1, true), "sizes count: need at least 2 (the input size and the output size), got 1"},
      {"sizes count 1000", set64(&Offsets::sizes_count, 1000, true),
       "truncated in sizes (sizes count 1000): need 8000 bytes"},
      {"sizes count 2^31", set64(&Offsets::sizes_count, std::uint64_t{1} << 31, true),
       "truncated in sizes (sizes count 2147483648): need 17179869184 bytes"},
      {"sizes count 2^40", set64(&Offsets::sizes_count, k2p40, true),
       "sizes count: 1099511627776 exceeds the largest possible (2147483649"},
      {"sizes count 2^63", set64(&Offsets::sizes_count, k2p63, true),
       "sizes count: 9223372036854775808 exceeds the largest possible"},
      {"sizes count 2^64-1", set64(&Offsets::sizes_count, ~std::uint64_t{0}, true),
       "sizes count: 18446744073709551615 exceeds"},
      {"zero size", [] { return patched([](Bytes& b, const Offsets& o) { put_u64(b, o.sizes + 8, 0); }, true); },
       "sizes[1]: every layer needs at least 1 unit, got 0"},
      {"size 2^40", [] { return patched([](Bytes& b, const Offsets& o) { put_u64(b, o.sizes + 8, k2p40); }, true); },
       "sizes 3-1099511627776-2 imply more than the library's limit of 4294967296 parameters"},
      {"size 2^63", [] { return patched([](Bytes& b, const Offsets& o) { put_u64(b, o.sizes, k2p63); }, true); },
       "sizes 9223372036854775808-4-2 imply more than the library's limit"},
      {"size 2^64-1 (product wraps)",
       [] { return patched([](Bytes& b, const Offsets& o) { put_u64(b, o.sizes + 8, ~std::uint64_t{0}); }, true); },
       "imply more than the library's limit"},
      {"parameter count mismatch",
       [] { return patched([](Bytes& b, const Offsets& o) { put_u64(b, o.sizes + 16, 3); }, true); },
       "parameter count: sizes 3-4-3 imply 31 parameters, the file says 26"},
      {"parameter count 2^31", set64(&Offsets::parameter_count, std::uint64_t{1} << 31, true),
       "truncated in parameters (parameter count 2147483648): need 8589934592 bytes"},
      {"parameter count 2^32", set64(&Offsets::parameter_count, std::uint64_t{1} << 32, true),
       "truncated in parameters (parameter count 4294967296): need 17179869184 bytes"},
      {"parameter count 2^40", set64(&Offsets::parameter_count, k2p40, true),
       "parameter count: 1099511627776 exceeds the library's limit of 4294967296"},
      {"parameter count 2^63", set64(&Offsets::parameter_count, k2p63, false),
       "parameter count: 9223372036854775808 exceeds the library's limit"},
      // Parameter values.
      {"nan parameter",
       [] { return patched([](Bytes& b, const Offsets& o) { put_f32(b, o.parameters + 12, NAN); }, true); },
       "parameters[3] is nan; a model file holds only finite values"},
      {"inf parameter",
       [] { return patched([](Bytes& b, const Offsets& o) { put_f32(b, o.parameters + 100, -INFINITY); }, true); },
       "parameters[25] is inf"},
      {"nan optimizer moment",
       [] { return patched([](Bytes& b, const Offsets& o) { put_f32(b, o.buffers + 104 + 8, NAN); }, true); },
       "optimizer buffer 1[2] is nan"},
      // Configuration values.
      {"hidden activation 0", set_config32(kHidden, 0), "hidden activation: unknown code 0 (expected 1 to 6)"},
      {"hidden activation 7", set_config32(kHidden, 7), "hidden activation: unknown code 7"},
      {"hidden softmax", set_config32(kHidden, 6), "hidden activation: softmax is only valid for the output layer"},
      {"output activation 99", set_config32(kOutput, 99), "output activation: unknown code 99"},
      {"init 0", set_config32(kInit, 0), "weight init: unknown code 0 (expected 1 to 3)"},
      {"init 4", set_config32(kInit, 4), "weight init: unknown code 4"},
      {"seed flag 2", set_config32(kSeedFlag, 2), "seed flag: expected 0 or 1, got 2"},
      {"optimizer 0", set_config32(kKind, 0), "optimizer: unknown code 0 (expected 1 to 3)"},
      {"optimizer 2^32-1", set_config32(kKind, 0xffffffffu), "optimizer: unknown code 4294967295"},
      {"nesterov flag 3", set_config32(kNesterov, 3), "nesterov flag: expected 0 or 1, got 3"},
      {"beta1 1.5", set_config_f32(kBeta1, 1.5f, OptimizerKind::Adam), "optimizer configuration: beta1: must be in"},
      {"epsilon 0", set_config_f32(kEpsilon, 0.0f, OptimizerKind::Adam), "optimizer configuration: epsilon"},
      {"nan momentum", set_config_f32(kMomentum, NAN, OptimizerKind::Momentum), "optimizer configuration: momentum"},
      {"negative weight decay", set_config_f32(kWeightDecay, -1.0f, OptimizerKind::SGD),
       "optimizer configuration: weight_decay"},
      // Optimizer state layout.
      {"optimizer flag 2",
       [] { return patched([](Bytes& b, const Offsets& o) { put_u32(b, o.optimizer_flag, 2); }, true); },
       "optimizer state flag: expected 0 or 1, got 2"},
      {"buffer count 3", set64(&Offsets::buffer_count, 3, true), "optimizer buffer count: at most 2, got 3"},
      {"buffer count 2^63", set64(&Offsets::buffer_count, k2p63, false), "optimizer buffer count: at most 2, got 9223372036854775808"},
      {"buffer count for another optimizer",  // a Momentum file (1 buffer) relabelled Adam (2)
       set_config32(kKind, 3, OptimizerKind::Momentum), "optimizer buffer count: adam keeps 2, the file has 1"},
      {"optimizer flag 0 with state behind it",
       [] { return patched([](Bytes& b, const Offsets& o) { put_u32(b, o.optimizer_flag, 0); }, true); },
       "unexpected bytes after the checksum"},
      // Corruption.
      {"checksum mismatch (data)",
       [] { return patched([](Bytes& b, const Offsets& o) { b[o.parameters + 5] ^= 0x10; }, false); },
       "checksum mismatch: the file stores 0x"},
      {"checksum mismatch (stored value)",
       [] { return patched([](Bytes& b, const Offsets& o) { b[o.checksum] ^= 0x01; }, false); },
       "(the file is corrupted)"},
      {"checksum mismatch (enum)", [] { return patched([](Bytes& b, const Offsets& o) { b[o.config] = 1; }, false); },
       "checksum mismatch"},
  };
}

TEST(ModelFileMalformed, TableOfInputsGivesPreciseFormatErrors) {
  for (const Malformed& c : malformed_cases()) {
    SCOPED_TRACE(c.name);
    const Bytes bytes = c.make();
    const std::string message = expect_bytes_rejected(bytes, c.fragment);
    EXPECT_EQ(message.rfind("model bytes: ", 0), 0u) << message;
  }
}

TEST(ModelFileMalformed, FilesNameThePathInTheMessage) {
  TempDir dir;
  for (const Malformed& c : malformed_cases()) {
    SCOPED_TRACE(c.name);
    const std::string path = dir.file("bad.kdl");
    write_file(path, c.make());
    const std::string message = expect_format_error([&] { (void)Network::load(path); }, c.fragment);
    EXPECT_EQ(message.rfind("model file '" + path + "': ", 0), 0u) << message;
  }
}

// The same hostile inputs, under an address-space limit a few hundred MB
// above what the process already uses: a reader that trusted any count would
// get bad_alloc instead of FormatError. (Not under ASan, which reserves
// terabytes of shadow memory.)
TEST(ModelFileMalformed, NoAllocationBeyondWhatTheFileHolds) {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  GTEST_SKIP() << "address-space limits do not work under sanitizers (they reserve shadow memory)";
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
  GTEST_SKIP() << "address-space limits do not work under sanitizers (they reserve shadow memory)";
#endif
#endif
  std::vector<Bytes> inputs;
  for (const Malformed& c : malformed_cases()) inputs.push_back(c.make());
  const int status = run_in_child([&] {
    std::ifstream statm("/proc/self/statm");
    std::size_t pages = 0;
    statm >> pages;
    const rlim_t limit = static_cast<rlim_t>(pages) * static_cast<rlim_t>(::sysconf(_SC_PAGESIZE)) + (256u << 20);
    struct rlimit rl {limit, limit};
    if (::setrlimit(RLIMIT_AS, &rl) != 0) ::_exit(2);
    for (std::size_t i = 0; i < inputs.size(); ++i) {
      try {
        (void)Network::from_bytes(inputs[i]);
        std::fprintf(stderr, "case %zu was accepted\n", i);
        ::_exit(3);
      } catch (const FormatError&) {
      } catch (const std::exception& e) {
        std::fprintf(stderr, "case %zu: %s: %s\n", i, typeid(e).name(), e.what());
        ::_exit(4);
      }
    }
    ::_exit(0);
  });
  ASSERT_TRUE(WIFEXITED(status)) << status;
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

TEST(ModelFileMalformed, EveryPrefixIsATruncationError) {
  for (const OptimizerKind kind : {OptimizerKind::SGD, OptimizerKind::Momentum, OptimizerKind::Adam}) {
    for (const bool with_state : {false, true}) {
      const Bytes full = small_model(kind, with_state);
      ASSERT_NO_THROW((void)Network::from_bytes(full));
      for (std::size_t n = 0; n < full.size(); ++n) {
        SCOPED_TRACE(kind_name(kind) + (with_state ? " with state" : "") + ": prefix of " + std::to_string(n) +
                     " of " + std::to_string(full.size()) + " bytes");
        const Bytes prefix(full.begin(), full.begin() + static_cast<std::ptrdiff_t>(n));
        expect_bytes_rejected(prefix, n == 0 ? "empty" : "truncated in ");
      }
    }
  }
}

TEST(ModelFileMalformed, EveryPrefixOfAFileIsATruncationError) {
  TempDir dir;
  const std::string path = dir.file("cut.kdl");
  const Bytes full = small_model(OptimizerKind::Momentum);
  for (std::size_t n = 0; n < full.size(); ++n) {
    SCOPED_TRACE("prefix of " + std::to_string(n) + " bytes");
    write_file(path, Bytes(full.begin(), full.begin() + static_cast<std::ptrdiff_t>(n)));
    expect_format_error([&] { (void)Network::load(path); }, n == 0 ? "empty" : "truncated in ");
  }
}

TEST(ModelFileMalformed, EverySingleByteCorruptionIsDetected) {
  for (const bool with_state : {false, true}) {
    const Bytes good = small_model(OptimizerKind::Adam, with_state);
    std::size_t by_checksum = 0;
    for (std::size_t i = 0; i < good.size(); ++i) {
      for (const std::uint8_t mask : {0x01, 0x80, 0xff, 0x5a}) {
        Bytes bad = good;
        bad[i] ^= mask;
        SCOPED_TRACE("byte " + std::to_string(i) + " xor " + std::to_string(mask));
        const std::string message = expect_bytes_rejected(bad, "model bytes: ");
        by_checksum += message.find("checksum mismatch") != std::string::npos ? 1 : 0;
      }
    }
    EXPECT_GT(by_checksum, good.size()) << "most corruptions are reported as such";
  }
}

// Random corruption, with and without a re-computed checksum: the reader
// either rejects the input with FormatError or returns a valid network; it
// never throws anything else, crashes or hangs.
TEST(ModelFileMalformed, RandomMutationsNeverEscapeFormatError) {
  const Bytes good = small_model(OptimizerKind::Momentum);
  std::mt19937_64 rng(2024);
  std::size_t accepted = 0;
  for (int iteration = 0; iteration < 4000; ++iteration) {
    Bytes b = good;
    const int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits; ++e) {
      switch (rng() % 4) {
        case 0:
          b[rng() % b.size()] = static_cast<std::uint8_t>(rng());
          break;
        case 1: {  // a plausible-looking big number in a random 8-byte field
          if (b.size() < 8) break;
          const std::size_t at = (rng() % (b.size() / 4)) * 4;
          if (at + 8 <= b.size()) put_u64(b, at, std::uint64_t{1} << (rng() % 64));
          break;
        }
        case 2:
          b.resize(rng() % (b.size() + 1));
          break;
        default:
          b.insert(b.begin() + static_cast<std::ptrdiff_t>(rng() % (b.size() + 1)), static_cast<std::uint8_t>(rng()));
          break;
      }
      if (b.empty()) break;
    }
    if (b.size() >= 4 && rng() % 2 == 0) reseal(b);
    try {
      const Network n = Network::from_bytes(b);
      ++accepted;
      EXPECT_TRUE(kortex_test::all_finite(n.parameters()));
    } catch (const FormatError&) {
    } catch (const std::exception& e) {
      ADD_FAILURE() << "iteration " << iteration << ": " << typeid(e).name() << ": " << e.what();
    }
  }
  RecordProperty("accepted", static_cast<int>(accepted));
}

// Regression inputs from fuzzing (fuzz/fuzz_model_file.cpp, see
// fuzz/README.md) go in this table: each must be rejected with a
// FormatError. The fuzz runs so far found nothing; the entry below is a
// boundary case written by hand.
TEST(ModelFileMalformed, FuzzRegressions) {
  const std::vector<Bytes> inputs = {
      // Only the magic.
      Bytes{'K', 'O', 'R', 'T', 'E', 'X', 'D', 'L'},
  };
  for (const Bytes& b : inputs) expect_bytes_rejected(b, "model bytes: ");
}

}  // namespace
