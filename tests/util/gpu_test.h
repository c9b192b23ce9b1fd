// GpuTest: fixture for tests that need a CUDA device; skips with the reason when there is none.
#pragma once

#include <gtest/gtest.h>

#include "device_tensor.h"

namespace fs_test {

class GpuTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string reason;
    if (!gpu_available(&reason)) GTEST_SKIP() << "skipped: " << reason;
    seed_ = fresh_seed();
  }
  // A new seed for every call; printed with any failure through SCOPED_TRACE.
  uint64_t next_seed() { return seed_++; }
  uint64_t seed_ = 0;
};

}  // namespace fs_test
