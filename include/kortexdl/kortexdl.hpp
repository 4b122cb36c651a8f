#pragma once
// Umbrella header: everything a C++ user of KortexDL needs.
#include "kortexdl/activation.hpp"
#include "kortexdl/error.hpp"
#include "kortexdl/evaluation.hpp"
#include "kortexdl/init.hpp"
#include "kortexdl/loss.hpp"
#include "kortexdl/network.hpp"
#include "kortexdl/network_config.hpp"
#include "kortexdl/optimizer.hpp"
#include "kortexdl/targets.hpp"
#include "kortexdl/threading.hpp"
#include "kortexdl/version.hpp"
