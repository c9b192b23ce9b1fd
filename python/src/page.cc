// Bindings of the paged KV cache (flashserve/page.h): the layout and dtype enums that the page and
// attention families share, and append_paged_kv_cache.
#include "binding.h"

namespace flashserve::python {
namespace {

void bind_page(nb::module_& m) {
  nb::enum_<KVLayout>(m, "KVLayout",
                      "Paged cache layout: NHD [pages, page_size, heads, dim] or "
                      "HND [pages, heads, page_size, dim].")
      .value("NHD", KVLayout::kNHD)
      .value("HND", KVLayout::kHND);
  nb::enum_<DType>(m, "DType", "Element types of the C++ API.")
      .value("float32", DType::kFloat32)
      .value("float16", DType::kFloat16)
      .value("bfloat16", DType::kBFloat16)
      .value("float8_e4m3", DType::kFloat8E4M3)
      .value("float8_e5m2", DType::kFloat8E5M2)
      .value("int32", DType::kInt32)
      .value("int64", DType::kInt64)
      .value("uint8", DType::kUInt8);

  m.def(
      "append_paged_kv_cache",
      [](const Array& k_cache, const Array& v_cache, KVLayout layout, float k_scale, float v_scale,
         const Array& indptr, const Array& indices, const Array& last_page_len, const Array& k,
         const Array& v, const Array& append_indptr, uintptr_t stream) {
        constexpr const char* op = "append_paged_kv_cache";
        const PagedKVCache cache =
            paged_kv_cache_view(op, k_cache, v_cache, layout, k_scale, v_scale);
        const PageTable table = page_table_view(op, indptr, indices, last_page_len);
        const TensorView kv = device_view(op, "k", k), vv = device_view(op, "v", v);
        const TensorView ai = device_view(op, "append_indptr", append_indptr);
        throw_if_error(append_paged_kv_cache(cache, table, kv, vv, ai, to_stream(stream)));
      },
      nb::arg("k_cache").noconvert(), nb::arg("v_cache").noconvert(), nb::arg("layout"),
      nb::arg("k_scale"), nb::arg("v_scale"), nb::arg("indptr").noconvert(),
      nb::arg("indices").noconvert(), nb::arg("last_page_len").noconvert(),
      nb::arg("k").noconvert(), nb::arg("v").noconvert(), nb::arg("append_indptr").noconvert(),
      nb::arg("stream"),
      "Writes k, v [new_tokens, kv_heads, head_dim] into each request's last positions of the "
      "paged cache (the page table already counts them).");
}

// Named so that it registers first: the enums appear in later families' signatures.
const Registration kPage("0_page", &bind_page);

}  // namespace
}  // namespace flashserve::python
