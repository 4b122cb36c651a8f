#pragma once
#include <string_view>

namespace kortexdl {

inline constexpr int kVersionMajor = 0;
inline constexpr int kVersionMinor = 1;
inline constexpr int kVersionPatch = 0;
inline constexpr std::string_view kVersion = "0.1.0";

// Name of the GEMM backend compiled in ("onednn" or "cblas").
std::string_view backend_name();

}  // namespace kortexdl
