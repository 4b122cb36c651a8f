#include <gtest/gtest.h>

#include "kortexdl/kortexdl.hpp"

TEST(NetworkBasics, Constructs) {
  kortexdl::NetworkConfig config;
  config.seed = 1;
  kortexdl::Network net({4, 3, 2}, config);
  EXPECT_EQ(net.parameter_count(), 4u * 3 + 3 + 3 * 2 + 2);
}
