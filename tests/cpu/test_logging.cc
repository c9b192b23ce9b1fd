// API logging: levels, what each level writes, ordering against the error line, destinations
// (set_log_destination and the FLASHSERVE_LOGDEST / FLASHSERVE_LOGLEVEL environment variables).
// The logged calls use fake device pointers and are invalid (negative eps), so they fail in
// validation on every machine and never touch memory.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include "device_tensor.h"
#include "flashserve/logging.h"
#include "flashserve/norm.h"
#include "runtime/logging.h"

using namespace flashserve;

namespace {

void* fake(int slot) {
  return reinterpret_cast<void*>(uintptr_t{0x100000} + static_cast<uintptr_t>(slot) * (1u << 24));
}

struct NormCall {
  TensorView out = TensorView::contiguous(fake(1), DType::kBFloat16, {4, 64});
  TensorView input = TensorView::contiguous(fake(0), DType::kBFloat16, {4, 64});
  TensorView residual = TensorView::contiguous(fake(3), DType::kBFloat16, {4, 64});
  TensorView weight = TensorView::contiguous(fake(2), DType::kBFloat16, {64});
  NormOptions options;
  NormCall() { options.eps = -0.5f; }  // invalid: fails validation everywhere
};

Status invalid_rmsnorm() {
  NormCall c;
  return rmsnorm(c.out, c.input, c.weight, c.options);
}

std::string read_file(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// Named after the test (not the process: a threadsafe death test's child re-runs the test body in a
// new process and must compute the same path).
std::string temp_path(const std::string& tag) {
  const ::testing::TestInfo* info = ::testing::UnitTest::GetInstance()->current_test_info();
  return ::testing::TempDir() + "flashserve_log_" + info->test_suite_name() + "_" + info->name() +
         "_" + tag + ".txt";
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

class Logging : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = temp_path("dest");
    std::remove(path_.c_str());
    ASSERT_TRUE(set_log_destination(path_));
  }
  void TearDown() override {
    set_log_level(0);
    EXPECT_TRUE(set_log_destination("stderr"));
    std::remove(path_.c_str());
  }
  std::string log() const { return read_file(path_); }
  std::string path_;
};

TEST_F(Logging, SetAndGetLevel) {
  for (int level : {0, 1, 3, 5}) {
    set_log_level(level);
    EXPECT_EQ(log_level(), level);
  }
}

TEST_F(Logging, LevelZeroWritesNothing) {
  set_log_level(0);
  const Status st = invalid_rmsnorm();
  ASSERT_EQ(st.code(), StatusCode::kInvalidArgument) << st.to_string();
  EXPECT_EQ(log(), "");
}

TEST_F(Logging, LevelOneWritesOpNameAndErrorOnly) {
  set_log_level(1);
  const Status st = invalid_rmsnorm();
  ASSERT_EQ(st.code(), StatusCode::kInvalidArgument);
  const std::string text = log();
  EXPECT_TRUE(contains(text, "[flashserve] rmsnorm\n")) << text;
  EXPECT_TRUE(contains(text, "[flashserve] rmsnorm -> " + st.to_string() + "\n")) << text;
  // Argument lines are indented; level 1 writes none.
  EXPECT_FALSE(contains(text, "\n  ")) << text;
  EXPECT_FALSE(contains(text, "input: bfloat16")) << text;
  EXPECT_FALSE(contains(text, "weight: bfloat16")) << text;
}

TEST_F(Logging, LevelThreeWritesArgumentsBeforeTheError) {
  set_log_level(3);
  const Status st = invalid_rmsnorm();
  ASSERT_EQ(st.code(), StatusCode::kInvalidArgument);
  const std::string text = log();
  const size_t header = text.find("[flashserve] rmsnorm\n");
  const size_t out = text.find("  out: bfloat16[4, 64] strides [64, 1] cuda:0 @");
  const size_t input = text.find("  input: bfloat16[4, 64] strides [64, 1] cuda:0 @");
  const size_t weight = text.find("  weight: bfloat16[64] strides [1] cuda:0 @");
  const size_t residual = text.find("  residual: undefined\n");
  const size_t bias = text.find("  bias: undefined\n");
  const size_t eps = text.find("  eps: -0.5\n");
  const size_t scale = text.find("  out_scale: undefined\n");
  const size_t error = text.find("[flashserve] rmsnorm -> invalid argument: rmsnorm: options.eps:");
  for (size_t pos : {header, out, input, weight, residual, bias, eps, scale, error})
    ASSERT_NE(pos, std::string::npos) << text;
  EXPECT_LT(header, out);
  for (size_t pos : {out, input, weight, residual, bias, eps, scale})
    EXPECT_LT(pos, error) << text;
  // The data pointer of the input is recorded.
  std::ostringstream ptr;
  ptr << "@" << fake(0) << "\n";
  EXPECT_TRUE(contains(text, ptr.str())) << text;
}

TEST_F(Logging, LevelThreeRecordsStridesAndResidual) {
  set_log_level(3);
  NormCall c;
  c.input = TensorView::strided(fake(0), DType::kFloat16, {2, 3, 64}, {1024, 128, 1});
  c.out = c.input;
  c.residual = TensorView::contiguous(fake(3), DType::kFloat16, {2, 3, 64});
  c.weight = TensorView::contiguous(fake(2), DType::kFloat16, {64});
  const Status st = fused_add_rmsnorm(c.out, c.input, c.residual, c.weight, c.options);
  ASSERT_EQ(st.code(), StatusCode::kInvalidArgument);
  const std::string text = log();
  EXPECT_TRUE(contains(text, "[flashserve] fused_add_rmsnorm\n")) << text;
  EXPECT_TRUE(contains(text, "  input: float16[2, 3, 64] strides [1024, 128, 1]")) << text;
  EXPECT_TRUE(contains(text, "  residual: float16[2, 3, 64] strides [192, 64, 1]")) << text;
  EXPECT_LT(text.find("  residual: float16"), text.find("fused_add_rmsnorm -> ")) << text;
}

TEST_F(Logging, LevelThreeArgumentsPrecedeTheNoDeviceError) {
  if (fs_test::gpu_available()) GTEST_SKIP() << "a device is present: the call would launch";
  set_log_level(3);
  NormCall c;
  c.options.eps = 1e-6f;  // valid: fails at the device check
  const Status st = rmsnorm(c.out, c.input, c.weight, c.options);
  ASSERT_EQ(st.code(), StatusCode::kNoDevice) << st.to_string();
  const std::string text = log();
  const size_t input = text.find("  input: bfloat16[4, 64] strides [64, 1]");
  const size_t error = text.find("[flashserve] rmsnorm -> no device: rmsnorm:");
  ASSERT_NE(input, std::string::npos) << text;
  ASSERT_NE(error, std::string::npos) << text;
  EXPECT_LT(input, error);
}

TEST_F(Logging, EachCallAppendsItsOwnRecord) {
  set_log_level(1);
  invalid_rmsnorm();
  NormCall c;
  layernorm(c.out, c.input, c.weight, TensorView{}, c.options);
  const std::string text = log();
  const size_t first = text.find("[flashserve] rmsnorm\n");
  const size_t second = text.find("[flashserve] layernorm\n");
  ASSERT_NE(first, std::string::npos) << text;
  ASSERT_NE(second, std::string::npos) << text;
  EXPECT_LT(first, second);
  EXPECT_TRUE(contains(text.substr(second), "[flashserve] layernorm -> invalid argument"));
}

TEST_F(Logging, LevelFiveWithoutDeviceReportsStatsUnavailable) {
  if (fs_test::gpu_available()) GTEST_SKIP() << "tensor statistics need real device memory";
  set_log_level(5);
  invalid_rmsnorm();
  const std::string text = log();
  EXPECT_TRUE(contains(text, "  input: bfloat16[4, 64]")) << text;
  EXPECT_TRUE(contains(text, "    stats: unavailable (")) << text;
}

TEST_F(Logging, LevelFiveInvalidShapeReturnsAStatus) {
  set_log_level(5);
  NormCall c;
  c.options.eps = 1e-6f;
  c.input.shape[0] = -1;  // nbytes_spanned() < 0
  Status st;
  EXPECT_NO_THROW(st = rmsnorm(c.out, c.input, c.weight, c.options));
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.to_string();
}

TEST_F(Logging, LevelThreeRankAboveMaxIsNotReadPastTheView) {
  set_log_level(3);
  NormCall c;
  c.input.ndim = TensorView::kMaxDims + 1;
  const Status st = rmsnorm(c.out, c.input, c.weight, c.options);
  ASSERT_EQ(st.code(), StatusCode::kInvalidArgument);
  const std::string text = log();
  // The malformed view is described without reading its arrays past kMaxDims.
  EXPECT_NE(text.find("  input: bfloat16 with invalid ndim 7"), std::string::npos) << text;
  EXPECT_EQ(text.find("  input: bfloat16["), std::string::npos) << text;
}

TEST_F(Logging, DestinationIsAppendedTo) {
  {
    std::ofstream f(path_, std::ios::app);
    f << "existing line\n";
  }
  set_log_level(1);
  invalid_rmsnorm();
  const std::string text = log();
  EXPECT_EQ(text.rfind("existing line\n", 0), 0u) << text;
  EXPECT_TRUE(contains(text, "[flashserve] rmsnorm\n")) << text;
}

TEST_F(Logging, SwitchingDestinationStopsWritingTheOldFile) {
  const std::string other = temp_path("other");
  std::remove(other.c_str());
  set_log_level(1);
  ASSERT_TRUE(set_log_destination(other));
  invalid_rmsnorm();
  EXPECT_EQ(log(), "");
  EXPECT_TRUE(contains(read_file(other), "[flashserve] rmsnorm\n"));
  std::remove(other.c_str());
}

TEST_F(Logging, StandardStreamNamesAccepted) {
  EXPECT_TRUE(set_log_destination("stdout"));
  EXPECT_TRUE(set_log_destination("stderr"));
  EXPECT_TRUE(set_log_destination(""));  // the default, stderr
  // After leaving the file, calls no longer write to it.
  set_log_level(1);
  testing::internal::CaptureStderr();
  invalid_rmsnorm();
  const std::string err = testing::internal::GetCapturedStderr();
  EXPECT_TRUE(contains(err, "[flashserve] rmsnorm\n")) << err;
  EXPECT_EQ(log(), "");
}

TEST_F(Logging, StdoutDestinationWritesToStdout) {
  ASSERT_TRUE(set_log_destination("stdout"));
  set_log_level(1);
  testing::internal::CaptureStdout();
  invalid_rmsnorm();
  const std::string out = testing::internal::GetCapturedStdout();
  EXPECT_TRUE(contains(out, "[flashserve] rmsnorm\n")) << out;
}

TEST_F(Logging, UnopenablePathReturnsFalseAndKeepsTheDestination) {
  EXPECT_FALSE(set_log_destination(::testing::TempDir() + "no_such_dir_flashserve/x/log.txt"));
  set_log_level(1);
  invalid_rmsnorm();
  EXPECT_TRUE(contains(log(), "[flashserve] rmsnorm\n"));
}

TEST(TensorStats, EmptyTensorNeedsNoCopy) {
  const TensorView t = TensorView::contiguous(fake(0), DType::kBFloat16, {0, 64});
  EXPECT_EQ(tensor_stats(t, nullptr), "stats: numel 0 min 0 max 0 mean 0 nan 0 inf 0");
}

TEST(TensorStats, WithoutDeviceIsUnavailable) {
  if (fs_test::gpu_available()) GTEST_SKIP() << "covered with real device memory on a GPU";
  const TensorView t = TensorView::contiguous(fake(0), DType::kFloat32, {2, 3});
  const std::string s = tensor_stats(t, nullptr);
  EXPECT_EQ(s.rfind("stats: unavailable (", 0), 0u) << s;
}

// ---- environment variables: read once per process, so each case runs in a fresh child ----------

class LoggingEnvDeathTest : public ::testing::Test {
 protected:
  // The environment of this process is restored afterwards: the library reads these variables
  // lazily, so a later first use in this process must still see what the caller set.
  void SetUp() override {
    GTEST_FLAG_SET(death_test_style, "threadsafe");
    save("FLASHSERVE_LOGDEST", &dest_);
    save("FLASHSERVE_LOGLEVEL", &level_);
  }
  void TearDown() override {
    restore("FLASHSERVE_LOGDEST", dest_);
    restore("FLASHSERVE_LOGLEVEL", level_);
  }

 private:
  struct Saved {
    bool set = false;
    std::string value;
  };
  static void save(const char* name, Saved* saved) {
    const char* v = std::getenv(name);
    saved->set = v != nullptr;
    saved->value = v ? v : "";
  }
  static void restore(const char* name, const Saved& saved) {
    if (saved.set) {
      setenv(name, saved.value.c_str(), 1);
    } else {
      unsetenv(name);
    }
  }
  Saved dest_, level_;
};

TEST_F(LoggingEnvDeathTest, FilePathAndLevel) {
  const std::string path = temp_path("env");
  std::remove(path.c_str());
  setenv("FLASHSERVE_LOGDEST", path.c_str(), 1);
  setenv("FLASHSERVE_LOGLEVEL", "3", 1);
  EXPECT_EXIT(
      {
        const int level = log_level();
        invalid_rmsnorm();
        std::exit(level == 3 ? 0 : 10 + level);
      },
      ::testing::ExitedWithCode(0), "");
  const std::string text = read_file(path);
  EXPECT_TRUE(contains(text, "[flashserve] rmsnorm\n")) << text;
  EXPECT_TRUE(contains(text, "  input: bfloat16[4, 64] strides [64, 1]")) << text;
  std::remove(path.c_str());
}

TEST_F(LoggingEnvDeathTest, Stderr) {
  setenv("FLASHSERVE_LOGDEST", "stderr", 1);
  setenv("FLASHSERVE_LOGLEVEL", "1", 1);
  EXPECT_EXIT(
      {
        invalid_rmsnorm();
        std::exit(0);
      },
      ::testing::ExitedWithCode(0), "\\[flashserve\\] rmsnorm -> invalid argument");
}

TEST_F(LoggingEnvDeathTest, Stdout) {
  const std::string path = temp_path("stdout");
  std::remove(path.c_str());
  setenv("FLASHSERVE_LOGDEST", "stdout", 1);
  setenv("FLASHSERVE_LOGLEVEL", "1", 1);
  EXPECT_EXIT(
      {
        if (!std::freopen(path.c_str(), "w", stdout)) std::exit(2);
        invalid_rmsnorm();
        std::fflush(stdout);
        std::exit(0);
      },
      ::testing::ExitedWithCode(0), "");
  const std::string text = read_file(path);
  EXPECT_TRUE(contains(text, "[flashserve] rmsnorm\n")) << text;
  std::remove(path.c_str());
}

TEST_F(LoggingEnvDeathTest, UnopenablePathFallsBackToStderr) {
  setenv("FLASHSERVE_LOGDEST", "/nonexistent_flashserve_dir/log.txt", 1);
  setenv("FLASHSERVE_LOGLEVEL", "1", 1);
  EXPECT_EXIT(
      {
        invalid_rmsnorm();
        std::exit(0);
      },
      ::testing::ExitedWithCode(0),
      "cannot open FLASHSERVE_LOGDEST=/nonexistent_flashserve_dir/log.txt; logging to "
      "stderr(.|\n)*\\[flashserve\\] rmsnorm");
}

TEST_F(LoggingEnvDeathTest, UnsetLevelIsOff) {
  const std::string path = temp_path("off");
  std::remove(path.c_str());
  setenv("FLASHSERVE_LOGDEST", path.c_str(), 1);
  unsetenv("FLASHSERVE_LOGLEVEL");
  EXPECT_EXIT(
      {
        const int level = log_level();
        invalid_rmsnorm();
        std::exit(level == 0 ? 0 : 10 + level);
      },
      ::testing::ExitedWithCode(0), "");
  EXPECT_EQ(read_file(path), "");
  std::remove(path.c_str());
}

}  // namespace
