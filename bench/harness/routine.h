// A benchmark routine: sets up one shape of one op, launches it under the Timer, counts its bytes
// (every input read once, every output written once) and optionally checks it against the CPU
// reference. Routines are plain functions registered in harness/registry.cc.
#pragma once

#include <cuda_runtime_api.h>

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "flashserve/core/dtype.h"
#include "flashserve/core/status.h"
#include "harness/timer.h"

namespace fs_bench {

using flashserve::DType;

// One point of a sweep: every shape flag, with defaults. A routine reads the ones it needs.
struct Args {
  int64_t tokens = 16;
  int64_t hidden = 4096;
  int64_t q_heads = 32;
  int64_t kv_heads = 8;
  int64_t head_dim = 128;
  int64_t head_dim_v = 0;  // prefill: of v and out (0: head_dim; 128 with head_dim 192)
  int64_t rotary_dim = 0;  // 0: head_dim
  int64_t page_size = 16;
  int64_t batch = 0;         // append: requests (0: one request per token, decode style)
  int64_t kv_len = 1024;     // append: tokens already in each request's cache
  int64_t q_tokens = 1;      // decode: query tokens per request
  int64_t prefix_len = 0;    // cascade_decode: tokens of the prefix shared by every request
  int64_t q_len = 0;         // prefill: query tokens per request (0: kv_len)
  int64_t causal = 0;        // prefill: 1 = causal mask
  int64_t split_kv = 1;      // prefill: 0 = no split-KV
  int64_t vocab = 128256;    // sampling: vocabulary (row length)
  int64_t draft_tokens = 4;  // chain_speculative: draft tokens per request
  std::string layout = "NHD";
  bool sequential_pages = false;  // decode: page ids in table order instead of a random permutation
  DType dtype = DType::kBFloat16;
  std::string cache_dtype;  // append: "" = dtype, or fp8_e4m3 / fp8_e5m2
  std::string model;        // label only (default suite)
};

struct Result {
  std::string routine;
  std::string model;
  std::string shape;                          // human-readable
  std::map<std::string, std::string> params;  // machine-readable, for the peer script
  std::string dtype;
  std::string mode;
  Timing timing;
  double bytes = 0;
  double tbps = 0;
  double ceiling_fraction = 0;
  std::string check = "-";  // refcheck outcome
  std::string error;        // non-empty when the case could not run
};

struct Context {
  cudaStream_t stream = nullptr;
  Timer* timer = nullptr;
  TimeOptions time;
  bool refcheck = false;
  double ceiling_tbps = 0;  // measured device-to-device copy bandwidth
};

struct Routine {
  std::string name;
  std::string family;
  std::string description;
  std::vector<std::string> flags;  // shape flags it reads
  std::function<Result(const Args&, Context&)> run;
};

const std::vector<Routine>& all_routines();
const Routine* find_routine(const std::string& name);

// Throws std::runtime_error("<op>: <message>") when `st` is not ok.
void expect_ok(const flashserve::Status& st);

// Fills bytes/tbps/ceiling_fraction/mode/timing.
void finish(Result& r, const Timing& t, double bytes, const Context& ctx);

std::vector<Routine> norm_routines();
std::vector<Routine> activation_routines();
std::vector<Routine> rope_routines();
std::vector<Routine> page_routines();
std::vector<Routine> attention_routines();
std::vector<Routine> prefill_routines();
std::vector<Routine> sampling_routines();

}  // namespace fs_bench

namespace fs_bench {
// "ok 2.1e-03" when the relative L2 error of `out` against `ref` is below `tol` and nothing is
// NaN, else "FAIL ...".
std::string refcheck_report(const std::vector<float>& out, const std::vector<double>& ref,
                            double tol);
std::string fmt_int(int64_t v);
}  // namespace fs_bench
