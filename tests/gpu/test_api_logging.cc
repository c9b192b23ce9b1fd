// API logging on the device: level 5 writes tensor statistics with NaN/Inf counts, the argument
// record is written before the launch, and statistics are skipped while a graph is captured.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <sstream>

#include "flashserve/logging.h"
#include "flashserve/norm.h"
#include "gpu_test.h"
#include "runtime/logging.h"

namespace fs_test {
namespace {

class ApiLoggingTest : public GpuTest {
 protected:
  void SetUp() override {
    GpuTest::SetUp();
    if (IsSkipped()) return;
    path_ = ::testing::TempDir() + "flashserve_gpu_log_" + std::to_string(next_seed()) + ".txt";
    ASSERT_TRUE(flashserve::set_log_destination(path_));
  }
  void TearDown() override {
    flashserve::set_log_level(0);
    flashserve::set_log_destination("stderr");
    std::remove(path_.c_str());
  }
  std::string log() const {
    std::ifstream f(path_);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
  }
  std::string path_;
};

TEST_F(ApiLoggingTest, LevelFiveCountsNanAndInf) {
  const int64_t rows = 4, hidden = 64;
  DeviceTensor x(DType::kFloat32, {rows, hidden}), y(DType::kFloat32, {rows, hidden}),
      w(DType::kFloat32, {hidden});
  std::vector<float> xv = random_normal(rows * hidden, next_seed());
  xv[5] = std::numeric_limits<float>::quiet_NaN();
  xv[70] = std::numeric_limits<float>::infinity();
  xv[71] = -std::numeric_limits<float>::infinity();
  x.upload(xv);
  w.upload(random_normal(hidden, next_seed()));
  y.poison();
  flashserve::set_log_level(5);
  ASSERT_TRUE(flashserve::rmsnorm(y.view(), x.view(), w.view()).ok());
  const std::string text = log();
  const size_t input = text.find("  input: float32[4, 64]");
  ASSERT_NE(input, std::string::npos) << text;
  EXPECT_NE(text.find("nan 1 inf 2", input), std::string::npos) << text;
  // Outputs after the launch: row 0 holds the NaN, row 1 the infinities -> both rows non-finite.
  const size_t outputs = text.find("rmsnorm outputs");
  ASSERT_NE(outputs, std::string::npos) << text;
  EXPECT_NE(text.find("numel 256", outputs), std::string::npos) << text;
  EXPECT_EQ(text.find("nan 0 inf 0", outputs), std::string::npos) << text;
}

TEST_F(ApiLoggingTest, StatisticsMatchTheData) {
  DeviceTensor t(DType::kBFloat16, {2, 3});
  t.upload({1.f, -2.f, 3.f, 4.f, 5.f, -6.f});
  const std::string s = flashserve::tensor_stats(t.view(), nullptr);
  EXPECT_NE(s.find("numel 6 min -6 max 5 mean 0.833333 nan 0 inf 0"), std::string::npos) << s;
}

TEST_F(ApiLoggingTest, StatisticsSkippedDuringGraphCapture) {
  const int64_t rows = 2, hidden = 128;
  DeviceTensor x(DType::kBFloat16, {rows, hidden}), w(DType::kBFloat16, {hidden});
  x.upload(random_normal(rows * hidden, next_seed()));
  w.upload(random_normal(hidden, next_seed()));
  cudaStream_t stream;
  ASSERT_EQ(cudaStreamCreate(&stream), cudaSuccess);
  flashserve::set_log_level(5);
  cudaGraph_t graph;
  ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), cudaSuccess);
  const flashserve::Status st = flashserve::rmsnorm(x.view(), x.view(), w.view(), {}, stream);
  ASSERT_EQ(cudaStreamEndCapture(stream, &graph), cudaSuccess);
  EXPECT_TRUE(st.ok()) << st.to_string();
  EXPECT_NE(log().find("skipped (stream is being captured"), std::string::npos) << log();
  cudaGraphExec_t exec;
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
  EXPECT_EQ(cudaGraphLaunch(exec, stream), cudaSuccess);
  EXPECT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(stream);
}

}  // namespace
}  // namespace fs_test
