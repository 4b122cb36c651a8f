#pragma once
// KortexDL model files, format version 1 (docs/model-format.md is the
// byte-by-byte specification; keep the two in step).
//
// Everything here is internal: the public entry points are Network::save,
// Network::load, Network::to_bytes and Network::from_bytes. The constants and
// the checksum are exposed so the tests and the fuzz target can build and
// re-seal hand-made files.
#include <cstddef>
#include <cstdint>
#include <span>

#include "checked_math.hpp"

namespace kortexdl::detail::model_file {

inline constexpr char kMagic[8] = {'K', 'O', 'R', 'T', 'E', 'X', 'D', 'L'};
inline constexpr std::uint32_t kFormatVersion = 1;

// Byte offsets of the fixed-position fields.
inline constexpr std::size_t kVersionOffset = 8;       // u32
inline constexpr std::size_t kHeaderBytesOffset = 12;  // u32
inline constexpr std::size_t kFileBytesOffset = 16;    // u64
inline constexpr std::size_t kSizesCountOffset = 24;   // u64
inline constexpr std::size_t kSizesOffset = 32;        // u64 x sizes count
// After the sizes: the configuration block, 52 bytes (see the format doc).
inline constexpr std::size_t kConfigBytes = 52;
// header_bytes = kSizesOffset + 8 * sizes count + kConfigBytes.
inline constexpr std::size_t header_bytes_for(std::size_t sizes_count) {
  return kSizesOffset + 8 * sizes_count + kConfigBytes;
}

// Stable codes of the enums in the file. They are NOT the C++ enumerators'
// values: reordering an enum must never change what a file means. Code 0 is
// never used, so a zero-filled region is rejected.
namespace code {
inline constexpr std::uint32_t kReLU = 1, kTanh = 2, kSigmoid = 3, kGELU = 4, kLinear = 5, kSoftmax = 6;
inline constexpr std::uint32_t kInitAuto = 1, kInitHeNormal = 2, kInitXavierUniform = 3;
inline constexpr std::uint32_t kSGD = 1, kMomentum = 2, kAdam = 3;
}  // namespace code

// Limits every count in a file is checked against before anything is
// allocated. Each layer has at least 2 parameters (a 1x1 weight and a bias),
// so no valid network has more than kMaxParameters / 2 + 1 sizes.
inline constexpr std::uint64_t kMaxSizesCount = kMaxParameters / 2 + 1;
inline constexpr std::uint64_t kMaxOptimizerBuffers = 2;  // Adam
inline constexpr std::uint64_t kMaxFileBytes =
    header_bytes_for(kMaxSizesCount) + 8 + 4 * kMaxParameters +  // parameter section
    20 + kMaxOptimizerBuffers * 4 * kMaxParameters +             // optimizer section
    4;                                                           // checksum

// CRC-32 (zlib's crc32, the ISO-HDLC / gzip polynomial) of `bytes`: the
// value stored in a file's last 4 bytes, over everything before them.
std::uint32_t checksum(std::span<const std::uint8_t> bytes);

}  // namespace kortexdl::detail::model_file
