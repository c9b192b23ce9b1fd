// Shared pieces of the nanobind module flashserve._C: DLPack arrays in, TensorViews out, Status
// to Python exceptions, and the registry through which each op family adds its functions.
//
// The module is a thin layer over the public C++ API (DESIGN.md layer 6): it converts arguments,
// calls the entry point, and raises the entry point's own message. It validates only what the
// C++ API cannot see: the DLPack device type (a TensorView has no device type) and element types
// that have no DType.
#pragma once

#include <cuda_runtime_api.h>
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>

#include <cstdint>
#include <string>

#include "flashserve/activation.h"
#include "flashserve/core/status.h"
#include "flashserve/decode.h"
#include "flashserve/logging.h"
#include "flashserve/norm.h"
#include "flashserve/page.h"
#include "flashserve/rope.h"
#include "flashserve/runtime.h"
#include "flashserve/tensor.h"

namespace flashserve::python {

namespace nb = nanobind;

// Any DLPack array or capsule: torch tensors (through torch.utils.dlpack.to_dlpack, which does no
// stream synchronization), CuPy, JAX, NumPy. No dtype/device constraint, so nanobind never
// converts or copies; the checks below name the argument instead.
using Array = nb::ndarray<>;

// A device array as a TensorView. Raises InvalidArgumentError "<op>: <name>: ..." when it is not
// on a CUDA device, has more than TensorView::kMaxDims dims, or has an element type with no DType.
TensorView device_view(const char* op, const char* name, const Array& a);
// The same, but None (an invalid handle) gives an undefined view (an optional argument).
TensorView optional_device_view(const char* op, const char* name, const Array& a);
// A host (CPU) int32 1-D contiguous array, e.g. the host copy of a page table's indptr. Returns its
// data; None gives nullptr.
const int32_t* host_int32(const char* op, const char* name, const Array& a, int64_t* size);

// The paged KV cache and the device page table of a run, named as the C++ API names them
// ("cache.k_cache", "table.indptr", ...). None gives an undefined view: the entry point says
// whether it needs the tensor.
PagedKVCache paged_kv_cache_view(const char* op, const Array& k_cache, const Array& v_cache,
                                 KVLayout layout, float k_scale = 1.f, float v_scale = 1.f);
PageTable page_table_view(const char* op, const Array& indptr, const Array& indices,
                          const Array& last_page_len);

// The fields of a plan kept as a host int64 array (the form plan() returns to Python): its data,
// after checking the shape and the magic number in field 0. `producer` names the function that
// returns such arrays, for the error.
const int64_t* plan_fields(const char* op, const Array& a, int64_t fields, int64_t magic,
                           const char* producer);

inline cudaStream_t to_stream(uintptr_t stream) {
  return reinterpret_cast<cudaStream_t>(stream);
}

// Raises the Python exception that matches st.code() with st.message(), unless st is ok.
void throw_if_error(const Status& st);
// Raises InvalidArgumentError with "<op>: <what>".
[[noreturn]] void throw_invalid(const char* op, const std::string& what);

// Each op family's file registers a binder at static-initialization time; the module's init
// function runs them in name order. A new family (prefill, sampling) is a new file here and a
// new module in python/flashserve, nothing else.
using Binder = void (*)(nb::module_& m);
struct Registration {
  Registration(const char* family, Binder binder);
};
void run_binders(nb::module_& m);

// Argument names shared by many functions.
inline constexpr const char* kStreamDoc =
    "stream: the cudaStream_t as an integer (torch.cuda.current_stream().cuda_stream); 0 is the "
    "legacy default stream";

}  // namespace flashserve::python
