// DLPack arrays to TensorViews, Status to Python exceptions, and the binder registry.
#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "binding.h"
#include "errors.h"

namespace flashserve::python {
namespace {

// DLPack device types (dlpack.h): host memory and the CUDA kinds a kernel can dereference.
constexpr int kDLCPU = 1;
constexpr int kDLCUDA = 2;
constexpr int kDLCUDAHost = 3;
constexpr int kDLCUDAManaged = 13;

const char* device_type_name(int type) {
  switch (type) {
    case kDLCPU:
      return "cpu";
    case kDLCUDA:
      return "cuda";
    case kDLCUDAHost:
      return "cuda_host (pinned host memory)";
    case kDLCUDAManaged:
      return "cuda_managed";
    default:
      return "a non-CUDA device";
  }
}

// DLPack element type -> DType. float8_e4m3fn (code 10) is the OCP/NVIDIA e4m3 that torch calls
// float8_e4m3fn; code 8 (IEEE-style e4m3 with infinities) is a different format and is rejected.
bool to_dtype(nb::dlpack::dtype t, DType* out) {
  if (t.lanes != 1) return false;
  using C = nb::dlpack::dtype_code;
  const auto code = static_cast<C>(t.code);
  if (code == C::Float && t.bits == 32)
    *out = DType::kFloat32;
  else if (code == C::Float && t.bits == 16)
    *out = DType::kFloat16;
  else if (code == C::Bfloat && t.bits == 16)
    *out = DType::kBFloat16;
  else if (code == C::Float8_E4M3FN && t.bits == 8)
    *out = DType::kFloat8E4M3;
  else if (code == C::Float8_E5M2 && t.bits == 8)
    *out = DType::kFloat8E5M2;
  else if (code == C::Int && t.bits == 32)
    *out = DType::kInt32;
  else if (code == C::Int && t.bits == 64)
    *out = DType::kInt64;
  else if (code == C::UInt && t.bits == 8)
    *out = DType::kUInt8;
  else
    return false;
  return true;
}

std::string describe_dlpack_dtype(nb::dlpack::dtype t) {
  using C = nb::dlpack::dtype_code;
  const char* kind = nullptr;
  switch (static_cast<C>(t.code)) {
    case C::Int:
      kind = "int";
      break;
    case C::UInt:
      kind = "uint";
      break;
    case C::Float:
      kind = "float";
      break;
    case C::Bfloat:
      kind = "bfloat";
      break;
    case C::Complex:
      kind = "complex";
      break;
    case C::Bool:
      kind = "bool";
      break;
    default:
      return "DLPack type code " + std::to_string(t.code) + " (" + std::to_string(t.bits) +
             " bits)";
  }
  std::string s = kind + std::to_string(t.bits);
  if (t.lanes != 1) s += "x" + std::to_string(t.lanes);
  return s;
}

TensorView view_of(const char* op, const char* name, const Array& a) {
  TensorView v;
  if (!to_dtype(a.dtype(), &v.dtype)) {
    throw_invalid(op, std::string(name) +
                          ": expected float32, float16, bfloat16, float8_e4m3fn, float8_e5m2, "
                          "int32, int64 or uint8 elements, got " +
                          describe_dlpack_dtype(a.dtype()));
  }
  const size_t ndim = a.ndim();
  if (ndim > static_cast<size_t>(TensorView::kMaxDims)) {
    throw_invalid(op, std::string(name) + ": expected at most " +
                          std::to_string(TensorView::kMaxDims) + " dims, got " +
                          std::to_string(ndim));
  }
  v.data = a.data();
  v.ndim = static_cast<int>(ndim);
  for (size_t d = 0; d < ndim; ++d) {
    v.shape[d] = static_cast<int64_t>(a.shape(d));
    v.strides[d] = a.stride(d);
  }
  v.device = a.device_id();
  return v;
}

std::vector<std::pair<std::string, Binder>>& binders() {
  static std::vector<std::pair<std::string, Binder>> list;
  return list;
}

}  // namespace

TensorView device_view(const char* op, const char* name, const Array& a) {
  if (!a.is_valid()) throw_invalid(op, std::string(name) + ": expected a CUDA tensor, got None");
  const int type = a.device_type();
  if (type != kDLCUDA && type != kDLCUDAManaged) {
    throw_invalid(op, std::string(name) + ": expected a CUDA tensor, got one on " +
                          device_type_name(type) +
                          " (tensors are never copied: move it to the GPU first)");
  }
  return view_of(op, name, a);
}

TensorView optional_device_view(const char* op, const char* name, const Array& a) {
  if (!a.is_valid()) return TensorView{};
  return device_view(op, name, a);
}

const int32_t* host_int32(const char* op, const char* name, const Array& a, int64_t* size) {
  *size = 0;
  if (!a.is_valid()) return nullptr;
  if (a.device_type() != kDLCPU && a.device_type() != kDLCUDAHost) {
    throw_invalid(op, std::string(name) + ": expected a host (CPU) tensor, got one on " +
                          device_type_name(a.device_type()) +
                          " (plan reads it on the host: pass indptr.cpu())");
  }
  const TensorView v = view_of(op, name, a);
  if (v.dtype != DType::kInt32 || v.ndim != 1 || (v.shape[0] > 1 && v.strides[0] != 1)) {
    throw_invalid(op, std::string(name) + ": expected a contiguous 1-D int32 host tensor, got " +
                          v.describe());
  }
  *size = v.shape[0];
  return static_cast<const int32_t*>(v.data);
}

PagedKVCache paged_kv_cache_view(const char* op, const Array& k_cache, const Array& v_cache,
                                 KVLayout layout, float k_scale, float v_scale) {
  PagedKVCache cache;
  cache.k_cache = optional_device_view(op, "cache.k_cache", k_cache);
  cache.v_cache = optional_device_view(op, "cache.v_cache", v_cache);
  cache.layout = layout;
  cache.k_scale = k_scale;
  cache.v_scale = v_scale;
  return cache;
}

PageTable page_table_view(const char* op, const Array& indptr, const Array& indices,
                          const Array& last_page_len) {
  PageTable table;
  table.indptr = optional_device_view(op, "table.indptr", indptr);
  table.indices = optional_device_view(op, "table.indices", indices);
  table.last_page_len = optional_device_view(op, "table.last_page_len", last_page_len);
  return table;
}

const int64_t* plan_fields(const char* op, const Array& a, int64_t fields, int64_t magic,
                           const char* producer) {
  const bool host = a.is_valid() && a.device_type() == kDLCPU;
  const bool shape_ok = host && a.ndim() == 1 && static_cast<int64_t>(a.shape(0)) == fields &&
                        a.dtype() == nb::dtype<int64_t>() && a.stride(0) == 1;
  const int64_t* f = shape_ok ? static_cast<const int64_t*>(a.data()) : nullptr;
  if (f == nullptr || f[0] != magic) {
    throw_invalid(op, "plan: expected the int64[" + std::to_string(fields) +
                          "] host array returned by " + producer);
  }
  return f;
}

Registration::Registration(const char* family, Binder binder) {
  binders().emplace_back(family, binder);
}

void run_binders(nb::module_& m) {
  auto& list = binders();
  // Static-initialization order across files is unspecified; sort for a stable module layout.
  std::sort(list.begin(), list.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  for (const auto& [family, binder] : list)
    binder(m);
}

}  // namespace flashserve::python
