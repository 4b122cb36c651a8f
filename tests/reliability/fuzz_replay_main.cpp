// Replays inputs through a libFuzzer target's LLVMFuzzerTestOneInput without
// libFuzzer, so the fuzz targets' invariants run in every build (GCC, ASan)
// as regression tests: the seed corpus (make_fuzz_seeds) and every input a
// fuzzer ever crashed on (tests/reliability/fuzz_regressions/<target>/).
//
//   fuzz_replay_<target> PATH...   each PATH a file or a directory of inputs;
//                                  a missing directory counts as empty
//
// A failing input aborts (the targets trap on a broken invariant, and any
// exception other than FormatError escapes), so the test fails naming it.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);

// fuzz_model_file's custom mutator calls libFuzzer's mutator; it is never
// called here, but the symbol must exist.
extern "C" std::size_t LLVMFuzzerMutate(std::uint8_t*, std::size_t size, std::size_t) { return size; }

int main(int argc, char** argv) {
  namespace fs = std::filesystem;
  std::vector<fs::path> files;
  for (int i = 1; i < argc; ++i) {
    const fs::path p = argv[i];
    if (fs::is_directory(p)) {
      std::vector<fs::path> here;
      for (const auto& e : fs::directory_iterator(p)) {
        if (e.is_regular_file() && e.path().filename().string()[0] != '.') here.push_back(e.path());
      }
      std::sort(here.begin(), here.end());
      files.insert(files.end(), here.begin(), here.end());
    } else if (fs::is_regular_file(p)) {
      files.push_back(p);
    } else {
      std::printf("(no inputs at %s)\n", p.c_str());
    }
  }
  for (const auto& f : files) {
    std::ifstream in(f, std::ios::binary);
    const std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::printf("%s (%zu bytes)\n", f.c_str(), bytes.size());
    std::fflush(stdout);
    LLVMFuzzerTestOneInput(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size());
  }
  std::printf("replayed %zu inputs: all passed\n", files.size());
  return files.empty() ? 1 : 0;
}
