// Bindings of paged decode attention and state merging (flashserve/decode.h).
//
// The plan crosses into Python as a flat int64 array (kPlanFields values, led by a magic number):
// the torch layer keeps it in a CPU tensor, which a torch.library custom op can take as an argument
// without torch.compile guarding on its values, so re-planning never recompiles the caller.
#include <nanobind/stl/vector.h>

#include <array>
#include <cstdint>
#include <new>
#include <string>
#include <vector>

#include "binding.h"

namespace flashserve::python {
namespace {

constexpr int64_t kPlanMagic = 0x46535044'00000002;  // "FSPD", format 2

// Field order of the encoded plan; the Python layer reads names from _C.DECODE_PLAN_FIELDS.
constexpr std::array<const char*, 25> kPlanFieldNames = {"magic",
                                                         "batch_size",
                                                         "q_tokens",
                                                         "num_qo_heads",
                                                         "num_kv_heads",
                                                         "head_dim",
                                                         "page_size",
                                                         "q_dtype",
                                                         "kv_dtype",
                                                         "layout",
                                                         "deterministic",
                                                         "split_tokens",
                                                         "num_work",
                                                         "num_merge",
                                                         "num_partials",
                                                         "work_capacity",
                                                         "merge_capacity",
                                                         "partial_capacity",
                                                         "num_sms",
                                                         "workspace_bytes",
                                                         "work_offset",
                                                         "merge_offset",
                                                         "partial_out_offset",
                                                         "partial_lse_offset",
                                                         "cta_warps"};
constexpr size_t kPlanFields = kPlanFieldNames.size();

std::vector<int64_t> encode(const DecodePlan& p) {
  return {kPlanMagic,
          p.batch_size,
          p.q_tokens,
          p.num_qo_heads,
          p.num_kv_heads,
          p.head_dim,
          p.page_size,
          static_cast<int64_t>(p.q_dtype),
          static_cast<int64_t>(p.kv_dtype),
          static_cast<int64_t>(p.layout),
          p.deterministic ? 1 : 0,
          p.split_tokens,
          p.num_work,
          p.num_merge,
          p.num_partials,
          p.work_capacity,
          p.merge_capacity,
          p.partial_capacity,
          p.num_sms,
          static_cast<int64_t>(p.workspace_bytes),
          static_cast<int64_t>(p.work_offset),
          static_cast<int64_t>(p.merge_offset),
          static_cast<int64_t>(p.partial_out_offset),
          static_cast<int64_t>(p.partial_lse_offset),
          p.cta_warps};
}

DecodePlan decode(const char* op, const Array& a) {
  const int64_t* f = plan_fields(op, a, kPlanFields, kPlanMagic, "decode_plan");
  DecodePlan p;
  p.batch_size = static_cast<int>(f[1]);
  p.q_tokens = static_cast<int>(f[2]);
  p.num_qo_heads = static_cast<int>(f[3]);
  p.num_kv_heads = static_cast<int>(f[4]);
  p.head_dim = static_cast<int>(f[5]);
  p.page_size = static_cast<int>(f[6]);
  p.q_dtype = static_cast<DType>(f[7]);
  p.kv_dtype = static_cast<DType>(f[8]);
  p.layout = static_cast<KVLayout>(f[9]);
  p.deterministic = f[10] != 0;
  p.split_tokens = static_cast<int>(f[11]);
  p.num_work = static_cast<int>(f[12]);
  p.num_merge = static_cast<int>(f[13]);
  p.num_partials = static_cast<int>(f[14]);
  p.work_capacity = f[15];
  p.merge_capacity = f[16];
  p.partial_capacity = f[17];
  p.num_sms = static_cast<int>(f[18]);
  p.workspace_bytes = static_cast<size_t>(f[19]);
  p.work_offset = static_cast<size_t>(f[20]);
  p.merge_offset = static_cast<size_t>(f[21]);
  p.partial_out_offset = static_cast<size_t>(f[22]);
  p.partial_lse_offset = static_cast<size_t>(f[23]);
  p.cta_warps = static_cast<int>(f[24]);
  return p;
}

// The request's host arrays: batch_size follows from indptr, and the other arrays must hold what
// the C++ plan will read through their raw pointers.
DecodePlanRequest with_table(const char* op, DecodePlanRequest req, const Array& indptr,
                             const Array& last_page_len, const Array& q_indptr) {
  int64_t n_indptr = 0, n_last = 0, n_q = 0;
  req.indptr = host_int32(op, "indptr", indptr, &n_indptr);
  req.last_page_len = host_int32(op, "last_page_len", last_page_len, &n_last);
  req.q_indptr = host_int32(op, "q_indptr", q_indptr, &n_q);
  if (n_indptr < 1) throw_invalid(op, "indptr: expected batch_size + 1 >= 1 elements, got 0");
  const int64_t batch = n_indptr - 1;
  if (n_last != batch) {
    throw_invalid(op, "last_page_len: expected " + std::to_string(batch) +
                          " elements (batch_size, from indptr), got " + std::to_string(n_last));
  }
  if (req.q_indptr != nullptr && n_q != n_indptr) {
    throw_invalid(op, "q_indptr: expected " + std::to_string(n_indptr) +
                          " elements (batch_size + 1), got " + std::to_string(n_q));
  }
  req.batch_size = static_cast<int>(batch);
  return req;
}

void bind_request(nb::module_& m) {
  nb::class_<DecodePlanRequest>(m, "DecodePlanRequest",
                                "The scalar part of a decode plan request; the host page-table "
                                "arrays are passed to decode_plan / decode_workspace_size.")
      .def(
          "__init__",
          [](DecodePlanRequest* self, int num_qo_heads, int num_kv_heads, int head_dim,
             int page_size, DType q_dtype, DType kv_dtype, KVLayout layout, bool deterministic,
             int fixed_split_tokens, int num_sms, int max_batch_size, int max_q_tokens,
             int64_t max_kv_tokens) {
            DecodePlanRequest* r = new (self) DecodePlanRequest();
            r->num_qo_heads = num_qo_heads;
            r->num_kv_heads = num_kv_heads;
            r->head_dim = head_dim;
            r->page_size = page_size;
            r->q_dtype = q_dtype;
            r->kv_dtype = kv_dtype;
            r->layout = layout;
            r->deterministic = deterministic;
            r->fixed_split_tokens = fixed_split_tokens;
            r->num_sms = num_sms;
            r->max_batch_size = max_batch_size;
            r->max_q_tokens = max_q_tokens;
            r->max_kv_tokens = max_kv_tokens;
          },
          nb::kw_only(), nb::arg("num_qo_heads"), nb::arg("num_kv_heads"), nb::arg("head_dim"),
          nb::arg("page_size"), nb::arg("q_dtype") = DType::kBFloat16,
          nb::arg("kv_dtype") = DType::kBFloat16, nb::arg("layout") = KVLayout::kNHD,
          nb::arg("deterministic") = false, nb::arg("fixed_split_tokens") = 0,
          nb::arg("num_sms") = 0, nb::arg("max_batch_size") = 0, nb::arg("max_q_tokens") = 0,
          nb::arg("max_kv_tokens") = 0)
      .def_rw("num_qo_heads", &DecodePlanRequest::num_qo_heads)
      .def_rw("num_kv_heads", &DecodePlanRequest::num_kv_heads)
      .def_rw("head_dim", &DecodePlanRequest::head_dim)
      .def_rw("page_size", &DecodePlanRequest::page_size)
      .def_rw("q_dtype", &DecodePlanRequest::q_dtype)
      .def_rw("kv_dtype", &DecodePlanRequest::kv_dtype)
      .def_rw("layout", &DecodePlanRequest::layout)
      .def_rw("deterministic", &DecodePlanRequest::deterministic)
      .def_rw("fixed_split_tokens", &DecodePlanRequest::fixed_split_tokens)
      .def_rw("num_sms", &DecodePlanRequest::num_sms)
      .def_rw("max_batch_size", &DecodePlanRequest::max_batch_size)
      .def_rw("max_q_tokens", &DecodePlanRequest::max_q_tokens)
      .def_rw("max_kv_tokens", &DecodePlanRequest::max_kv_tokens);
}

// A decode plan with its persistent arguments converted: the plan, the workspace and the device
// page table. DecodeBound (made once per plan by the Python wrapper) keeps it, so that run()
// converts only the per-call tensors (each DLPack conversion is ~0.5 us of host time); the Python
// wrapper keeps the tensors alive for the object's lifetime and rebinds on re-plan.
struct DecodeBound {
  DecodePlan plan;
  void* workspace = nullptr;
  PageTable table;
};

DecodeBound bind(const Array& plan, const Array& workspace, const Array& indptr,
                 const Array& indices, const Array& last_page_len) {
  constexpr const char* op = "decode_run";
  DecodeBound b;
  b.plan = decode(op, plan);
  b.workspace = device_view(op, "workspace", workspace).data;
  b.table = page_table_view(op, indptr, indices, last_page_len);
  return b;
}

void run_bound(const DecodeBound& b, const Array& q, const Array& out, const Array& lse,
               const Array& k_cache, const Array& v_cache, float k_scale, float v_scale,
               float sm_scale, float logits_soft_cap, int window_left, const Array& sinks,
               uintptr_t stream) {
  constexpr const char* op = "decode_run";
  DecodeArgs a;
  a.q = device_view(op, "q", q);
  a.out = device_view(op, "out", out);
  a.lse = optional_device_view(op, "lse", lse);
  a.cache = paged_kv_cache_view(op, k_cache, v_cache, b.plan.layout, k_scale, v_scale);
  a.table = b.table;
  a.sm_scale = sm_scale;
  a.logits_soft_cap = logits_soft_cap;
  a.window_left = window_left;
  a.sinks = optional_device_view(op, "sinks", sinks);
  throw_if_error(decode_run(b.plan, a, b.workspace, to_stream(stream)));
}

void bind_decode(nb::module_& m) {
  bind_request(m);
  nb::list names;
  for (const char* n : kPlanFieldNames)
    names.append(n);
  m.attr("DECODE_PLAN_FIELDS") = nb::steal(PySequence_Tuple(names.ptr()));

  m.def(
      "decode_workspace_size",
      [](const DecodePlanRequest& request, const Array& indptr, const Array& last_page_len,
         const Array& q_indptr) {
        constexpr const char* op = "decode_workspace_size";
        const DecodePlanRequest req = with_table(op, request, indptr, last_page_len, q_indptr);
        size_t bytes = 0;
        throw_if_error(decode_workspace_size(req, &bytes));
        return bytes;
      },
      nb::arg("request"), nb::arg("indptr").noconvert(), nb::arg("last_page_len").noconvert(),
      nb::arg("q_indptr").noconvert().none(),
      "Bytes of device workspace the request's capacity needs.");
  m.def(
      "decode_plan",
      [](const DecodePlanRequest& request, const Array& indptr, const Array& last_page_len,
         const Array& q_indptr, const Array& workspace, uintptr_t stream) {
        constexpr const char* op = "decode_plan";
        const DecodePlanRequest req = with_table(op, request, indptr, last_page_len, q_indptr);
        const TensorView ws = device_view(op, "workspace", workspace);
        if (ws.ndim != 1 || (ws.shape[0] > 1 && ws.strides[0] != 1)) {
          throw_invalid(op, "workspace: expected a contiguous 1-D tensor, got " + ws.describe());
        }
        const size_t bytes = static_cast<size_t>(ws.numel()) * dtype_size(ws.dtype);
        DecodePlan plan;
        throw_if_error(decode_plan(req, ws.data, bytes, to_stream(stream), &plan));
        return encode(plan);
      },
      nb::arg("request"), nb::arg("indptr").noconvert(), nb::arg("last_page_len").noconvert(),
      nb::arg("q_indptr").noconvert().none(), nb::arg("workspace").noconvert(), nb::arg("stream"),
      "Builds the split-KV schedule on the host, copies it into the workspace on the stream, and "
      "returns the plan as a list of int64 (see DECODE_PLAN_FIELDS). Not capturable.");
  nb::class_<DecodeBound>(m, "DecodeBound",
                          "A decode plan bound to its workspace and device page table.")
      .def(
          "__init__",
          [](DecodeBound* self, const Array& plan, const Array& workspace, const Array& indptr,
             const Array& indices, const Array& last_page_len) {
            new (self) DecodeBound(bind(plan, workspace, indptr, indices, last_page_len));
            // The kernel now, not a registry lookup in every run().
            throw_if_error(decode_plan_resolve_kernel(&self->plan));
          },
          nb::arg("plan").noconvert(), nb::arg("workspace").noconvert(),
          nb::arg("indptr").noconvert(), nb::arg("indices").noconvert(),
          nb::arg("last_page_len").noconvert())
      .def("run", &run_bound, nb::arg("q").noconvert(), nb::arg("out").noconvert(),
           nb::arg("lse").noconvert().none(), nb::arg("k_cache").noconvert(),
           nb::arg("v_cache").noconvert(), nb::arg("k_scale"), nb::arg("v_scale"),
           nb::arg("sm_scale"), nb::arg("logits_soft_cap"), nb::arg("window_left"),
           nb::arg("sinks").noconvert().none(), nb::arg("stream"),
           "decode_run with the bound plan, workspace and page table; capturable.");

  // The unbound form, for the torch custom op (plan tensors travel as op arguments). Its plan has
  // no kernel pointer: decode_run looks the kernel up, and does not compile during capture.
  m.def(
      "decode_run",
      [](const Array& plan, const Array& workspace, const Array& q, const Array& out,
         const Array& lse, const Array& k_cache, const Array& v_cache, float k_scale, float v_scale,
         const Array& indptr, const Array& indices, const Array& last_page_len, float sm_scale,
         float logits_soft_cap, int window_left, const Array& sinks, uintptr_t stream) {
        run_bound(bind(plan, workspace, indptr, indices, last_page_len), q, out, lse, k_cache,
                  v_cache, k_scale, v_scale, sm_scale, logits_soft_cap, window_left, sinks, stream);
      },
      nb::arg("plan").noconvert(), nb::arg("workspace").noconvert(), nb::arg("q").noconvert(),
      nb::arg("out").noconvert(), nb::arg("lse").noconvert().none(), nb::arg("k_cache").noconvert(),
      nb::arg("v_cache").noconvert(), nb::arg("k_scale"), nb::arg("v_scale"),
      nb::arg("indptr").noconvert(), nb::arg("indices").noconvert(),
      nb::arg("last_page_len").noconvert(), nb::arg("sm_scale"), nb::arg("logits_soft_cap"),
      nb::arg("window_left"), nb::arg("sinks").noconvert().none(), nb::arg("stream"),
      "Decode attention of every planned query row; capturable in a CUDA graph.");

  m.def(
      "merge_state",
      [](const Array& v_a, const Array& s_a, const Array& v_b, const Array& s_b, const Array& v_out,
         const Array& s_out, uintptr_t stream) {
        constexpr const char* op = "merge_state";
        const TensorView va = device_view(op, "v_a", v_a), sa = device_view(op, "s_a", s_a);
        const TensorView vb = device_view(op, "v_b", v_b), sb = device_view(op, "s_b", s_b);
        const TensorView vo = device_view(op, "v_out", v_out);
        const TensorView so = optional_device_view(op, "s_out", s_out);
        throw_if_error(merge_state(va, sa, vb, sb, vo, so, to_stream(stream)));
      },
      nb::arg("v_a").noconvert(), nb::arg("s_a").noconvert(), nb::arg("v_b").noconvert(),
      nb::arg("s_b").noconvert(), nb::arg("v_out").noconvert(), nb::arg("s_out").noconvert().none(),
      nb::arg("stream"),
      "Merges two attention states (v [tokens, heads, dim], natural-log lse [tokens, heads]).");
  m.def(
      "merge_states",
      [](const Array& v, const Array& s, const Array& v_out, const Array& s_out, uintptr_t stream) {
        constexpr const char* op = "merge_states";
        const TensorView vv = device_view(op, "v", v), ss = device_view(op, "s", s);
        const TensorView vo = device_view(op, "v_out", v_out);
        const TensorView so = optional_device_view(op, "s_out", s_out);
        throw_if_error(merge_states(vv, ss, vo, so, to_stream(stream)));
      },
      nb::arg("v").noconvert(), nb::arg("s").noconvert(), nb::arg("v_out").noconvert(),
      nb::arg("s_out").noconvert().none(), nb::arg("stream"),
      "Merges v [tokens, states, heads, dim] with lse s [tokens, states, heads].");
}

const Registration kDecode("decode", &bind_decode);

}  // namespace
}  // namespace flashserve::python
