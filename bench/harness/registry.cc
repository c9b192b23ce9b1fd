#include <stdexcept>

#include "harness/routine.h"

namespace fs_bench {

const std::vector<Routine>& all_routines() {
  static const std::vector<Routine> routines = [] {
    std::vector<Routine> all;
    for (auto family : {norm_routines, activation_routines, rope_routines, page_routines,
                        attention_routines, prefill_routines, sampling_routines}) {
      for (Routine& r : family())
        all.push_back(std::move(r));
    }
    return all;
  }();
  return routines;
}

const Routine* find_routine(const std::string& name) {
  for (const Routine& r : all_routines()) {
    if (r.name == name) return &r;
  }
  return nullptr;
}

void expect_ok(const flashserve::Status& st) {
  if (!st.ok()) throw std::runtime_error(st.to_string());
}

void finish(Result& r, const Timing& t, double bytes, const Context& ctx) {
  r.timing = t;
  r.bytes = bytes;
  r.mode = mode_name(ctx.time);
  r.params["iters"] = std::to_string(t.iters);
  r.params["mode"] = r.mode;
  r.params["warmup_ms"] = std::to_string(static_cast<int>(ctx.time.warmup_ms));
  r.tbps = t.median_us > 0 ? bytes / (t.median_us * 1e-6) / 1e12 : 0;
  r.ceiling_fraction = ctx.ceiling_tbps > 0 ? r.tbps / ctx.ceiling_tbps : 0;
}

}  // namespace fs_bench

#include <cmath>
#include <cstdio>

#include "check.h"

namespace fs_bench {

std::string refcheck_report(const std::vector<float>& out, const std::vector<double>& ref,
                            double tol) {
  int64_t bad = 0;
  for (float v : out)
    bad += std::isfinite(v) ? 0 : 1;
  const double err = fs_test::rel_l2(out, ref);
  char buf[96];
  std::snprintf(buf, sizeof(buf), "%s %.1e%s", bad == 0 && err < tol ? "ok" : "FAIL", err,
                bad ? " (non-finite values)" : "");
  return buf;
}

std::string fmt_int(int64_t v) {
  return std::to_string(v);
}

}  // namespace fs_bench
