// Internal API-logging helpers used by every public entry point:
//   if (log_level() > 0) log_call("rmsnorm", stream, {log_arg("input", input), log_arg("eps",
//   eps)});
//   ... launch ...
//   if (log_level() >= 5) log_outputs("rmsnorm", stream, {log_arg("out", out)});
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <initializer_list>
#include <string>

#include "flashserve/core/status.h"
#include "flashserve/logging.h"
#include "flashserve/tensor.h"

namespace flashserve {

struct LogArg {
  enum class Kind { kTensor, kFloat, kInt, kText };
  Kind kind = Kind::kText;
  const char* name = "";
  TensorView tensor;
  double number = 0;
  int64_t integer = 0;
  std::string text;
};

inline LogArg log_arg(const char* name, const TensorView& t) {
  LogArg a;
  a.kind = LogArg::Kind::kTensor;
  a.name = name;
  a.tensor = t;
  return a;
}
inline LogArg log_arg(const char* name, double v) {
  LogArg a;
  a.kind = LogArg::Kind::kFloat;
  a.name = name;
  a.number = v;
  return a;
}
inline LogArg log_arg(const char* name, float v) {
  return log_arg(name, static_cast<double>(v));
}
inline LogArg log_arg(const char* name, int64_t v) {
  LogArg a;
  a.kind = LogArg::Kind::kInt;
  a.name = name;
  a.integer = v;
  return a;
}
inline LogArg log_arg(const char* name, int v) {
  return log_arg(name, static_cast<int64_t>(v));
}
inline LogArg log_arg(const char* name, bool v) {
  return log_arg(name, static_cast<int64_t>(v));
}
inline LogArg log_arg(const char* name, const char* v) {
  LogArg a;
  a.name = name;
  a.text = v ? v : "null";
  return a;
}

// Level >= 1: the op name; >= 3: its arguments; >= 5: input statistics. Called before the launch.
void log_call(const char* op, cudaStream_t stream, std::initializer_list<LogArg> args);
// Level >= 5: statistics of the outputs after the launch (synchronizes `stream`).
void log_outputs(const char* op, cudaStream_t stream, std::initializer_list<LogArg> outputs);
// Level >= 1: an error returned by an entry point. Returns `status`, so that an entry point can
// end with `if (!st.ok()) return log_error(op, st);`.
Status log_error(const char* op, const Status& status);
// Level >= min_level: `text` (one or more whole lines) to the log destination. The kernel
// registry logs each kernel specialization a process uses this way (runtime/kernel_registry.h).
void log_line(int min_level, const std::string& text);
// Computes "min max mean nan inf" of a device tensor (synchronous copy). Exposed for tests.
std::string tensor_stats(const TensorView& t, cudaStream_t stream);

}  // namespace flashserve
