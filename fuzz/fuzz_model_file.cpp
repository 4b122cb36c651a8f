// libFuzzer target for the model-file reader (Network::from_bytes).
// Build and run: see fuzz/README.md.
//
// Invariants checked on every input:
//  * from_bytes either returns a network or throws kortexdl::FormatError;
//    any other exception, a crash, a sanitizer report or a huge allocation
//    (-malloc_limit_mb) is a finding;
//  * an accepted input is canonical: re-encoding the network gives back
//    exactly the input bytes (so every field was read and nothing ignored).
//
// A checksum in front of everything would stop a byte-mutating fuzzer at
// pass 2, so the custom mutator below often repairs the file-length field and
// the trailing CRC-32 after mutating: the value checks behind the checksum
// get fuzzed too.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <span>
#include <vector>

#include "io/model_file.hpp"
#include "kortexdl/error.hpp"
#include "kortexdl/network.hpp"

extern "C" std::size_t LLVMFuzzerMutate(std::uint8_t* data, std::size_t size, std::size_t max_size);

extern "C" std::size_t LLVMFuzzerCustomMutator(std::uint8_t* data, std::size_t size, std::size_t max_size,
                                               unsigned int seed) {
  size = LLVMFuzzerMutate(data, size, max_size);
  namespace mf = kortexdl::detail::model_file;
  if ((seed & 3) != 0 && size >= mf::kSizesCountOffset + 4) {
    if ((seed & 4) != 0) {  // the file-length field
      for (int i = 0; i < 8; ++i) data[mf::kFileBytesOffset + i] = static_cast<std::uint8_t>(size >> (8 * i));
    }
    const std::uint32_t crc = mf::checksum(std::span<const std::uint8_t>(data, size - 4));
    for (int i = 0; i < 4; ++i) data[size - 4 + i] = static_cast<std::uint8_t>(crc >> (8 * i));
  }
  return size;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::uint8_t> bytes(data, size);
  try {
    const kortexdl::Network net = kortexdl::Network::from_bytes(bytes);
    // Accepted: one of the two encodings must reproduce the input exactly.
    const std::vector<std::uint8_t> with_state = net.to_bytes(true);
    const std::vector<std::uint8_t> without_state = net.to_bytes(false);
    const bool same = (with_state.size() == size && std::memcmp(with_state.data(), data, size) == 0) ||
                      (without_state.size() == size && std::memcmp(without_state.data(), data, size) == 0);
    if (!same) {
      std::fprintf(stderr, "accepted input (%zu bytes) does not re-encode to itself\n", size);
      std::abort();
    }
  } catch (const kortexdl::FormatError&) {
    // The expected outcome for malformed input.
  } catch (const std::exception& e) {
    std::fprintf(stderr, "from_bytes threw something other than FormatError: %s\n", e.what());
    std::abort();
  }
  return 0;
}
