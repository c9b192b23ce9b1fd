// Bindings of prefill attention (flashserve/prefill.h) over ragged k / v or a paged KV cache. Same
// shape as decode.cc: the plan crosses into Python as a flat int64 array led by a magic number.
#include <nanobind/stl/vector.h>

#include <array>
#include <cstdint>
#include <new>
#include <string>
#include <vector>

#include "binding.h"
#include "flashserve/prefill.h"

namespace flashserve::python {
namespace {

// Format 2 added page_size (paged KV) after window_right; format 3 appended head_dim_v (of v and
// out) at the end, so that the other fields keep their indexes; format 4 put split_capacity
// (split-KV partial slots) in the reserved field.
constexpr int64_t kPlanMagic = 0x46535050'00000004;  // "FSPP", format 4

// Field order of the encoded plan; the Python layer reads names from _C.PREFILL_PLAN_FIELDS.
constexpr std::array<const char*, 26> kPlanFieldNames = {"magic",
                                                         "batch_size",
                                                         "total_q",
                                                         "total_kv",
                                                         "num_qo_heads",
                                                         "num_kv_heads",
                                                         "head_dim",
                                                         "dtype",
                                                         "causal",
                                                         "window_left",
                                                         "window_right",
                                                         "page_size",
                                                         "block_m",
                                                         "block_n",
                                                         "num_work",
                                                         "work_capacity",
                                                         "batch_capacity",
                                                         "num_sms",
                                                         "grid",
                                                         "flops",
                                                         "workspace_bytes",
                                                         "qo_indptr_offset",
                                                         "kv_indptr_offset",
                                                         "work_offset",
                                                         "split_capacity",
                                                         "head_dim_v"};
constexpr size_t kPlanFields = kPlanFieldNames.size();

std::vector<int64_t> encode(const PrefillPlan& p) {
  return {kPlanMagic,
          p.batch_size,
          p.total_q,
          p.total_kv,
          p.num_qo_heads,
          p.num_kv_heads,
          p.head_dim,
          static_cast<int64_t>(p.dtype),
          p.causal ? 1 : 0,
          p.window_left,
          p.window_right,
          p.page_size,
          p.block_m,
          p.block_n,
          p.num_work,
          p.work_capacity,
          p.batch_capacity,
          p.num_sms,
          p.grid,
          static_cast<int64_t>(p.flops),
          static_cast<int64_t>(p.workspace_bytes),
          static_cast<int64_t>(p.qo_indptr_offset),
          static_cast<int64_t>(p.kv_indptr_offset),
          static_cast<int64_t>(p.work_offset),
          p.split_capacity,
          p.head_dim_v};
}

PrefillPlan decode(const char* op, const Array& a) {
  const int64_t* f = plan_fields(op, a, kPlanFields, kPlanMagic, "prefill_plan");
  PrefillPlan p;
  p.batch_size = static_cast<int>(f[1]);
  p.total_q = static_cast<int>(f[2]);
  p.total_kv = static_cast<int>(f[3]);
  p.num_qo_heads = static_cast<int>(f[4]);
  p.num_kv_heads = static_cast<int>(f[5]);
  p.head_dim = static_cast<int>(f[6]);
  p.dtype = static_cast<DType>(f[7]);
  p.causal = f[8] != 0;
  p.window_left = static_cast<int>(f[9]);
  p.window_right = static_cast<int>(f[10]);
  p.page_size = static_cast<int>(f[11]);
  p.block_m = static_cast<int>(f[12]);
  p.block_n = static_cast<int>(f[13]);
  p.num_work = static_cast<int>(f[14]);
  p.work_capacity = f[15];
  p.batch_capacity = f[16];
  p.num_sms = static_cast<int>(f[17]);
  p.grid = static_cast<int>(f[18]);
  p.flops = static_cast<double>(f[19]);
  p.workspace_bytes = static_cast<size_t>(f[20]);
  p.qo_indptr_offset = static_cast<size_t>(f[21]);
  p.kv_indptr_offset = static_cast<size_t>(f[22]);
  p.work_offset = static_cast<size_t>(f[23]);
  p.split_capacity = f[24];
  p.head_dim_v = static_cast<int>(f[25]);
  return p;
}

// The request's host arrays. batch_size follows from qo_indptr; the kv side is kv_indptr (ragged,
// page_size 0) or the host copies of the page table's indptr and last_page_len (paged), and each
// must hold what the C++ plan will read through its raw pointer.
PrefillPlanRequest with_host_arrays(const char* op, PrefillPlanRequest req, const Array& qo_indptr,
                                    const Array& kv_indptr, const Array& paged_kv_indptr,
                                    const Array& paged_kv_last_page_len) {
  int64_t n_qo = 0;
  req.qo_indptr = host_int32(op, "qo_indptr", qo_indptr, &n_qo);
  if (n_qo < 1) throw_invalid(op, "qo_indptr: expected batch_size + 1 >= 1 elements, got 0");
  req.batch_size = static_cast<int>(n_qo - 1);
  const std::string n = std::to_string(n_qo);
  if (req.page_size == 0) {
    if (paged_kv_indptr.is_valid() || paged_kv_last_page_len.is_valid()) {
      throw_invalid(op, std::string(paged_kv_indptr.is_valid() ? "paged_kv_indptr"
                                                               : "paged_kv_last_page_len") +
                            ": expected None with request.page_size 0 (ragged k and v: give "
                            "kv_indptr)");
    }
    if (!kv_indptr.is_valid()) {
      throw_invalid(op,
                    "kv_indptr: expected a host int32 array with request.page_size 0 (ragged k "
                    "and v), got None");
    }
    int64_t n_kv = 0;
    req.kv_indptr = host_int32(op, "kv_indptr", kv_indptr, &n_kv);
    if (n_kv != n_qo) {
      throw_invalid(
          op, "kv_indptr: expected " + n + " elements (as qo_indptr), got " + std::to_string(n_kv));
    }
    return req;
  }
  if (req.page_size < 0) return req;  // the C++ API's error, naming req.page_size
  if (kv_indptr.is_valid()) {
    throw_invalid(op,
                  "kv_indptr: expected None with request.page_size > 0 (the kv lengths come "
                  "from paged_kv_indptr and paged_kv_last_page_len)");
  }
  if (!paged_kv_indptr.is_valid() || !paged_kv_last_page_len.is_valid()) {
    const char* name = paged_kv_indptr.is_valid() ? "paged_kv_last_page_len" : "paged_kv_indptr";
    throw_invalid(op, std::string(name) +
                          ": expected the page table's host copy with request.page_size > 0, got "
                          "None");
  }
  int64_t n_indptr = 0, n_last = 0;
  req.paged_kv_indptr = host_int32(op, "paged_kv_indptr", paged_kv_indptr, &n_indptr);
  req.paged_kv_last_page_len =
      host_int32(op, "paged_kv_last_page_len", paged_kv_last_page_len, &n_last);
  if (n_indptr != n_qo) {
    throw_invalid(op, "paged_kv_indptr: expected " + n + " elements (as qo_indptr), got " +
                          std::to_string(n_indptr));
  }
  if (n_last != n_qo - 1) {
    throw_invalid(op, "paged_kv_last_page_len: expected " + std::to_string(n_qo - 1) +
                          " elements (batch_size, from qo_indptr), got " + std::to_string(n_last));
  }
  return req;
}

void bind_prefill(nb::module_& m) {
  nb::class_<PrefillPlanRequest>(
      m, "PrefillPlanRequest",
      "The scalar part of a prefill plan request (page_size > 0: paged "
      "KV; head_dim_v: of v and out, 0 = head_dim, or 128 with "
      "head_dim 192; split_kv: allow split-KV); the host indptr and page-table arrays are passed "
      "to prefill_plan / prefill_workspace_size.")
      .def(
          "__init__",
          [](PrefillPlanRequest* self, int num_qo_heads, int num_kv_heads, int head_dim,
             int head_dim_v, int page_size, DType dtype, bool causal, int window_left,
             int window_right, int num_sms, int max_batch_size, int64_t max_q_tokens,
             bool split_kv) {
            PrefillPlanRequest* r = new (self) PrefillPlanRequest();
            r->num_qo_heads = num_qo_heads;
            r->num_kv_heads = num_kv_heads;
            r->head_dim = head_dim;
            r->head_dim_v = head_dim_v;
            r->page_size = page_size;
            r->dtype = dtype;
            r->causal = causal;
            r->window_left = window_left;
            r->window_right = window_right;
            r->num_sms = num_sms;
            r->max_batch_size = max_batch_size;
            r->max_q_tokens = max_q_tokens;
            r->split_kv = split_kv;
          },
          nb::kw_only(), nb::arg("num_qo_heads"), nb::arg("num_kv_heads"), nb::arg("head_dim"),
          nb::arg("head_dim_v") = 0, nb::arg("page_size") = 0, nb::arg("dtype") = DType::kBFloat16,
          nb::arg("causal") = false, nb::arg("window_left") = -1, nb::arg("window_right") = -1,
          nb::arg("num_sms") = 0, nb::arg("max_batch_size") = 0, nb::arg("max_q_tokens") = 0,
          nb::arg("split_kv") = true)
      .def_rw("num_qo_heads", &PrefillPlanRequest::num_qo_heads)
      .def_rw("num_kv_heads", &PrefillPlanRequest::num_kv_heads)
      .def_rw("head_dim", &PrefillPlanRequest::head_dim)
      .def_rw("head_dim_v", &PrefillPlanRequest::head_dim_v)
      .def_rw("page_size", &PrefillPlanRequest::page_size)
      .def_rw("dtype", &PrefillPlanRequest::dtype)
      .def_rw("causal", &PrefillPlanRequest::causal)
      .def_rw("window_left", &PrefillPlanRequest::window_left)
      .def_rw("window_right", &PrefillPlanRequest::window_right)
      .def_rw("num_sms", &PrefillPlanRequest::num_sms)
      .def_rw("max_batch_size", &PrefillPlanRequest::max_batch_size)
      .def_rw("max_q_tokens", &PrefillPlanRequest::max_q_tokens)
      .def_rw("split_kv", &PrefillPlanRequest::split_kv);

  nb::list names;
  for (const char* n : kPlanFieldNames)
    names.append(n);
  m.attr("PREFILL_PLAN_FIELDS") = nb::steal(PySequence_Tuple(names.ptr()));

  m.def(
      "prefill_workspace_size",
      [](const PrefillPlanRequest& request, const Array& qo_indptr, const Array& kv_indptr,
         const Array& paged_kv_indptr, const Array& paged_kv_last_page_len) {
        constexpr const char* op = "prefill_workspace_size";
        const PrefillPlanRequest req = with_host_arrays(op, request, qo_indptr, kv_indptr,
                                                        paged_kv_indptr, paged_kv_last_page_len);
        size_t bytes = 0;
        throw_if_error(prefill_workspace_size(req, &bytes));
        return bytes;
      },
      nb::arg("request"), nb::arg("qo_indptr").noconvert(), nb::arg("kv_indptr").noconvert().none(),
      nb::arg("paged_kv_indptr").noconvert().none(),
      nb::arg("paged_kv_last_page_len").noconvert().none(),
      "Bytes of device workspace the request's capacity needs. Ragged (request.page_size 0): "
      "kv_indptr, the paged arrays None; paged: the host copies of the page table's indptr and "
      "last_page_len, kv_indptr None.");
  m.def(
      "prefill_plan",
      [](const PrefillPlanRequest& request, const Array& qo_indptr, const Array& kv_indptr,
         const Array& paged_kv_indptr, const Array& paged_kv_last_page_len, const Array& workspace,
         uintptr_t stream) {
        constexpr const char* op = "prefill_plan";
        const PrefillPlanRequest req = with_host_arrays(op, request, qo_indptr, kv_indptr,
                                                        paged_kv_indptr, paged_kv_last_page_len);
        const TensorView ws = device_view(op, "workspace", workspace);
        if (ws.ndim != 1 || (ws.shape[0] > 1 && ws.strides[0] != 1)) {
          throw_invalid(op, "workspace: expected a contiguous 1-D tensor, got " + ws.describe());
        }
        const size_t bytes = static_cast<size_t>(ws.numel()) * dtype_size(ws.dtype);
        PrefillPlan plan;
        throw_if_error(prefill_plan(req, ws.data, bytes, to_stream(stream), &plan));
        return encode(plan);
      },
      nb::arg("request"), nb::arg("qo_indptr").noconvert(), nb::arg("kv_indptr").noconvert().none(),
      nb::arg("paged_kv_indptr").noconvert().none(),
      nb::arg("paged_kv_last_page_len").noconvert().none(), nb::arg("workspace").noconvert(),
      nb::arg("stream"),
      "Schedules the batch on the host, copies the schedule into the workspace on the stream and "
      "returns the plan as a list of int64 (see PREFILL_PLAN_FIELDS). The kv side as for "
      "prefill_workspace_size. Not capturable.");
  m.def(
      "prefill_run",
      [](const Array& plan, const Array& workspace, const Array& q, const Array& k, const Array& v,
         const Array& k_cache, const Array& v_cache, KVLayout layout, const Array& paged_kv_indptr,
         const Array& paged_kv_indices, const Array& paged_kv_last_page_len, const Array& out,
         const Array& lse, float sm_scale, float logits_soft_cap, const Array& alibi_slopes,
         const Array& sinks, const Array& custom_mask, const Array& mask_offsets,
         uintptr_t stream) {
        constexpr const char* op = "prefill_run";
        const PrefillPlan p = decode(op, plan);
        void* ws = device_view(op, "workspace", workspace).data;
        PrefillArgs a;
        a.q = device_view(op, "q", q);
        a.k = optional_device_view(op, "k", k);
        a.v = optional_device_view(op, "v", v);
        a.cache = paged_kv_cache_view(op, k_cache, v_cache, layout);
        a.table = page_table_view(op, paged_kv_indptr, paged_kv_indices, paged_kv_last_page_len);
        a.out = device_view(op, "out", out);
        a.lse = optional_device_view(op, "lse", lse);
        a.sm_scale = sm_scale;
        a.logits_soft_cap = logits_soft_cap;
        a.alibi_slopes = optional_device_view(op, "alibi_slopes", alibi_slopes);
        a.sinks = optional_device_view(op, "sinks", sinks);
        a.custom_mask = optional_device_view(op, "custom_mask", custom_mask);
        a.mask_offsets = optional_device_view(op, "mask_offsets", mask_offsets);
        throw_if_error(prefill_run(p, a, ws, to_stream(stream)));
      },
      nb::arg("plan").noconvert(), nb::arg("workspace").noconvert(), nb::arg("q").noconvert(),
      nb::arg("k").noconvert().none(), nb::arg("v").noconvert().none(),
      nb::arg("k_cache").noconvert().none(), nb::arg("v_cache").noconvert().none(),
      nb::arg("layout"), nb::arg("paged_kv_indptr").noconvert().none(),
      nb::arg("paged_kv_indices").noconvert().none(),
      nb::arg("paged_kv_last_page_len").noconvert().none(), nb::arg("out").noconvert(),
      nb::arg("lse").noconvert().none(), nb::arg("sm_scale"), nb::arg("logits_soft_cap"),
      nb::arg("alibi_slopes").noconvert().none(), nb::arg("sinks").noconvert().none(),
      nb::arg("custom_mask").noconvert().none(), nb::arg("mask_offsets").noconvert().none(),
      nb::arg("stream"),
      "Prefill attention of every planned query row; capturable. A ragged plan reads k and v "
      "(the cache and table None), a paged one the cache (k_cache, v_cache in `layout`) and the "
      "device page table (k and v None).");
}

const Registration kPrefill("prefill", &bind_prefill);

}  // namespace
}  // namespace flashserve::python
