#include "runtime/logging.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <mutex>
#include <sstream>
#include <vector>

namespace flashserve {
namespace {

struct LogState {
  std::mutex mutex;
  FILE* file = stderr;
  bool owns_file = false;
};

LogState& state() {
  static LogState s;
  return s;
}

std::atomic<int>& level_ref() {
  static std::atomic<int> level{[] {
    const char* env = std::getenv("FLASHSERVE_LOGLEVEL");
    return env ? std::atoi(env) : 0;
  }()};
  return level;
}

bool open_destination(const std::string& dest) {
  LogState& s = state();
  FILE* f = nullptr;
  bool owns = false;
  if (dest.empty() || dest == "stderr") {
    f = stderr;
  } else if (dest == "stdout") {
    f = stdout;
  } else {
    f = std::fopen(dest.c_str(), "a");
    owns = true;
    if (!f) return false;
  }
  if (s.owns_file) std::fclose(s.file);
  s.file = f;
  s.owns_file = owns;
  return true;
}

void ensure_destination() {
  static std::once_flag once;
  std::call_once(once, [] {
    const char* env = std::getenv("FLASHSERVE_LOGDEST");
    if (env && !open_destination(env)) {
      std::fprintf(stderr, "[flashserve] cannot open FLASHSERVE_LOGDEST=%s; logging to stderr\n",
                   env);
    }
  });
}

void write_line(const std::string& text) {
  ensure_destination();
  LogState& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  std::fputs(text.c_str(), s.file);
  std::fflush(s.file);  // a crash right after must still leave the record
}

float element_to_float(const unsigned char* p, DType dtype) {
  switch (dtype) {
    case DType::kFloat32: {
      float v;
      std::memcpy(&v, p, 4);
      return v;
    }
    case DType::kFloat16: {
      __half_raw r;
      std::memcpy(&r.x, p, 2);
      return __half2float(__half(r));
    }
    case DType::kBFloat16: {
      __nv_bfloat16_raw r;
      std::memcpy(&r.x, p, 2);
      return __bfloat162float(__nv_bfloat16(r));
    }
    case DType::kFloat8E4M3: {
      __nv_fp8_e4m3 v;
      std::memcpy(&v.__x, p, 1);
      return static_cast<float>(v);
    }
    case DType::kFloat8E5M2: {
      __nv_fp8_e5m2 v;
      std::memcpy(&v.__x, p, 1);
      return static_cast<float>(v);
    }
    case DType::kInt32: {
      int32_t v;
      std::memcpy(&v, p, 4);
      return static_cast<float>(v);
    }
    case DType::kInt64: {
      int64_t v;
      std::memcpy(&v, p, 8);
      return static_cast<float>(v);
    }
    case DType::kUInt8:
      return static_cast<float>(*p);
  }
  return 0.f;
}

bool capturing(cudaStream_t stream) {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  if (cudaStreamIsCapturing(stream, &status) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return status != cudaStreamCaptureStatusNone;
}

std::string format_arg(const LogArg& a, int level, cudaStream_t stream, bool stats) {
  std::ostringstream os;
  os << "  " << a.name << ": ";
  switch (a.kind) {
    case LogArg::Kind::kTensor:
      os << a.tensor.describe();
      if (a.tensor.defined()) os << " @" << a.tensor.data;
      if (stats && level >= 5 && a.tensor.defined())
        os << "\n    " << tensor_stats(a.tensor, stream);
      break;
    case LogArg::Kind::kFloat:
      os << a.number;
      break;
    case LogArg::Kind::kInt:
      os << a.integer;
      break;
    case LogArg::Kind::kText:
      os << a.text;
      break;
  }
  os << "\n";
  return os.str();
}

}  // namespace

int log_level() {
  return level_ref().load(std::memory_order_relaxed);
}

void set_log_level(int level) {
  level_ref().store(level, std::memory_order_relaxed);
}

bool set_log_destination(const std::string& destination) {
  ensure_destination();
  std::lock_guard<std::mutex> lock(state().mutex);
  return open_destination(destination);
}

std::string tensor_stats(const TensorView& t, cudaStream_t stream) {
  if (capturing(stream)) return "stats: skipped (stream is being captured into a graph)";
  if (!t.well_formed()) return "stats: skipped (malformed view)";
  const int64_t span = t.nbytes_spanned();
  constexpr int64_t kMaxStatsBytes = int64_t{1} << 32;
  if (span > kMaxStatsBytes) return "stats: skipped (view spans more than 4 GiB)";
  std::vector<unsigned char> host(static_cast<size_t>(span));
  if (span > 0) {
    cudaError_t err = cudaStreamSynchronize(stream);
    if (err == cudaSuccess) err = cudaMemcpy(host.data(), t.data, span, cudaMemcpyDeviceToHost);
    if (err != cudaSuccess) {
      cudaGetLastError();
      return std::string("stats: unavailable (") + cudaGetErrorString(err) + ")";
    }
  }
  const int esize = dtype_size(t.dtype);
  int64_t n = t.numel(), nan = 0, inf = 0, finite = 0;
  double sum = 0, lo = std::numeric_limits<double>::infinity(), hi = -lo;
  std::vector<int64_t> idx(t.ndim, 0);
  for (int64_t i = 0; i < n; ++i) {
    int64_t off = 0;
    for (int d = 0; d < t.ndim; ++d)
      off += idx[d] * t.strides[d];
    const float v = element_to_float(host.data() + off * esize, t.dtype);
    if (std::isnan(v)) {
      ++nan;
    } else if (std::isinf(v)) {
      ++inf;
    } else {
      ++finite;
      sum += v;
      lo = v < lo ? v : lo;
      hi = v > hi ? v : hi;
    }
    for (int d = t.ndim - 1; d >= 0; --d) {
      if (++idx[d] < t.shape[d]) break;
      idx[d] = 0;
    }
  }
  std::ostringstream os;
  os << "stats: numel " << n << " min " << (finite ? lo : 0) << " max " << (finite ? hi : 0)
     << " mean " << (finite ? sum / finite : 0) << " nan " << nan << " inf " << inf;
  return os.str();
}

void log_call(const char* op, cudaStream_t stream, std::initializer_list<LogArg> args) {
  const int level = log_level();
  if (level < 1) return;
  std::string text = std::string("[flashserve] ") + op + "\n";
  if (level >= 3) {
    for (const LogArg& a : args)
      text += format_arg(a, level, stream, true);
  }
  write_line(text);
}

void log_outputs(const char* op, cudaStream_t stream, std::initializer_list<LogArg> outputs) {
  if (log_level() < 5) return;
  std::string text = std::string("[flashserve] ") + op + " outputs\n";
  for (const LogArg& a : outputs)
    text += format_arg(a, 5, stream, true);
  write_line(text);
}

void log_line(int min_level, const std::string& text) {
  if (log_level() >= min_level) write_line(text);
}

Status log_error(const char* op, const Status& status) {
  if (log_level() >= 1 && !status.ok()) {
    write_line(std::string("[flashserve] ") + op + " -> " + status.to_string() + "\n");
  }
  return status;
}

}  // namespace flashserve
