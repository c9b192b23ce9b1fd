// Helpers for argument-validation tests that run without a GPU: fake device pointers (validation
// never dereferences them) and assertions on the Status an entry point returns.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <string>

#include "device_tensor.h"
#include "flashserve/core/status.h"

namespace fs_test {

using flashserve::Status;
using flashserve::StatusCode;

// Distinct tensors live 16 MiB apart: far more than any view below spans.
inline constexpr uintptr_t kBase = 0x100000;
inline constexpr uintptr_t kGap = uintptr_t{1} << 24;

inline void* fake(int slot, int64_t byte_offset = 0) {
  return reinterpret_cast<void*>(kBase + static_cast<uintptr_t>(slot) * kGap +
                                 static_cast<uintptr_t>(byte_offset));
}

// kInvalidArgument whose message starts with "<op>: <arg>:" and contains `detail`.
inline ::testing::AssertionResult invalid(const Status& st, const std::string& op,
                                          const std::string& arg, const std::string& detail = "") {
  if (st.code() != StatusCode::kInvalidArgument) {
    return ::testing::AssertionFailure()
           << "expected invalid argument, got \"" << st.to_string() << "\"";
  }
  const std::string prefix = op + ": " + arg + ":";
  if (st.message().rfind(prefix, 0) != 0) {
    return ::testing::AssertionFailure()
           << "message \"" << st.message() << "\" does not start with \"" << prefix << "\"";
  }
  if (st.message().find(detail) == std::string::npos) {
    return ::testing::AssertionFailure()
           << "message \"" << st.message() << "\" does not contain \"" << detail << "\"";
  }
  return ::testing::AssertionSuccess() << st.message();
}

// A call that passed validation: without a GPU it must stop at the device check.
inline ::testing::AssertionResult accepted(const Status& st, const std::string& op) {
  if (st.code() == StatusCode::kInvalidArgument) {
    return ::testing::AssertionFailure() << "rejected: " << st.to_string();
  }
  if (st.code() != StatusCode::kNoDevice) {
    return ::testing::AssertionFailure()
           << "expected no device on this GPU-less machine, got " << st.to_string();
  }
  if (st.message().rfind(op + ": ", 0) != 0) {
    return ::testing::AssertionFailure() << "message does not name " << op << ": " << st.message();
  }
  return ::testing::AssertionSuccess();
}

// Accepted calls would launch a kernel on the fake pointers when a GPU is present.
#define SKIP_IF_GPU()                                                                    \
  do {                                                                                   \
    if (fs_test::gpu_available())                                                        \
      GTEST_SKIP() << "a device is present: a valid call on fake pointers would launch"; \
  } while (0)

}  // namespace fs_test
